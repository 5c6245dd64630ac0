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
