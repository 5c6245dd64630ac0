%% Workflows, activities, timers, replay and the client API of one engine.
-module(aion_core_SUITE).

-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-export([all/0, init_per_suite/1, end_per_suite/1, init_per_testcase/2,
         end_per_testcase/2]).
-export([three_activities_history/1, outcomes/1, await_closed_timeout_not_found/1,
         describe_list_count/1, sleep_fires/1, wait_any_history_order/1,
         cancelled_timer_never_fires/1, parallel_and_wait_all/1,
         replay_is_deterministic/1, nondeterminism_stuck_then_retry/1,
         bad_input_records_nothing/1, id_reuse_and_conflict/1, info_and_misuse/1,
         run_deadlines/1, cancel_request_observed/1, sleep_beyond_horizon/1,
         close_waits_collected/1, long_wait_at_high_priority/1]).

-define(W, aion_test_workflows).

all() ->
    [three_activities_history, outcomes, await_closed_timeout_not_found,
     describe_list_count, sleep_fires, wait_any_history_order,
     cancelled_timer_never_fires, parallel_and_wait_all, replay_is_deterministic,
     nondeterminism_stuck_then_retry, bad_input_records_nothing, id_reuse_and_conflict,
     info_and_misuse, run_deadlines, cancel_request_observed, sleep_beyond_horizon,
     close_waits_collected, long_wait_at_high_priority].

init_per_suite(Config) -> aion_ct:init_per_suite(Config).

end_per_suite(Config) -> aion_ct:end_per_suite(Config).

init_per_testcase(TC, Config) ->
    Path = aion_ct:db_path(Config, atom_to_list(TC) ++ ".db"),
    Extra = case TC of
                sleep_beyond_horizon -> #{timer_horizon => 200, timer_rescan_interval => 100};
                %% the store's writer waits for another connection's write lock
                close_waits_collected -> #{busy_timeout => 60000};
                _ -> #{}
            end,
    _ = aion_ct:start_engine(aion_default, Path, Extra),
    true = register(aion_test_sink, self()),
    [{db, Path} | Config].

end_per_testcase(_TC, _Config) ->
    catch unregister(aion_test_sink),
    persistent_term:erase({aion_test, switch}),
    aion_ct:stop_engine(aion_default),
    aion_ct:flush(),
    ok.

start(Input) ->
    {ok, #{workflow_id := Wid}} = aion:start(?W, Input, #{}),
    Wid.

%%% ===========================================================================

three_activities_history(_Config) ->
    Wid = start(#{kind => three}),
    {ok, 113} = aion:await(Wid, 5000),
    H = aion_ct:history(Wid),
    [workflow_started, activity_scheduled, activity_completed, activity_scheduled,
     activity_completed, activity_scheduled, activity_completed,
     workflow_completed] = aion_ct:types(H),
    ?assertEqual(lists:seq(1, 8), [S || #{seq := S} <- H]),
    [#{workflow_type := <<"aion_test_workflows">>, input := #{<<"kind">> := <<"three">>},
       workflow_id := Wid},
     #{activity_id := <<"1">>, name := <<"aion_test_activities:add">>, input := [1, 2]},
     #{activity_id := <<"1">>, attempt := 1, result := 3},
     #{activity_id := <<"2">>, input := [3, 10]},
     #{activity_id := <<"2">>, result := 13},
     #{activity_id := <<"3">>, input := [13, 100]},
     #{activity_id := <<"3">>, result := 113},
     #{result := 113}] = H,
    %% recorded_at never decreases along the history of one run
    Ats = [A || #{recorded_at := A} <- H],
    ?assertEqual(Ats, lists:sort(Ats)),
    {ok, #{status := completed, history_length := 8, residency := suspended,
           pending_activities := [], pending_timers := []}} = aion:describe(Wid).

outcomes(_Config) ->
    {ok, <<"done">>} = aion:await(start(#{kind => noop}), 5000),
    {ok, #{<<"a">> := [1, 2.5, null]}} =
        aion:await(start(#{kind => echo, value => #{a => [1, 2.5, null]}}), 5000),
    Failed = start(#{kind => fail}),
    {error, {failed, boom}} = aion:await(Failed, 5000),
    {ok, #{status := failed}} = aion:describe(Failed),
    Crash = start(#{kind => crash}),
    {error, {failed, #{class := error, reason := kaput, stacktrace := [_ | _]}}} =
        aion:await(Crash, 5000),
    {error, {failed, {invalid_result, {invalid_payload, _, _}}}} =
        aion:await(start(#{kind => bad_result}), 5000),
    {ok, 1} = aion:await(start(#{kind => one_activity}), 5000).

await_closed_timeout_not_found(_Config) ->
    Wid = start(#{kind => noop}),
    {ok, <<"done">>} = aion:await(Wid, 5000),
    %% finished before the call: answered from the store
    {ok, <<"done">>} = aion:await(Wid),
    {error, not_found} = aion:await(<<"no such workflow">>, 100),
    Gated = start(#{kind => switch, gate => <<"g">>}),
    {Pid, 1} = aion_ct:gate_wait(<<"g">>),
    {error, timeout} = aion:await(Gated, 50),
    #{waiters := Waiters} = aion_ctx:get(aion_default),
    ?assertEqual([], ets:tab2list(Waiters)),
    Self = self(),
    Awaiter = spawn_link(fun() -> Self ! {awaited, aion:await(Gated, 5000)} end),
    aion_ct:wait_until(fun() -> ets:info(Waiters, size) =:= 1 end, 5000),
    aion_ct:release(Pid, <<"open">>),
    receive {awaited, R} -> {ok, [<<"x">>, <<"open">>]} = R
    after 5000 -> error({no_await, Awaiter})
    end,
    ?assertEqual([], ets:tab2list(Waiters)).

describe_list_count(_Config) ->
    {ok, 0} = aion:count(#{}),
    {ok, #{workflow_id := Wid, run_id := RunId}} =
        aion:start(?W, #{kind => switch, gate => <<"d">>},
                   #{id => <<"order-1">>, search_attributes => #{customer => <<"acme">>,
                                                                  total => 42}}),
    {Pid, 1} = aion_ct:gate_wait(<<"d">>),
    {ok, D} = aion:describe(Wid),
    #{workflow_id := <<"order-1">>, run_id := RunId, type := ?W, status := running,
      residency := resident, closed_at := null, parent := null, stuck_reason := null,
      search_attributes := #{<<"customer">> := <<"acme">>, <<"total">> := 42},
      pending_activities := [#{activity_id := <<"2">>, attempt := 1,
                               name := <<"aion_test_activities:gate">>}],
      pending_timers := [], pending_children := []} = D,
    ?assert(maps:get(history_length, D) >= 4),
    _ = start(#{kind => noop}),
    aion_ct:wait_until(fun() -> aion:count(#{status => completed}) =:= {ok, 1} end, 5000),
    {ok, 2} = aion:count(#{}),
    {ok, 1} = aion:count(#{status => running}),
    {ok, 2} = aion:count(#{status => [running, completed]}),
    {ok, [#{workflow_id := <<"order-1">>, status := running}]} =
        aion:list(#{status => running}),
    {ok, [#{workflow_id := <<"order-1">>}]} =
        aion:list(#{search => [{customer, '=', <<"acme">>}, {total, '>', 40}]}),
    {ok, []} = aion:list(#{search => [{customer, '=', <<"other">>}]}),
    {ok, 2} = aion:count(#{type => ?W}),
    {ok, [_]} = aion:list(#{limit => 1}),
    {error, {invalid_option, bogus}} = aion:list(#{bogus => 1}),
    {error, {invalid_option, status}} = aion:count(#{status => sleeping}),
    aion_ct:release(Pid, <<"go">>),
    {ok, _} = aion:await(Wid, 5000),
    {ok, #{status := completed, residency := suspended, pending_activities := [],
           closed_at := Closed}} = aion:describe(Wid),
    true = is_integer(Closed),
    {ok, [#{seq := 1, type := workflow_started} | _]} = aion:history(Wid, #{run_id => RunId}),
    {error, not_found} = aion:history(Wid, #{run_id => <<"other">>}),
    {ok, [#{seq := 3} | _]} = aion:history(Wid, #{from_seq => 3}),
    {error, not_found} = aion:describe(<<"nope">>),
    {error, not_found} = aion:history(<<"nope">>).

sleep_fires(_Config) ->
    {Wid, FireAt, _FiredAt} = sleep_and_fire(200, 5000),
    [_, #{recorded_at := At} | _] = aion_ct:history(Wid),
    ?assertEqual(At + 200, FireAt).

%% Horizon 200 ms: a 1,000 ms sleep is not kept in memory when it starts; the
%% periodic scans (reading rows new to the horizon) pick it up and it fires.
sleep_beyond_horizon(_Config) ->
    _ = sleep_and_fire(1000, 10000),
    ?assertEqual(0, aion_timers:armed(aion_ctx:get(aion_default))).

%% Starts a workflow sleeping Ms, awaits it (TimeoutMs) and checks its history: one
%% timer `t1', fired no earlier than its fire_at. Returns {Wid, FireAt, FiredAt}.
sleep_and_fire(Ms, TimeoutMs) ->
    Wid = start(#{kind => sleep, ms => Ms}),
    {ok, Elapsed} = aion:await(Wid, TimeoutMs),
    true = Elapsed >= Ms,
    [workflow_started, timer_started, timer_fired, workflow_completed] =
        aion_ct:types(aion_ct:history(Wid)),
    [_, #{timer_id := <<"t1">>, fire_at := FireAt},
     #{timer_id := <<"t1">>, recorded_at := FiredAt}, _] = aion_ct:history(Wid),
    ?assert(FiredAt >= FireAt),
    {Wid, FireAt, FiredAt}.

wait_any_history_order(_Config) ->
    %% The activity settles first: position 2; the timer is then cancelled.
    W1 = start(#{kind => race_timer_loses}),
    {ok, [2, [<<"ok">>, <<"fast">>]]} = aion:await(W1, 5000),
    H1 = aion_ct:history(W1),
    [#{seq := Done}] = [E || #{type := activity_completed} = E <- H1],
    [] = [E || #{type := timer_fired} = E <- H1],
    [#{seq := Cancelled}] = [E || #{type := timer_cancelled} = E <- H1],
    true = Done < Cancelled,
    %% The timer fires while the activity is held: position 1.
    W2 = start(#{kind => race_timer_wins, gate => <<"r">>}),
    {Pid, 1} = aion_ct:gate_wait(<<"r">>),
    aion_ct:wait_until(fun() -> lists:member(timer_fired, aion_ct:types(aion_ct:history(W2)))
                       end, 5000),
    aion_ct:release(Pid, <<"late">>),
    {ok, [1, <<"ok">>, <<"late">>]} = aion:await(W2, 5000),
    H2 = aion_ct:history(W2),
    [#{seq := Fired}] = [E || #{type := timer_fired} = E <- H2],
    [#{seq := Completed}] = [E || #{type := activity_completed} = E <- H2],
    true = Fired < Completed.

cancelled_timer_never_fires(_Config) ->
    Wid = start(#{kind => cancel_timer}),
    {ok, [<<"error">>, <<"cancelled">>]} = aion:await(Wid, 5000),
    H = aion_ct:history(Wid),
    [workflow_started, timer_started, timer_cancelled, timer_started, timer_fired,
     workflow_completed] = aion_ct:types(H),
    [#{timer_id := <<"t1">>}] = [E || #{type := timer_cancelled} = E <- H],
    [#{timer_id := <<"t2">>}] = [E || #{type := timer_fired} = E <- H].

parallel_and_wait_all(_Config) ->
    Wid = start(#{kind => parallel, n => 5}),
    {ok, [2, 4, 6, 8, 10]} = aion:await(Wid, 5000),
    W2 = start(#{kind => wait_all_fails}),
    {ok, [[<<"error">>, <<"activity_failed">>, <<"nope">>],
          [<<"error">>, <<"activity_cancelled">>]]} = aion:await(W2, 5000),
    H = aion_ct:history(W2),
    [#{activity_id := <<"3">>}] = [E || #{type := activity_cancelled} = E <- H],
    [#{activity_id := <<"2">>, final := true}] = [E || #{type := activity_failed} = E <- H],
    %% nothing stays retained in the mailbox once no await is pending
    #{mailbox := Mb} = aion_ctx:get(aion_default),
    0 = aion_mailbox:count(Mb).

%% A run rebuilt from history (engine stopped and started again: a new process
%% replays) sees the same now(), random(), uniform(), uuid() and side effect values
%% as the live run did.
replay_is_deterministic(Config) ->
    Wid = start(#{kind => determinism, gate => <<"det">>}),
    Live = receive {report, <<"values">>, V} -> V after 5000 -> error(no_report) end,
    {_, 1} = aion_ct:gate_wait(<<"det">>),
    ok = aion_engine:stop(aion_default),
    _ = aion_ct:start_engine(aion_default, ?config(db, Config)),
    {Pid2, 2} = aion_ct:gate_wait(<<"det">>),
    aion_ct:release(Pid2, <<"go">>),
    {ok, #{<<"before">> := Replayed, <<"after">> := [_, R2, U2]}} = aion:await(Wid, 5000),
    ?assertEqual(Live, Replayed),
    [_Now, R1, _Uni, U1, _Side] = Live,
    true = is_float(R1) andalso R1 >= 0.0 andalso R1 < 1.0,
    true = R1 =/= R2,
    true = U1 =/= U2,
    36 = byte_size(U1),
    %% the report activity ran once: replay did not execute it again
    receive {report, _, _} -> error(report_ran_twice) after 0 -> ok end.

%% Changing the activity at a recorded position makes the run stuck (nothing
%% recorded, reason visible in describe/1 and list/1); restoring the code and
%% aion:retry/1 completes it.
nondeterminism_stuck_then_retry(Config) ->
    Wid = start(#{kind => switch, gate => <<"nd">>}),
    {_, 1} = aion_ct:gate_wait(<<"nd">>),
    ok = aion_engine:stop(aion_default),
    persistent_term:put({aion_test, switch}, changed),
    _ = aion_ct:start_engine(aion_default, ?config(db, Config)),
    %% the gate activity is re-dispatched by recovery (attempt 2) regardless
    {GatePid, 2} = aion_ct:gate_wait(<<"nd">>),
    {ok, D} = aion_ct:wait_until(fun() ->
                                         case aion:describe(Wid) of
                                             {ok, #{status := stuck}} = R -> R;
                                             _ -> false
                                         end
                                 end, 5000),
    #{stuck_reason := #{kind := nondeterminism, seq := 2,
                        expected := #{command := activity,
                                      name := <<"aion_test_activities:echo">>},
                        got := #{command := activity,
                                 name := <<"aion_test_activities:echo2">>}},
      residency := suspended} = D,
    HLen = maps:get(history_length, D),
    {ok, [#{status := stuck, stuck_reason := #{kind := nondeterminism}}]} =
        aion:list(#{status => stuck}),
    %% nothing was recorded by the stuck replay
    ?assertEqual(HLen, length(aion_ct:history(Wid))),
    {error, not_found} = aion:retry(<<"nope">>),
    persistent_term:put({aion_test, switch}, original),
    ok = aion:retry(Wid),
    aion_ct:release(GatePid, <<"fixed">>),
    {ok, [<<"x">>, <<"fixed">>]} = aion:await(Wid, 5000),
    {ok, #{status := completed, stuck_reason := null}} = aion:describe(Wid),
    {error, {bad_status, completed}} = aion:retry(Wid).

bad_input_records_nothing(_Config) ->
    _ = start(#{kind => noop}),
    aion_ct:wait_until(fun() -> aion:count(#{status => completed}) =:= {ok, 1} end, 5000),
    {ok, Before} = aion:list(#{}),
    {error, {unknown_workflow_type, no_such_module}} = aion:start(no_such_module, #{}, #{}),
    {error, {unknown_workflow_type, lists}} = aion:start(lists, #{}, #{}),
    {error, {unknown_workflow_type, "str"}} = aion:start("str", #{}, #{}),
    {error, {invalid_payload, [<<"a">>], _}} = aion:start(?W, #{a => {1, 2}}, #{}),
    {error, {invalid_payload, [], _}} = aion:start(?W, self(), #{}),
    {error, {invalid_payload, [1], _}} = aion:start(?W, [1, fun() -> ok end], #{}),
    {error, {invalid_payload, _, _}} = aion:start(?W, <<255, 0>>, #{}),
    {error, {invalid_option, bogus}} = aion:start(?W, #{kind => noop}, #{bogus => 1}),
    {error, {invalid_option, id_reuse_policy}} =
        aion:start(?W, #{kind => noop}, #{id_reuse_policy => sometimes}),
    {error, {invalid_option, id_conflict_policy}} =
        aion:start(?W, #{kind => noop}, #{id_conflict_policy => merge}),
    {error, {invalid_option, run_timeout}} = aion:start(?W, #{kind => noop}, #{run_timeout => -5}),
    {error, {invalid_option, execution_timeout}} =
        aion:start(?W, #{kind => noop}, #{execution_timeout => 1.5}),
    {error, {invalid_option, id}} = aion:start(?W, #{kind => noop}, #{id => "list"}),
    {error, {invalid_option, task_queue}} = aion:start(?W, #{kind => noop}, #{task_queue => q}),
    {error, {invalid_option, search_attributes}} =
        aion:start(?W, #{kind => noop}, #{search_attributes => [1]}),
    {error, {invalid_payload, [<<"search_attributes">>, <<"p">>], _}} =
        aion:start(?W, #{kind => noop}, #{search_attributes => #{p => self()}}),
    {error, {invalid_option, options}} = aion:start(?W, #{kind => noop}, not_a_map),
    {ok, Before} = aion:list(#{}),
    {ok, 1} = aion:count(#{}),
    %% no workflow process was left behind by the refused starts
    #{runs := Runs} = aion_ctx:get(aion_default),
    aion_ct:wait_until(fun() -> ets:info(Runs, size) =:= 0 end, 5000),
    [] = supervisor:which_children(aion_ctx:proc_name(aion_default, run_sup)).

id_reuse_and_conflict(_Config) ->
    Opts = #{id => <<"w">>},
    {ok, #{run_id := R1}} = aion:start(?W, #{kind => switch, gate => <<"c">>}, Opts),
    {Pid, 1} = aion_ct:gate_wait(<<"c">>),
    {error, {already_started, R1}} = aion:start(?W, #{kind => noop}, Opts),
    {ok, #{workflow_id := <<"w">>, run_id := R1}} =
        aion:start(?W, #{kind => noop}, Opts#{id_conflict_policy => use_existing}),
    aion_ct:release(Pid, <<"done">>),
    {ok, _} = aion:await(<<"w">>, 5000),
    {error, {already_started, R1}} =
        aion:start(?W, #{kind => noop}, Opts#{id_reuse_policy => reject_duplicate}),
    {error, {already_started, R1}} =
        aion:start(?W, #{kind => noop}, Opts#{id_reuse_policy => allow_duplicate_failed_only}),
    {ok, #{run_id := R2}} = aion:start(?W, #{kind => fail}, Opts),
    true = R2 =/= R1,
    {error, {failed, boom}} = aion:await(<<"w">>, 5000),
    {ok, #{run_id := R3}} =
        aion:start(?W, #{kind => noop}, Opts#{id_reuse_policy => allow_duplicate_failed_only}),
    {ok, <<"done">>} = aion:await(<<"w">>, 5000),
    {ok, #{run_id := R3}} = aion:describe(<<"w">>),
    {ok, 3} = aion:count(#{workflow_id => <<"w">>}),
    %% an older run stays readable
    {ok, [#{type := workflow_started} | _]} = aion:history(<<"w">>, #{run_id => R1}).

info_and_misuse(_Config) ->
    {ok, #{workflow_id := Wid, run_id := RunId}} = aion:start(?W, #{kind => info}, #{}),
    {ok, #{<<"workflow_id">> := Wid, <<"run_id">> := RunId, <<"attempt">> := 1,
           <<"cancel_requested">> := false}} = aion:await(Wid, 5000),
    ?assertError(not_in_workflow, aion_workflow:now()),
    ?assertError(not_in_workflow, aion_workflow:sleep(1)),
    ?assertError(not_in_workflow, aion_workflow:execute_activity({m, f}, [], #{})),
    ?assertError(not_in_workflow, aion_workflow:side_effect(fun() -> 1 end)),
    ?assertError({engine_not_running, nope}, aion:start(?W, #{}, #{engine => nope})).

%% run_timeout / execution_timeout are durable deadlines written at start; on
%% expiry the run is timed_out and its process is gone.
run_deadlines(_Config) ->
    {ok, #{workflow_id := W1}} = aion:start(?W, #{kind => sleep, ms => 600000},
                                            #{run_timeout => 200}),
    {error, timed_out} = aion:await(W1, 5000),
    [#{type := workflow_timed_out, kind := <<"run_timeout">>} | _] =
        lists:reverse(aion_ct:history(W1)),
    {ok, #{status := timed_out, residency := suspended}} = aion:describe(W1),
    {ok, #{workflow_id := W2}} = aion:start(?W, #{kind => switch, gate => <<"x">>},
                                            #{execution_timeout => 200}),
    {_, 1} = aion_ct:gate_wait(<<"x">>),
    {error, timed_out} = aion:await(W2, 5000),
    {ok, #{status := timed_out, pending_activities := []}} = aion:describe(W2),
    %% a run that finishes in time is not timed out later
    {ok, #{workflow_id := W3}} = aion:start(?W, #{kind => noop},
                                            #{run_timeout => 100, execution_timeout => 100}),
    {ok, <<"done">>} = aion:await(W3, 5000),
    {ok, #{status := completed}} = aion:describe(W3).

%% A workflow_cancel_requested event (recorded and delivered the way the client's
%% cancel does it) makes the pending blocking primitive return {error, {cancelled,
%% Reason}}, every later one too, except inside non_cancellable/1; the run ends
%% cancelled.
cancel_request_observed(_Config) ->
    {ok, #{workflow_id := Wid, run_id := RunId}} = aion:start(?W, #{kind => cancellable}, #{}),
    aion_ct:wait_until(fun() -> lists:member(timer_started, aion_ct:types(aion_ct:history(Wid)))
                       end, 5000),
    #{store := Store} = Ctx = aion_ctx:get(aion_default),
    Row = aion_event:encode_row(workflow_cancel_requested, erlang:system_time(millisecond),
                                #{reason => <<"stop">>}),
    {ok, [[Seq]]} = aion_store:append(Store, [#{run_id => RunId, events => [Row]}]),
    {T, At, D} = Row,
    ok = aion_deliver:events(Ctx, RunId, [{Seq, T, At, D}]),
    {error, {cancelled, <<"stop">>}} = aion:await(Wid, 5000),
    receive
        {report, <<"cancel">>, V} ->
            [[<<"error">>, <<"cancelled">>, <<"stop">>], true,
             [<<"error">>, <<"cancelled">>, <<"stop">>]] = V
    after 5000 -> error(no_report)
    end,
    H = aion_ct:history(Wid),
    #{type := workflow_cancelled, reason := <<"stop">>} = lists:last(H),
    [#{timer_id := <<"t1">>} | _] = [E || #{type := timer_cancelled} = E <- H],
    {ok, #{status := cancelled}} = aion:describe(Wid).

%% A closing run whose heaps are small collects them before it waits for its commit:
%% while another connection holds SQLite's write lock the run waits in the store
%% append with its garbage gone, then completes once the lock is released.
close_waits_collected(Config) ->
    {ok, Sql} = aion_sql:open(?config(db, Config)),
    ok = aion_sql:exec(Sql, <<"BEGIN IMMEDIATE">>),
    Self = self(),
    Starter = spawn_link(fun() ->
                                 Self ! {started, aion:start(?W, #{kind => garbage, n => 1500}, #{})}
                         end),
    Pid = receive {garbage_wf, P} -> P after 5000 -> error(no_workflow) end,
    Waiting = fun() ->
                      case erlang:process_info(Pid, [current_function, status, total_heap_size]) of
                          [{current_function, {aion_store_sqlite, append, 3}}, {status, waiting},
                           {total_heap_size, W}] -> W;
                          _ -> false
                      end
              end,
    Words = aion_ct:wait_until(Waiting, 5000),
    ct:pal("heaps of the waiting run: ~b words", [Words]),
    %% 1,500 list cells are 3,000 words of garbage (4,185 words of heaps without the
    %% collection); the state left is ~610 words
    ?assert(Words < 2000, {total_heap_size, Words}),
    ok = aion_sql:exec(Sql, <<"ROLLBACK">>),
    ok = aion_sql:close(Sql),
    {ok, #{workflow_id := Wid}} = receive {started, R} -> R after 10000 -> error(no_start) end,
    {ok, 1500} = aion:await(Wid, 5000),
    unlink(Starter).

%% A run blocked longer than 100 ms (aion_run's ?IDLE_GC) waits at high priority, so
%% its wake runs before the normal work queued; once woken its code runs at normal
%% priority again.
long_wait_at_high_priority(_Config) ->
    {ok, #{workflow_id := Wid}} = aion:start(?W, #{kind => priority}, #{}),
    Pid = receive {priority_wf, P} -> P after 5000 -> error(no_workflow) end,
    High = fun() -> erlang:process_info(Pid, priority) =:= {priority, high} end,
    true = aion_ct:wait_until(High, 5000),
    ok = aion:signal(Wid, <<"go">>, null),
    {priority, normal} = receive {woken, Prio} -> Prio after 5000 -> error(not_woken) end,
    {ok, <<"woken">>} = aion:await(Wid, 5000).
