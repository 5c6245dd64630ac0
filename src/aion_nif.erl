%% @private
%% @doc Raw NIF stubs of `priv/aion_nif.so'. Callers use `aion_store_sqlite',
%% `aion_json' and `aion_mailbox', never this module. Each section below belongs
%% to one C file; the scheduler each NIF runs on is noted in the C function table.
%%
%% The library is loaded from `priv/aion_nif.so'; the environment variable
%% `AION_NIF' (a path without the `.so' suffix) overrides it, which the
%% sanitizer test target uses to load `priv/aion_nif_asan.so'.
-module(aion_nif).

-on_load(init/0).

-export([build_info/0]).
-nifs([build_info/0]).

%% sql section (attributes must precede every function definition).
-export([sql_open/3, sql_close/1, sql_exec/2, sql_query/3]).
-nifs([sql_open/3, sql_close/1, sql_exec/2, sql_query/3]).

-define(NOT_LOADED, erlang:nif_error({not_loaded, [{module, ?MODULE}, {line, ?LINE}]})).

init() ->
    Path = case os:getenv("AION_NIF") of
               false -> filename:join(priv_dir(), "aion_nif");
               ""    -> filename:join(priv_dir(), "aion_nif");
               P     -> P
           end,
    erlang:load_nif(Path, 0).

priv_dir() ->
    case code:priv_dir(aion) of
        {error, bad_name} ->
            filename:join(filename:dirname(filename:dirname(code:which(?MODULE))), "priv");
        Dir ->
            Dir
    end.

%% @doc Versions the library was built against.
-spec build_info() -> #{sqlite_version := binary(), nif_version := {integer(), integer()}}.
build_info() -> ?NOT_LOADED.

%%% ===========================================================================
%%% store (c_src/store.c)
%%% ===========================================================================




%%% ===========================================================================
%%% json (c_src/json.c)
%%% ===========================================================================




%%% ===========================================================================
%%% mailbox (c_src/mailbox.c)
%%% ===========================================================================




%%% ===========================================================================

%%% ===========================================================================
%%% sql (c_src/sql.c): a small SQLite handle for the examples and tools
%%% ===========================================================================

%% @doc Opens a database. Mode `read_only | read_write | read_write_create';
%% busy timeout in milliseconds (0..60000).
-spec sql_open(iodata(), read_only | read_write | read_write_create, non_neg_integer()) ->
          {ok, reference()} | {error, {sqlite, integer(), binary()}}.
sql_open(_Path, _Mode, _BusyMs) -> ?NOT_LOADED.

%% @doc Closes a handle; double close is `ok'.
-spec sql_close(reference()) -> ok.
sql_close(_Ref) -> ?NOT_LOADED.

%% @doc Runs one or more statements without parameters or rows.
-spec sql_exec(reference(), iodata()) -> ok | {error, {sqlite, integer(), binary()}}.
sql_exec(_Ref, _Sql) -> ?NOT_LOADED.

%% @doc Runs exactly one statement with bound parameters; all rows and the change count.
-spec sql_query(reference(), iodata(), list()) ->
          {ok, [tuple()], non_neg_integer()}
          | {error, {sqlite, integer(), binary()} | empty_sql | trailing_sql}.
sql_query(_Ref, _Sql, _Params) -> ?NOT_LOADED.

