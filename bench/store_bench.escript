#!/usr/bin/env escript
%% -*- erlang -*-
%%! +sbwt none +sbwtdcpu none +sbwtdio none
%% Store benchmark (make bench-store): events/s and append (commit) latency p50/p99
%% for 1, 16 and 256 concurrent appenders, one ~200-byte event per append, with
%% synchronous=full and normal, each on a fresh database in $TMPDIR (default /tmp).
%% BENCH_SECONDS (default 5) sets the measured time per configuration.
-mode(compile).

main(_) ->
    Here = filename:dirname(filename:absname(escript:script_name())),
    Ebin = filename:join([Here, "..", "_build", "default", "lib", "aion", "ebin"]),
    case code:add_patha(Ebin) of
        true -> ok;
        _ -> io:format(standard_error, "no ebin at ~s: run rebar3 compile~n", [Ebin]), halt(1)
    end,
    Secs = list_to_integer(os:getenv("BENCH_SECONDS", "5")),
    Dir = os:getenv("TMPDIR", "/tmp"),
    io:format("aion store bench: ~b s per run, db in ~s, ~b schedulers, sqlite ~s~n",
              [Secs, Dir, erlang:system_info(schedulers_online),
               maps:get(sqlite_version, aion_nif:build_info())]),
    io:format("~-7s ~9s ~10s ~8s ~8s ~8s~n",
              ["sync", "appenders", "events/s", "p50 ms", "p99 ms", "max ms"]),
    [run(Dir, Sync, N, Secs * 1000) || Sync <- [full, normal], N <- [1, 16, 256]],
    ok.

run(Dir, Sync, N, Ms) ->
    Path = filename:join(Dir, io_lib:format("aion_store_bench_~s_~b.db", [os:getpid(), N])),
    rm(Path),
    {ok, S} = aion_store:open(Path, #{synchronous => Sync}),
    Ids = [<<"bench-run-", (integer_to_binary(I))/binary>> || I <- lists:seq(1, N)],
    {ok, _} = aion_store:append(S, [#{run_id => Id,
                                      create => #{workflow_id => Id, type => <<"bench">>,
                                                  status => <<"running">>, started_at => 0}}
                                    || Id <- Ids]),
    Payload = iolist_to_binary(["{\"kind\":\"bench\",\"value\":\"", binary:copy(<<"x">>, 160),
                                "\",\"n\":12345}"]),
    Parent = self(),
    Pids = [spawn_link(fun() ->
                           receive {go, Deadline} -> ok end,
                           Parent ! {self(), loop(S, Id, Payload, Deadline, 0, [])}
                       end) || Id <- Ids],
    T0 = erlang:monotonic_time(microsecond),
    Deadline = T0 + Ms * 1000,
    [P ! {go, Deadline} || P <- Pids],
    Results = [receive {P, R} -> R end || P <- Pids],
    T1 = erlang:monotonic_time(microsecond),
    ok = aion_store:close(S),
    rm(Path),
    Count = lists:sum([C || {C, _} <- Results]),
    Lat = lists:sort(lists:append([L || {_, L} <- Results])),
    io:format("~-7s ~9b ~10b ~8.2f ~8.2f ~8.2f~n",
              [Sync, N, round(Count * 1000000 / (T1 - T0)), pct(Lat, 0.50), pct(Lat, 0.99),
               lists:last(Lat) / 1000]).

loop(S, Id, Payload, Deadline, Count, Lat) ->
    T0 = erlang:monotonic_time(microsecond),
    {ok, [[_]]} = aion_store:append(S, [#{run_id => Id, events => [{<<"bench_event">>, T0, Payload}]}]),
    T1 = erlang:monotonic_time(microsecond),
    case T1 >= Deadline of
        true -> {Count + 1, [T1 - T0 | Lat]};
        false -> loop(S, Id, Payload, Deadline, Count + 1, [T1 - T0 | Lat])
    end.

pct(Sorted, P) ->
    lists:nth(max(1, round(P * length(Sorted))), Sorted) / 1000.

rm(Path) ->
    [file:delete(Path ++ Suffix) || Suffix <- ["", "-wal", "-shm"]],
    ok.
