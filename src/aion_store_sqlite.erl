%% @doc The SQLite backend of {@link aion_store} (over `c_src/store.c').
%%
%% One open database has one writer thread (group commit: everything queued while
%% the previous transaction committed goes into the next one, each call isolated by a
%% savepoint), a pool of reader connections used on dirty IO schedulers, and a
%% checkpoint thread (WAL checkpoints never run on the commit path). Callers use
%% {@link aion_store}; the functions here take the backend reference, not the handle.
-module(aion_store_sqlite).

-behaviour(aion_store).

-export([open/2, close/1, append/2, append/3, history/3, get_run/2, current_run/2, runs_by_status/2,
         list/2, count/2, due_timers/4, activity_tasks/2, checkpoint/1, runs_to_resume/1]).

-export_type([ref/0]).

-opaque ref() :: reference().

-define(DEFAULT_BUSY_TIMEOUT, 50).
-define(DEFAULT_CHECKPOINT_INTERVAL, 1000).
%% Page size of a new database file (bytes): 1 KiB pages write a quarter of what
%% 4 KiB pages do for the scattered single-row updates of timer fires and closes
%% (bench/RESULTS.md, "Page size").
-define(DEFAULT_PAGE_SIZE, 1024).

%% @doc Opens the database file `Path' (created if missing). See
%% {@link aion_store:open/2} for the options and errors; raises `badarg' for an
%% option of the wrong type or an unknown option.
-spec open(file:filename_all(), aion_store:open_opts()) -> {ok, ref()} | {error, term()}.
open(Path, Opts) when is_map(Opts) ->
    Bin = path_bin(Path, Opts),
    Sync = maps:get(synchronous, Opts, full),
    Busy = maps:get(busy_timeout, Opts, ?DEFAULT_BUSY_TIMEOUT),
    Ckpt = maps:get(checkpoint_interval, Opts, ?DEFAULT_CHECKPOINT_INTERVAL),
    Page = maps:get(page_size, Opts, ?DEFAULT_PAGE_SIZE),
    Known = [synchronous, busy_timeout, checkpoint_interval, page_size],
    case maps:keys(maps:without(Known, Opts)) of
        [] when (Sync =:= full orelse Sync =:= normal), is_integer(Busy), Busy >= 0,
                Busy =< 16#7fffffff, is_integer(Ckpt), Ckpt > 0, Ckpt =< 16#7fffffff,
                is_integer(Page), Page >= 512, Page =< 65536, Page band (Page - 1) =:= 0 ->
            aion_nif:store_open(Bin, Sync, Busy, Ckpt, Page);
        _ ->
            erlang:error(badarg, [Path, Opts])
    end;
open(Path, Opts) ->
    erlang:error(badarg, [Path, Opts]).

%% @doc Closes the database (see {@link aion_store:close/1}).
-spec close(ref()) -> ok.
close(Db) ->
    aion_nif:store_close(Db).

%% @doc Appends (see {@link aion_store:append/2}). The request is parsed and queued
%% by the NIF on the caller's scheduler; the writer thread answers `{Tag, Reply}'
%% once the transaction holding it committed (or failed). The writer answers every
%% queued request, also when the store closes, so the wait has no timeout; the tag
%% is a fresh reference per call, so no reply can be taken for another call's.
-spec append(ref(), [aion_store:op()]) ->
          {ok, [[pos_integer()]]} | {error, aion_store:error_reason()}.
append(Db, Ops) ->
    append(Db, Ops, #{}).

%% @doc See {@link aion_store:append/3}: `#{priority => high}' queues the request in
%% the writer's urgent lane.
-spec append(ref(), [aion_store:op()], aion_store:append_opts()) ->
          {ok, [[pos_integer()]]} | {error, aion_store:error_reason()}.
append(Db, Ops, Opts) ->
    Tag = make_ref(),
    ok = aion_nif:store_append(Db, Tag, Ops, maps:get(priority, Opts, normal)),
    receive
        {Tag, Reply} -> Reply
    end.

%% @doc See {@link aion_store:history/3}.
-spec history(ref(), binary(), integer()) -> {ok, [aion_store:event()]} | {error, term()}.
history(Db, RunId, FromSeq) ->
    aion_nif:store_history(Db, RunId, FromSeq).

%% @doc See {@link aion_store:get_run/2}.
-spec get_run(ref(), binary()) -> {ok, aion_store:run()} | {error, term()}.
get_run(Db, RunId) ->
    aion_nif:store_get_run(Db, RunId).

%% @doc See {@link aion_store:current_run/2}.
-spec current_run(ref(), binary()) -> {ok, aion_store:run()} | {error, term()}.
current_run(Db, WorkflowId) ->
    aion_nif:store_current_run(Db, WorkflowId).

%% @doc See {@link aion_store:runs_by_status/2}.
-spec runs_by_status(ref(), [binary()]) -> {ok, [aion_store:run()]} | {error, term()}.
runs_by_status(Db, Statuses) ->
    aion_nif:store_runs_by_status(Db, Statuses).

%% @doc See {@link aion_store:list/2}.
-spec list(ref(), aion_store:filter()) -> {ok, [aion_store:run()]} | {error, term()}.
list(Db, Filter) ->
    aion_nif:store_list(Db, Filter).

%% @doc See {@link aion_store:count/2}.
-spec count(ref(), aion_store:filter()) -> {ok, non_neg_integer()} | {error, term()}.
count(Db, Filter) ->
    aion_nif:store_count(Db, Filter).

%% @doc See {@link aion_store:due_timers/4}.
-spec due_timers(ref(), integer(), integer(), non_neg_integer() | infinity) ->
          {ok, [aion_store:timer()]} | {error, term()}.
due_timers(Db, After, UpTo, Limit) ->
    aion_nif:store_due_timers(Db, After, UpTo, Limit).

%% @doc See {@link aion_store:activity_tasks/2}.
-spec activity_tasks(ref(), binary() | all) -> {ok, [aion_store:task()]} | {error, term()}.
activity_tasks(Db, RunIdOrAll) ->
    aion_nif:store_activity_tasks(Db, RunIdOrAll).

%% @doc See {@link aion_store:checkpoint/1}.
-spec checkpoint(ref()) -> ok | {error, term()}.
checkpoint(Db) ->
    aion_nif:store_checkpoint(Db).

%% @doc See {@link aion_store:runs_to_resume/1}.
-spec runs_to_resume(ref()) -> {ok, [aion_store:run()]} | {error, term()}.
runs_to_resume(Db) ->
    aion_nif:store_runs_to_resume(Db).

path_bin(Path, _Opts) when is_binary(Path), Path =/= <<>> ->
    Path;
path_bin(Path, Opts) ->
    try unicode:characters_to_binary(filename:flatten(Path)) of
        Bin when is_binary(Bin), Bin =/= <<>> -> Bin;
        _ -> erlang:error(badarg, [Path, Opts])
    catch
        error:_ -> erlang:error(badarg, [Path, Opts])
    end.
