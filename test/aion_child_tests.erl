%% Pure parts of aion_child: await results, guard rows, start validation.
-module(aion_child_tests).
-include_lib("eunit/include/eunit.hrl").

await_result_test() ->
    ?assertEqual({ok, 3}, aion_child:await_result(#{type => child_workflow_completed,
                                                    result => 3})),
    F = fun(Kind) -> aion_child:await_result(#{type => child_workflow_failed,
                                               kind => Kind, error => why})
        end,
    ?assertEqual({error, {child_failed, why}}, F(<<"failed">>)),
    ?assertEqual({error, {child_cancelled, why}}, F(<<"cancelled">>)),
    ?assertEqual({error, {child_terminated, why}}, F(<<"terminated">>)),
    ?assertEqual({error, {child_timed_out, why}}, F(<<"timed_out">>)).

guard_rows_test() ->
    Evs = [#{type => workflow_started},
           #{type => child_workflow_started, child_id => <<"c1">>},
           #{type => child_workflow_started, child_id => <<"c2">>},
           #{type => child_workflow_started, child_id => <<"c3">>},
           #{type => child_workflow_completed, child_id => <<"c1">>},
           #{type => child_workflow_failed, child_id => <<"c3">>}],
    ?assertMatch([{<<"$child/c2">>, At}] when At > 4102444800000,
                 aion_child:guard_rows(Evs)),
    ?assertEqual([], aion_child:guard_rows([])).

validate_start_test() ->
    T = aion_child_test_wf,
    ?assertEqual({error, {unknown_workflow_type, nope_no_module}},
                 aion_child:validate_start(nope_no_module, #{}, #{})),
    ?assertEqual({error, {unknown_workflow_type, lists}},
                 aion_child:validate_start(lists, #{}, #{})),
    ?assertEqual({error, {invalid_option, options}}, aion_child:validate_start(T, #{}, [])),
    ?assertEqual({error, {invalid_option, engine}},
                 aion_child:validate_start(T, #{}, #{engine => x})),
    ?assertEqual({error, {invalid_option, parent_close_policy}},
                 aion_child:validate_start(T, #{}, #{parent_close_policy => maybe})),
    ?assertMatch({error, {invalid_payload, [<<"a">>], _}},
                 aion_child:validate_start(T, #{a => self()}, #{})),
    ?assertMatch({error, {invalid_payload, [<<"search_attributes">>, <<"k">>], _}},
                 aion_child:validate_start(T, #{}, #{search_attributes => #{k => {1}}})),
    {ok, <<"aion_child_test_wf">>, O} =
        aion_child:validate_start(T, #{}, #{id => <<"x">>, run_timeout => 5,
                                            execution_timeout => infinity,
                                            parent_close_policy => abandon}),
    ?assertEqual(#{<<"run_timeout">> => 5, <<"parent_close_policy">> => <<"abandon">>}, O),
    {ok, _, O2} = aion_child:validate_start(T, 1, #{}),
    ?assertEqual(#{<<"parent_close_policy">> => <<"terminate">>}, O2).

replay_children_test() ->
    Ev = fun(Seq, Type, F) -> F#{seq => Seq, type => Type, recorded_at => Seq} end,
    R0 = aion_replay:add_all(
           [Ev(1, workflow_started, #{}),
            Ev(2, child_workflow_started, #{child_id => <<"c1">>, workflow_type => <<"t">>}),
            Ev(3, child_workflow_started, #{child_id => <<"c2">>, workflow_type => <<"t">>})],
           aion_replay:new()),
    ?assertEqual([<<"c1">>, <<"c2">>],
                 lists:sort([Id || #{child_id := Id} <- aion_replay:open_children(R0)])),
    ?assertMatch({ok, #{seq := 3}}, aion_replay:child_started(<<"c2">>, R0)),
    ?assertEqual(none, aion_replay:child_started(<<"c9">>, R0)),
    %% an outcome beyond a gap settles nothing yet; once the gap fills it does
    R1 = aion_replay:add(Ev(5, child_workflow_completed, #{child_id => <<"c2">>, result => 1}),
                         R0),
    ?assertEqual(2, length(aion_replay:open_children(R1))),
    R2 = aion_replay:add(Ev(4, child_workflow_failed, #{child_id => <<"c1">>,
                                                       kind => <<"failed">>, error => x}), R1),
    ?assertEqual([], aion_replay:open_children(R2)),
    %% the lowest-seq settling event wins a wait on both children
    ?assertMatch({ok, 1, #{seq := 4}, _},
                 aion_replay:resolve([{child, <<"c1">>}, {child, <<"c2">>}], true, R2)),
    ?assertMatch({ok, 1, #{seq := 5}, _},
                 aion_replay:resolve([{child, <<"c2">>}], true, R2)).
