%% @private
%% @doc Raw NIF stubs of `priv/aion_nif.so'. Callers use `aion_store_sqlite',
%% `aion_json' and `aion_mailbox', never this module. Each section below belongs
%% to one C file; the scheduler each NIF runs on is noted in the C function table.
%%
%% The library is loaded from `priv/aion_nif.so'; the environment variable
%% `AION_NIF' (a path without the `.so' suffix) overrides it, which the
%% sanitizer test target uses to load `priv/aion_nif_asan.so'.
-module(aion_nif).

%% store section (c_src/store.c): Erlang wants every attribute before the first
%% function, so the section's attributes live here and its stubs below.
-export([store_open/5, store_close/1, store_append/4, store_history/3, store_get_run/2,
         store_current_run/2, store_runs_by_status/2, store_list/2, store_count/2,
         store_due_timers/4, store_activity_tasks/2, store_checkpoint/1,
         store_runs_to_resume/1]).
-nifs([store_open/5, store_close/1, store_append/4, store_history/3, store_get_run/2,
       store_current_run/2, store_runs_by_status/2, store_list/2, store_count/2,
       store_due_timers/4, store_activity_tasks/2, store_checkpoint/1,
       store_runs_to_resume/1]).

-on_load(init/0).

-export([build_info/0]).
-nifs([build_info/0]).

%% json section (c_src/json.c); attributes here, stubs in the json section below.
-export([json_decode/2, json_encode/2, json_decode_events/2]).
-nifs([json_decode/2, json_encode/2, json_decode_events/2]).

%% sql section (attributes must precede every function definition).
-export([sql_open/3, sql_close/1, sql_exec/2, sql_query/3]).
-nifs([sql_open/3, sql_close/1, sql_exec/2, sql_query/3]).

%% mailbox section (c_src/mailbox.c); Erlang wants every attribute before the
%% first function, so the section's attributes live here and its stubs below.
-export([mailbox_new/1, mailbox_retain/5, mailbox_take/3, mailbox_take_all/2,
         mailbox_bump_epoch/2, mailbox_epoch/2, mailbox_count/1, mailbox_forget/2,
         mailbox_release/2]).
-nifs([mailbox_new/1, mailbox_retain/5, mailbox_take/3, mailbox_take_all/2,
       mailbox_bump_epoch/2, mailbox_epoch/2, mailbox_count/1, mailbox_forget/2,
         mailbox_release/2]).

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

%% @doc Opens (creating if needed) the database at `Path' with `synchronous' mode `Sync',
%% SQLite busy timeout `BusyMs' (milliseconds) and background checkpoint interval
%% `CheckpointMs' (milliseconds); a new file gets pages of `PageSize' bytes (512 to
%% 65536, a power of two; an existing file keeps its own). Starts the writer and
%% checkpoint threads.
-spec store_open(Path :: binary(), Sync :: full | normal, BusyMs :: non_neg_integer(),
                 CheckpointMs :: pos_integer(), PageSize :: pos_integer()) ->
          {ok, reference()} | {error, term()}.
store_open(_Path, _Sync, _BusyMs, _CheckpointMs, _PageSize) -> ?NOT_LOADED.

%% @doc Drains the writer queue, stops the threads and closes the connections.
-spec store_close(reference()) -> ok.
store_close(_Db) -> ?NOT_LOADED.

%% @doc Queues an append request; the writer later sends `{Tag, Reply}' to the caller.
%% `high' puts it in the writer's urgent lane (taken first; a normal transaction in
%% progress ends early for it).
-spec store_append(reference(), Tag :: reference(), Ops :: [map()], normal | high) -> ok.
store_append(_Db, _Tag, _Ops, _Priority) -> ?NOT_LOADED.

%% @doc Events of `RunId' with seq >= `FromSeq', ascending.
-spec store_history(reference(), binary(), integer()) ->
          {ok, [{pos_integer(), binary(), integer(), binary()}]} | {error, term()}.
store_history(_Db, _RunId, _FromSeq) -> ?NOT_LOADED.

%% @doc The run row of `RunId'.
-spec store_get_run(reference(), binary()) -> {ok, map()} | {error, term()}.
store_get_run(_Db, _RunId) -> ?NOT_LOADED.

%% @doc The most recently created run of `WorkflowId'.
-spec store_current_run(reference(), binary()) -> {ok, map()} | {error, term()}.
store_current_run(_Db, _WorkflowId) -> ?NOT_LOADED.

%% @doc Runs whose status is one of `Statuses'.
-spec store_runs_by_status(reference(), [binary()]) -> {ok, [map()]} | {error, term()}.
store_runs_by_status(_Db, _Statuses) -> ?NOT_LOADED.

%% @doc Runs matching a filter map.
-spec store_list(reference(), map()) -> {ok, [map()]} | {error, term()}.
store_list(_Db, _Filter) -> ?NOT_LOADED.

%% @doc Number of runs matching a filter map (`limit' ignored).
-spec store_count(reference(), map()) -> {ok, non_neg_integer()} | {error, term()}.
store_count(_Db, _Filter) -> ?NOT_LOADED.

%% @doc Timers due after `After' and at or before `UpTo' (milliseconds), ascending
%% fire_at.
-spec store_due_timers(reference(), integer(), integer(), non_neg_integer() | infinity) ->
          {ok, [{binary(), binary(), integer()}]} | {error, term()}.
store_due_timers(_Db, _After, _UpTo, _Limit) -> ?NOT_LOADED.

%% @doc Outstanding activity task rows of a run, or of every run.
-spec store_activity_tasks(reference(), binary() | all) ->
          {ok, [{binary(), binary(), integer(), binary(), binary()}]} | {error, term()}.
store_activity_tasks(_Db, _RunId) -> ?NOT_LOADED.

%% @doc A PASSIVE WAL checkpoint.
-spec store_checkpoint(reference()) -> ok | {error, term()}.
store_checkpoint(_Db) -> ?NOT_LOADED.

%% @doc Runs that need a process at engine start (stuck, or running/paused and not
%% parked at their history's head).
-spec store_runs_to_resume(reference()) -> {ok, [map()]} | {error, term()}.
store_runs_to_resume(_Db) -> ?NOT_LOADED.




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

%% @doc Decodes stored history rows `{Seq, Type, RecordedAt, Data}' into event maps
%% (top-level keys as existing atoms, never created; the rest as json_decode/2).
%% Returns `{ok, Events}' or `{mixed, Out}' where an element of Out is an event map,
%% `{Map}' (the map has an `error' or `reason' field to unwrap) or the row itself (not
%% decodable here: non-existing atom, invalid JSON, ...). Budget: bytes of Data above
%% which the call moves to a dirty CPU scheduler. `badarg' for a non-list or bad budget.
-spec json_decode_events([tuple()], non_neg_integer()) ->
          {ok | mixed, [map() | {map()} | tuple()]}.
json_decode_events(_Rows, _Budget) -> ?NOT_LOADED.




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

%% @doc Raw NIF: drop the entry-less record of a pid (see `aion_mailbox:release/2').
-spec mailbox_release(reference(), pid()) -> ok | busy.
mailbox_release(_Mailbox, _Pid) -> ?NOT_LOADED.

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

