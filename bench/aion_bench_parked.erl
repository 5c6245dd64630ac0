%% @doc `make bench-parked' (issue 7): a million parked workflows.
%%
%% Phase 1 (a fresh node on a fresh database): starts `PARKED_N' workflows
%% (default 1,000,000) from 64 clients, half blocked on a signal, half on a 1-hour
%% timer, with `idle_evict_after' = `PARKED_IDLE' ms (default 1000) so their
%% processes are evicted; waits until none is resident; reports the start rate, the
%% node's BEAM memory and OS RSS, the BEAM bytes per suspended run, then signals
%% `PARKED_SIGNAL' (default 10,000) of them and reports the time until all of those
%% completed (each is rehydrated by replay). Phase 2 (another fresh node, same
%% database): reports the engine start time with all those parked runs in the
%% database and the resident count after recovery.
%%
%% Output: `RESULT name value unit' lines (also on stdout of `make bench-parked').
%% The workflow type is this module (`run/1').
-module(aion_bench_parked).
-behaviour(aion_workflow).

-export([main/0, phase1/1, phase2/1, run/1]).

-define(E, aion_default).
-define(CLIENTS, 64).

%%% ===========================================================================
%%% The workflow

%% @doc Blocks on a "go" signal or on a 1-hour timer.
-spec run(map()) -> {ok, term()}.
run(#{<<"wait">> := <<"signal">>}) ->
    aion_workflow:receive_signal(<<"go">>);
run(#{<<"wait">> := <<"timer">>}) ->
    ok = aion_workflow:sleep(3600000),
    {ok, <<"woke">>}.

%%% ===========================================================================
%%% Orchestrator

%% @doc Runs both phases, each in a fresh node; halts.
-spec main() -> no_return().
main() ->
    N = env_int("PARKED_N", 1000000),
    Dir = filename:join(os:getenv("TMPDIR", "/tmp"), "aion_parked_" ++ os:getpid()),
    ok = filelib:ensure_path(Dir),
    io:format("# parked_1m: ~b workflows, ~b cores, OTP ~s, db in ~s~n",
              [N, erlang:system_info(logical_processors_available),
               erlang:system_info(otp_release), Dir]),
    S1 = child(phase1, Dir),
    S2 = case S1 of 0 -> child(phase2, Dir); _ -> S1 end,
    case os:getenv("BENCH_KEEP", "") of
        "" -> _ = file:del_dir_r(Dir), ok;
        _ -> io:format("# database kept in ~s~n", [Dir])
    end,
    halt(S2).

child(Phase, Dir) ->
    Erl = os:find_executable("erl"),
    Pa = lists:append([["-pa", filename:dirname(code:which(M))] || M <- [aion, ?MODULE]]),
    Port = open_port({spawn_executable, Erl},
                     [{args, ["-noshell", "-noinput", "+P", "4000000" | Pa] ++
                           ["-run", ?MODULE_STRING, atom_to_list(Phase), Dir]},
                      {line, 4096}, exit_status, stderr_to_stdout, binary]),
    relay(Port).

relay(Port) ->
    receive
        {Port, {data, {eol, <<"RESULT ", R/binary>>}}} -> io:format("~s~n", [R]), relay(Port);
        {Port, {data, {eol, L}}} -> io:format("#   ~s~n", [L]), relay(Port);
        {Port, {data, {noeol, L}}} -> io:format("#   ~s", [L]), relay(Port);
        {Port, {exit_status, S}} -> S
    end.

%%% ===========================================================================
%%% Phase 1: park N runs, measure, signal some

%% @doc Phase 1 (see the module doc).
-spec phase1([string()]) -> no_return().
phase1([Dir]) ->
    guard(fun() -> do_phase1(Dir) end).

do_phase1(Dir) ->
    N = env_int("PARKED_N", 1000000),
    Idle = env_int("PARKED_IDLE", 1000),
    NSig = min(env_int("PARKED_SIGNAL", 10000), N div 2),
    start_engine(Dir, #{idle_evict_after => Idle}),
    Ctx = aion_ctx:get(?E),
    {Mem0, Rss0} = memory(),
    T0 = erlang:monotonic_time(millisecond),
    par(fun(I) ->
                Wait = case I rem 2 of 0 -> <<"signal">>; 1 -> <<"timer">> end,
                {ok, _} = aion:start(?MODULE, #{wait => Wait}, #{id => id(I)})
        end, N),
    T1 = erlang:monotonic_time(millisecond),
    result("parked_start_rate", round(N * 1000 / max(1, T1 - T0)), "workflows/s"),
    wait_until(fun() -> ets:info(maps:get(runs, Ctx), size) =:= 0 end, 3600000),
    T2 = erlang:monotonic_time(millisecond),
    result("parked_all_suspended_after", T2 - T0, "ms"),
    {Mem1, Rss1} = memory(),
    result("parked_node_beam_memory", Mem1 div (1024 * 1024), "MiB"),
    result("parked_node_rss", Rss1 div (1024 * 1024), "MiB"),
    result("parked_beam_bytes_per_suspended_run", round((Mem1 - Mem0) / N), "bytes"),
    result("parked_rss_bytes_per_suspended_run", round((Rss1 - Rss0) / N), "bytes"),
    %% Signal NSig of the signal waiters (even ids) and wait for them all to complete.
    T3 = erlang:monotonic_time(millisecond),
    par(fun(I) ->
                Id = id(2 * I),
                ok = aion:signal(Id, <<"go">>, I),
                {ok, I} = aion:await(Id, 600000)
        end, NSig),
    T4 = erlang:monotonic_time(millisecond),
    result("parked_rehydrate_complete_" ++ integer_to_list(NSig), T4 - T3, "ms"),
    result("parked_rehydrate_complete_rate", round(NSig * 1000 / max(1, T4 - T3)),
           "workflows/s"),
    {Mem2, Rss2} = memory(),
    result("parked_node_rss_after_signals", Rss2 div (1024 * 1024), "MiB"),
    result("parked_node_peak_rss", status_kb("VmHWM:") div 1024, "MiB"),
    _ = Mem2,
    ok = aion_engine:stop(?E),
    Bytes = filelib:file_size(filename:join(Dir, "aion.db")),
    result("parked_db_size", Bytes div (1024 * 1024), "MiB").

%%% ===========================================================================
%%% Phase 2: engine start with the parked runs in the database

%% @doc Phase 2 (see the module doc).
-spec phase2([string()]) -> no_return().
phase2([Dir]) ->
    guard(fun() -> do_phase2(Dir) end).

do_phase2(Dir) ->
    T0 = erlang:monotonic_time(millisecond),
    start_engine(Dir, #{}),
    %% Recovery's continue step has finished once this call is answered.
    {error, unknown_call} = gen_server:call(aion_ctx:proc_name(?E, recovery), sync,
                                            infinity),
    T1 = erlang:monotonic_time(millisecond),
    Ctx = aion_ctx:get(?E),
    result("parked_engine_start", T1 - T0, "ms"),
    result("parked_resident_after_start", ets:info(maps:get(runs, Ctx), size), "runs"),
    {ok, Running} = aion:count(#{status => running}),
    result("parked_runs_in_db", Running, "runs"),
    {_, Rss} = memory(),
    result("parked_node_rss_after_start", Rss div (1024 * 1024), "MiB"),
    result("parked_node_peak_rss_start", status_kb("VmHWM:") div 1024, "MiB"),
    ok = aion_engine:stop(?E).

%%% ===========================================================================

guard(F) ->
    Status = try F(), 0
             catch C:R:St -> io:format("crash ~p:~p~n~p~n", [C, R, St]), 1
             end,
    halt(Status).

start_engine(Dir, Opts) ->
    ok = application:load(aion),
    ok = application:set_env(aion, start_default_engine, false),
    {ok, _} = application:ensure_all_started(aion),
    {ok, _} = aion_engine:start(Opts#{name => ?E, db_path => filename:join(Dir, "aion.db")}),
    ok.

id(I) -> <<"p", (integer_to_binary(I))/binary>>.

%% F(I) for I in 1..N from ?CLIENTS processes.
par(F, N) ->
    Self = self(),
    Pids = [spawn_link(fun() -> par_loop(F, C, N), Self ! {done, self()} end)
            || C <- lists:seq(1, ?CLIENTS)],
    [receive {done, P} -> ok end || P <- Pids],
    ok.

par_loop(F, I, N) when I =< N ->
    F(I),
    par_loop(F, I + ?CLIENTS, N);
par_loop(_, _, _) ->
    ok.

%% BEAM memory (after a full GC of every process) and OS RSS, bytes.
memory() ->
    [erlang:garbage_collect(P) || P <- processes()],
    {erlang:memory(total), rss()}.

rss() ->
    status_kb("VmRSS:") * 1024.

%% A "kB" field of /proc/self/status (VmRSS: now, VmHWM: the peak so far).
status_kb(Field) ->
    {ok, B} = file:read_file("/proc/self/status"),
    [_, Rest] = binary:split(B, list_to_binary(Field)),
    [Kb | _] = string:lexemes(binary_to_list(Rest), " \t\n"),
    list_to_integer(Kb).

wait_until(F, Timeout) ->
    Deadline = erlang:monotonic_time(millisecond) + Timeout,
    poll(F, Deadline).

poll(F, Deadline) ->
    case F() of
        true ->
            ok;
        false ->
            case erlang:monotonic_time(millisecond) > Deadline of
                true -> error(timeout);
                false -> receive after 50 -> poll(F, Deadline) end
            end
    end.

result(Name, Value, Unit) ->
    io:format("RESULT ~s ~p ~s~n", [Name, Value, Unit]).

env_int(Var, Default) ->
    case os:getenv(Var) of
        false -> Default;
        "" -> Default;
        V -> list_to_integer(V)
    end.
