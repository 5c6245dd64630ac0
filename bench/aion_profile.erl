%% @doc Profiling helpers for the hot path (bench only; see bench/RESULTS.md,
%% "Profile and recommendations"). Run one at a time in a fresh node, e.g.
%%   erl -noshell -pa _build/default/lib/aion/ebin -pa _build/bench/ebin \
%%       -pa _build/bench/shim -run aion_profile calls /tmp/p full hello 500
%%
%% - `calls Dir Sync Kind K': K sequential workflows; per-workflow call counts of
%%   every aion function (call_count tracing), store calls, messages sent.
%% - `timeline Dir Sync Kind K': K sequential workflows; mean wall time inside
%%   the engine's blocking calls (store appends/reads, dispatch, ...), per call.
%% - `eprof Dir Sync Kind C Secs': C concurrent clients for Secs under eprof
%%   (every process), top functions and per-module totals.
%% - `load Dir Sync Kind C Secs': C clients for Secs without tracing (for perf).
-module(aion_profile).

-export([calls/1, timeline/1, eprof/1, load/1]).

-define(WF, aion_bench_wf).

start([Dir, Sync | _]) ->
    ok = filelib:ensure_path(Dir),
    [file:delete(filename:join(Dir, F)) || F <- ["aion.db", "aion.db-wal", "aion.db-shm"]],
    ok = aion_bench:start_engine(Dir, list_to_existing_atom(Sync)).

once(Kind) ->
    {ok, #{workflow_id := Wid}} = aion:start(?WF, #{kind => list_to_binary(Kind)}, #{}),
    {ok, _} = aion:await(Wid, 60000),
    ok.

aion_modules() ->
    [M || {M, _} <- code:all_loaded(), lists:prefix("aion_", atom_to_list(M)) orelse M =:= aion,
          M =/= aion_bench, M =/= aion_profile, M =/= ?WF, M =/= aion_nif].

%% @doc Per-workflow call counts and messages.
-spec calls([string()]) -> no_return().
calls([_, _, Kind, KS] = Args) ->
    start(Args),
    K = list_to_integer(KS),
    [once(Kind) || _ <- lists:seq(1, 50)],              % warm-up, loads every module
    Mods = aion_modules() ++ [aion_nif, gen_server, proc_lib, supervisor, ets],
    [erlang:trace_pattern({M, '_', '_'}, true, [call_count]) || M <- Mods],
    Counter = spawn(fun() -> count_sends(0) end),
    erlang:trace(all, true, [call, send, {tracer, Counter}]),
    {Us, _} = timer:tc(fun() -> [once(Kind) || _ <- lists:seq(1, K)] end),
    erlang:trace(all, false, [call, send]),
    Counter ! {get, self()},
    Sends = receive {sends, S} -> S end,
    Counts = lists:reverse(lists:keysort(2,
               [{{M, F, A}, C} || M <- Mods, {F, A} <- M:module_info(functions),
                                  {call_count, C} <- [erlang:trace_info({M, F, A}, call_count)],
                                  is_integer(C), C > 0])),
    io:format("~b ~s workflows (sequential), ~.1f ms each under tracing; messages sent per "
              "workflow: ~.1f~n", [K, Kind, Us / K / 1000, Sends / K]),
    io:format("calls per workflow (aion, NIF stubs, gen_server, proc_lib, supervisor):~n"),
    [io:format("  ~8.2f  ~p:~p/~b~n", [C / K, M, F, A])
     || {{M, F, A}, C} <- Counts, C / K >= 0.5],
    halt(0).

count_sends(N) ->
    receive
        {trace, _, send, _, _} -> count_sends(N + 1);
        {get, From} -> From ! {sends, N};
        _ -> count_sends(N)
    end.

%% @doc Mean wall time per blocking call, sequential workflows.
-spec timeline([string()]) -> no_return().
timeline([_, _, Kind, KS] = Args) ->
    start(Args),
    K = list_to_integer(KS),
    [once(Kind) || _ <- lists:seq(1, 50)],
    MFAs = [{aion_store, append, 2}, {aion_store, history, 3}, {aion_store, get_run, 2},
            {aion_store, current_run, 2}, {aion_activity_runner, dispatch, 2},
            {aion_activity_runner, new_task, 1}, {aion_run_sup, start_new, 3},
            {aion_deliver, events, 3}, {aion_event, encode, 2}, {aion_event, decode, 1},
            {aion_json, encode_bin, 1}, {aion_json, decode, 1},
            {aion_activity_sup, start_executor, 2}, {aion_waiters, notify, 3},
            {aion, start, 3}, {aion, await, 2}, {aion_run, yield, 1},
            {aion_mailbox, take_all, 2}, {aion_mailbox, bump_epoch, 2},
            {aion_confirmer, watch, 4}],
    Me = self(),
    Tracer = spawn(fun() -> timeline_loop(#{}, #{}) end),
    [erlang:trace_pattern(MFA, [{'_', [], [{return_trace}]}], [local]) || MFA <- MFAs],
    erlang:trace(all, true, [call, monotonic_timestamp, {tracer, Tracer}]),
    T0 = erlang:monotonic_time(microsecond),
    [once(Kind) || _ <- lists:seq(1, K)],
    T1 = erlang:monotonic_time(microsecond),
    erlang:trace(all, false, [call]),
    Tracer ! {get, Me},
    Acc = receive {acc, A} -> A end,
    io:format("~b ~s workflows (sequential), ~.3f ms each (wall, under call tracing)~n",
              [K, Kind, (T1 - T0) / K / 1000]),
    io:format("  calls/wf   mean ms   total ms/wf  function (nested calls are included "
              "in their callers)~n"),
    [io:format("  ~8.2f  ~8.3f  ~8.3f  ~p:~p/~b~n",
               [N / K, Sum / N / 1000, Sum / K / 1000, M, F, Ar])
     || {{M, F, Ar}, {N, Sum}} <- lists:reverse(lists:keysort(2, maps:to_list(Acc)))],
    halt(0).

timeline_loop(Open, Acc) ->
    receive
        {trace_ts, Pid, call, {M, F, Args}, Ts} ->
            MFA = {M, F, length(Args)},
            timeline_loop(Open#{{Pid, MFA} => [Ts | maps:get({Pid, MFA}, Open, [])]}, Acc);
        {trace_ts, Pid, return_from, MFA, _, Ts} ->
            case maps:get({Pid, MFA}, Open, []) of
                [T | Rest] ->
                    {N, S} = maps:get(MFA, Acc, {0, 0}),
                    timeline_loop(Open#{{Pid, MFA} => Rest},
                                  Acc#{MFA => {N + 1, S + erlang:convert_time_unit(
                                                               Ts - T, native, microsecond)}});
                [] ->
                    timeline_loop(Open, Acc)
            end;
        {get, From} ->
            From ! {acc, Acc};
        _ ->
            timeline_loop(Open, Acc)
    end.

%% @doc eprof over every process while C clients run for Secs.
-spec eprof([string()]) -> no_return().
eprof([_, _, Kind, CS, SecsS] = Args) ->
    start(Args),
    C = list_to_integer(CS),
    Secs = list_to_integer(SecsS),
    _ = aion_bench:clients(C, 0, 1000, fun() -> once(Kind) end),   % warm-up
    {ok, _} = eprof:start(),
    profiling = eprof:start_profiling(erlang:processes(), {'_', '_', '_'},
                                      [{set_on_spawn, true}]),
    {N, _} = aion_bench:clients(C, 0, Secs * 1000, fun() -> once(Kind) end),
    profiling_stopped = eprof:stop_profiling(),
    io:format("~b ~s workflows in ~b s with ~b clients under eprof~n", [N, Kind, Secs, C]),
    eprof:log(filename:join(hd(Args), "eprof.txt")),
    eprof:analyze(total, [{sort, time}, {filter, [{time, float(Secs * 1000)}]}]),
    halt(0).

%% @doc Load without tracing (attach perf to this node's OS pid).
-spec load([string()]) -> no_return().
load([_, _, Kind, CS, SecsS] = Args) ->
    start(Args),
    io:format("os pid ~s~n", [os:getpid()]),
    Cnt = counters:new(1, []),
    {N, Lat} = aion_bench:clients(list_to_integer(CS), 1000,
                                  list_to_integer(SecsS) * 1000,
                                  fun() -> once(Kind), counters:add(Cnt, 1, 1) end),
    io:format("~b workflows, ~.1f/s, p50 ~.2f ms; ~b workflows in all~n",
              [N, N / list_to_integer(SecsS), aion_bench:pct(Lat, 0.5) / 1000,
               counters:get(Cnt, 1)]),
    halt(0).
