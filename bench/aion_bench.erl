%% @doc The aion benchmark suite (`make bench'; see bench/RESULTS.md).
%%
%% `main/1' (the orchestrator) prints a machine header, then runs every scenario
%% step in a fresh `erl' node on a fresh temporary database and prints the
%% result lines the step reports, one per measurement:
%% `name value unit (p50 X ms / p99 Y ms)'.
%%
%% Environment: `BENCH_QUICK=1' small counts (a smoke run of a minute or so);
%% `BENCH_ONLY=a,b' run only the scenarios whose names start with one of these
%% prefixes (`name.' for that scenario alone); `BENCH_SECONDS' measured seconds per throughput configuration
%% (default 4, quick 1); `BENCH_TIMERS' the timers scenario's workflow count
%% (default 100000, quick 5000); `BENCH_KEEP=1' keeps the temporary databases;
%% `TMPDIR' where they go (default /tmp).
-module(aion_bench).

-export([main/0, main/1, child/1]).
%% Used by bench/profile.erl.
-export([start_engine/2, stop_engine/0, clients/4, hello_once/1, pct/2, synth/2]).
-export([thread_ticks/1, wchar/0, minor_faults/0]).

-define(COLLECTOR, aion_bench_collector).
-define(WF, aion_bench_wf).
-define(ENGINE, aion_default).
-define(STARTERS, 256).

%%% ===========================================================================
%%% Orchestrator
%%% ===========================================================================

%% @doc `main([])' (`-run aion_bench main' passes no arguments).
-spec main() -> no_return().
main() -> main([]).

%% @doc Runs the suite; halts the node with status 0 (1 if a step failed).
-spec main([string()]) -> no_return().
main(_Args) ->
    Quick = os:getenv("BENCH_QUICK", "") =/= "",
    Only = [P || P <- string:lexemes(os:getenv("BENCH_ONLY", ""), ",")],
    Root = filename:join(os:getenv("TMPDIR", "/tmp"),
                         "aion_bench_" ++ os:getpid()),
    ok = filelib:ensure_path(Root),
    header(Quick),
    T0 = erlang:monotonic_time(millisecond),
    Failed = lists:foldl(
               fun({Name, Steps}, Fails) ->
                       case Only =:= [] orelse
                           lists:any(fun(P) -> lists:prefix(P, Name) orelse P =:= Name ++ "." end,
                                     Only) of
                           true -> Fails + scenario(Name, Steps, Root, Quick);
                           false -> Fails
                       end
               end, 0, scenarios()),
    T1 = erlang:monotonic_time(millisecond),
    io:format("# total ~.1f s, ~s~n", [(T1 - T0) / 1000, loadavg()]),
    case os:getenv("BENCH_KEEP", "") of
        "" -> _ = file:del_dir_r(Root), ok;
        _ -> io:format("# databases kept in ~s~n", [Root])
    end,
    halt(case Failed of 0 -> 0; _ -> 1 end).

%% Scenario name -> steps; each step is one fresh node: {Function, Args}.
scenarios() ->
    Tp = [{Kind ++ "_throughput", [{throughput, [Kind, Sync, C]}]}
          || Kind <- ["hello", "steps3"], Sync <- ["full", "normal"], C <- ["64", "512"]],
    Tp1 = [{Name ++ "_" ++ S ++ "_c" ++ C, Steps}
           || {Name, [{throughput, [_, S, C]}] = Steps} <- Tp],
    Tp1 ++
        [{"latency_full", [{latency, ["full"]}]},
         {"latency_normal", [{latency, ["normal"]}]},
         {"signal_roundtrip", [{signal_roundtrip, ["full"]}]},
         {"signal_queue_10k", [{signal_queue, ["full"]}]},
         {"replay_10k_events", [{replay_events, ["full"]}]},
         {"replay_resume_10k", [{resume_prepare, ["full", "timer"]},
                                {resume_measure, ["full", "timer"]}]},
         {"replay_resume_10k_signal", [{resume_prepare, ["full", "signal"]},
                                       {resume_measure, ["full", "signal"]}]},
         {"timers", [{timers, ["full"]}]},
         {"timers_storm", [{timers_storm, ["full"]}]},
         {"store", [{store, []}]}].

header(Quick) ->
    #{sqlite_version := Sql} = aion_nif:build_info(),
    Json = case code:which(aion_json) of
               non_existing -> "missing";
               P -> case {string:find(P, "/shim/"), string:find(P, "/shim_etf/")} of
                        {nomatch, nomatch} -> "nif (json branch)";
                        {_, nomatch} -> "pure-Erlang shim (bench/shim/aion_json.erl; json NIF not merged)";
                        _ -> "ETF STAND-IN (BENCH_JSON=etf, bench/shim_etf; estimates a C codec, not JSON)"
                    end
           end,
    {ok, Host} = inet:gethostname(),
    io:format("# aion bench ~s, host ~s, ~b logical cores (~b schedulers), OTP ~s (erts ~s), "
              "SQLite ~s, synchronous per line (full|normal), json: ~s~n",
              [calendar:system_time_to_rfc3339(erlang:system_time(second)), Host,
               erlang:system_info(logical_processors),
               erlang:system_info(schedulers_online),
               erlang:system_info(otp_release), erlang:system_info(version), Sql, Json]),
    io:format("# mode: ~s; node flags: ~s; ~s~n",
              [case Quick of true -> "BENCH_QUICK (small counts)"; false -> "full" end,
               node_flags(), loadavg()]).

node_flags() ->
    "+sbwt none +sbwtdcpu none +sbwtdio none".

loadavg() ->
    case file:read_file("/proc/loadavg") of
        {ok, B} ->
            [A, B5, C | _] = string:lexemes(binary_to_list(B), " "),
            "loadavg " ++ A ++ " " ++ B5 ++ " " ++ C;
        _ -> "loadavg ?"
    end.

scenario(Name, Steps, Root, Quick) ->
    Dir = filename:join(Root, Name),
    ok = filelib:ensure_path(Dir),
    L0 = loadavg(),
    T0 = erlang:monotonic_time(millisecond),
    Fails = lists:foldl(fun({Fun, Args}, 0) -> step(Name, Fun, Args, Dir, Quick);
                           (_, F) -> F
                        end, 0, Steps),
    T1 = erlang:monotonic_time(millisecond),
    io:format("#   ~s: ~.1f s, ~s -> ~s~n", [Name, (T1 - T0) / 1000, L0, loadavg()]),
    case os:getenv("BENCH_KEEP", "") of
        "" -> _ = file:del_dir_r(Dir), ok;
        _ -> ok
    end,
    Fails.

step(Name, Fun, Args, Dir, Quick) ->
    Erl = os:find_executable("erl"),
    Pa = lists:append([["-pa", P] || P <- bench_paths()]),
    Argv = ["-noshell", "-noinput" | string:lexemes(node_flags(), " ")] ++ Pa ++
        ["-run", "aion_bench", "child", atom_to_list(Fun), Dir,
         case Quick of true -> "quick"; false -> "full" end | Args],
    Port = open_port({spawn_executable, Erl},
                     [{args, Argv}, {line, 4096}, exit_status, stderr_to_stdout, binary]),
    {os_pid, OsPid} = erlang:port_info(Port, os_pid),
    Log = filename:join(Dir, atom_to_list(Fun) ++ ".log"),
    {ok, Fd} = file:open(Log, [write]),
    Limit = 600000,
    Res = collect(Port, Fd, <<>>, erlang:monotonic_time(millisecond) + Limit),
    ok = file:close(Fd),
    case Res of
        {exit, 0} ->
            0;
        {exit, Code} ->
            io:format("~s error exit ~b (log: ~s)~n", [Name, Code, tail(Log)]),
            1;
        timeout ->
            %% Our own child: kill it by the OS pid we recorded.
            _ = os:cmd("kill -9 " ++ integer_to_list(OsPid)),
            io:format("~s error timeout after ~b s~n", [Name, Limit div 1000]),
            1
    end.

collect(Port, Fd, Partial, Deadline) ->
    Left = max(0, Deadline - erlang:monotonic_time(millisecond)),
    receive
        {Port, {data, {noeol, B}}} ->
            collect(Port, Fd, <<Partial/binary, B/binary>>, Deadline);
        {Port, {data, {eol, B}}} ->
            Line = <<Partial/binary, B/binary>>,
            ok = file:write(Fd, [Line, $\n]),
            case Line of
                <<"RESULT ", R/binary>> -> io:format("~s~n", [R]);
                _ -> ok
            end,
            collect(Port, Fd, <<>>, Deadline);
        {Port, {exit_status, S}} ->
            {exit, S}
    after Left ->
            timeout
    end.

tail(Log) ->
    {ok, B} = file:read_file(Log),
    Lines = binary:split(B, <<"\n">>, [global, trim]),
    iolist_to_binary(lists:join(<<" | ">>, lists:nthtail(max(0, length(Lines) - 5), Lines))).

%% In this node's code path order, so the children load the same aion_json.
bench_paths() ->
    Dirs = [filename:absname(filename:dirname(code:which(M)))
            || M <- [aion, aion_json, ?MODULE]],
    lists:usort(Dirs) =:= lists:usort([filename:absname(D) || D <- code:get_path(),
                                                             lists:member(filename:absname(D), Dirs)])
        orelse error({bench_paths, Dirs}),
    [filename:absname(D) || D <- code:get_path(), lists:member(filename:absname(D), Dirs)].

%%% ===========================================================================
%%% Child node
%%% ===========================================================================

%% @doc Entry point of a scenario node (`-run aion_bench child Fun Dir Mode Args...').
-spec child([string()]) -> no_return().
child([Fun, Dir, Mode | Args]) ->
    put(quick, Mode =:= "quick"),
    Status = try
                 apply(fun_of(Fun), [Dir | Args]),
                 0
             catch C:R:St ->
                     io:format("crash ~p:~p~n~p~n", [C, R, St]),
                     1
             end,
    halt(Status).

fun_of("throughput") -> fun throughput/4;
fun_of("latency") -> fun latency/2;
fun_of("signal_roundtrip") -> fun signal_roundtrip/2;
fun_of("signal_queue") -> fun signal_queue/2;
fun_of("replay_events") -> fun replay_events/2;
fun_of("resume_prepare") -> fun resume_prepare/3;
fun_of("resume_measure") -> fun resume_measure/3;
fun_of("timers") -> fun timers/2;
fun_of("timers_storm") -> fun timers_storm/2;
fun_of("store") -> fun store/1.

quick() -> get(quick) =:= true.

count(Full, Quick) ->
    case quick() of true -> Quick; false -> Full end.

env_int(Var, Full, Quick) ->
    case os:getenv(Var) of
        false -> count(Full, Quick);
        V -> list_to_integer(V)
    end.

result(Name, Value, Unit, Extra) ->
    V = case Value of
            F when is_float(F), abs(F) >= 100 -> integer_to_list(round(F));
            F when is_float(F) -> float_to_list(F, [{decimals, 3}, compact]);
            I when is_integer(I) -> integer_to_list(I);
            S -> S
        end,
    io:format("RESULT ~s ~s ~s~s~n",
              [Name, V, Unit, case Extra of "" -> ""; _ -> " (" ++ Extra ++ ")" end]).

p50p99(SortedUs) ->
    io_lib:format("p50 ~.3f ms / p99 ~.3f ms",
                  [pct(SortedUs, 0.50) / 1000, pct(SortedUs, 0.99) / 1000]).

%% @doc The P-quantile (0..1) of a sorted non-empty list (nearest rank).
-spec pct([number()], float()) -> number().
pct(Sorted, P) ->
    lists:nth(max(1, min(length(Sorted), ceil(P * length(Sorted)))), Sorted).

%% @doc CPU time (user + system, in ticks of 1/100 s) of this node's threads, summed by
%% `Group(ThreadName)' (the name as `/proc/self/task/*/comm' has it: at most 15 bytes).
-spec thread_ticks(fun((binary()) -> string())) -> #{string() => non_neg_integer()}.
thread_ticks(Group) ->
    {ok, Ts} = file:list_dir("/proc/self/task"),
    lists:foldl(
      fun(T, Acc) ->
              case file:read_file("/proc/self/task/" ++ T ++ "/stat") of
                  {ok, B} ->
                      [_, Rest] = binary:split(B, <<"(">>),
                      [Comm, After] = binary:split(Rest, <<") ">>),
                      F = binary:split(After, <<" ">>, [global]),
                      Ticks = binary_to_integer(lists:nth(12, F))
                          + binary_to_integer(lists:nth(13, F)),
                      maps:update_with(Group(Comm), fun(V) -> V + Ticks end, Ticks, Acc);
                  _ ->
                      Acc
              end
      end, #{}, Ts).

%% @doc Bytes this node has written so far (`/proc/self/io' wchar: every write call,
%% before the page cache).
-spec wchar() -> non_neg_integer().
wchar() ->
    {ok, B} = file:read_file("/proc/self/io"),
    {match, [W]} = re:run(B, "wchar: (\\d+)", [{capture, all_but_first, binary}]),
    binary_to_integer(W).

%% @doc Minor page faults of this OS process so far (`/proc/self/stat', field 10):
%% the first touches of fresh memory, which cost ~15-20 us each in this VM.
-spec minor_faults() -> non_neg_integer().
minor_faults() ->
    {ok, B} = file:read_file("/proc/self/stat"),
    %% The command name (field 2) is in parentheses and may hold spaces.
    [_, Rest] = binary:split(B, <<") ">>),
    binary_to_integer(lists:nth(8, binary:split(Rest, <<" ">>, [global]))).

%% @doc Starts the aion application without its default engine, then engine
%% `aion_default' on `Dir/aion.db' with `synchronous = Sync'.
-spec start_engine(string(), full | normal) -> ok.
start_engine(Dir, Sync) ->
    ok = application:load(aion),
    ok = application:set_env(aion, start_default_engine, false),
    {ok, _} = application:ensure_all_started(aion),
    {ok, _} = aion_engine:start(#{name => ?ENGINE, db_path => filename:join(Dir, "aion.db"),
                                  synchronous => Sync}),
    ok.

%% @doc Stops the engine (drains the store writer).
-spec stop_engine() -> ok.
stop_engine() ->
    ok = aion_engine:stop(?ENGINE).

sync(S) -> list_to_existing_atom(S).

%% CPU time (user + system, every thread of this OS process: schedulers, dirty
%% schedulers, the store's writer/reply/checkpoint threads), milliseconds. Unlike
%% wall time it does not count what other programs on a shared machine take.
cpu_ms() ->
    {ok, B} = file:read_file("/proc/self/stat"),
    [_, AfterComm] = binary:split(B, <<") ">>),
    Fields = binary:split(AfterComm, <<" ">>, [global]),
    Ticks = binary_to_integer(lists:nth(12, Fields)) + binary_to_integer(lists:nth(13, Fields)),
    Ticks * 1000 div 100.   % USER_HZ = 100 on Linux

cpu_note(CpuMs, N, What) when N > 0 ->
    Us = CpuMs * 1000 / N,
    io_lib:format("cpu ~b us/~s => ~b ~s/s on ~b idle cores", [round(Us), What,
        round(erlang:system_info(logical_processors) * 1000000 / max(1, Us)), What,
        erlang:system_info(logical_processors)]);
cpu_note(_, _, _) -> "".

%%% ---------------------------------------------------------------------------
%%% 1, 2: hello_throughput, steps3_throughput
%%% ---------------------------------------------------------------------------

throughput(Dir, Kind, SyncS, CS) ->
    C = list_to_integer(CS),
    ok = start_engine(Dir, sync(SyncS)),
    Secs = env_int("BENCH_SECONDS", 4, 1),
    Input = #{kind => list_to_binary(Kind)},
    Warm = count(1000, 300),
    {N, Lat, Cpu, All} = clients_cpu(C, Warm, Secs * 1000, fun() -> run_once(Input) end),
    ok = stop_engine(),
    result(io_lib:format("~s_throughput_~s_c~b", [Kind, SyncS, C]),
           round(N * 1000 / (Secs * 1000)), "workflows/s",
           "start->result " ++ p50p99(Lat) ++ "; " ++ cpu_note(Cpu, All, "wf")).

%% clients/4 plus the CPU time of the whole run and the number of calls in it.
clients_cpu(C, WarmMs, Ms, Fun) ->
    Counter = counters:new(1, []),
    Cpu0 = cpu_ms(),
    {N, Lat} = clients(C, WarmMs, Ms, fun() -> ok = Fun(), counters:add(Counter, 1, 1) end),
    {N, Lat, cpu_ms() - Cpu0, counters:get(Counter, 1)}.

run_once(Input) ->
    {ok, #{workflow_id := Wid}} = aion:start(?WF, Input, #{}),
    {ok, _} = aion:await(Wid, 60000),
    ok.

%% @doc `hello' once (start -> result).
-spec hello_once(term()) -> ok.
hello_once(_) -> run_once(#{kind => <<"hello">>}).

%% @doc Runs `C' concurrent clients calling `Fun' in a loop for `WarmMs' + `Ms';
%% returns the number of calls that ended within the measured `Ms' and their
%% latencies (microseconds, sorted).
-spec clients(pos_integer(), non_neg_integer(), pos_integer(), fun(() -> ok)) ->
          {non_neg_integer(), [integer()]}.
clients(C, WarmMs, Ms, Fun) ->
    T0 = erlang:monotonic_time(microsecond),
    From = T0 + WarmMs * 1000,
    To = From + Ms * 1000,
    Self = self(),
    Pids = [spawn_link(fun() -> Self ! {self(), client(Fun, From, To, 0, [])} end)
            || _ <- lists:seq(1, C)],
    Rs = [receive {P, R} -> R end || P <- Pids],
    {lists:sum([N || {N, _} <- Rs]), lists:sort(lists:append([L || {_, L} <- Rs]))}.

client(Fun, From, To, N, Lat) ->
    T0 = erlang:monotonic_time(microsecond),
    case T0 >= To of
        true ->
            {N, Lat};
        false ->
            ok = Fun(),
            T1 = erlang:monotonic_time(microsecond),
            case T1 >= From andalso T1 < To of
                true -> client(Fun, From, To, N + 1, [T1 - T0 | Lat]);
                false -> client(Fun, From, To, N, Lat)
            end
    end.

%%% ---------------------------------------------------------------------------
%%% 3: latency
%%% ---------------------------------------------------------------------------

latency(Dir, SyncS) ->
    ok = start_engine(Dir, sync(SyncS)),
    Runs = count(2000, 200),
    _ = [run_once(#{kind => <<"hello">>}) || _ <- lists:seq(1, 50)],   % warm-up
    Cpu0 = cpu_ms(),
    Lat = lists:sort([begin
                          T0 = erlang:monotonic_time(microsecond),
                          ok = run_once(#{kind => <<"hello">>}),
                          erlang:monotonic_time(microsecond) - T0
                      end || _ <- lists:seq(1, Runs)]),
    Cpu = cpu_ms() - Cpu0,
    ok = stop_engine(),
    result("latency_" ++ SyncS, pct(Lat, 0.5) / 1000, "ms",
           io_lib:format("~s, ~b runs, max ~.3f ms; cpu ~b us/wf",
                         [p50p99(Lat), Runs, lists:last(Lat) / 1000, Cpu * 1000 div Runs])).

%%% ---------------------------------------------------------------------------
%%% 4: signal_roundtrip
%%% ---------------------------------------------------------------------------

has_signals() ->
    {module, aion} = code:ensure_loaded(aion),
    {module, aion_workflow} = code:ensure_loaded(aion_workflow),
    erlang:function_exported(aion, signal, 3)
        andalso erlang:function_exported(aion, query, 4)
        andalso erlang:function_exported(aion_workflow, receive_signal, 1).

signal_roundtrip(Dir, SyncS) ->
    case has_signals() of
        false ->
            result("signal_roundtrip", "skipped", "(needs signals)", "");
        true ->
            ok = start_engine(Dir, sync(SyncS)),
            {ok, #{workflow_id := Wid}} = aion:start(?WF, #{kind => <<"pingpong">>}, #{}),
            Runs = count(1000, 100),
            Lat = lists:sort([ping(Wid, I) || I <- lists:seq(1, Runs)]),
            ok = apply(aion, signal, [Wid, <<"ping">>, <<"stop">>]),
            ok = stop_engine(),
            result("signal_roundtrip_" ++ SyncS, pct(Lat, 0.5) / 1000, "ms",
                   io_lib:format("~s, ~b round trips", [p50p99(Lat), Runs]))
    end.

%% signal -> the workflow wakes and sets its query state -> a query sees it.
ping(Wid, I) ->
    T0 = erlang:monotonic_time(microsecond),
    ok = apply(aion, signal, [Wid, <<"ping">>, I]),
    poll_query(Wid, I),
    erlang:monotonic_time(microsecond) - T0.

poll_query(Wid, I) ->
    case apply(aion, query, [Wid, <<"last">>, null, 5000]) of
        {ok, I} -> ok;
        {ok, _} -> poll_query(Wid, I)
    end.

%% 10,000 signals queued to one workflow, then consumed by receive_signal/1.
%% Resident: the workflow is blocked on a `go' signal while 16 senders append the
%% items (each append is durable and delivered); `go' releases it and the time
%% until it consumed the last item is measured inside the workflow. Rebuilt: the
%% same with the workflow's process killed first, so the items and `go' are only
%% in the store; the run is started again (history read, decode, replay) and
%% consumes them: measured from the restart to the last item.
signal_queue(Dir, SyncS) ->
    ok = start_engine(Dir, sync(SyncS)),
    N = count(10000, 2000),
    true = register(?COLLECTOR, self()),
    %% resident
    {ok, #{workflow_id := W1}} = aion:start(?WF, #{kind => <<"drain">>, n => N}, #{}),
    EnqUs = enqueue(W1, N),
    ok = apply(aion, signal, [W1, <<"go">>, null]),
    {T0, T1} = receive {drained, _, A, B} -> {A, B} after 120000 -> error(drain_timeout) end,
    result("signal_queue_10k_resident", N * 1000000 / max(1, T1 - T0), "signals/s",
           io_lib:format("~b signals consumed in ~.1f ms; enqueue by 16 senders "
                         "~b signals/s (durable, full)", [N, (T1 - T0) / 1000,
                                                         round(N * 1000000 / EnqUs)])),
    %% rebuilt from the store
    Ctx = aion_ctx:get(?ENGINE),
    {ok, #{workflow_id := W2, run_id := R2}} =
        aion:start(?WF, #{kind => <<"drain">>, n => N}, #{}),
    ok = wait_resident(Ctx, R2),
    ok = aion_run:kill(Ctx, R2),
    %% Signals to a run without a process ask for its rehydration: hold those
    %% requests so the run is rebuilt once, here, with all of them in its history.
    Residency = aion_ctx:proc_name(?ENGINE, residency),
    ok = sys:suspend(Residency),
    _ = enqueue(W2, N),
    ok = apply(aion, signal, [W2, <<"go">>, null]),
    S0 = erlang:monotonic_time(microsecond),
    {ok, _} = aion_run_sup:start_run(Ctx, R2),
    ok = sys:resume(Residency),
    {G, S1} = receive {drained, _, A2, B2} -> {A2, B2} after 120000 -> error(drain_timeout) end,
    result("signal_queue_10k_rebuilt", N * 1000000 / max(1, S1 - S0), "signals/s",
           io_lib:format("~b queued signals: load + replay ~.1f ms, consume ~.1f ms",
                         [N, (G - S0) / 1000, (S1 - G) / 1000])),
    ok = stop_engine().

enqueue(Wid, N) ->
    Self = self(),
    C = 16,
    T0 = erlang:monotonic_time(microsecond),
    Pids = [spawn_link(fun() ->
                               [ok = apply(aion, signal, [Wid, <<"item">>, 1])
                                || _ <- lists:seq(1, N div C)],
                               Self ! {enqueued, self()}
                       end) || _ <- lists:seq(1, C)],
    [ok = apply(aion, signal, [Wid, <<"item">>, 1]) || _ <- lists:seq(1, N rem C)],
    _ = [receive {enqueued, P} -> ok end || P <- Pids],
    erlang:monotonic_time(microsecond) - T0.

wait_resident(Ctx, RunId) ->
    case aion_run:whereis(Ctx, RunId) of
        undefined -> receive after 1 -> wait_resident(Ctx, RunId) end;
        _ -> ok
    end.

%%% ---------------------------------------------------------------------------
%%% 5: replay
%%% ---------------------------------------------------------------------------

%% Replay rate: a run whose history holds N completed activities (2N + 1 events,
%% written straight into the store with the engine's own encoders, exactly what
%% a live run records) is started with aion_run_sup:start_run/2; the time until
%% the workflow code passes its last replayed activity is the replay time (it
%% includes the history read, the JSON decode and the matching).
%% Steady state: the histories are checkpointed into the database file first (the
%% background checkpoint of the just written WAL would otherwise compete with the
%% first replays), and one short history is replayed first (code loading, reader
%% connection); then the median of 5.
replay_events(Dir, SyncS) ->
    ok = start_engine(Dir, sync(SyncS)),
    Ctx = aion_ctx:get(?ENGINE),
    #{store := Store} = Ctx,
    N = count(5000, 500),
    Reps = 5,
    RunIds = [synth_history(Ctx, N) || _ <- lists:seq(1, Reps)],
    Warm = synth_history(Ctx, 100),
    ok = aion_store:checkpoint(Store),
    true = register(?COLLECTOR, self()),
    {ok, _} = aion_run_sup:start_run(Ctx, Warm),
    receive {replayed, Warm, _} -> ok after 120000 -> error(replay_timeout) end,
    Times = [begin
                 C0 = cpu_ms(),
                 T0 = erlang:monotonic_time(microsecond),
                 {ok, _} = aion_run_sup:start_run(Ctx, RunId),
                 receive {replayed, RunId, T1} -> {T1 - T0, cpu_ms() - C0}
                 after 120000 -> error(replay_timeout)
                 end
             end || RunId <- RunIds],
    Events = 2 * N + 1,
    Us = lists:nth(3, lists:sort([T || {T, _} <- Times])),
    CpuMs = lists:nth(3, lists:sort([Cp || {_, Cp} <- Times])),
    %% Where the time goes: the same steps the workflow process takes, timed alone.
    [R1 | _] = RunIds,
    {ReadUs, {ok, Stored}} = timer:tc(aion_store, history, [Store, R1, 1]),
    {DecUs, Decoded} = timer:tc(aion_event, decode_all, [lists:sublist(Stored, Events)]),
    {AddUs, _} = timer:tc(aion_replay, add_all, [Decoded, aion_replay:new()]),
    ok = stop_engine(),
    result("replay_10k_events", round(Events * 1000000 / Us), "events/s",
           io_lib:format("~b events in ~.1f ms wall, median of ~b; cpu ~b ms => ~s events/s "
                         "on cpu time; alone: store read ~.1f ms, "
                         "aion_event:decode_all ~.1f ms, aion_replay:add_all ~.1f ms",
                         [Events, Us / 1000, Reps, CpuMs,
                          case CpuMs of 0 -> "?"; _ -> integer_to_list(Events * 1000 div CpuMs) end,
                          ReadUs / 1000, DecUs / 1000, AddUs / 1000])).

synth_history(#{store := Store}, N) ->
    RunId = aion_util:uuid_v4(),
    Wid = aion_util:uuid_v4(),
    Now = erlang:system_time(millisecond),
    {ok, {StType, StData}} =
        aion_event:encode(workflow_started,
                          #{workflow_type => atom_to_binary(?WF), input => #{kind => <<"replay_n">>, n => N},
                            workflow_id => Wid, parent => null, continued_from => null,
                            options => #{}}),
    Create = #{workflow_id => Wid, type => atom_to_binary(?WF), status => <<"running">>,
               started_at => Now, id_reuse_policy => allow_duplicate},
    {ok, _} = aion_store:append(Store, [#{run_id => RunId, create => Create,
                                          events => [{StType, Now, StData}]}]),
    Rows = lists:append([activity_rows(RunId, Wid, I, Now) || I <- lists:seq(1, N)]),
    lists:foreach(fun(Chunk) ->
                          {ok, _} = aion_store:append(Store, [#{run_id => RunId,
                                                                events => Chunk}])
                  end, chunks(Rows, 1000)),
    RunId.

activity_rows(RunId, Wid, I, Now) ->
    Id = integer_to_binary(I),
    {ok, Task} = aion_activity_runner:new_task(
                   #{run_id => RunId, workflow_id => Wid, activity_id => Id,
                     name => {?WF, noop}, args => [], options => #{}, scheduled_at => Now}),
    [aion_event:encode_row(activity_scheduled, Now, aion_activity_runner:scheduled_fields(Task)),
     aion_event:encode_row(activity_completed, Now,
                           #{activity_id => Id, attempt => 1, result => null})].

chunks([], _) -> [];
chunks(L, N) when length(L) =< N -> [L];
chunks(L, N) -> {A, B} = lists:split(N, L), [A | chunks(B, N)].

%% Resume after a restart: node 1 starts 10,000 runs that block (Kind `timer': on a
%% 1 h timer; `signal': in receive_signal, which records nothing while waiting)
%% and stops the engine; node 2 starts the engine on the same database (default
%% options) and times until every run is back at its blocking point.
resume_prepare(Dir, SyncS, Kind) ->
    ok = start_engine(Dir, sync(SyncS)),
    N = count(10000, 1000),
    true = register(?COLLECTOR, self()),
    Self = self(),
    C = 128,
    Input = #{kind => park_kind(Kind)},
    Pids = [spawn_link(fun() ->
                               [{ok, _} = aion:start(?WF, Input, #{})
                                || _ <- lists:seq(1, N div C)],
                               Self ! {done, self()}
                       end) || _ <- lists:seq(1, C)],
    _ = [receive {done, P} -> ok end || P <- Pids],
    ok = wait_msgs(parked, (N div C) * C, 120000),
    ok = stop_engine().

park_kind("timer") -> <<"park">>;
park_kind("signal") -> <<"park_signal">>.

resume_measure(Dir, SyncS, Kind) ->
    true = register(?COLLECTOR, self()),
    N = (count(10000, 1000) div 128) * 128,
    T0 = erlang:monotonic_time(microsecond),
    ok = start_engine(Dir, sync(SyncS)),
    T1 = erlang:monotonic_time(microsecond),
    ok = wait_msgs(parked, N, 120000),
    T2 = erlang:monotonic_time(microsecond),
    ok = stop_engine(),
    What = case Kind of
               "timer" -> "a 1 h timer";
               "signal" -> "a signal (receive_signal)"
           end,
    result("replay_resume_10k_" ++ Kind, (T2 - T0) / 1000000, "s",
           io_lib:format("~b open runs blocked on ~s, engine start ~.1f ms, "
                         "then all back at the blocking wait", [N, What, (T1 - T0) / 1000])).

wait_msgs(_Tag, 0, _Timeout) ->
    ok;
wait_msgs(Tag, N, Timeout) ->
    receive
        M when element(1, M) =:= Tag -> wait_msgs(Tag, N - 1, Timeout)
    after Timeout ->
            error({missing, Tag, N})
    end.

%%% ---------------------------------------------------------------------------
%%% 6: timers
%%% ---------------------------------------------------------------------------

%% Two steps, each in a fresh node:
%%
%% `timers' (quiet firing): N workflows each sleep until Base + uniform(1..10 s).
%% Base lies well after the last start should be done (N/2 ms + 5 s after the
%% first start, at most 45 s: the last timer must fall within the timer
%% service's 60 s horizon when armed), so all N are resident and sleeping together: memory is measured
%% then (erlang:memory(total) and the OS RSS, before the starts and 1 s after
%% the last workflow reported it sleeps, divided by the number resident); fire
%% lateness (wake time observed inside the workflow minus the recorded fire_at)
%% as the N timers fall due over 9 s, with no start running. When the starts
%% are slower than the margin, some fire before the last one started (the
%% result line says how many; they are then not counted as resident).
%%
%% `timers_storm': N workflows each sleep uniform(1..10 s) from their own start,
%% started as fast as 256 clients can: the first timers fire while most
%% workflows are still being started (lateness during a start storm).
timers(Dir, SyncS) ->
    N = env_int("BENCH_TIMERS", 100000, 5000),
    ok = start_engine(Dir, sync(SyncS)),
    true = register(?COLLECTOR, self()),
    erlang:garbage_collect(),
    M0 = erlang:memory(),
    Rss0 = rss(),
    T0 = erlang:system_time(millisecond),
    %% Starting must take less than Base - T0 (2,200 starts/s for 100,000); the
    %% last timer is due within the timer service's 60 s horizon of every start.
    Base = T0 + min(45000, N div 2 + 5000),
    Per = N div ?STARTERS,
    starters(Per, fun() -> #{kind => <<"sleeper">>, base => Base,
                             ms => 1000 + rand:uniform(9000)} end),
    Total = Per * ?STARTERS,
    ok = wait_msgs(sleeping, Total, 300000),
    T1 = erlang:system_time(millisecond),
    %% Steady state: every workflow has been blocked for at least 1 s (or the
    %% first timer is about to fire).
    receive after max(0, min(1000, Base + 1000 - 200 - erlang:system_time(millisecond))) -> ok end,
    {Early, _} = drain_fired([]),
    Resident = Total - length(Early),
    M1 = erlang:memory(),
    Rss1 = rss(),
    Tm = erlang:system_time(millisecond),
    Delta = fun(K) -> (proplists:get_value(K, M1) - proplists:get_value(K, M0))
                          div max(1, Resident) end,
    #{runs := RunsTab} = aion_ctx:get(?ENGINE),
    %% 1,000 entries, not a copy of the whole table (100,000 tuples on this process's
    %% heap, which then collects all the fires).
    Sample = case ets:select(RunsTab, [{{'_', '$1'}, [], ['$1']}], 1000) of
                 {Ps, _Cont} -> Ps;
                 '$end_of_table' -> []
             end,
    Keys = [memory, total_heap_size, stack_size, garbage_collection_info],
    PInfo = [I || P <- Sample, I <- [erlang:process_info(P, Keys)], is_list(I)],
    Avg = fun(F) -> lists:sum([F(I) || I <- PInfo]) div max(1, length(PInfo)) end,
    Live = fun(I) -> {_, G} = lists:keyfind(garbage_collection_info, 1, I),
                     proplists:get_value(heap_size, G) + proplists:get_value(old_heap_size, G)
           end,
    Get = fun(K) -> fun(I) -> {K, V} = lists:keyfind(K, 1, I), V end end,
    %% CPU per fire counts from just before the first timer is due.
    receive after max(0, Base + 1000 - 20 - erlang:system_time(millisecond)) -> ok end,
    Cpu1 = cpu_ms(),
    Lat = lists:sort(Early ++ wait_fired(length(Early), Total, Base + 60000)),
    T2 = erlang:system_time(millisecond),
    Cpu2 = cpu_ms(),
    ok = stop_engine(),
    result("timers_lateness", pct(Lat, 0.99), "ms",
           io_lib:format("p50 ~b ms / p99 ~b ms, max ~b ms, ~b timers due over 1-10 s after "
                         "all started; started in ~.1f s (~b/s; first due ~.1f s after the first "
                         "start), ~b fired "
                         "before the last started; all fired ~.1f s after the first was due; "
                         "CPU ~b us per fire (wake, completion, exit; capacity on 2 idle "
                         "cores ~b/s)",
                         [pct(Lat, 0.5), pct(Lat, 0.99), lists:last(Lat), length(Lat),
                          (T1 - T0) / 1000, Total * 1000 div max(1, T1 - T0),
                          (Base + 1000 - T0) / 1000, length(Early), (T2 - Base - 1000) / 1000,
                          (Cpu2 - Cpu1) * 1000 div Resident,
                          2000000 div max(1, (Cpu2 - Cpu1) * 1000 div Resident)])),
    case Resident of
        0 ->
            result("timers_memory_erlang", "error", "", "no run was resident at once");
        _ ->
            result("timers_memory_erlang",
                   round((proplists:get_value(total, M1) - proplists:get_value(total, M0))
                         / Resident), "bytes/workflow",
                   io_lib:format("erlang:memory(total) delta over ~b resident sleeping runs, "
                                 "measured ~.1f s after the last reported sleeping; per run: "
                                 "processes ~b B, ets ~b B, binary ~b B, system ~b B; one "
                                 "workflow process: memory ~b B, heap+old heap ~b words "
                                 "(live ~b words), stack ~b words",
                                 [Resident, (Tm - T1) / 1000, Delta(processes), Delta(ets),
                                  Delta(binary), Delta(system), Avg(Get(memory)),
                                  Avg(Get(total_heap_size)), Avg(Live), Avg(Get(stack_size))])),
            result("timers_memory_rss", round((Rss1 - Rss0) / Resident), "bytes/workflow",
                   io_lib:format("OS RSS (VmRSS) delta over the same runs, includes the SQLite "
                                 "page cache and allocator slack; RSS ~b MB",
                                 [Rss1 div 1048576]))
    end.

timers_storm(Dir, SyncS) ->
    N = env_int("BENCH_TIMERS", 100000, 5000),
    ok = start_engine(Dir, sync(SyncS)),
    true = register(?COLLECTOR, self()),
    Per = N div ?STARTERS,
    T0 = erlang:system_time(millisecond),
    Starter = self(),
    %% The starters run while the collector gathers: spawn them from a helper.
    _ = spawn_link(fun() ->
                           starters(Per, fun() -> #{kind => <<"sleeper">>, base => 0,
                                                    ms => 1000 + rand:uniform(9000)} end),
                           Starter ! {started, erlang:system_time(millisecond)}
                   end),
    Total = Per * ?STARTERS,
    Lat = lists:sort(storm_fired(Total, T0 + 300000, [])),
    T1 = receive {started, T} -> T after 60000 -> error(starters_hung) end,
    ok = stop_engine(),
    result("timers_storm_lateness", pct(Lat, 0.99), "ms",
           io_lib:format("p50 ~b ms / p99 ~b ms, max ~b ms, ~b workflows each sleeping 1-10 s "
                         "from its own start, started by ~b clients in ~.1f s (~b/s): timers "
                         "fire during the start storm",
                         [pct(Lat, 0.5), pct(Lat, 0.99), lists:last(Lat), length(Lat),
                          ?STARTERS, (T1 - T0) / 1000, Total * 1000 div max(1, T1 - T0)])).

%% Every message is taken in arrival order (100,000 `sleeping' messages must not
%% sit in front of a selective receive).
storm_fired(0, _Until, Acc) ->
    Acc;
storm_fired(Left, Until, Acc) ->
    receive
        {fired, FireAt, Now} -> storm_fired(Left - 1, Until, [Now - FireAt | Acc]);
        {sleeping, _} -> storm_fired(Left, Until, Acc)
    after max(0, Until - erlang:system_time(millisecond)) ->
            error({timers_not_fired, Left})
    end.

%% ?STARTERS processes each start Per workflows with input Input(); returns when
%% all are started.
starters(Per, Input) ->
    Self = self(),
    Pids = [spawn_link(fun() ->
                               [{ok, _} = aion:start(?WF, Input(), #{}) || _ <- lists:seq(1, Per)],
                               Self ! {done, self()}
                       end) || _ <- lists:seq(1, ?STARTERS)],
    _ = [receive {done, P} -> ok end || P <- Pids],
    ok.

drain_fired(Acc) ->
    receive {fired, FireAt, Now} -> drain_fired([Now - FireAt | Acc])
    after 0 -> {Acc, length(Acc)}
    end.

%% Tail-recursive: a body-recursive loop left one stack frame per fire (100,000), which
%% every collection of this process scanned while the timers fired.
wait_fired(Got, Total, Until) ->
    wait_fired(Got, Total, Until, []).

wait_fired(Got, Total, _Until, Acc) when Got >= Total ->
    Acc;
wait_fired(Got, Total, Until, Acc) ->
    Left = max(0, Until - erlang:system_time(millisecond)),
    receive {fired, FireAt, Now} -> wait_fired(Got + 1, Total, Until, [Now - FireAt | Acc])
    after Left -> error({timers_not_fired, Total - Got})
    end.

rss() ->
    {ok, B} = file:read_file("/proc/" ++ os:getpid() ++ "/status"),
    {match, [Kb]} = re:run(B, "VmRSS:\\s+(\\d+)", [{capture, all_but_first, list}]),
    list_to_integer(Kb) * 1024.

%%% ---------------------------------------------------------------------------
%%% 7: store (bench/store_bench.escript, the foundation issue's bench)
%%% ---------------------------------------------------------------------------

store(Dir) ->
    Here = filename:dirname(code:which(?MODULE)),
    Script = find_store_bench(Here),
    Secs = integer_to_list(env_int("BENCH_STORE_SECONDS", 3, 1)),
    Out = os:cmd("TMPDIR=" ++ Dir ++ " BENCH_SECONDS=" ++ Secs ++ " " ++ Script ++ " 2>&1"),
    Lines = string:lexemes(Out, "\n"),
    Rows = [string:lexemes(L, " ") || L <- Lines],
    Parsed = [{S, A, E, P50, P99} || [S, A, E, P50, P99, _Max] <- Rows,
                                     S =:= "full" orelse S =:= "normal"],
    case Parsed of
        [] -> io:format("store bench output:~n~s~n", [Out]), error(no_store_results);
        _ -> ok
    end,
    [result("store_append_" ++ S ++ "_a" ++ A, list_to_integer(E), "events/s",
            "commit p50 " ++ P50 ++ " ms / p99 " ++ P99 ++ " ms, " ++ A ++
                " appenders, 1 event per append (bench/store_bench.escript)")
     || {S, A, E, P50, P99} <- Parsed],
    ok.

find_store_bench(EbinDir) ->
    %% EbinDir is _build/bench/ebin; the script is in bench/.
    Cands = [filename:join([EbinDir, "..", "..", "..", "bench", "store_bench.escript"]),
             filename:join(os:getenv("AION_ROOT", "."), "bench/store_bench.escript")],
    case [C || C <- Cands, filelib:is_regular(C)] of
        [S | _] -> S;
        [] -> error({no_store_bench, Cands})
    end.

%% @doc A run with `N' completed activities in its history (see replay_events).
-spec synth(aion_ctx:ctx(), pos_integer()) -> binary().
synth(Ctx, N) -> synth_history(Ctx, N).
