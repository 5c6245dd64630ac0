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

%% json section (c_src/json.c); attributes here, stubs in the json section below.
-export([json_decode/2, json_encode/2]).
-nifs([json_decode/2, json_encode/2]).

%% mailbox section (c_src/mailbox.c); Erlang wants every attribute before the
%% first function, so the section's attributes live here and its stubs below.
-export([mailbox_new/1, mailbox_retain/5, mailbox_take/3, mailbox_take_all/2,
         mailbox_bump_epoch/2, mailbox_epoch/2, mailbox_count/1, mailbox_forget/2]).
-nifs([mailbox_new/1, mailbox_retain/5, mailbox_take/3, mailbox_take_all/2,
       mailbox_bump_epoch/2, mailbox_epoch/2, mailbox_count/1, mailbox_forget/2]).

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

%% @doc Decodes one JSON text (RFC 8259). Budget: bytes of work (input size plus a
%% bignum estimate) above which the call moves to a dirty CPU scheduler. Errors:
%% `{error, {invalid_json, Offset, Why}}'; `badarg' for a non-binary or bad budget.
-spec json_decode(binary(), non_neg_integer()) ->
          {ok, term()} | {error, {invalid_json, non_neg_integer(), atom()}}.
json_decode(_Bin, _Budget) -> ?NOT_LOADED.

%% @doc Encodes a payload term as JSON text. Budget: output bytes above which the
%% call restarts on a dirty CPU scheduler. Errors:
%% `{error, {invalid_payload, Path, Why}}'; `badarg' for a bad budget.
-spec json_encode(term(), non_neg_integer()) ->
          {ok, binary()} | {error, {invalid_payload, [binary() | non_neg_integer()], atom()}}.
json_encode(_Term, _Budget) -> ?NOT_LOADED.




%%% ===========================================================================
%%% mailbox (c_src/mailbox.c)
%%% ===========================================================================

%% @doc A new mailbox keeping at most `MaxTombstones' exit tombstones.
-spec mailbox_new(non_neg_integer()) -> reference().
mailbox_new(_MaxTombstones) -> ?NOT_LOADED.

%% @doc Retains a copy of `Payload' under `{Pid, Correlation}' and sends `Marker' to `Pid'.
-spec mailbox_retain(reference(), pid(), term(), term(), atom()) -> ok | {error, exited}.
mailbox_retain(_Mailbox, _Pid, _Correlation, _Payload, _Marker) -> ?NOT_LOADED.

%% @doc Removes and returns the payload retained under `{Pid, Correlation}'.
-spec mailbox_take(reference(), pid(), term()) -> {ok, term()} | none.
mailbox_take(_Mailbox, _Pid, _Correlation) -> ?NOT_LOADED.

%% @doc Removes and returns every entry retained for `Pid', in retain order.
-spec mailbox_take_all(reference(), pid()) -> [{term(), term()}].
mailbox_take_all(_Mailbox, _Pid) -> ?NOT_LOADED.

%% @doc Increments the wake epoch of `Pid'; raises `exited' for a dead pid.
-spec mailbox_bump_epoch(reference(), pid()) -> pos_integer().
mailbox_bump_epoch(_Mailbox, _Pid) -> ?NOT_LOADED.

%% @doc The wake epoch of `Pid' (0 if never seen, `exited' after it exited).
-spec mailbox_epoch(reference(), pid()) -> non_neg_integer() | exited.
mailbox_epoch(_Mailbox, _Pid) -> ?NOT_LOADED.

%% @doc The number of retained entries over all pids.
-spec mailbox_count(reference()) -> non_neg_integer().
mailbox_count(_Mailbox) -> ?NOT_LOADED.

%% @doc Drops every entry, the monitor and any tombstone of `Pid'.
-spec mailbox_forget(reference(), pid()) -> ok.
mailbox_forget(_Mailbox, _Pid) -> ?NOT_LOADED.

%%% ===========================================================================
