%% End to end through the client API and real workflow processes: activity
%% retries and timeouts, timers, terminate, execution timeout, pause/resume, reopen,
%% retry, named activities on a task queue.
-module(aion_b_e2e_SUITE).
-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-export([all/0, init_per_suite/1, end_per_suite/1, init_per_testcase/2,
         end_per_testcase/2]).
-export([retries_backoff/1, non_retryable_stops_at_one/1, start_to_close_kills/1,
         missing_heartbeat_times_out/1, cancelled_timer_never_fires/1,
         terminate_kills_activity/1, execution_timeout/1, run_timeout/1,
         pause_holds_until_resume/1, reopen_failed_run/1, retry_stuck_run/1,
         retry_with_resident_process/1,
         lifecycle_errors/1, named_activity_on_worker/1, pool_bound/1,
         terminate_races_completions/1, activity_redispatched_after_restart/1,
         pause_survives_restart/1, timer_survives_restart/1, terminate_busy_workflow/1]).

-define(H, aion_b_harness).
-define(TERMINAL, [workflow_completed, workflow_failed, workflow_cancelled,
                   workflow_terminated, workflow_timed_out, workflow_continued_as_new]).

all() ->
    [retries_backoff, non_retryable_stops_at_one, start_to_close_kills,
     missing_heartbeat_times_out, cancelled_timer_never_fires, terminate_kills_activity,
     execution_timeout, run_timeout, pause_holds_until_resume, reopen_failed_run,
     retry_stuck_run, retry_with_resident_process, lifecycle_errors, named_activity_on_worker, pool_bound,
     terminate_races_completions, activity_redispatched_after_restart,
     pause_survives_restart, timer_survives_restart, terminate_busy_workflow].

init_per_suite(Config) ->
    application:load(aion),
    application:set_env(aion, start_default_engine, false),
    {ok, _} = application:ensure_all_started(aion),
    Config.

end_per_suite(_Config) ->
    application:stop(aion).

init_per_testcase(TC, Config) ->
    Engine = list_to_atom("e2e_" ++ atom_to_list(TC)),
    Db = filename:join(?config(priv_dir, Config), atom_to_list(TC) ++ ".db"),
    Extra = case TC of
                pool_bound -> #{max_concurrent_activities => 2};
                _ -> #{}
            end,
    EngineOpts = Extra#{name => Engine, db_path => Db, synchronous => normal},
    {ok, _} = aion_engine:start(EngineOpts),
    put(engine_opts, EngineOpts),
    Probe = list_to_atom("probe_" ++ atom_to_list(TC)),
    register(Probe, self()),
    ets:new(aion_b_flaky, [named_table, public]),
    [{engine, Engine}, {probe, atom_to_binary(Probe)} | Config].

end_per_testcase(_TC, Config) ->
    ok = aion_engine:stop(?config(engine, Config)).

e(Config) -> #{engine => ?config(engine, Config)}.
ctx(Config) -> aion_ctx:get(?config(engine, Config)).

start(Config, Input) ->
    start(Config, Input, #{}).
start(Config, Input, Opts) ->
    {ok, #{workflow_id := W}} = aion:start(aion_b_wf, Input, maps:merge(e(Config), Opts)),
    W.

activity(Config, {M, F}, Args, Opts) ->
    start(Config, #{do => activity, name => [M, F], args => Args, opts => Opts}).

await(Config, W) ->
    aion:await(W, 30000, e(Config)).

history(Config, W) ->
    {ok, H} = aion:history(W, e(Config)),
    H.

types(Config, W) ->
    [T || #{type := T} <- history(Config, W)].

of_type(Config, W, Types) ->
    [E || #{type := T} = E <- history(Config, W), lists:member(T, Types)].

status(Config, W) ->
    {ok, #{status := S}} = aion:describe(W, e(Config)),
    S.

wait_event(Config, W, Type) ->
    ?H:wait_until(fun() ->
                          case of_type(Config, W, [Type]) of
                              [E | _] -> E;
                              [] -> false
                          end
                  end, 20000).

%% Nothing follows the terminal event, and it stays that way.
assert_terminal_last(Config, W) ->
    H = history(Config, W),
    #{type := Last} = lists:last(H),
    ?assert(lists:member(Last, ?TERMINAL)),
    ?assertEqual(1, length([T || #{type := T} <- H, lists:member(T, ?TERMINAL)])).

%%% ---------------------------------------------------------------------------

retries_backoff(Config) ->
    W = activity(Config, {aion_b_acts, flaky}, [?config(probe, Config), <<"k">>, 2],
                 #{retry => #{initial_interval => 200, backoff_coefficient => 2.0}}),
    ?assertEqual({ok, <<"done">>}, await(Config, W)),
    [F1, F2, C] = of_type(Config, W, [activity_failed, activity_completed]),
    ?assertMatch(#{type := activity_failed, attempt := 1, final := false}, F1),
    ?assertMatch(#{type := activity_failed, attempt := 2, final := false}, F2),
    ?assertMatch(#{type := activity_completed, attempt := 3, result := <<"done">>}, C),
    Gap1 = maps:get(recorded_at, F2) - maps:get(recorded_at, F1),
    Gap2 = maps:get(recorded_at, C) - maps:get(recorded_at, F2),
    ct:pal("backoff gaps ~p ~p (policy 200, 400)", [Gap1, Gap2]),
    ?assert(Gap1 >= 200 andalso Gap1 < 500),
    ?assert(Gap2 >= 400 andalso Gap2 < 700),
    ?assertEqual(completed, status(Config, W)),
    assert_terminal_last(Config, W).

non_retryable_stops_at_one(Config) ->
    W = activity(Config, {aion_b_acts, fail}, [<<"bad_card">>],
                 #{retry => #{non_retryable_errors => [<<"bad_card">>]}}),
    ?assertEqual({error, {failed, {activity_failed, bad_card}}}, await(Config, W)),
    ?assertMatch([#{attempt := 1, final := true, error := bad_card}],
                 of_type(Config, W, [activity_failed])),
    W2 = activity(Config, {aion_b_acts, non_retryable}, [<<"nope">>], #{}),
    ?assertEqual({error, {failed, {activity_failed, <<"nope">>}}}, await(Config, W2)),
    ?assertMatch([#{attempt := 1, final := true}], of_type(Config, W2, [activity_failed])),
    ?assertEqual(failed, status(Config, W2)).

start_to_close_kills(Config) ->
    W = activity(Config, {aion_b_acts, hang}, [?config(probe, Config)],
                 #{start_to_close_timeout => 200,
                   retry => #{maximum_attempts => 2, initial_interval => 50}}),
    ?assertEqual({error, {failed, {activity_timeout, start_to_close}}}, await(Config, W)),
    [{hanging, 1, P1}, {hanging, 2, P2}] = ?H:collect(hanging, 2),
    ?assertNot(is_process_alive(P1)),
    ?assertNot(is_process_alive(P2)),
    ?assertMatch([#{attempt := 1, final := false, error := {activity_timeout, start_to_close}},
                  #{attempt := 2, final := true, error := {activity_timeout, start_to_close}}],
                 of_type(Config, W, [activity_failed])).

missing_heartbeat_times_out(Config) ->
    W = activity(Config, {aion_b_acts, heartbeat_then_hang}, [?config(probe, Config), 2],
                 #{heartbeat_timeout => 200, retry => #{maximum_attempts => 1}}),
    ?assertEqual({error, {failed, {activity_timeout, heartbeat}}}, await(Config, W)),
    [{hb_attempt, 1, null, P}] = ?H:collect(hb_attempt, 1),
    ?assertNot(is_process_alive(P)).

cancelled_timer_never_fires(Config) ->
    W = start(Config, #{do => cancel_timer}),
    ?assertEqual({ok, <<"slept">>}, await(Config, W)),
    Timers = of_type(Config, W, [timer_started, timer_cancelled, timer_fired]),
    [#{type := timer_started, timer_id := T1}, #{type := timer_cancelled, timer_id := T1},
     #{type := timer_started, timer_id := T2}, #{type := timer_fired, timer_id := T2}] = Timers,
    ?assertNotEqual(T1, T2),
    %% The cancelled timer's fire time passed long ago, and it never fired.
    ?assertEqual(0, aion_timers:armed(ctx(Config))),
    ?assertEqual([], [E || #{type := timer_fired, timer_id := T} = E <- Timers, T =:= T1]).

terminate_kills_activity(Config) ->
    W = activity(Config, {aion_b_acts, hang}, [?config(probe, Config)], #{}),
    [{hanging, 1, P}] = ?H:collect(hanging, 1),
    ok = aion:terminate(W, <<"operator">>, e(Config)),
    %% Record, then kill: by the time terminate returns, the attempt is dead.
    ?assertNot(is_process_alive(P)),
    ?assertEqual({error, {terminated, <<"operator">>}}, await(Config, W)),
    ?assertEqual(terminated, status(Config, W)),
    [#{type := activity_cancelled}, #{type := workflow_terminated, reason := <<"operator">>}] =
        lists:nthtail(length(history(Config, W)) - 2, history(Config, W)),
    assert_terminal_last(Config, W),
    Len = length(history(Config, W)),
    ?assertEqual({error, not_running}, aion:terminate(W, again, e(Config))),
    ?assertEqual({error, not_running}, aion:pause(W, e(Config))),
    ?assertEqual(Len, length(history(Config, W))),
    {ok, Tasks} = aion_store:activity_tasks(maps:get(store, ctx(Config)), all),
    ?assertEqual([], Tasks).

execution_timeout(Config) ->
    W = start(Config, #{do => sleep, ms => 60000}, #{execution_timeout => 300}),
    ?assertEqual({error, timed_out}, await(Config, W)),
    ?assertEqual(timed_out, status(Config, W)),
    [#{kind := <<"execution_timeout">>}] = of_type(Config, W, [workflow_timed_out]),
    assert_terminal_last(Config, W),
    %% The workflow's own (60 s) timer was cleared with the run.
    {ok, Due} = aion_store:due_timers(maps:get(store, ctx(Config)),
                                      erlang:system_time(millisecond) + 3600000, 100),
    ?assertEqual([], Due).

run_timeout(Config) ->
    W = activity(Config, {aion_b_acts, hang}, [?config(probe, Config)], #{}),
    [{hanging, 1, P}] = ?H:collect(hanging, 1),
    ok = aion:terminate(W, x, e(Config)),
    ?assertNot(is_process_alive(P)),
    W2 = start(Config, #{do => sleep, ms => 60000}, #{run_timeout => 200}),
    ?assertEqual({error, timed_out}, await(Config, W2)),
    [#{kind := <<"run_timeout">>}] = of_type(Config, W2, [workflow_timed_out]),
    assert_terminal_last(Config, W2).

pause_holds_until_resume(Config) ->
    Probe = ?config(probe, Config),
    W = start(Config, #{do => sleep_then_activity, ms => 300, probe => Probe}),
    ok = aion:pause(W, e(Config)),
    ?assertEqual(paused, status(Config, W)),
    ok = aion:pause(W, e(Config)),
    %% The timer still fires and the activity is scheduled, but no attempt starts.
    _ = wait_event(Config, W, activity_scheduled),
    ?assertEqual(0, aion_activity_runner:running(ctx(Config))),
    %% Barrier: another workflow's activity runs to completion meanwhile.
    W2 = activity(Config, {aion_b_acts, echo}, [<<"x">>], #{}),
    ?assertEqual({ok, <<"x">>}, await(Config, W2)),
    receive {started, _, _} -> ct:fail(started_while_paused) after 0 -> ok end,
    ?assertEqual(paused, status(Config, W)),
    ok = aion:resume(W, e(Config)),
    ?assertEqual(running, status(Config, W)),
    [{started, _, P}] = ?H:collect(started, 1),
    P ! release,
    ?assertEqual({ok, <<"released">>}, await(Config, W)),
    Types = types(Config, W),
    Sub = [T || T <- Types, lists:member(T, [workflow_paused, workflow_resumed,
                                              activity_completed, workflow_completed])],
    ?assertEqual([workflow_paused, workflow_resumed, activity_completed, workflow_completed],
                 Sub).

reopen_failed_run(Config) ->
    %% flaky with N = 1 and one attempt: fails once (final), succeeds after a reopen.
    W = activity(Config, {aion_b_acts, flaky}, [?config(probe, Config), <<"r">>, 1],
                 #{retry => #{maximum_attempts => 1}}),
    ?assertMatch({error, {failed, {activity_failed, {try_again, 1}}}}, await(Config, W)),
    ?assertEqual(failed, status(Config, W)),
    ?assertEqual({error, {bad_status, running}},
                 aion:reopen(start(Config, #{do => sleep, ms => 60000}), e(Config))),
    ok = aion:reopen(W, e(Config)),
    ?assertEqual({ok, <<"done">>}, await(Config, W)),
    ?assertEqual(completed, status(Config, W)),
    [#{type := workflow_reopened, activities := [Id]}] = of_type(Config, W, [workflow_reopened]),
    Sub = [{T, maps:get(attempt, E, none)}
           || #{type := T} = E <- history(Config, W),
              lists:member(T, [activity_failed, workflow_failed, workflow_reopened,
                               activity_completed, workflow_completed])],
    ?assertEqual([{activity_failed, 1}, {workflow_failed, none}, {workflow_reopened, none},
                  {activity_completed, 2}, {workflow_completed, none}], Sub),
    [#{activity_id := Id}] = of_type(Config, W, [activity_completed]),
    ?assertEqual({error, {bad_status, completed}}, aion:reopen(W, e(Config))).

retry_stuck_run(Config) ->
    #{store := Store} = Ctx = ctx(Config),
    W = start(Config, #{do => sleep, ms => 300}),
    {ok, #{run_id := RunId}} = aion:describe(W, e(Config)),
    ?assertEqual({error, {bad_status, running}}, aion:retry(W, e(Config))),
    %% Made stuck from outside (as a nondeterminism would), with its process gone.
    ok = aion_run:kill(Ctx, RunId),
    {ok, _} = aion_store:append(Store, [#{run_id => RunId,
                                          set => #{status => <<"stuck">>,
                                                   stuck_reason => <<"{\"kind\":\"test\"}">>}}]),
    ?assertEqual(stuck, status(Config, W)),
    ok = aion:retry(W, e(Config)),
    ?assertEqual({ok, <<"woke">>}, await(Config, W)),
    {ok, #{stuck_reason := null}} = aion_store:get_run(Store, RunId).

%% A stuck run that already has a process when retry starts one (an arrival, e.g.
%% its timer firing, rehydrated it meanwhile): retry is ok and the run completes.
retry_with_resident_process(Config) ->
    #{store := Store} = Ctx = ctx(Config),
    W = start(Config, #{do => sleep, ms => 300}),
    {ok, #{run_id := RunId}} = aion:describe(W, e(Config)),
    ok = aion_run:kill(Ctx, RunId),
    {ok, _} = aion_store:append(Store, [#{run_id => RunId,
                                          set => #{status => <<"stuck">>,
                                                   stuck_reason => <<"{\"kind\":\"test\"}">>}}]),
    {ok, Pid} = aion_run_sup:start_run(Ctx, RunId),
    ok = aion:retry(W, e(Config)),
    %% The kill may have come between the start's commit and the timer's arm (the
    %% folded-start window): read the timer rows again rather than wait for the
    %% periodic full read.
    ok = aion_timers:rescan(Ctx),
    ?assertEqual({ok, <<"woke">>}, await(Config, W)),
    ?assertNot(is_process_alive(Pid)).

lifecycle_errors(Config) ->
    E = e(Config),
    ?assertEqual({error, not_found}, aion:terminate(<<"nope">>, x, E)),
    ?assertEqual({error, not_found}, aion:pause(<<"nope">>, E)),
    ?assertEqual({error, not_found}, aion:resume(<<"nope">>, E)),
    ?assertEqual({error, not_found}, aion:reopen(<<"nope">>, E)),
    ?assertEqual({error, not_found}, aion:retry(<<"nope">>, E)),
    W = start(Config, #{do => sleep, ms => 10}),
    {ok, _} = await(Config, W),
    ?assertEqual({error, not_running}, aion:pause(W, E)),
    ?assertEqual({error, not_running}, aion:resume(W, E)),
    ?assertEqual({error, {bad_status, completed}}, aion:retry(W, E)),
    W2 = start(Config, #{do => sleep, ms => 60000}),
    ?assertEqual(ok, aion:resume(W2, E)),
    ok = aion:terminate(W2, done, E).

named_activity_on_worker(Config) ->
    {ok, Wk} = aion_worker:start_link(#{task_queue => <<"q1">>,
                                        activities => #{<<"echo">> => {aion_b_acts, echo}},
                                        max_concurrency => 2}),
    W = start(Config, #{do => named, name => <<"echo">>, queue => <<"q1">>,
                        args => [#{a => 1}]}),
    ?assertEqual({ok, #{<<"a">> => 1}}, await(Config, W)),
    [#{name := <<"echo">>, task_queue := <<"q1">>}] = of_type(Config, W, [activity_scheduled]),
    unlink(Wk),
    aion_worker:stop(Wk).

pool_bound(Config) ->
    %% max_concurrent_activities = 2 for this engine.
    Probe = ?config(probe, Config),
    Counter = atomics:new(2, []),
    persistent_term:put({aion_b_counter, Probe}, Counter),
    Ws = [activity(Config, {aion_b_acts, counted}, [Probe, 40], #{}) || _ <- lists:seq(1, 8)],
    [?assertEqual({ok, <<"ok">>}, await(Config, W)) || W <- Ws],
    ?assertEqual(2, atomics:get(Counter, 2)),
    persistent_term:erase({aion_b_counter, Probe}).

terminate_races_completions(Config) ->
    %% 10 workflows of 20 short parallel activities each, terminated while their
    %% activities complete: every scheduled activity ends with exactly one terminal
    %% event (completed, or cancelled by the terminate), the run's terminal event is
    %% last, no task row is left behind and no attempt process survives.
    Ws = [start(Config, #{do => fanout, n => 20}) || _ <- lists:seq(1, 10)],
    lists:foreach(
      fun({I, W}) ->
              _ = ?H:wait_until(fun() -> length(of_type(Config, W, [activity_completed])) >= I end,
                                20000),
              case aion:terminate(W, stop, e(Config)) of
                  ok -> ok;
                  {error, not_running} -> ok   % it completed first
              end
      end, lists:zip(lists:seq(1, 10), Ws)),
    lists:foreach(
      fun(W) ->
              H = history(Config, W),
              assert_terminal_last(Config, W),
              Sched = [Id || #{type := activity_scheduled, activity_id := Id} <- H],
              Ends = [Id || #{type := T, activity_id := Id} <- H,
                            T =:= activity_completed orelse T =:= activity_cancelled],
              ?assertEqual(lists:sort(Sched), lists:sort(Ends)),
              %% A run terminated early may not have scheduled all of them.
              case lists:last(H) of
                  #{type := workflow_completed} -> ?assertEqual(20, length(Sched));
                  #{type := workflow_terminated} -> ?assert(length(Sched) =< 20)
              end
      end, Ws),
    {ok, Tasks} = aion_store:activity_tasks(maps:get(store, ctx(Config)), all),
    ?assertEqual([], Tasks),
    Cancelled = length([x || W <- Ws, _ <- of_type(Config, W, [activity_cancelled])]),
    Terminated = length([x || W <- Ws, _ <- of_type(Config, W, [workflow_terminated])]),
    ct:pal("~p runs terminated, ~p activities cancelled", [Terminated, Cancelled]),
    ?assert(Terminated > 0),
    Tab = aion_ctx:proc_name(?config(engine, Config), runner),
    ?H:wait_until(fun() -> ets:info(Tab, size) =:= 0 end, 5000).

restart(Config) ->
    Engine = ?config(engine, Config),
    ok = aion_engine:stop(Engine),
    {ok, _} = aion_engine:start(get(engine_opts)),
    ok.

activity_redispatched_after_restart(Config) ->
    W = activity(Config, {aion_b_acts, hang}, [?config(probe, Config)],
                 #{start_to_close_timeout => 60000}),
    [{hanging, 1, P1}] = ?H:collect(hanging, 1),
    restart(Config),
    %% The engine's stop killed the attempt; the restart dispatches attempt 2.
    ?assertNot(is_process_alive(P1)),
    [{hanging, 2, P2}] = ?H:collect(hanging, 1),
    ?assertEqual([], of_type(Config, W, [activity_failed])),
    ok = aion:terminate(W, done, e(Config)),
    ?assertNot(is_process_alive(P2)),
    assert_terminal_last(Config, W).

pause_survives_restart(Config) ->
    Probe = ?config(probe, Config),
    W = start(Config, #{do => sleep_then_activity, ms => 200, probe => Probe}),
    ok = aion:pause(W, e(Config)),
    _ = wait_event(Config, W, activity_scheduled),
    restart(Config),
    ?assertEqual(paused, status(Config, W)),
    %% Barrier: another workflow's activity completes on the restarted engine.
    W2 = activity(Config, {aion_b_acts, echo}, [<<"x">>], #{}),
    ?assertEqual({ok, <<"x">>}, await(Config, W2)),
    receive {started, _, _} -> ct:fail(started_while_paused) after 0 -> ok end,
    ok = aion:resume(W, e(Config)),
    [{started, _, P}] = ?H:collect(started, 1),
    P ! release,
    ?assertEqual({ok, <<"released">>}, await(Config, W)).

timer_survives_restart(Config) ->
    W = start(Config, #{do => sleep, ms => 400}),
    _ = wait_event(Config, W, timer_started),
    restart(Config),
    ?assertEqual({ok, <<"woke">>}, await(Config, W)),
    [#{fire_at := FireAt}] = of_type(Config, W, [timer_started]),
    [#{recorded_at := At}] = of_type(Config, W, [timer_fired]),
    ?assert(At >= FireAt).

terminate_busy_workflow(Config) ->
    %% A workflow that appends without pause cannot keep its termination out.
    W = start(Config, #{do => busy}),
    _ = ?H:wait_until(fun() -> length(history(Config, W)) > 50 end, 10000),
    ok = aion:terminate(W, enough, e(Config)),
    ?assertEqual({error, {terminated, enough}}, await(Config, W)),
    assert_terminal_last(Config, W),
    Len = length(history(Config, W)),
    {ok, #{run_id := RunId}} = aion:describe(W, e(Config)),
    ?assertEqual([], ets:lookup(maps:get(runs, ctx(Config)), RunId)),
    ?assertEqual(Len, length(history(Config, W))).
