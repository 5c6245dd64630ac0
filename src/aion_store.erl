%% @doc The durable event store: a behaviour and the dispatcher every caller uses.
%%
%% A store handle is opaque: `{Backend, Ref}' where `Backend' implements this
%% behaviour (today only {@link aion_store_sqlite}); `aion_store:F(Store, ...)' calls
%% `Backend:F(Ref, ...)'. Every write is one {@link append/2} call: all its ops commit in
%% one transaction or not at all. Binaries are stored as raw bytes; the JSON columns
%% (event data, search attributes, stuck reason, run and task data) hold JSON text
%% produced by `aion_json' and are never parsed by the store. Times are integer
%% milliseconds (timestamps: since the Unix epoch).
%%
%% Errors: `{error, Reason}' for expected failures (see {@link append/2});
%% `{error, {sqlite, Code, Message}}' when SQLite fails (`Code' is SQLite's extended
%% result code); `error(badarg)' for arguments of the wrong type (including unknown
%% keys in op, `create', `set' and filter maps); `error(closed)' for any call on a
%% closed store except {@link close/1}.
-module(aion_store).

-export([open/2, close/1, append/2, append/3, history/3, get_run/2, current_run/2, runs_by_status/2,
         list/2, count/2, due_timers/3, due_timers/4, activity_tasks/2, checkpoint/1, runs_to_resume/1]).

-export_type([store/0, open_opts/0, op/0, create/0, set/0, event_in/0, event/0, run/0,
              filter/0, timer/0, task/0, error_reason/0, append_opts/0]).

-type store() :: {module(), term()}.
-type open_opts() :: #{synchronous => full | normal,
                       busy_timeout => non_neg_integer(),
                       checkpoint_interval => pos_integer(),
                       page_size => 512..65536}.
-type append_opts() :: #{priority => normal | high}.
-type event_in() :: {Type :: binary(), RecordedAt :: integer(), Data :: iodata()}.
-type create() :: #{workflow_id := binary(), type := binary(), status := binary(),
                    started_at := integer(), parent => binary() | null,
                    continued_from => binary() | null, search_attributes => iodata() | null,
                    data => iodata() | null,
                    id_reuse_policy => allow_duplicate | allow_duplicate_failed_only
                                     | reject_duplicate}.
-type set() :: #{status => binary(), closed_at => integer() | null,
                 search_attributes => iodata() | null, stuck_reason => iodata() | null,
                 data => iodata() | null, parked_seq => integer() | null}.
-type op() :: #{run_id := binary(),
                events => [event_in()],
                expected_seq => pos_integer(),
                create => create(),
                set => set(),
                allow_closed => boolean(),
                timers_put => [{TimerId :: binary(), FireAt :: integer()}],
                timers_take => [binary()],
                timers_del => [binary()],
                tasks_put => [{ActivityId :: binary(), Attempt :: integer(),
                               TaskQueue :: binary(), Data :: iodata()}],
                tasks_take => [binary()],
                tasks_del => [binary()],
                clear_rows => boolean()}.
-type event() :: {Seq :: pos_integer(), Type :: binary(), RecordedAt :: integer(),
                  Data :: binary()}.
-type run() :: #{run_id := binary(), workflow_id := binary(), type := binary(),
                 status := binary(), started_at := integer(), closed_at := integer() | null,
                 parent := binary() | null, continued_from := binary() | null,
                 search_attributes := binary() | null, stuck_reason := binary() | null,
                 data := binary() | null, next_seq := pos_integer(),
                 parked_seq := integer() | null}.
-type filter() :: #{type => binary(), status => binary() | [binary()],
                    workflow_id => binary(), parent => binary(),
                    started_after => integer(), started_before => integer(),
                    closed_after => integer(), closed_before => integer(),
                    limit => non_neg_integer() | infinity,
                    cursor => {StartedAt :: integer(), RunId :: binary()}}.
-type timer() :: {RunId :: binary(), TimerId :: binary(), FireAt :: integer()}.
-type task() :: {RunId :: binary(), ActivityId :: binary(), Attempt :: integer(),
                 TaskQueue :: binary(), Data :: binary()}.
-type error_reason() :: closed
                      | {not_found, binary()}
                      | {already_exists, binary()}
                      | {already_started, binary()}
                      | {sequence_conflict, Expected :: pos_integer(), Found :: pos_integer()}
                      | {timer_gone, binary()}
                      | {task_gone, binary()}
                      | {sqlite, Code :: integer(), Message :: binary()}.

%%% Behaviour: each callback takes the backend's own reference (the second element of
%%% the store handle) where the dispatcher takes the handle.
-callback open(Path :: file:filename_all(), Opts :: open_opts()) ->
    {ok, Ref :: term()} | {error, term()}.
-callback close(Ref :: term()) -> ok.
-callback append(Ref :: term(), [op()], append_opts()) ->
    {ok, [[pos_integer()]]} | {error, error_reason()}.
-callback history(Ref :: term(), RunId :: binary(), FromSeq :: integer()) ->
    {ok, [event()]} | {error, term()}.
-callback get_run(Ref :: term(), RunId :: binary()) -> {ok, run()} | {error, term()}.
-callback current_run(Ref :: term(), WorkflowId :: binary()) -> {ok, run()} | {error, term()}.
-callback runs_by_status(Ref :: term(), [binary()]) -> {ok, [run()]} | {error, term()}.
-callback list(Ref :: term(), filter()) -> {ok, [run()]} | {error, term()}.
-callback count(Ref :: term(), filter()) -> {ok, non_neg_integer()} | {error, term()}.
-callback due_timers(Ref :: term(), After :: integer(), UpTo :: integer(),
                     Limit :: non_neg_integer() | infinity) ->
    {ok, [timer()]} | {error, term()}.
-callback activity_tasks(Ref :: term(), binary() | all) -> {ok, [task()]} | {error, term()}.
-callback checkpoint(Ref :: term()) -> ok | {error, term()}.
-callback runs_to_resume(Ref :: term()) -> {ok, [run()]} | {error, term()}.

-define(BACKEND, aion_store_sqlite).

%% @doc Opens (creating it if needed) the SQLite store at `Path'. Options:
%% `synchronous' (`full' | `normal', default `full'), `busy_timeout' (milliseconds,
%% default 50), `checkpoint_interval' (milliseconds between background WAL
%% checkpoints, default 1000), `page_size' (bytes per database page of a new file: a
%% power of two from 512 to 65536, default 1024; an existing file keeps the page size
%% it was created with). Returns `{error, {schema_too_new, Found, Supported}}'
%% for a database written by a newer aion, `{error, {sqlite, Code, Message}}' when
%% SQLite cannot open it; raises `badarg' for bad options.
-spec open(file:filename_all(), open_opts()) -> {ok, store()} | {error, term()}.
open(Path, Opts) ->
    case ?BACKEND:open(Path, Opts) of
        {ok, Ref} -> {ok, {?BACKEND, Ref}};
        {error, _} = Error -> Error
    end.

%% @doc Closes the store: waits until every queued append is committed and answered,
%% stops the store's threads and closes the database. A second close returns `ok';
%% any other call on a closed store raises `error(closed)'.
-spec close(store()) -> ok.
close({M, Ref}) -> M:close(Ref).

%% @doc Appends events and row changes. All ops of one call commit in one transaction
%% or not at all; ops apply in list order. Returns, per op, the seqs its events got
%% (seqs per run are contiguous from 1). Blocks only the caller until the commit is
%% durable (per `synchronous'). Errors (nothing of the call is written):
%% `{already_exists, RunId}' (create of an existing run), `{already_started, RunId}'
%% (create while the workflow id has an open run, or refused by the id reuse policy),
%% `{not_found, RunId}' (unknown run without `create'), `closed' (run in a terminal
%% status without `allow_closed'), `{sequence_conflict, Expected, Found}',
%% `{timer_gone, TimerId}', `{task_gone, ActivityId}', `{sqlite, Code, Message}'.
%% Within one op: events, then takes, deletes, `clear_rows', puts, then `set'.
-spec append(store(), [op()]) -> {ok, [[pos_integer()]]} | {error, error_reason()}.
append(Store, Ops) -> append(Store, Ops, #{}).

%% @doc {@link append/2} with options: `priority' (`normal' | `high', default
%% `normal'). A `high' append is committed ahead of normal ones: the store's writer
%% takes high-priority requests first and ends a normal transaction early (after
%% the request it is applying) when one arrives, so its commit waits for at most one
%% normal request. For short appends that wake someone at a set time (timer fires);
%% the normal lane always makes progress (at least one request per transaction).
%% Order between calls of different priorities is not kept; calls from one process
%% that each wait for their reply are ordered as ever. Errors: as {@link append/2};
%% raises `badarg' for an unknown priority or options that are not a map.
-spec append(store(), [op()], append_opts()) -> {ok, [[pos_integer()]]} | {error, error_reason()}.
append({M, Ref}, Ops, Opts) when is_map(Opts) -> M:append(Ref, Ops, Opts);
append(_Store, _Ops, _Opts) -> error(badarg).

%% @doc Events of `RunId' with seq >= `FromSeq', ascending; `{ok, []}' for an
%% unknown run or past the head.
-spec history(store(), binary(), integer()) -> {ok, [event()]} | {error, term()}.
history({M, Ref}, RunId, FromSeq) -> M:history(Ref, RunId, FromSeq).

%% @doc The run `RunId'; `{error, not_found}' if unknown.
-spec get_run(store(), binary()) -> {ok, run()} | {error, term()}.
get_run({M, Ref}, RunId) -> M:get_run(Ref, RunId).

%% @doc The most recently created run of `WorkflowId'; `{error, not_found}' if none.
-spec current_run(store(), binary()) -> {ok, run()} | {error, term()}.
current_run({M, Ref}, WorkflowId) -> M:current_run(Ref, WorkflowId).

%% @doc Runs whose status is one of `Statuses', ordered by started_at, then run_id.
-spec runs_by_status(store(), [binary()]) -> {ok, [run()]} | {error, term()}.
runs_by_status({M, Ref}, Statuses) -> M:runs_by_status(Ref, Statuses).

%% @doc Runs matching `Filter' (every key optional; time bounds are exclusive,
%% milliseconds; `cursor' is the exclusive `{StartedAt, RunId}' of the last run seen),
%% ordered by started_at, then run_id, at most `limit' of them.
-spec list(store(), filter()) -> {ok, [run()]} | {error, term()}.
list({M, Ref}, Filter) -> M:list(Ref, Filter).

%% @doc The number of runs matching `Filter' (as {@link list/2}; `limit' is ignored).
-spec count(store(), filter()) -> {ok, non_neg_integer()} | {error, term()}.
count({M, Ref}, Filter) -> M:count(Ref, Filter).

%% @doc At most `Limit' timers due at or before `UpTo' (milliseconds), ascending
%% fire_at.
-spec due_timers(store(), integer(), non_neg_integer() | infinity) ->
          {ok, [timer()]} | {error, term()}.
due_timers(Store, UpTo, Limit) -> due_timers(Store, -(1 bsl 63), UpTo, Limit).

%% @doc At most `Limit' timers due after `After' and at or before `UpTo'
%% (milliseconds), ascending fire_at (then run id, timer id): a scan that already
%% read every row up to `After' reads only what is new beyond it.
-spec due_timers(store(), integer(), integer(), non_neg_integer() | infinity) ->
          {ok, [timer()]} | {error, term()}.
due_timers({M, Ref}, After, UpTo, Limit) -> M:due_timers(Ref, After, UpTo, Limit).

%% @doc Outstanding activity task rows of `RunId' (or of every run with `all'),
%% ordered by run id, then activity id.
-spec activity_tasks(store(), binary() | all) -> {ok, [task()]} | {error, term()}.
activity_tasks({M, Ref}, RunIdOrAll) -> M:activity_tasks(Ref, RunIdOrAll).

%% @doc Runs a passive WAL checkpoint now (the store also runs them in the background).
-spec checkpoint(store()) -> ok | {error, term()}.
checkpoint({M, Ref}) -> M:checkpoint(Ref).

%% @doc The runs that need a process at engine start: every run in status `stuck',
%% and every run in status `running' or `paused' that is not cleanly parked, i.e.
%% whose `parked_seq' is `null' or differs from its history length
%% (`next_seq - 1': an event was appended after it was parked). Ordered by
%% started_at, then run_id. Reads every running, paused and stuck row of `runs'
%% (0.14-0.21 s for a million parked runs; see `docs/internals/store.md').
-spec runs_to_resume(store()) -> {ok, [run()]} | {error, term()}.
runs_to_resume({M, Ref}) -> M:runs_to_resume(Ref).
