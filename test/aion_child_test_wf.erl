%% Workflows for aion_child_SUITE (children, continue-as-new), chosen by "kind".
-module(aion_child_test_wf).
-behaviour(aion_workflow).

-export([run/1, flaky/0]).

%% An activity that fails for good until the test flips a switch.
flaky() ->
    case persistent_term:get({aion_child_test, flaky}, fail) of
        fail -> {error, {non_retryable, nope}};
        pass -> {ok, <<"fine">>}
    end.

-define(ACT(F), {aion_test_activities, F}).

run(#{<<"kind">> := <<"square">>, <<"n">> := N}) ->
    aion_workflow:execute_activity(?ACT(add), [N * N, 0], #{});
run(#{<<"kind">> := <<"fail">>}) ->
    {error, child_boom};
run(#{<<"kind">> := <<"three_children">>}) ->
    Fs = [aion_workflow:start_child(?MODULE, #{kind => square, n => N}, #{})
          || N <- [1, 2, 3]],
    aion_workflow:wait_all(Fs);
run(#{<<"kind">> := <<"many_children">>, <<"n">> := N}) ->
    Fs = [aion_workflow:start_child(?MODULE, #{kind => square, n => I}, #{})
          || I <- lists:seq(1, N)],
    {ok, Squares} = aion_workflow:wait_all(Fs),
    {ok, lists:sum(Squares)};
run(#{<<"kind">> := <<"failing_child">>}) ->
    Ok = aion_workflow:start_child(?MODULE, #{kind => square, n => 4}, #{}),
    Bad = aion_workflow:start_child(?MODULE, #{kind => fail}, #{id => <<"bad-kid">>}),
    {ok, 16} = aion_workflow:await(Ok),
    {error, {child_failed, child_boom}} = aion_workflow:await(Bad),
    {ok, <<"saw failure">>};
run(#{<<"kind">> := <<"hold">>}) ->
    %% a child that runs until cancelled or terminated
    case aion_workflow:sleep(3600000) of
        ok -> {ok, <<"slept">>};
        {error, {cancelled, _}} -> {ok, <<"cancel observed">>}
    end;
run(#{<<"kind">> := <<"policies">>, <<"prefix">> := P}) ->
    Fs = [aion_workflow:start_child(?MODULE, #{kind => hold},
                                    #{id => <<P/binary, "-", (atom_to_binary(Pol))/binary>>,
                                      parent_close_policy => Pol})
          || Pol <- [terminate, request_cancel, abandon]],
    aion_workflow:wait_all(Fs);
run(#{<<"kind">> := <<"bad_inputs">>}) ->
    E1 = aion_workflow:start_child(no_such_workflow_module, #{}, #{}),
    E2 = aion_workflow:start_child(?MODULE, #{bad => {tuple}}, #{}),
    E3 = aion_workflow:start_child(?MODULE, #{}, #{parent_close_policy => sometimes}),
    E4 = aion_workflow:execute_child(no_such_workflow_module, #{}, #{}),
    E5 = aion_workflow:continue_as_new(#{x => self()}),
    E6 = aion_workflow:continue_as_new(#{}, #{bogus => 1}),
    {ok, [text(E) || E <- [E1, E2, E3, E4, E5, E6]]};
run(#{<<"kind">> := <<"loop">>, <<"n">> := N, <<"max">> := Max} = In) ->
    case N >= Max of
        true ->
            {ok, #{<<"runs">> => N + 1, <<"from">> => aion_workflow:info()}};
        false ->
            ok = aion_workflow:sleep(1),
            aion_workflow:continue_as_new(In#{<<"n">> => N + 1})
    end;
run(#{<<"kind">> := <<"loop_parent">>, <<"max">> := Max}) ->
    {ok, #{<<"runs">> := Runs}} =
        aion_workflow:execute_child(?MODULE, #{kind => loop, n => 0, max => Max},
                                    #{id => <<"looping-kid">>}),
    {ok, Runs};
run(#{<<"kind">> := <<"nest">>, <<"depth">> := 0}) ->
    {ok, 0};
run(#{<<"kind">> := <<"nest">>, <<"depth">> := D}) ->
    {ok, Below} = aion_workflow:execute_child(?MODULE, #{kind => nest, depth => D - 1}, #{}),
    {ok, Below + 1};
run(#{<<"kind">> := <<"line_child">>, <<"file">> := File}) ->
    aion_workflow:execute_activity(?ACT(line), [File, 1, 1], #{});
run(#{<<"kind">> := <<"line_parent">>, <<"file">> := File}) ->
    {ok, R} = aion_workflow:execute_child(?MODULE, #{kind => line_child, file => File},
                                          #{id => <<"line-kid">>}),
    {ok, #{<<"child">> => R}};
run(#{<<"kind">> := <<"timeout_child">>}) ->
    {error, {child_timed_out, K}} =
        aion_workflow:execute_child(?MODULE, #{kind => hold}, #{run_timeout => 200}),
    {ok, K};
run(#{<<"kind">> := <<"await_hold">>, <<"id">> := Id}) ->
    {ok, text(aion_workflow:execute_child(?MODULE, #{kind => hold}, #{id => Id}))};
run(#{<<"kind">> := <<"reopen_parent">>}) ->
    C = aion_workflow:start_child(?MODULE, #{kind => hold},
                                  #{id => <<"r-kid">>, parent_close_policy => abandon}),
    {ok, <<"fine">>} = aion_workflow:execute_activity({?MODULE, flaky}, [], #{}),
    ok = aion_workflow:cancel(C),
    {ok, text(aion_workflow:await(C))};
run(#{<<"kind">> := <<"one_child">>}) ->
    aion_workflow:execute_child(?MODULE, #{kind => square, n => 5}, #{id => <<"kid">>}).

text(V) -> iolist_to_binary(io_lib:format("~p", [V])).
