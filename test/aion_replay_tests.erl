%% EUnit tests of the pure replay core, plus the PropEr properties of
%% prop_aion_replay.
-module(aion_replay_tests).

-include_lib("eunit/include/eunit.hrl").

ev(Seq, Type, At, Fields) ->
    Fields#{seq => Seq, type => Type, recorded_at => At}.

started() -> ev(1, workflow_started, 100, #{workflow_type => <<"t">>, input => null}).
sched(Seq, Id, Name) -> ev(Seq, activity_scheduled, Seq * 100, #{activity_id => Id, name => Name}).
done(Seq, Id, V) -> ev(Seq, activity_completed, Seq * 100, #{activity_id => Id, result => V}).
failed(Seq, Id, Final) ->
    ev(Seq, activity_failed, Seq * 100, #{activity_id => Id, error => boom, final => Final}).
tstart(Seq, Id) -> ev(Seq, timer_started, Seq * 100, #{timer_id => Id, fire_at => 0}).
fired(Seq, Id) -> ev(Seq, timer_fired, Seq * 100, #{timer_id => Id}).

hist(Evs) -> aion_replay:add_all(Evs, aion_replay:new()).

act(N) -> #{command => activity, name => N}.

recorded_outcome_test() ->
    R = hist([started(), sched(2, <<"1">>, <<"m:f">>), done(3, <<"1">>, 7)]),
    {recorded, #{seq := 2}, R1} = aion_replay:command(act(<<"m:f">>), R),
    ?assertMatch({ok, 1, #{seq := 3, result := 7}, _},
                 aion_replay:resolve([{activity, <<"1">>}], true, R1)),
    ?assertEqual(ok, aion_replay:finish(R1)).

recorded_but_pending_test() ->
    R = hist([started(), sched(2, <<"1">>, <<"m:f">>)]),
    {recorded, _, R1} = aion_replay:command(act(<<"m:f">>), R),
    ?assertEqual(pending, aion_replay:resolve([{activity, <<"1">>}], true, R1)),
    ?assertEqual({[<<"1">>], []}, aion_replay:outstanding(R1)).

go_live_test() ->
    R = hist([started()]),
    ?assertMatch({live, _}, aion_replay:command(act(<<"m:f">>), R)).

name_mismatch_is_nondeterminism_test() ->
    R = hist([started(), sched(2, <<"1">>, <<"m:f">>)]),
    ?assertEqual({nondeterminism, #{expected => act(<<"m:f">>), got => act(<<"m:g">>),
                                    seq => 2}},
                 aion_replay:command(act(<<"m:g">>), R)).

kind_mismatch_is_nondeterminism_test() ->
    R = hist([started(), tstart(2, <<"t1">>)]),
    ?assertEqual({nondeterminism, #{expected => #{command => timer},
                                    got => act(<<"m:f">>), seq => 2}},
                 aion_replay:command(act(<<"m:f">>), R)).

missing_command_at_return_test() ->
    R = hist([started(), sched(2, <<"1">>, <<"m:f">>), done(3, <<"1">>, 1),
              sched(4, <<"2">>, <<"m:g">>)]),
    {recorded, _, R1} = aion_replay:command(act(<<"m:f">>), R),
    ?assertEqual({nondeterminism, #{expected => act(<<"m:g">>),
                                    got => #{command => workflow_return}, seq => 4}},
                 aion_replay:finish(R1)).

lowest_seq_wins_test() ->
    R = hist([started(), sched(2, <<"1">>, <<"a">>), tstart(3, <<"t1">>),
              fired(4, <<"t1">>), done(5, <<"1">>, 1)]),
    {recorded, _, R1} = aion_replay:command(act(<<"a">>), R),
    {recorded, _, R2} = aion_replay:command(#{command => timer}, R1),
    ?assertMatch({ok, 2, #{seq := 4}, _},
                 aion_replay:resolve([{activity, <<"1">>}, {timer, <<"t1">>}], true, R2)).

watermark_and_now_test() ->
    R = hist([started(), sched(2, <<"1">>, <<"a">>), done(3, <<"1">>, 1),
              sched(4, <<"2">>, <<"b">>)]),
    ?assertEqual(100, aion_replay:now(R)),
    {recorded, _, R1} = aion_replay:command(act(<<"a">>), R),
    ?assertEqual(200, aion_replay:now(R1)),
    {ok, _, _, R2} = aion_replay:resolve([{activity, <<"1">>}], true, R1),
    ?assertEqual(3, aion_replay:watermark(R2)),
    ?assertEqual(300, aion_replay:now(R2)),
    {recorded, _, R3} = aion_replay:command(act(<<"b">>), R2),
    ?assertEqual(400, aion_replay:now(R3)).

gap_test() ->
    R = hist([started(), done(3, <<"1">>, 1)]),
    ?assertEqual(1, aion_replay:known(R)),
    ?assertEqual({gap, 2}, aion_replay:gap(R)),
    R1 = aion_replay:add(sched(2, <<"1">>, <<"a">>), R),
    ?assertEqual(3, aion_replay:known(R1)),
    ?assertEqual(none, aion_replay:gap(R1)).

arrival_beyond_gap_does_not_resolve_test() ->
    R = hist([started(), sched(2, <<"1">>, <<"a">>), done(4, <<"1">>, 1)]),
    {recorded, _, R1} = aion_replay:command(act(<<"a">>), R),
    ?assertEqual(pending, aion_replay:resolve([{activity, <<"1">>}], true, R1)),
    R2 = aion_replay:add(ev(3, signal_received, 300, #{name => <<"x">>}), R1),
    ?assertMatch({ok, 1, #{seq := 4}, _}, aion_replay:resolve([{activity, <<"1">>}], true, R2)).

duplicate_delivery_ignored_test() ->
    R = hist([started(), sched(2, <<"1">>, <<"a">>)]),
    R1 = aion_replay:add(sched(2, <<"1">>, <<"a">>), R),
    ?assertEqual(1, aion_replay:commands(R1)).

non_final_failure_does_not_settle_test() ->
    R = hist([started(), sched(2, <<"1">>, <<"a">>), failed(3, <<"1">>, false),
              done(4, <<"1">>, 9)]),
    {recorded, _, R1} = aion_replay:command(act(<<"a">>), R),
    ?assertMatch({ok, 1, #{seq := 4}, _}, aion_replay:resolve([{activity, <<"1">>}], true, R1)).

reopen_supersedes_final_failure_test() ->
    Base = [started(), sched(2, <<"1">>, <<"a">>), failed(3, <<"1">>, true),
            ev(4, workflow_failed, 400, #{error => x}),
            ev(5, workflow_reopened, 500, #{activities => [<<"1">>]})],
    R = hist(Base),
    {recorded, _, R1} = aion_replay:command(act(<<"a">>), R),
    ?assertEqual(pending, aion_replay:resolve([{activity, <<"1">>}], true, R1)),
    ?assertEqual(1, aion_replay:reopens(R1)),
    R2 = aion_replay:add(done(6, <<"1">>, 5), R1),
    ?assertMatch({ok, 1, #{seq := 6, result := 5}, _},
                 aion_replay:resolve([{activity, <<"1">>}], true, R2)).

cancel_request_test() ->
    R = hist([started(), sched(2, <<"1">>, <<"a">>),
              ev(3, workflow_cancel_requested, 300, #{reason => <<"stop">>}),
              done(4, <<"1">>, 1)]),
    {recorded, _, R1} = aion_replay:command(act(<<"a">>), R),
    %% Non-blocking: not visible before a blocking wait moved W past it.
    ?assertEqual(false, aion_replay:cancel_requested(R1)),
    ?assertMatch({ok, cancel, #{seq := 3}, _},
                 aion_replay:resolve([{activity, <<"1">>}], true, R1)),
    {ok, cancel, _, R2} = aion_replay:resolve([{activity, <<"1">>}], true, R1),
    ?assertMatch({true, #{reason := <<"stop">>}}, aion_replay:cancel_requested(R2)),
    %% Non-cancellable waits ignore it.
    ?assertMatch({ok, 1, #{seq := 4}, _},
                 aion_replay:resolve([{activity, <<"1">>}], false, R2)).

cancelled_outcome_and_own_test() ->
    R = hist([started(), sched(2, <<"1">>, <<"a">>),
              ev(3, activity_cancelled, 300, #{activity_id => <<"1">>})]),
    ?assertMatch({ok, #{type := activity_cancelled}},
                 aion_replay:outcome({activity, <<"1">>}, R)),
    ?assertEqual(none, aion_replay:outcome({activity, <<"2">>}, R)),
    {recorded, _, R1} = aion_replay:command(act(<<"a">>), R),
    ?assertEqual(300, aion_replay:now(aion_replay:own(3, R1))).

out_of_order_command_is_a_bug_test() ->
    R = hist([started(), sched(3, <<"1">>, <<"a">>)]),
    ?assertError({command_out_of_order, 2, 3}, aion_replay:add(sched(2, <<"2">>, <<"b">>), R)).

describe_event_test_() ->
    [?_assertEqual(#{command => side_effect},
                   aion_replay:describe_event(ev(2, marker_recorded, 1,
                                                 #{kind => <<"side_effect">>, id => 1,
                                                   value => 1}))),
     ?_assertEqual(#{command => patch, id => <<"p">>},
                   aion_replay:describe_event(ev(2, marker_recorded, 1,
                                                 #{kind => <<"patch">>, id => <<"p">>}))),
     ?_assertEqual(false, aion_replay:command_kind(done(3, <<"1">>, 1)))].

%%% PropEr -------------------------------------------------------------------

prop_test_() ->
    Opts = [{numtests, 300}, {to_file, user}, noshrink_timeout_guard()],
    [{timeout, 120,
      ?_assert(proper:quickcheck(prop_aion_replay:prop_live_replays(), Opts))},
     {timeout, 120,
      ?_assert(proper:quickcheck(prop_aion_replay:prop_mutation_detected(), Opts))},
     {timeout, 120,
      ?_assert(proper:quickcheck(prop_aion_replay:prop_add_all_as_add(), Opts))}].

noshrink_timeout_guard() ->
    {max_size, 30}.
