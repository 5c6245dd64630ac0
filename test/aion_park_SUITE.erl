%% Parked workflows (issue 7): eviction after `idle_evict_after', rehydration on
%% every kind of arrival, `max_resident', the rehydration limit, and lazy recovery
%% after `kill -9' of a node holding 10,000 parked runs.
-module(aion_park_SUITE).

-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-export([suite/0, all/0, init_per_suite/1, end_per_suite/1, init_per_testcase/2,
         end_per_testcase/2]).
-export([evict_sleeping_run_timer_fires/1, evict_signal_waiter/1,
         evict_while_activity_runs/1, evict_parent_child_completes/1,
         query_suspended_run/1, cancel_suspended_run/1,
         terminate_suspended_run/1, concurrent_arrivals_one_process/1,
         eviction_races_arrivals/1, max_resident_evicts_longest_idle/1,
         rehydration_limit/1, default_never_evicts/1, idle_releases_bookkeeping/1,
         kill9_with_10k_parked/1]).
-export([child_main/2]).

-define(W, aion_park_wf).
-define(E, park_engine).

suite() ->
    [{timetrap, {minutes, 5}}].

all() ->
    [evict_sleeping_run_timer_fires, evict_signal_waiter, evict_while_activity_runs,
     evict_parent_child_completes,
     query_suspended_run, cancel_suspended_run, terminate_suspended_run,
     concurrent_arrivals_one_process, eviction_races_arrivals,
     max_resident_evicts_longest_idle, rehydration_limit, default_never_evicts,
     idle_releases_bookkeeping, kill9_with_10k_parked].

init_per_suite(Config) -> aion_ct:init_per_suite(Config).

end_per_suite(Config) -> aion_ct:end_per_suite(Config).

init_per_testcase(Case, Config) ->
    [{db, aion_ct:db_path(Config, "park_" ++ atom_to_list(Case) ++ ".db")} | Config].

end_per_testcase(_Case, _Config) ->
    aion_ct:stop_engine(?E),
    ok.

%%% ===========================================================================

evict_sleeping_run_timer_fires(Config) ->
    start(Config, #{idle_evict_after => 100}),
    start_wf(<<"sleeper">>, #{kind => sleep, ms => 1500}),
    wait_suspended(<<"sleeper">>),
    {ok, #{status := running, pending_timers := [_]}} = describe(<<"sleeper">>),
    {ok, <<"woke">>} = aion:await(<<"sleeper">>, 10000, #{engine => ?E}),
    ?assertEqual([workflow_started, timer_started, timer_fired, workflow_completed],
                 types(<<"sleeper">>)).

evict_signal_waiter(Config) ->
    start(Config, #{idle_evict_after => 100}),
    start_wf(<<"waiter">>, #{kind => signal}),
    wait_suspended(<<"waiter">>),
    ok = aion:signal(<<"waiter">>, <<"go">>, 42, #{engine => ?E}),
    {ok, 42} = aion:await(<<"waiter">>, 10000, #{engine => ?E}),
    ?assertEqual([workflow_started, signal_received, workflow_completed],
                 types(<<"waiter">>)).

%% The process is evicted while its activity runs; the outcome brings it back and
%% the activity is not run again.
evict_while_activity_runs(Config) ->
    start(Config, #{idle_evict_after => 50}),
    Gate = atom_to_binary(?FUNCTION_NAME),
    register(aion_test_sink, self()),
    start_wf(<<"gated">>, #{kind => gated, gate => Gate}),
    {Pid, 1} = aion_ct:gate_wait(Gate),
    wait_suspended(<<"gated">>),
    aion_ct:release(Pid, <<"late">>),
    {ok, <<"late">>} = aion:await(<<"gated">>, 10000, #{engine => ?E}),
    H = aion_ct:history(<<"gated">>, #{engine => ?E}),
    ?assertEqual(1, length([E || #{type := activity_scheduled} = E <- H])).

%% Parent and child both suspended; the child's outcome brings the parent back.
evict_parent_child_completes(Config) ->
    start(Config, #{idle_evict_after => 100}),
    start_wf(<<"parent">>, #{kind => parent, child => <<"child">>}),
    aion_ct:wait_until(fun() -> describe(<<"child">>) =/= {error, not_found} end, 5000),
    wait_suspended(<<"parent">>),
    wait_suspended(<<"child">>),
    ok = aion:signal(<<"child">>, <<"go">>, 5, #{engine => ?E}),
    {ok, 5} = aion:await(<<"child">>, 10000, #{engine => ?E}),
    {ok, 5} = aion:await(<<"parent">>, 10000, #{engine => ?E}),
    ?assertEqual([workflow_started, child_workflow_started, child_workflow_completed,
                  workflow_completed], types(<<"parent">>)).

query_suspended_run(Config) ->
    start(Config, #{idle_evict_after => 100}),
    start_wf(<<"counter">>, #{kind => counter, n => 3}),
    ok = aion:signal(<<"counter">>, <<"inc">>, 1, #{engine => ?E}),
    ok = aion:signal(<<"counter">>, <<"inc">>, 1, #{engine => ?E}),
    aion_ct:wait_until(fun() -> length([x || signal_received <- types(<<"counter">>)]) =:= 2
                       end, 5000),
    wait_suspended(<<"counter">>),
    %% The run is rebuilt by replay to answer.
    {ok, 2} = aion:query(<<"counter">>, <<"count">>, [], 5000, #{engine => ?E}),
    wait_suspended(<<"counter">>),
    ok = aion:signal(<<"counter">>, <<"inc">>, 1, #{engine => ?E}),
    {ok, 3} = aion:await(<<"counter">>, 10000, #{engine => ?E}).

cancel_suspended_run(Config) ->
    start(Config, #{idle_evict_after => 100}),
    start_wf(<<"cancel-me">>, #{kind => signal}),
    wait_suspended(<<"cancel-me">>),
    ok = aion:cancel(<<"cancel-me">>, <<"stop">>, #{engine => ?E}),
    {error, _} = aion:await(<<"cancel-me">>, 10000, #{engine => ?E}),
    {ok, #{status := St}} = describe(<<"cancel-me">>),
    ?assert(lists:member(St, [cancelled, failed])).

terminate_suspended_run(Config) ->
    start(Config, #{idle_evict_after => 100}),
    start_wf(<<"term">>, #{kind => signal}),
    wait_suspended(<<"term">>),
    ok = aion:terminate(<<"term">>, <<"bye">>, #{engine => ?E}),
    {ok, #{status := terminated, residency := suspended}} = describe(<<"term">>),
    %% A signal to a closed run does not bring it back.
    {error, _} = aion:signal(<<"term">>, <<"go">>, 1, #{engine => ?E}),
    0 = resident().

%% Arrivals racing for one suspended run start one process.
concurrent_arrivals_one_process(Config) ->
    start(Config, #{idle_evict_after => 3000}),
    start_wf(<<"herd">>, #{kind => counter, n => 20}),
    wait_suspended(<<"herd">>, 10000),
    #{rehydrated := R0} = aion_residency:stats(aion_ctx:get(?E)),
    Self = self(),
    Pids = [spawn_link(fun() ->
                               ok = aion:signal(<<"herd">>, <<"inc">>, I, #{engine => ?E}),
                               Self ! {sent, self()}
                       end) || I <- lists:seq(1, 20)],
    [receive {sent, P} -> ok end || P <- Pids],
    {ok, 20} = aion:await(<<"herd">>, 10000, #{engine => ?E}),
    #{rehydrated := R1} = aion_residency:stats(aion_ctx:get(?E)),
    ?assertEqual(1, R1 - R0).

%% Eviction after 1 ms of idleness: nearly every signal finds the process evicting
%% or evicted; none is lost, none consumed twice.
eviction_races_arrivals(Config) ->
    start(Config, #{idle_evict_after => 1}),
    N = 200,
    start_wf(<<"racy">>, #{kind => counter, n => N}),
    lists:foreach(fun(I) ->
                          ok = aion:signal(<<"racy">>, <<"inc">>, I, #{engine => ?E}),
                          case I rem 7 of
                              0 -> receive after 2 -> ok end;   % let it evict
                              _ -> ok
                          end
                  end, lists:seq(1, N)),
    {ok, N} = aion:await(<<"racy">>, 30000, #{engine => ?E}),
    ?assertEqual(N, length([x || signal_received <- types(<<"racy">>)])).

max_resident_evicts_longest_idle(Config) ->
    start(Config, #{max_resident => 5}),
    Ids = [<<"m", (integer_to_binary(I))/binary>> || I <- lists:seq(1, 20)],
    lists:foreach(fun(Id) ->
                          start_wf(Id, #{kind => signal}),
                          %% blocked before the next starts (idle order = start order)
                          aion_ct:wait_until(fun() -> blocked(Id) end, 5000)
                  end, Ids),
    aion_ct:wait_until(fun() -> resident() =< 5 end, 10000),
    %% the newest stayed, the oldest went
    {ok, #{residency := suspended}} = describe(<<"m1">>),
    {ok, #{residency := resident}} = describe(<<"m20">>),
    [ok = aion:signal(Id, <<"go">>, Id, #{engine => ?E}) || Id <- Ids],
    [{ok, Id} = aion:await(Id, 10000, #{engine => ?E}) || Id <- Ids],
    ok.

%% A herd of timers for parked runs, at most 2 rehydrating at once: all complete.
rehydration_limit(Config) ->
    start(Config, #{idle_evict_after => 50, max_rehydrations => 2}),
    Ids = [<<"t", (integer_to_binary(I))/binary>> || I <- lists:seq(1, 40)],
    [start_wf(Id, #{kind => sleep, ms => 1000}) || Id <- Ids],
    [{ok, <<"woke">>} = aion:await(Id, 20000, #{engine => ?E}) || Id <- Ids],
    #{rehydrated := R, queued := 0, rehydrating := 0} =
        aion_residency:stats(aion_ctx:get(?E)),
    ?assert(R >= 1).

%% With the default (`infinity') a blocked run keeps its process.
default_never_evicts(Config) ->
    start(Config, #{}),
    start_wf(<<"stay">>, #{kind => signal}),
    aion_ct:wait_until(fun() -> blocked(<<"stay">>) end, 5000),
    {ok, #{residency := resident}} = describe(<<"stay">>),
    ok = aion:signal(<<"stay">>, <<"go">>, 1, #{engine => ?E}),
    {ok, 1} = aion:await(<<"stay">>, 5000, #{engine => ?E}).

%% A resident process blocked for a while (no eviction configured) gives back its
%% mailbox record and its `wids' await hint; arrivals still wake it, and
%% `aion:await/2' by workflow id still finds the run (through the store).
idle_releases_bookkeeping(Config) ->
    start(Config, #{}),
    #{mailbox := Mb, wids := Wids} = aion_ctx:get(?E),
    start_wf(<<"idle">>, #{kind => signal}),
    aion_ct:wait_until(fun() -> blocked(<<"idle">>) end, 5000),
    #{runs := Runs} = aion_ctx:get(?E),
    {ok, #{run_id := RunId}} = describe(<<"idle">>),
    [{_, Pid}] = ets:lookup(Runs, RunId),
    aion_ct:wait_until(fun() -> aion_mailbox:epoch(Mb, Pid) =:= 0 andalso
                                    ets:lookup(Wids, <<"idle">>) =:= [] end, 5000),
    {ok, #{residency := resident, status := running}} = describe(<<"idle">>),
    Self = self(),
    Awaiter = spawn_link(fun() -> Self ! {awaited, aion:await(<<"idle">>, 10000,
                                                               #{engine => ?E})} end),
    ok = aion:signal(<<"idle">>, <<"go">>, 7, #{engine => ?E}),
    receive {awaited, R} -> ?assertEqual({ok, 7}, R)
    after 15000 -> error({no_await_answer, Awaiter})
    end,
    ?assertEqual([workflow_started, signal_received, workflow_completed], types(<<"idle">>)).

%%% ===========================================================================
%%% kill -9 with 10,000 parked runs

-define(PARKED, 10000).
-define(DUE, 10).

kill9_with_10k_parked(Config) ->
    Db = ?config(db, Config),
    ok = aion_test_node:run_until_killed(?MODULE, child_main, [Db, ?PARKED],
                                          <<"parked">>, 240000),
    %% Restart on the same database: nothing is resident but what is due.
    start(Config, #{}),
    Ctx = aion_ctx:get(?E),
    {error, unknown_call} = gen_server:call(aion_ctx:proc_name(?E, recovery), sync),
    Max = watch_resident(<<"due", (integer_to_binary(?DUE))/binary>>, 0),
    ?assert(Max =< ?DUE),
    [{ok, <<"woke">>} = aion:await(<<"due", (integer_to_binary(I))/binary>>,
                                   20000, #{engine => ?E}) || I <- lists:seq(1, ?DUE)],
    %% Signal 100 of the signal waiters: each comes back and completes.
    Sig = [<<"sig", (integer_to_binary(I))/binary>> || I <- lists:seq(1, 100)],
    [ok = aion:signal(Id, <<"go">>, 1, #{engine => ?E}) || Id <- Sig],
    [{ok, 1} = aion:await(Id, 20000, #{engine => ?E}) || Id <- Sig],
    {ok, Running} = aion:count(#{status => running, engine => ?E}),
    ?assertEqual(?PARKED - ?DUE - 100, Running),
    {ok, #{residency := suspended, status := running}} = describe(<<"hour1">>),
    {ok, #{residency := suspended, status := running}} = describe(<<"sig200">>),
    ?assertEqual(0, maps:get(resident, aion_residency:stats(Ctx))).

%% Samples the resident count until `LastDue' completed; returns the largest seen.
watch_resident(LastDue, Max) ->
    M = max(Max, resident()),
    case describe(LastDue) of
        {ok, #{status := completed}} -> M;
        _ -> receive after 5 -> watch_resident(LastDue, M) end
    end.

%% The child node: 10,000 runs blocked on a signal or a 1-hour timer, plus ?DUE
%% whose 3-second timers fall due after the kill; all evicted, then "parked".
child_main(Db, N) ->
    try
        ok = application:load(aion),
        ok = application:set_env(aion, start_default_engine, false),
        {ok, _} = application:ensure_all_started(aion),
        {ok, _} = aion_engine:start(#{name => ?E, db_path => Db, idle_evict_after => 200,
                                      synchronous => normal}),
        Start = fun(Id, Input) ->
                        {ok, _} = aion:start(?W, Input, #{id => Id, engine => ?E})
                end,
        Half = (N - ?DUE) div 2,
        Jobs = [{<<"due", (integer_to_binary(I))/binary>>,
                 #{kind => parked, wait => timer, ms => 3000}} || I <- lists:seq(1, ?DUE)]
            ++ [{<<"sig", (integer_to_binary(I))/binary>>, #{kind => parked, wait => signal}}
                || I <- lists:seq(1, Half)]
            ++ [{<<"hour", (integer_to_binary(I))/binary>>,
                 #{kind => parked, wait => timer, ms => 3600000}}
                || I <- lists:seq(1, N - ?DUE - Half)],
        pmap(fun({Id, In}) -> Start(Id, In) end, Jobs, 32),
        Ctx = aion_ctx:get(?E),
        aion_ct:wait_until(fun() -> maps:get(resident, aion_residency:stats(Ctx)) =:= 0 end,
                           120000, 20),
        io:format("parked~n"),
        receive after infinity -> ok end
    catch C:R:St ->
            io:format("child failed: ~p:~p ~p~n", [C, R, St]),
            halt(3)
    end.

pmap(F, Items, Par) ->
    Chunks = chunks(Items, (length(Items) + Par - 1) div Par),
    Self = self(),
    Pids = [spawn_link(fun() -> lists:foreach(F, C), Self ! {done, self()} end)
            || C <- Chunks],
    [receive {done, P} -> ok end || P <- Pids],
    ok.

chunks([], _) -> [];
chunks(L, N) when length(L) =< N -> [L];
chunks(L, N) -> {A, B} = lists:split(N, L), [A | chunks(B, N)].

%%% ===========================================================================

start(Config, Opts) ->
    aion_ct:start_engine(?E, ?config(db, Config), Opts).

start_wf(Id, Input) ->
    {ok, _} = aion:start(?W, Input, #{id => Id, engine => ?E}).

describe(Id) ->
    aion:describe(Id, #{engine => ?E}).

types(Id) ->
    aion_ct:types(aion_ct:history(Id, #{engine => ?E})).

resident() ->
    #{runs := Runs} = aion_ctx:get(?E),
    ets:info(Runs, size).

%% The run's process is registered and waiting in its blocking receive.
blocked(Id) ->
    case describe(Id) of
        {ok, #{run_id := RunId, residency := resident}} ->
            case aion_run:whereis(aion_ctx:get(?E), RunId) of
                undefined ->
                    false;
                Pid ->
                    case process_info(Pid, [status, current_function]) of
                        [{status, waiting}, {current_function, {aion_run, F, _}}] ->
                            F =:= arrival;
                        _ -> false
                    end
            end;
        _ ->
            false
    end.

wait_suspended(Id) ->
    wait_suspended(Id, 5000).

wait_suspended(Id, Timeout) ->
    aion_ct:wait_until(fun() ->
                               case describe(Id) of
                                   {ok, #{residency := suspended, status := running}} -> true;
                                   _ -> false
                               end
                       end, Timeout).
