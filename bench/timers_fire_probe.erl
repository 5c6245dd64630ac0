%% @doc Where the time of a timer fire goes (bench/RESULTS.md, "Timers and memory").
%%
%% `main([N])': starts N `sleeper' workflows (256 clients, engine on a fresh
%% database with synchronous=full) due at Base + uniform(1..10 s), Base after
%% the last start; waits until all sleep, then during the firing measures per
%% fire: bytes written by the node (`/proc/self/io' wchar: WAL frames and
%% checkpoint copies), minor page faults (first touches of fresh memory), CPU time
%% per thread group (schedulers, the store's
%% writer, checkpoint and reply threads) and the lateness seen by the
%% workflows, overall and by due time in 0.5 s buckets. Run (after
%% `BENCH_ONLY=none ./bench/run.sh', which compiles it):
%% ```
%% erl -noshell +sbwt none +sbwtdcpu none +sbwtdio none \
%%     -pa _build/default/lib/aion/ebin -pa _build/bench/ebin \
%%     -run timers_fire_probe main 50000
%% '''
%% It also counts, during the firing, the schedules and collections that took
%% >= 3 ms of wall time (`erlang:system_monitor/2': mostly a scheduler thread
%% preempted by the OS while it ran a short piece of work) and lists the 100 ms
%% windows of due time whose lateness p99 exceeds 40 ms (the spikes that make the p99).
%% With `AION_PROBE_ALLOC=1' in the environment it also prints, every second of the
%% firing, the memory of each ERTS allocator and of the processes.
-module(timers_fire_probe).

-export([main/1]).

-define(WF, aion_bench_wf).
-define(CLIENTS, 256).
%% A schedule (a process running without a break) or a collection this long in wall
%% time is counted: work that takes a few us stretched by the OS preempting the
%% scheduler thread, or a real long run (erlang:system_monitor/2).
-define(LONG_MS, 3).
%% 100 ms windows (by due time) whose lateness p99 exceeds this are listed.
-define(SPIKE_MS, 40).

%% @doc Runs the probe with N workflows (a string, from `-run'); halts the node.
-spec main([string()]) -> no_return().
main([NS]) ->
    N = list_to_integer(NS),
    Dir = filename:join(os:getenv("TMPDIR", "/tmp"), "aion_fire_probe_" ++ os:getpid()),
    ok = filelib:ensure_path(Dir),
    ok = aion_bench:start_engine(Dir, full),
    true = register(aion_bench_collector, self()),
    Per = N div ?CLIENTS,
    Total = Per * ?CLIENTS,
    T0 = erlang:system_time(millisecond),
    Base = T0 + min(45000, N div 2 + 5000),
    Self = self(),
    Ps = [spawn_link(fun() ->
                             [{ok, _} = aion:start(?WF, #{kind => <<"sleeper">>, base => Base,
                                                          ms => 1000 + rand:uniform(9000)}, #{})
                              || _ <- lists:seq(1, Per)],
                             Self ! {done, self()}
                     end) || _ <- lists:seq(1, ?CLIENTS)],
    _ = [receive {done, P} -> ok end || P <- Ps],
    _ = [receive {sleeping, _} -> ok end || _ <- lists:seq(1, Total)],
    io:format("~b sleeping, started in ~b ms~n", [Total, erlang:system_time(millisecond) - T0]),
    receive after max(0, Base + 1000 - erlang:system_time(millisecond)) -> ok end,
    W0 = aion_bench:wchar(),
    F0 = aion_bench:minor_faults(),
    V0 = vm_counts(),
    C0 = threads(),
    Mon = spawn_link(fun() -> monitor_loop(Self, #{}) end),
    _ = erlang:system_monitor(Mon, [{long_schedule, ?LONG_MS}, {long_gc, ?LONG_MS}]),
    Alloc = os:getenv("AION_PROBE_ALLOC") =/= false,
    Alloc andalso spawn_link(fun() -> alloc_loop(erlang:system_time(millisecond)) end),
    %% A fold, not a comprehension: no stack frame per fire (aion_bench:wait_fired/3).
    Pairs = lists:foldl(fun(_, Acc) -> receive {fired, F, Now} -> [{F, Now - F} | Acc] end end,
                        [], lists:seq(1, Total)),
    Lat = lists:sort([L || {_, L} <- Pairs]),
    W1 = aion_bench:wchar(),
    F1 = aion_bench:minor_faults(),
    V1 = vm_counts(),
    C1 = threads(),
    io:format("per fire: ~b bytes written, ~.2f page faults; CPU us by thread: ~s~n",
              [(W1 - W0) div Total, (F1 - F0) / Total,
               lists:flatten([io_lib:format("~s ~b, ", [K, (V - maps:get(K, C0, 0)) * 10000 div Total])
                              || {K, V} <- lists:sort(maps:to_list(C1))])]),
    io:format("per fire (VM): ~s~n",
              [lists:flatten([io_lib:format("~s ~.1f, ", [K, (maps:get(K, V1) - V0K) / Total])
                              || {K, V0K} <- lists:sort(maps:to_list(V0))])]),
    io:format("lateness p50 ~b ms, p99 ~b ms, max ~b ms; last fire observed ~b ms after the "
              "first was due~n",
              [aion_bench:pct(Lat, 0.5), aion_bench:pct(Lat, 0.99), lists:last(Lat),
               erlang:system_time(millisecond) - Base - 1000]),
    _ = erlang:system_monitor(undefined),
    Mon ! {counts, self()},
    Long = receive {long, Counts} -> Counts after 5000 -> #{} end,
    io:format("during the firing: ~b schedules and ~b collections of >= ~b ms wall time "
              "(~b of them in the workflows' collector); 100 ms windows by due time with "
              "lateness p99 > ~b ms: ~s~n",
              [maps:get(long_schedule, Long, 0), maps:get(long_gc, Long, 0), ?LONG_MS,
               maps:get(collector, Long, 0), ?SPIKE_MS, spikes(Pairs)]),
    buckets(Pairs),
    Alloc andalso io:format("alloc at end: ~s~n", [alloc_summary()]),
    ok = aion_bench:stop_engine(),
    _ = file:del_dir_r(Dir),
    halt(0).

%% Counts the system monitor's reports by kind, and those about the collector (the
%% probe's own process).
monitor_loop(Collector, Counts) ->
    receive
        {counts, From} ->
            From ! {long, Counts};
        {monitor, Pid, What, _Info} ->
            C1 = maps:update_with(What, fun(N) -> N + 1 end, 1, Counts),
            C2 = case Pid of
                     Collector -> maps:update_with(collector, fun(N) -> N + 1 end, 1, C1);
                     _ -> C1
                 end,
            monitor_loop(Collector, C2)
    end.

%% The 100 ms windows by due time (from the first due time) whose lateness p99 is
%% above ?SPIKE_MS: "+Start ms (p99 X)" each, or "none".
spikes(Pairs) ->
    Spikes = [{K * 100, P99} || {K, Ls} <- by_due(Pairs, 100),
                                P99 <- [aion_bench:pct(Ls, 0.99)], P99 > ?SPIKE_MS],
    case Spikes of
        [] -> "none";
        _ -> lists:join(", ", [io_lib:format("+~b ms (p99 ~b)", [T, P]) || {T, P} <- Spikes])
    end.

%% Counters of the VM: reductions, context switches, garbage collections and the
%% words they reclaimed.
vm_counts() ->
    {Gcs, Words, _} = erlang:statistics(garbage_collection),
    {Cs, _} = erlang:statistics(context_switches),
    #{reductions => element(1, erlang:statistics(exact_reductions)), context_switches => Cs,
      gcs => Gcs, gc_words_reclaimed => Words}.

%% CPU ticks (1/100 s) per thread group.
threads() ->
    aion_bench:thread_ticks(fun(<<"aion_store", _/binary>> = Comm) -> binary_to_list(Comm);
                               (<<_, "_scheduler">>) -> "schedulers";
                               (_) -> "other"
                            end).

%% Lateness by when the timer was due, in 0.5 s buckets from the first due time:
%% shows whether a backlog builds, drains or stays.
buckets(Pairs) ->
    lists:foreach(fun({K, Ls}) ->
                          io:format("  due +~4.1f s: ~5b fires, lateness p50 ~b ms / p99 ~b ms~n",
                                    [K / 2, length(Ls), aion_bench:pct(Ls, 0.5),
                                     aion_bench:pct(Ls, 0.99)])
                  end, by_due(Pairs, 500)).

%% {FireAt, Lateness} pairs grouped in windows of Ms by due time from the first due
%% time: [{Window, SortedLatenesses}] in window order.
by_due(Pairs, Ms) ->
    B0 = lists:min([F || {F, _} <- Pairs]),
    By = lists:foldl(fun({F, L}, Acc) ->
                             maps:update_with((F - B0) div Ms, fun(Ls) -> [L | Ls] end, [L], Acc)
                     end, #{}, Pairs),
    [{K, lists:sort(Ls)} || {K, Ls} <- lists:sort(maps:to_list(By))].

%% Every second (AION_PROBE_ALLOC set): MB in carriers / in blocks per allocator
%% (carriers that grow are fresh memory, i.e. page faults), then the number of
%% processes and the memory they hold.
alloc_loop(T0) ->
    io:format("alloc +~5.1f s: ~s~n", [(erlang:system_time(millisecond) - T0) / 1000, alloc_summary()]),
    io:format("  ~b processes, ~b MB~n",
              [erlang:system_info(process_count), erlang:memory(processes) bsr 20]),
    receive after 1000 -> alloc_loop(T0) end.

alloc_summary() ->
    As = [eheap_alloc, binary_alloc, ets_alloc, driver_alloc, fix_alloc, std_alloc, sl_alloc,
          ll_alloc, temp_alloc],
    lists:flatten([io_lib:format("~s ~b/~b ", [lists:sublist(atom_to_list(A), 3) | alloc_mb(A)])
                   || A <- As]).

%% [carriers, blocks] in MB over the allocator's instances (multiblock, single-block
%% and pooled carriers; `erlang:system_info({allocator, A})').
alloc_mb(A) ->
    Parts = [KV || {instance, _, I} <- erlang:system_info({allocator, A}),
                   {K, KV} <- I, lists:member(K, [mbcs, sbcs, mbcs_pool])],
    Carriers = lists:sum([C || KV <- Parts, {carriers_size, C, _, _} <- KV]) +
        lists:sum([C || KV <- Parts, {carriers_size, C} <- KV]),
    Blocks = lists:sum([S || KV <- Parts, {blocks, Bs} <- KV, {_, L} <- Bs,
                             {size, S, _, _} <- L]) +
        lists:sum([S || KV <- Parts, {blocks, Bs} <- KV, {_, L} <- Bs, {size, S} <- L]),
    [Carriers bsr 20, Blocks bsr 20].
