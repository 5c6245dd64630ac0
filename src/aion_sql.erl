%% @doc A small SQLite handle for the examples and tools; not the event store.
%%
%% The shop service of the demo keeps its inventory and ledger through this module,
%% and the operator CLI may read a database file with it. Every call runs on a dirty
%% IO scheduler; one handle may be shared by several processes (calls on a handle are
%% serialised by a mutex in C), but a multi-statement transaction (`BEGIN' ...
%% `COMMIT') must be issued by one process that owns the handle meanwhile.
%%
%% Values: integers (64-bit), floats, binaries (TEXT), `{blob, Binary}' (written as a
%% BLOB, read back as a binary) and `null'. Rows come back as tuples.
%%
%% Errors: `{error, {sqlite, Code, Message}}' for SQLite failures (extended result
%% codes), `{error, empty_sql | trailing_sql}' for a `query/3' text that holds no or
%% more than one statement; `badarg' for wrong term types (e.g. a parameter count
%% that does not match the statement); a call on a closed handle raises
%% `error(closed)'.
-module(aion_sql).

-export([open/1, open/2, close/1, exec/2, query/2, query/3, execute/3, one/3,
         transaction/2]).

-export_type([db/0, value/0, mode/0]).

-opaque db() :: {aion_sql, reference()}.
-type value() :: integer() | float() | binary() | null | {blob, binary()}.
-type mode() :: read_only | read_write | read_write_create.
-type error() :: {error, {sqlite, integer(), binary()} | empty_sql | trailing_sql}.

%% @doc Opens (creating if missing) a database for reading and writing.
-spec open(file:filename_all()) -> {ok, db()} | {error, {sqlite, integer(), binary()}}.
open(Path) ->
    open(Path, #{}).

%% @doc Opens a database. Options: `mode' (`read_write_create' default,
%% `read_write', `read_only'), `busy_timeout' (milliseconds SQLite waits for a
%% lock, default 1000). A read-only open of a WAL database reads consistent
%% snapshots while another process writes. A missing file with a mode other than
%% `read_write_create' gives `{error, {sqlite, 14, _}}' (SQLITE_CANTOPEN).
-spec open(file:filename_all(), #{mode => mode(), busy_timeout => non_neg_integer()}) ->
          {ok, db()} | {error, {sqlite, integer(), binary()}}.
open(Path, Opts) ->
    Mode = maps:get(mode, Opts, read_write_create),
    Busy = maps:get(busy_timeout, Opts, 1000),
    case aion_nif:sql_open(unicode:characters_to_binary(Path), Mode, Busy) of
        {ok, Ref} -> {ok, {aion_sql, Ref}};
        {error, _} = E -> E
    end.

%% @doc Closes the handle; double close is `ok'.
-spec close(db()) -> ok.
close({aion_sql, Ref}) ->
    aion_nif:sql_close(Ref).

%% @doc Runs one or more statements separated by `;' (no parameters, rows ignored).
-spec exec(db(), iodata()) -> ok | error().
exec({aion_sql, Ref}, Sql) ->
    aion_nif:sql_exec(Ref, Sql).

%% @doc Runs one statement without parameters and returns its rows.
-spec query(db(), iodata()) -> {ok, [tuple()]} | error().
query(Db, Sql) ->
    query(Db, Sql, []).

%% @doc Runs one statement with positional parameters (`?') and returns its rows.
-spec query(db(), iodata(), [value()]) -> {ok, [tuple()]} | error().
query({aion_sql, Ref}, Sql, Params) ->
    case aion_nif:sql_query(Ref, Sql, Params) of
        {ok, Rows, _Changes} -> {ok, Rows};
        {error, _} = E -> E
    end.

%% @doc Runs one writing statement; returns the number of rows it changed.
-spec execute(db(), iodata(), [value()]) -> {ok, non_neg_integer()} | error().
execute({aion_sql, Ref}, Sql, Params) ->
    case aion_nif:sql_query(Ref, Sql, Params) of
        {ok, _Rows, Changes} -> {ok, Changes};
        {error, _} = E -> E
    end.

%% @doc The first row of a query, or `none'.
-spec one(db(), iodata(), [value()]) -> {ok, tuple()} | none | error().
one(Db, Sql, Params) ->
    case query(Db, Sql, Params) of
        {ok, [Row | _]} -> {ok, Row};
        {ok, []} -> none;
        {error, _} = E -> E
    end.

%% @doc Runs `Fun()' inside `BEGIN IMMEDIATE' ... `COMMIT'. `Fun' returns
%% `{ok, V}' (committed, returns `{ok, V}') or `{error, R}' (rolled back, returns
%% `{error, R}'); an exception rolls back and is re-raised. The caller must own the
%% handle for the duration (no other process may use it meanwhile).
-spec transaction(db(), fun(() -> {ok, T} | {error, term()})) -> {ok, T} | {error, term()}.
transaction(Db, Fun) ->
    case exec(Db, <<"BEGIN IMMEDIATE">>) of
        ok ->
            try Fun() of
                {ok, _} = Ok ->
                    case exec(Db, <<"COMMIT">>) of
                        ok -> Ok;
                        {error, _} = E -> _ = exec(Db, <<"ROLLBACK">>), E
                    end;
                {error, _} = E ->
                    ok = exec(Db, <<"ROLLBACK">>),
                    E
            catch
                Class:Reason:Stack ->
                    _ = exec(Db, <<"ROLLBACK">>),
                    erlang:raise(Class, Reason, Stack)
            end;
        {error, _} = E ->
            E
    end.
