-module(aion_sql_tests).
-include_lib("eunit/include/eunit.hrl").

tmp(Name) ->
    Dir = filename:join(["_build", "test", "tmp"]),
    ok = filelib:ensure_dir(filename:join(Dir, "x")),
    P = filename:join(Dir, Name ++ "_" ++ integer_to_list(erlang:unique_integer([positive])) ++ ".db"),
    _ = file:delete(P),
    P.

roundtrip_test() ->
    {ok, Db} = aion_sql:open(tmp("rt")),
    ok = aion_sql:exec(Db, "CREATE TABLE t(a INTEGER, b REAL, c TEXT, d BLOB, e);"
                           "CREATE INDEX t_a ON t(a)"),
    ?assertEqual({ok, 1}, aion_sql:execute(Db, "INSERT INTO t VALUES (?, ?, ?, ?, ?)",
                                           [-(1 bsl 62), 1.5, <<"héllo"/utf8>>, {blob, <<0, 1, 2>>}, null])),
    ?assertEqual({ok, [{-(1 bsl 62), 1.5, <<"héllo"/utf8>>, <<0, 1, 2>>, null}]},
                 aion_sql:query(Db, "SELECT * FROM t")),
    ?assertEqual({ok, 1}, aion_sql:execute(Db, "UPDATE t SET a = ? WHERE c = ?", [7, <<"héllo"/utf8>>])),
    ?assertEqual({ok, {7}}, aion_sql:one(Db, "SELECT a FROM t WHERE a = ?", [7])),
    ?assertEqual(none, aion_sql:one(Db, "SELECT a FROM t WHERE a = ?", [8])),
    ?assertEqual({ok, 0}, aion_sql:execute(Db, "SELECT a FROM t", [])),
    ok = aion_sql:close(Db).

errors_test() ->
    {ok, Db} = aion_sql:open(tmp("err")),
    ?assertMatch({error, {sqlite, 1, _}}, aion_sql:query(Db, "SELECT * FROM nope")),
    ?assertEqual({error, empty_sql}, aion_sql:query(Db, "  ")),
    ?assertEqual({error, trailing_sql}, aion_sql:query(Db, "SELECT 1; SELECT 2")),
    ?assertEqual({ok, [{1}]}, aion_sql:query(Db, "SELECT 1;  ")),
    ?assertError(badarg, aion_sql:query(Db, "SELECT ?", [])),
    ?assertError(badarg, aion_sql:query(Db, "SELECT ?", [self()])),
    ?assertError(badarg, aion_sql:query(Db, "SELECT ?", [1 bsl 70])),
    ?assertError(badarg, aion_sql:query(Db, <<"SELECT 1", 0>>, [])),
    ?assertMatch({error, {sqlite, _, _}}, aion_sql:exec(Db, "CREATE TABLE")),
    ok = aion_sql:close(Db),
    ok = aion_sql:close(Db),
    ?assertError(closed, aion_sql:query(Db, "SELECT 1")),
    ?assertError(closed, aion_sql:exec(Db, "SELECT 1")).

open_modes_test() ->
    Missing = tmp("missing"),
    ?assertMatch({error, {sqlite, 14, _}}, aion_sql:open(Missing, #{mode => read_only})),
    ?assertMatch({error, {sqlite, 14, _}}, aion_sql:open(Missing, #{mode => read_write})),
    ?assertError(badarg, aion_sql:open(Missing, #{mode => sideways})),
    P = tmp("ro"),
    {ok, W} = aion_sql:open(P),
    ok = aion_sql:exec(W, "PRAGMA journal_mode = WAL; CREATE TABLE t(a)"),
    {ok, R} = aion_sql:open(P, #{mode => read_only}),
    ?assertMatch({error, {sqlite, 8, _}}, aion_sql:execute(R, "INSERT INTO t VALUES (1)", [])),
    %% a WAL reader sees the writer's commits and keeps its snapshot during a read
    {ok, 1} = aion_sql:execute(W, "INSERT INTO t VALUES (1)", []),
    ?assertEqual({ok, [{1}]}, aion_sql:query(R, "SELECT count(*) FROM t")),
    ok = aion_sql:close(R),
    ok = aion_sql:close(W).

transaction_test() ->
    {ok, Db} = aion_sql:open(tmp("tx")),
    ok = aion_sql:exec(Db, "CREATE TABLE t(a)"),
    ?assertEqual({ok, x}, aion_sql:transaction(Db, fun() ->
                                                        {ok, 1} = aion_sql:execute(Db, "INSERT INTO t VALUES (1)", []),
                                                        {ok, x}
                                                end)),
    ?assertEqual({error, no}, aion_sql:transaction(Db, fun() ->
                                                           {ok, 1} = aion_sql:execute(Db, "INSERT INTO t VALUES (2)", []),
                                                           {error, no}
                                                   end)),
    ?assertError(boom, aion_sql:transaction(Db, fun() ->
                                                     {ok, 1} = aion_sql:execute(Db, "INSERT INTO t VALUES (3)", []),
                                                     error(boom)
                                             end)),
    ?assertEqual({ok, [{1}]}, aion_sql:query(Db, "SELECT a FROM t")),
    ok = aion_sql:close(Db).

%% Many processes share one handle: calls are serialised, nothing is lost.
concurrent_test() ->
    {ok, Db} = aion_sql:open(tmp("conc")),
    ok = aion_sql:exec(Db, "CREATE TABLE t(a)"),
    Self = self(),
    Pids = [spawn_link(fun() ->
                               [{ok, 1} = aion_sql:execute(Db, "INSERT INTO t VALUES (?)", [I * 100 + J])
                                || J <- lists:seq(1, 50)],
                               Self ! {done, self()}
                       end) || I <- lists:seq(1, 8)],
    [receive {done, P} -> ok after 30000 -> error(timeout) end || P <- Pids],
    ?assertEqual({ok, [{400}]}, aion_sql:query(Db, "SELECT count(*) FROM t")),
    ok = aion_sql:close(Db).

%% A handle dropped without close is closed by its destructor (no leak, no crash).
gc_test() ->
    P = tmp("gc"),
    _ = [begin {ok, D} = aion_sql:open(P), D end || _ <- lists:seq(1, 50)],
    erlang:garbage_collect(),
    {ok, Db} = aion_sql:open(P),
    ?assertEqual({ok, [{1}]}, aion_sql:query(Db, "SELECT 1")),
    ok = aion_sql:close(Db).

%% Closing a handle while other processes run queries on it: each query either
%% completes or raises `closed'; nothing crashes, nothing hangs.
close_races_queries_test() ->
    {ok, Db} = aion_sql:open(tmp("race")),
    ok = aion_sql:exec(Db, "CREATE TABLE t(a); INSERT INTO t VALUES (1), (2), (3)"),
    Self = self(),
    Pids = [spawn_link(fun() -> Self ! {done, self(), race_loop(Db, 0)} end) || _ <- lists:seq(1, 8)],
    {ok, _} = aion_sql:query(Db, "SELECT count(*) FROM t"),
    ok = aion_sql:close(Db),
    Counts = [receive {done, P, N} -> N after 30000 -> error(timeout) end || P <- Pids],
    ?assert(lists:all(fun(N) -> N >= 0 end, Counts)).

race_loop(Db, N) when N < 100000 ->
    try aion_sql:query(Db, "SELECT a FROM t WHERE a > ?", [N rem 3]) of
        {ok, _} -> race_loop(Db, N + 1)
    catch error:closed -> N
    end;
race_loop(_Db, N) ->
    N.

%% A caller killed while its query runs leaves the handle usable.
killed_caller_test() ->
    {ok, Db} = aion_sql:open(tmp("killed")),
    ok = aion_sql:exec(Db, "CREATE TABLE t(a)"),
    Pid = spawn(fun() ->
                        aion_sql:query(Db, "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1"
                                           " FROM c WHERE x < 2000000) SELECT count(*) FROM c")
                end),
    exit(Pid, kill),
    ?assertEqual({ok, 1}, aion_sql:execute(Db, "INSERT INTO t VALUES (1)", [])),
    ok = aion_sql:close(Db).
