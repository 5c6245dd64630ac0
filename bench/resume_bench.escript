#!/usr/bin/env escript
%% -*- erlang -*-
%%! +sbwt none +sbwtdcpu none +sbwtdio none
%% aion_store:runs_to_resume/1 at scale (make bench-resume): a database in $TMPDIR
%% (default /tmp) with PARKED (default 1,000,000) runs cleanly parked at their head
%% (status running, one event, parked_seq = 1) plus UNPARKED (default 1,000) runs that
%% need a process (a third never parked, a third parked and then given an event, a
%% third stuck). Prints the build time, the time of the first call after a reopen and
%% the median of REPEAT (default 5) further calls. KEEP=1 keeps the database file.
-mode(compile).

-define(BATCH, 5000).

main(_) ->
    Here = filename:dirname(filename:absname(escript:script_name())),
    Ebin = filename:join([Here, "..", "_build", "default", "lib", "aion", "ebin"]),
    case code:add_patha(Ebin) of
        true -> ok;
        _ -> io:format(standard_error, "no ebin at ~s: run rebar3 compile~n", [Ebin]), halt(1)
    end,
    Parked = env_int("PARKED", 1000000),
    Unparked = env_int("UNPARKED", 1000),
    Repeat = env_int("REPEAT", 5),
    Dir = os:getenv("TMPDIR", "/tmp"),
    Path = filename:join(Dir, io_lib:format("aion_resume_bench_~s.db", [os:getpid()])),
    rm(Path),
    io:format("aion runs_to_resume bench: ~b parked + ~b unparked runs, db ~s, sqlite ~s~n",
              [Parked, Unparked, Path, maps:get(sqlite_version, aion_nif:build_info())]),
    {ok, S} = aion_store:open(Path, #{synchronous => normal}),
    {TBuild, ok} = timer:tc(fun() -> build(S, Parked, Unparked) end),
    io:format("build: ~.1f s~n", [TBuild / 1.0e6]),
    ok = aion_store:close(S),
    {ok, S2} = aion_store:open(Path, #{}),
    {TFirst, {ok, First}} = timer:tc(fun() -> aion_store:runs_to_resume(S2) end),
    Expected = Unparked div 3 * 3,
    length(First) =:= Expected orelse error({wrong_count, length(First), Expected}),
    Times = [begin
                 {T, {ok, L}} = timer:tc(fun() -> aion_store:runs_to_resume(S2) end),
                 length(L) =:= Expected orelse error({wrong_count, length(L)}),
                 T
             end || _ <- lists:seq(1, Repeat)],
    ok = aion_store:close(S2),
    {ok, #{size := Size}} = file_size(Path),
    io:format("runs_to_resume: ~b runs returned; first call after open ~.1f ms; "
              "median of ~b: ~.1f ms (min ~.1f, max ~.1f); db ~b MB~n",
              [Expected, TFirst / 1000, Repeat, median(Times) / 1000,
               lists:min(Times) / 1000, lists:max(Times) / 1000, Size div (1024 * 1024)]),
    case os:getenv("KEEP") of
        "1" -> io:format("kept ~s~n", [Path]);
        _ -> rm(Path)
    end,
    ok.

%% Parked runs in batches of ?BATCH create ops (create + one event + parked_seq = 1);
%% the unparked ones are spread over the id space.
build(S, Parked, Unparked) ->
    Third = Unparked div 3,
    batches(S, 1, Parked, fun(I) -> (create(I))#{set => #{parked_seq => 1}} end),
    batches(S, Parked + 1, Third, fun create/1),
    batches(S, Parked + Third + 1, Third,
            fun(I) -> (create(I))#{set => #{parked_seq => 1}} end),
    batches(S, Parked + Third + 1, Third,
            fun(I) -> #{run_id => id(I), events => [{<<"signal_received">>, I, <<"{}">>}]} end),
    batches(S, Parked + 2 * Third + 1, Third,
            fun(I) -> (create(I))#{set => #{status => <<"stuck">>, parked_seq => 1,
                                            stuck_reason => <<"{\"why\":\"bench\"}">>}} end),
    ok.

batches(_S, _From, N, _F) when N =< 0 ->
    ok;
batches(S, From, N, F) ->
    K = min(N, ?BATCH),
    {ok, _} = aion_store:append(S, [F(I) || I <- lists:seq(From, From + K - 1)]),
    batches(S, From + K, N - K, F).

create(I) ->
    Id = id(I),
    #{run_id => Id,
      create => #{workflow_id => <<"order-", (integer_to_binary(I))/binary>>,
                  type => <<"order_workflow">>, status => <<"running">>,
                  started_at => 1700000000000 + I},
      events => [{<<"workflow_started">>, 1700000000000 + I, <<"{\"input\":{\"n\":1}}">>}]}.

%% A 36-character id shaped like a UUID, scattered over the key space.
id(I) ->
    H = erlang:phash2(I, 1 bsl 32),
    iolist_to_binary(io_lib:format("~8.16.0b-~4.16.0b-4000-8000-~12.16.0b",
                                   [H, I band 16#ffff, I])).

env_int(Name, Default) ->
    case os:getenv(Name) of
        false -> Default;
        V -> list_to_integer(V)
    end.

median(L) ->
    lists:nth((length(L) + 1) div 2, lists:sort(L)).

file_size(Path) ->
    case file:read_file_info(Path) of
        {ok, Info} -> {ok, #{size => element(2, Info)}};
        E -> E
    end.

rm(Path) ->
    [file:delete(Path ++ Suffix) || Suffix <- ["", "-wal", "-shm"]],
    ok.
