%% Reproduction (bench only): aion_timers re-reads the same `timer_scan_limit'
%% rows every 100 ms while more timers than the limit are due within the horizon.
%%   erl -noshell -pa _build/default/lib/aion/ebin -pa _build/bench/ebin \
%%       -pa _build/bench/shim -run repro_timer_rescan main
%% Starts 3,000 workflows that each sleep 30 s (inside the 60 s horizon) on an
%% engine with timer_scan_limit = 1000, then counts aion_store:due_timers/3 calls
%% and rows returned during 12 s in which nothing is started or due.
-module(repro_timer_rescan).
-export([main/0]).

main() ->
    Dir = "/tmp/aion_repro_timer_rescan",
    _ = file:del_dir_r(Dir),
    ok = filelib:ensure_path(Dir),
    ok = application:load(aion),
    ok = application:set_env(aion, start_default_engine, false),
    {ok, _} = application:ensure_all_started(aion),
    {ok, _} = aion_engine:start(#{name => aion_default, db_path => filename:join(Dir, "a.db"),
                                  timer_scan_limit => 1000}),
    true = register(aion_bench_collector, self()),
    Base = erlang:system_time(millisecond) + 40000,
    Self = self(),
    Pids = [spawn_link(fun() ->
                               [{ok, _} = aion:start(aion_bench_wf, #{kind => <<"sleeper">>,
                                                                      base => Base, ms => 5000}, #{})
                                || _ <- lists:seq(1, 30)],
                               Self ! {done, self()}
                       end) || _ <- lists:seq(1, 100)],
    [receive {done, P} -> ok end || P <- Pids],
    [receive {sleeping, _} -> ok end || _ <- lists:seq(1, 3000)],
    erlang:trace_pattern({aion_store, due_timers, 3}, [{'_', [], [{return_trace}]}], [local]),
    erlang:trace(all, true, [call, {tracer, self()}]),
    {C0, _} = erlang:statistics(runtime),
    T0 = erlang:monotonic_time(millisecond),
    {Calls, Rows} = count(T0 + 12000, 0, 0),
    {C1, _} = erlang:statistics(runtime),
    io:format("in 12 s with nothing due: ~b due_timers scans returning ~b rows in total "
              "(~b armed); VM cpu ~b ms~n",
              [Calls, Rows, aion_timers:armed(aion_ctx:get(aion_default)), C1 - C0]),
    halt(0).

count(Until, Calls, Rows) ->
    Left = Until - erlang:monotonic_time(millisecond),
    receive
        {trace, _, call, _} -> count(Until, Calls + 1, Rows);
        {trace, _, return_from, _, {ok, L}} -> count(Until, Calls, Rows + length(L));
        _ -> count(Until, Calls, Rows)
    after max(0, Left) -> {Calls, Rows}
    end.
