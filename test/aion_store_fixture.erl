%% Fixtures shared by the store's EUnit modules (aion_store_tests,
%% aion_store_lane_tests): a fresh database file per test, removed afterwards.
-module(aion_store_fixture).

-export([tmp_path/1, rm_db/1, with_store/1, with_store/2]).

%% @doc A fresh database path under `$TMPDIR/aion_store_tests' (default /tmp), unique
%% per call.
-spec tmp_path(string()) -> string().
tmp_path(Name) ->
    Dir = filename:join(os:getenv("TMPDIR", "/tmp"), "aion_store_tests"),
    ok = filelib:ensure_dir(filename:join(Dir, "x")),
    N = erlang:unique_integer([positive]),
    lists:flatten(filename:join(Dir, io_lib:format("~s_~s_~b.db", [Name, os:getpid(), N]))).

%% @doc Deletes the database file at `Path' and its WAL and shared-memory files.
-spec rm_db(string()) -> ok.
rm_db(Path) ->
    [file:delete(Path ++ Suffix) || Suffix <- ["", "-wal", "-shm"]],
    ok.

%% @doc Runs `Fun(Store)' on a store opened on a fresh file with default options;
%% closes and deletes it afterwards.
-spec with_store(fun((aion_store:store()) -> term())) -> term().
with_store(Fun) ->
    with_store(#{}, Fun).

%% @doc As {@link with_store/1}, opening the store with `Opts'.
-spec with_store(aion_store:open_opts(), fun((aion_store:store()) -> term())) -> term().
with_store(Opts, Fun) ->
    Path = tmp_path("t"),
    {ok, S} = aion_store:open(Path, Opts),
    try
        Fun(S)
    after
        ok = aion_store:close(S),
        rm_db(Path)
    end.
