#!/usr/bin/env escript
%% -*- erlang -*-
%%! +sbwt none +sbwtdcpu none +sbwtdio none
%% Timer service benchmark (make bench-timers): N durable timers (default 100,000,
%% BENCH_TIMERS), 100 per run, all due at the same instant, armed on an engine with
%% synchronous=normal; reports the lateness of `timer_fired' (recorded_at - fire_at)
%% p50/p99/max and when the last fire was committed. Fresh database in $TMPDIR.
-mode(compile).

main(_) ->
    Here = filename:dirname(filename:absname(escript:script_name())),
    Ebin = filename:join([Here, "..", "_build", "default", "lib", "aion", "ebin"]),
    case code:add_patha(Ebin) of
        true -> ok;
        _ -> io:format(standard_error, "no ebin at ~s: run rebar3 compile~n", [Ebin]), halt(1)
    end,
    N = list_to_integer(os:getenv("BENCH_TIMERS", "100000")),
    Dir = os:getenv("TMPDIR", "/tmp"),
    Path = filename:join(Dir, "aion_timers_bench_" ++ os:getpid() ++ "_"
                         ++ integer_to_list(erlang:system_time()) ++ ".db"),
    rm(Path),
    ok = application:load(aion),
    ok = application:set_env(aion, start_default_engine, false),
    {ok, _} = application:ensure_all_started(aion),
    {ok, _} = aion_engine:start(#{name => bench, db_path => Path, synchronous => normal}),
    #{store := Store} = Ctx = aion_ctx:get(bench),
    PerRun = 100,
    Runs = [<<"bench-run-", (integer_to_binary(I))/binary>> || I <- lists:seq(1, N div PerRun)],
    Now = erlang:system_time(millisecond),
    FireAt = Now + 5000 + N div 10,
    Ids = [<<"t", (integer_to_binary(I))/binary>> || I <- lists:seq(1, PerRun)],
    lists:foreach(
      fun(RunId) ->
              {ok, _} = aion_store:append(Store, [#{run_id => RunId,
                                                    create => #{workflow_id => RunId,
                                                                type => <<"bench">>,
                                                                status => <<"running">>,
                                                                started_at => Now},
                                                    timers_put => [{Id, FireAt} || Id <- Ids]}]),
              [aion_timers:arm(Ctx, RunId, Id, FireAt) || Id <- Ids]
      end, Runs),
    io:format("aion timers bench: ~b timers armed, due in ~b ms, ~b schedulers~n",
              [N, FireAt - erlang:system_time(millisecond), erlang:system_info(schedulers_online)]),
    wait_empty(Store),
    Done = erlang:system_time(millisecond),
    L = lists:sort([At - FireAt || RunId <- Runs,
                                   {_, <<"timer_fired">>, At, _} <- element(2, aion_store:history(Store, RunId, 1))]),
    Len = length(L),
    io:format("fired ~b: lateness p50 ~b ms, p99 ~b ms, max ~b ms; last committed ~b ms after due~n",
              [Len, lists:nth(max(1, Len div 2), L), lists:nth(max(1, Len * 99 div 100), L),
               lists:last(L), Done - FireAt]),
    ok = aion_engine:stop(bench),
    rm(Path).

rm(Path) ->
    _ = [file:delete(Path ++ Sfx) || Sfx <- ["", "-wal", "-shm"]],
    ok.

wait_empty(Store) ->
    {ok, Rows} = aion_store:due_timers(Store, erlang:system_time(millisecond) + 3600000, 1),
    case Rows of
        [] -> ok;
        _ -> receive after 20 -> wait_empty(Store) end
    end.
