%% Activities against the real store and mailbox, driven directly (no workflow
%% process): a fake resident process collects deliveries.
-module(aion_activity_SUITE).
-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-export([all/0, init_per_suite/1, end_per_suite/1, init_per_testcase/2,
         end_per_testcase/2]).
-export([completes_and_delivers/1, retries_then_succeeds/1, non_retryable_stops/1,
         non_retryable_errors_option/1, attempts_exhausted/1, exception_is_retryable/1,
         start_to_close_kills/1, heartbeat_timeout/1, heartbeat_details_carry/1,
         schedule_to_close/1, invalid_result_is_final/1, cancel_kills_attempt/1,
         cancel_queued/1, closed_run_records_nothing/1, pause_holds_attempts/1,
         pool_bound/1, recover_redispatches/1, info_inside_activity/1,
         await_result_mapping/1, new_task_validation/1, outside_activity/1,
         schedule_to_close_while_queued/1, heartbeat_details_survive_recovery/1]).

-define(H, aion_b_harness).

all() ->
    [completes_and_delivers, retries_then_succeeds, non_retryable_stops,
     non_retryable_errors_option, attempts_exhausted, exception_is_retryable,
     start_to_close_kills, heartbeat_timeout, heartbeat_details_carry, schedule_to_close,
     invalid_result_is_final, cancel_kills_attempt, cancel_queued,
     closed_run_records_nothing, pause_holds_attempts, pool_bound, recover_redispatches,
     info_inside_activity, await_result_mapping, new_task_validation, outside_activity,
     schedule_to_close_while_queued, heartbeat_details_survive_recovery].

init_per_suite(Config) ->
    {ok, _} = application:ensure_all_started(crypto),
    Config.

end_per_suite(_Config) ->
    ok.

init_per_testcase(TC, Config) ->
    Opts = case TC of
               pool_bound -> #{max_concurrent_activities => 3};
               schedule_to_close_while_queued -> #{max_concurrent_activities => 1};
               _ -> #{}
           end,
    Ctx = ?H:start(?config(priv_dir, Config), Opts),
    Probe = list_to_atom("probe_" ++ atom_to_list(TC)),
    register(Probe, self()),
    Flaky = ets:new(aion_b_flaky, [named_table, public]),
    [{ctx, Ctx}, {probe, atom_to_binary(Probe)}, {flaky, Flaky} | Config].

end_per_testcase(_TC, Config) ->
    ?H:stop(?config(ctx, Config)),
    ok.

%% Starts a run with a fake resident workflow process delivering to the test process.
run(Config) ->
    Ctx = ?config(ctx, Config),
    {RunId, _} = Run = ?H:create_run(Ctx, <<"a">>),
    _ = ?H:fake_workflow(Ctx, {RunId, self()}),
    Run.

sched(Config, Run, Name, Args, Opts) ->
    ?H:schedule(?config(ctx, Config), Run, Name, {Args, Opts}).

terminal(Ctx, RunId, ActId) ->
    ?H:wait_for(Ctx, RunId,
                fun(#{type := activity_completed, activity_id := Id}) -> Id =:= ActId;
                   (#{type := activity_failed, final := true, activity_id := Id}) -> Id =:= ActId;
                   (_) -> false
                end).

act_events(Ctx, RunId, ActId) ->
    [E || #{activity_id := Id, type := T} = E <- ?H:history(Ctx, RunId), Id =:= ActId,
          T =/= activity_scheduled].

no_task_rows(Ctx, RunId) ->
    {ok, Rows} = aion_store:activity_tasks(maps:get(store, Ctx), RunId),
    ?assertEqual([], Rows).

%%% ---------------------------------------------------------------------------

completes_and_delivers(Config) ->
    Ctx = ?config(ctx, Config),
    {RunId, _} = Run = run(Config),
    Id = sched(Config, Run, {aion_b_acts, ok_tuple}, [#{k => [1, 2.5, <<"x">>]}], #{}),
    Ev = terminal(Ctx, RunId, Id),
    ?assertMatch(#{type := activity_completed, attempt := 1,
                   result := #{<<"k">> := [1, 2.5, <<"x">>]}}, Ev),
    %% The same event (decoded) was delivered to the resident process.
    receive {delivered, RunId, D} -> ?assertEqual(Ev, D)
    after 5000 -> ct:fail(no_delivery)
    end,
    no_task_rows(Ctx, RunId),
    ?assertEqual({ok, <<"x">>}, aion_activity_runner:await_result(
                                  (terminal(Ctx, RunId, sched(Config, Run, {aion_b_acts, echo},
                                                              [<<"x">>], #{}))))).

retries_then_succeeds(Config) ->
    Ctx = ?config(ctx, Config),
    {RunId, _} = Run = run(Config),
    Id = sched(Config, Run, {aion_b_acts, flaky}, [?config(probe, Config), <<"k">>, 2],
               #{retry => #{initial_interval => 200, backoff_coefficient => 2.0}}),
    Final = terminal(Ctx, RunId, Id),
    [F1, F2, C] = act_events(Ctx, RunId, Id),
    ?assertMatch(#{type := activity_failed, attempt := 1, final := false,
                   error := {try_again, 1}}, F1),
    ?assertMatch(#{type := activity_failed, attempt := 2, final := false,
                   error := {try_again, 2}}, F2),
    ?assertMatch(#{type := activity_completed, attempt := 3, result := <<"done">>}, C),
    ?assertEqual(C, Final),
    %% Backoff 200 ms then 400 ms (attempt start follows the failure record).
    Gap1 = maps:get(recorded_at, F2) - maps:get(recorded_at, F1),
    Gap2 = maps:get(recorded_at, C) - maps:get(recorded_at, F2),
    ct:pal("gaps ~p ~p", [Gap1, Gap2]),
    ?assert(Gap1 >= 200 andalso Gap1 < 200 + 300),
    ?assert(Gap2 >= 400 andalso Gap2 < 400 + 300),
    %% Three deliveries, in order.
    Seqs = [S || {delivered, _, #{seq := S}} <- ?H:collect(delivered, 3)],
    ?assertEqual(lists:sort(Seqs), Seqs),
    no_task_rows(Ctx, RunId).

non_retryable_stops(Config) ->
    Ctx = ?config(ctx, Config),
    {RunId, _} = Run = run(Config),
    Id = sched(Config, Run, {aion_b_acts, non_retryable}, [<<"card">>], #{}),
    Ev = terminal(Ctx, RunId, Id),
    ?assertMatch(#{type := activity_failed, attempt := 1, final := true, error := <<"card">>},
                 Ev),
    ?assertEqual([Ev], act_events(Ctx, RunId, Id)),
    ?assertEqual({error, {activity_failed, <<"card">>}}, aion_activity_runner:await_result(Ev)).

non_retryable_errors_option(Config) ->
    Ctx = ?config(ctx, Config),
    {RunId, _} = Run = run(Config),
    Id = sched(Config, Run, {aion_b_acts, fail}, [<<"bad_card">>],
               #{retry => #{non_retryable_errors => [bad_card]}}),
    Ev = terminal(Ctx, RunId, Id),
    ?assertMatch(#{attempt := 1, final := true, error := bad_card}, Ev),
    ?assertEqual([Ev], act_events(Ctx, RunId, Id)).

attempts_exhausted(Config) ->
    Ctx = ?config(ctx, Config),
    {RunId, _} = Run = run(Config),
    Id = sched(Config, Run, {aion_b_acts, fail}, [<<"nope">>],
               #{retry => #{maximum_attempts => 3, initial_interval => 10}}),
    _ = terminal(Ctx, RunId, Id),
    ?assertMatch([#{attempt := 1, final := false, error := nope},
                  #{attempt := 2, final := false, error := nope},
                  #{attempt := 3, final := true, error := nope}],
                 act_events(Ctx, RunId, Id)),
    no_task_rows(Ctx, RunId).

exception_is_retryable(Config) ->
    Ctx = ?config(ctx, Config),
    {RunId, _} = Run = run(Config),
    Id = sched(Config, Run, {aion_b_acts, raise}, [],
               #{retry => #{maximum_attempts => 2, initial_interval => 10}}),
    _ = terminal(Ctx, RunId, Id),
    ?assertMatch([#{attempt := 1, final := false, error := {exception, error, badarith}},
                  #{attempt := 2, final := true, error := {exception, error, badarith}}],
                 act_events(Ctx, RunId, Id)).

start_to_close_kills(Config) ->
    Ctx = ?config(ctx, Config),
    {RunId, _} = Run = run(Config),
    Id = sched(Config, Run, {aion_b_acts, hang}, [?config(probe, Config)],
               #{start_to_close_timeout => 200,
                 retry => #{maximum_attempts => 2, initial_interval => 10}}),
    [{hanging, 1, P1}, {hanging, 2, P2}] = ?H:collect(hanging, 2),
    Ev = terminal(Ctx, RunId, Id),
    ?assertMatch([#{attempt := 1, final := false, error := {activity_timeout, start_to_close}},
                  #{attempt := 2, final := true, error := {activity_timeout, start_to_close}}],
                 act_events(Ctx, RunId, Id)),
    ?assertNot(is_process_alive(P1)),
    ?assertNot(is_process_alive(P2)),
    ?assertEqual({error, {activity_timeout, start_to_close}},
                 aion_activity_runner:await_result(Ev)).

heartbeat_timeout(Config) ->
    Ctx = ?config(ctx, Config),
    {RunId, _} = Run = run(Config),
    Id = sched(Config, Run, {aion_b_acts, heartbeat_then_hang}, [?config(probe, Config), 3],
               #{heartbeat_timeout => 200, retry => #{maximum_attempts => 1}}),
    [{hb_attempt, 1, null, Pid}] = ?H:collect(hb_attempt, 1),
    Ev = terminal(Ctx, RunId, Id),
    ?assertMatch(#{attempt := 1, final := true, error := {activity_timeout, heartbeat}}, Ev),
    ?assertNot(is_process_alive(Pid)),
    ?assertEqual({error, {activity_timeout, heartbeat}}, aion_activity_runner:await_result(Ev)).

heartbeat_details_carry(Config) ->
    Ctx = ?config(ctx, Config),
    {RunId, _} = Run = run(Config),
    Id = sched(Config, Run, {aion_b_acts, heartbeat_then_hang}, [?config(probe, Config), 2],
               #{heartbeat_timeout => 150,
                 retry => #{maximum_attempts => 2, initial_interval => 10}}),
    [{hb_attempt, 1, null, _}, {hb_attempt, 2, Prev, _}] = ?H:collect(hb_attempt, 2),
    ?assertEqual(#{<<"n">> => 2, <<"attempt">> => 1}, Prev),
    _ = terminal(Ctx, RunId, Id),
    ok.

schedule_to_close(Config) ->
    Ctx = ?config(ctx, Config),
    {RunId, _} = Run = run(Config),
    Id = sched(Config, Run, {aion_b_acts, hang}, [?config(probe, Config)],
               #{schedule_to_close_timeout => 300}),
    [{hanging, 1, P1}] = ?H:collect(hanging, 1),
    Ev = terminal(Ctx, RunId, Id),
    ?assertMatch(#{attempt := 1, final := true, error := {activity_timeout, schedule_to_close}},
                 Ev),
    ?assertNot(is_process_alive(P1)),
    ?assertEqual({error, {activity_timeout, schedule_to_close}},
                 aion_activity_runner:await_result(Ev)),
    %% A backoff that would end after the deadline ends the activity at once.
    Id2 = sched(Config, Run, {aion_b_acts, fail}, [<<"x">>],
                #{schedule_to_close_timeout => 2000, retry => #{initial_interval => 5000}}),
    Ev2 = terminal(Ctx, RunId, Id2),
    ?assertMatch([#{attempt := 1, final := true, error := {activity_timeout, schedule_to_close}}],
                 act_events(Ctx, RunId, Id2)),
    ?assert(maps:get(recorded_at, Ev2) - maps:get(recorded_at, Ev) < 1500).

invalid_result_is_final(Config) ->
    Ctx = ?config(ctx, Config),
    {RunId, _} = Run = run(Config),
    Id = sched(Config, Run, {aion_b_acts, bad_result}, [], #{}),
    Ev = terminal(Ctx, RunId, Id),
    ?assertMatch(#{attempt := 1, final := true,
                   error := {invalid_result, {invalid_payload, [<<"result">> | _], _}}}, Ev).

cancel_kills_attempt(Config) ->
    #{store := Store} = Ctx = ?config(ctx, Config),
    {RunId, _} = Run = run(Config),
    Id = sched(Config, Run, {aion_b_acts, hang}, [?config(probe, Config)], #{}),
    [{hanging, 1, Pid}] = ?H:collect(hanging, 1),
    %% What the workflow process does: record the cancel with the row guard, then cancel.
    Ev = aion_event:encode_row(activity_cancelled, erlang:system_time(millisecond),
                               #{activity_id => Id}),
    {ok, _} = aion_store:append(Store, [#{run_id => RunId, events => [Ev],
                                          tasks_take => [Id]}]),
    ok = aion_activity_runner:cancel(Ctx, RunId, Id),
    ?assertNot(is_process_alive(Pid)),
    ?assertEqual([activity_cancelled], [T || #{type := T} <- act_events(Ctx, RunId, Id)]),
    ?assertEqual([], ets:lookup(aion_ctx:proc_name(maps:get(name, Ctx), runner), {RunId, Id})),
    %% Cancelling an unknown / finished activity is fine.
    ok = aion_activity_runner:cancel(Ctx, RunId, Id),
    ok = aion_activity_runner:cancel(Ctx, RunId, <<"999">>).

cancel_queued(Config) ->
    Ctx = ?config(ctx, Config),
    {RunId, _} = Run = run(Config),
    ok = aion_activity_runner:pause_run(Ctx, RunId),
    Id = sched(Config, Run, {aion_b_acts, wait_release}, [?config(probe, Config)], #{}),
    Tab = aion_ctx:proc_name(maps:get(name, Ctx), runner),
    [{_, Exec}] = ets:lookup(Tab, {RunId, Id}),
    ok = aion_activity_runner:cancel_run(Ctx, RunId),
    ?assertNot(is_process_alive(Exec)),
    ok = aion_activity_runner:resume_run(Ctx, RunId),
    ?assertEqual(0, aion_activity_runner:running(Ctx)),
    receive {started, _, _} -> ct:fail(cancelled_activity_started) after 0 -> ok end.

closed_run_records_nothing(Config) ->
    #{store := Store} = Ctx = ?config(ctx, Config),
    {RunId, _} = Run = run(Config),
    Id = sched(Config, Run, {aion_b_acts, wait_release}, [?config(probe, Config)], #{}),
    [{started, Id, Pid}] = ?H:collect(started, 1),
    Exec = element(2, hd(ets:lookup(aion_ctx:proc_name(maps:get(name, Ctx), runner),
                                    {RunId, Id}))),
    Mon = monitor(process, Exec),
    %% The workflow completes (closing the run, clearing rows) while the attempt runs.
    Now = erlang:system_time(millisecond),
    Done = aion_event:encode_row(workflow_completed, Now, #{result => null}),
    {ok, _} = aion_store:append(Store, [#{run_id => RunId, events => [Done],
                                          set => #{status => <<"completed">>, closed_at => Now},
                                          clear_rows => true}]),
    Len = length(?H:history(Ctx, RunId)),
    Pid ! release,
    receive {'DOWN', Mon, process, Exec, normal} -> ok after 5000 -> ct:fail(exec_alive) end,
    ?assertEqual(Len, length(?H:history(Ctx, RunId))),
    ?assertMatch(#{type := workflow_completed}, lists:last(?H:history(Ctx, RunId))).

pause_holds_attempts(Config) ->
    Ctx = ?config(ctx, Config),
    {RunA, _} = RunPaused = run(Config),
    ok = aion_activity_runner:pause_run(Ctx, RunA),
    IdA = sched(Config, RunPaused, {aion_b_acts, wait_release}, [?config(probe, Config)], #{}),
    %% Another run's activity goes through meanwhile.
    {RunB, _} = Other = run(Config),
    IdB = sched(Config, Other, {aion_b_acts, wait_release}, [?config(probe, Config)], #{}),
    [{started, IdB, PB}] = ?H:collect(started, 1),
    PB ! release,
    _ = terminal(Ctx, RunB, IdB),
    receive {started, IdA, _} -> ct:fail(paused_attempt_started) after 0 -> ok end,
    ?assertEqual([], act_events(Ctx, RunA, IdA)),
    ok = aion_activity_runner:resume_run(Ctx, RunA),
    [{started, IdA, PA}] = ?H:collect(started, 1),
    PA ! release,
    ?assertMatch(#{type := activity_completed, result := <<"released">>},
                 terminal(Ctx, RunA, IdA)).

pool_bound(Config) ->
    %% max_concurrent_activities = 3 (init_per_testcase).
    Ctx = ?config(ctx, Config),
    Probe = ?config(probe, Config),
    Counter = atomics:new(2, []),
    persistent_term:put({aion_b_counter, Probe}, Counter),
    {RunId, _} = Run = run(Config),
    Ids = [sched(Config, Run, {aion_b_acts, counted}, [Probe, 30], #{}) || _ <- lists:seq(1, 15)],
    [_ = terminal(Ctx, RunId, Id) || Id <- Ids],
    ct:pal("max concurrent ~p", [atomics:get(Counter, 2)]),
    ?assertEqual(3, atomics:get(Counter, 2)),
    ?assertEqual(0, atomics:get(Counter, 1)),
    persistent_term:erase({aion_b_counter, Probe}).

recover_redispatches(Config) ->
    #{store := Store} = Ctx = ?config(ctx, Config),
    {RunId, WfId} = run(Config),
    %% A task row left by a crash at attempt 2, never dispatched in this engine.
    {ok, T} = aion_activity_runner:new_task(
                #{run_id => RunId, workflow_id => WfId, activity_id => <<"7">>,
                  name => {aion_b_acts, report_info}, args => [?config(probe, Config)],
                  options => #{}, scheduled_at => erlang:system_time(millisecond)}),
    Row = aion_activity_runner:task_row(T#{attempt => 2}),
    {ok, _} = aion_store:append(Store, [#{run_id => RunId, tasks_put => [Row]}]),
    %% And a row of a closed run, which must be skipped.
    {Closed, _} = ?H:create_run(Ctx, <<"closed">>),
    Now = erlang:system_time(millisecond),
    {ok, _} = aion_store:append(Store, [#{run_id => Closed, tasks_put => [Row]},
                                        #{run_id => Closed,
                                          events => [aion_event:encode_row(
                                                       workflow_completed, Now,
                                                       #{result => null})],
                                          set => #{status => <<"failed">>, closed_at => Now}}]),
    ok = aion_activity_runner:recover(Ctx),
    [{info, #{attempt := 3, activity_id := <<"7">>, run_id := RunId}}] = ?H:collect(info, 1),
    ?assertMatch(#{type := activity_completed, attempt := 3}, terminal(Ctx, RunId, <<"7">>)),
    receive {info, _} -> ct:fail(closed_run_dispatched) after 0 -> ok end.

info_inside_activity(Config) ->
    Ctx = ?config(ctx, Config),
    {RunId, WfId} = Run = run(Config),
    Before = erlang:system_time(millisecond),
    Id = sched(Config, Run, {aion_b_acts, heartbeat_and_report}, [?config(probe, Config)],
               #{start_to_close_timeout => 60000}),
    [{info, Info, Cancelled}] = ?H:collect(info, 1),
    ?assertMatch(#{workflow_id := WfId, run_id := RunId, activity_id := Id, attempt := 1,
                   heartbeat_details := <<"hb">>}, Info),
    ?assertEqual([workflow_id, run_id, activity_id, attempt, heartbeat_details, deadline],
                 [K || K <- [workflow_id, run_id, activity_id, attempt, heartbeat_details,
                             deadline], is_map_key(K, Info)]),
    ?assertEqual(6, map_size(Info)),
    D = maps:get(deadline, Info),
    ?assert(D >= Before + 60000 andalso D =< erlang:system_time(millisecond) + 60000),
    ?assertNot(Cancelled),
    _ = terminal(Ctx, RunId, Id).

await_result_mapping(_Config) ->
    M = fun aion_activity_runner:await_result/1,
    ?assertEqual({ok, 1}, M(#{type => activity_completed, result => 1})),
    ?assertEqual({error, {activity_failed, x}},
                 M(#{type => activity_failed, final => true, error => x})),
    ?assertEqual({error, {activity_timeout, heartbeat}},
                 M(#{type => activity_failed, final => true,
                     error => {activity_timeout, heartbeat}})),
    ?assertEqual({error, activity_cancelled}, M(#{type => activity_cancelled})),
    ?assertError({not_terminal, _}, M(#{type => activity_failed, final => false, error => x})).

new_task_validation(_Config) ->
    Base = #{run_id => <<"r">>, workflow_id => <<"w">>, activity_id => <<"1">>,
             name => {m, f}, args => [], options => #{}, scheduled_at => 0},
    {ok, T} = aion_activity_runner:new_task(Base#{args => [#{a => b}]}),
    ?assertEqual([#{<<"a">> => <<"b">>}], maps:get(args, T)),
    ?assertEqual(<<"m:f">>, maps:get(name, T)),
    ?assertMatch({error, {invalid_payload, [0 | _], _}},
                 aion_activity_runner:new_task(Base#{args => [{tuple}]})),
    ?assertMatch({error, {invalid_options, {bad_value, name, _}}},
                 aion_activity_runner:new_task(Base#{name => "str"})),
    ?assertMatch({error, {invalid_options, {unknown_option, foo}}},
                 aion_activity_runner:new_task(Base#{options => #{foo => 1}})),
    ?assertMatch(#{activity_id := <<"1">>, name := <<"m:f">>, input := [#{<<"a">> := <<"b">>}],
                   task_queue := <<"default">>, kind := <<"mf">>,
                   options := #{start_to_close_timeout := null}},
                 aion_activity_runner:scheduled_fields(T)),
    %% Row data round-trips.
    {Id, 1, Q, Data} = aion_activity_runner:task_row(T),
    ?assertEqual(T, aion_activity_runner:task_from_row({<<"r">>, Id, 1, Q, Data})),
    ?assertEqual(<<"payments:charge">>, aion_activity_runner:name_binary({payments, charge})).

outside_activity(_Config) ->
    ?assertError(not_in_activity, aion_activity:info()),
    ?assertError(not_in_activity, aion_activity:heartbeat(1)),
    ?assertError(not_in_activity, aion_activity:is_cancelled()).

schedule_to_close_while_queued(Config) ->
    %% One slot, taken by a hanging activity: the second one's schedule-to-close
    %% passes while it waits for a slot; it ends without ever starting.
    Ctx = ?config(ctx, Config),
    {RunId, _} = Run = run(Config),
    Id1 = sched(Config, Run, {aion_b_acts, hang}, [?config(probe, Config)], #{}),
    [{hanging, 1, P}] = ?H:collect(hanging, 1),
    Id2 = sched(Config, Run, {aion_b_acts, report_info}, [?config(probe, Config)],
                #{schedule_to_close_timeout => 200}),
    Ev = terminal(Ctx, RunId, Id2),
    ?assertMatch(#{attempt := 1, final := true, error := {activity_timeout, schedule_to_close}},
                 Ev),
    receive {info, _} -> ct:fail(queued_attempt_started) after 0 -> ok end,
    ?assert(is_process_alive(P)),
    ?assertEqual(1, aion_activity_runner:running(Ctx)),
    ok = aion_activity_runner:cancel(Ctx, RunId, Id1),
    ?assertNot(is_process_alive(P)),
    ?H:wait_until(fun() -> aion_activity_runner:running(Ctx) =:= 0 end, 5000).

heartbeat_details_survive_recovery(Config) ->
    #{store := Store} = Ctx = ?config(ctx, Config),
    {RunId, WfId} = run(Config),
    {ok, T} = aion_activity_runner:new_task(
                #{run_id => RunId, workflow_id => WfId, activity_id => <<"3">>,
                  name => {aion_b_acts, report_info}, args => [?config(probe, Config)],
                  options => #{}, scheduled_at => erlang:system_time(millisecond)}),
    %% The row a retry of attempt 4 wrote, with the last heartbeat details.
    Row = aion_activity_runner:task_row(T#{attempt => 5,
                                           heartbeat_details => #{<<"cursor">> => 42}}),
    {ok, _} = aion_store:append(Store, [#{run_id => RunId, tasks_put => [Row]}]),
    ok = aion_activity_runner:recover(Ctx),
    [{info, #{attempt := 6, heartbeat_details := #{<<"cursor">> := 42}}}] = ?H:collect(info, 1),
    _ = terminal(Ctx, RunId, <<"3">>).
