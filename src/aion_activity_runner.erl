%% @doc The activity pool of one engine: starts one executor per dispatched activity
%% and hands out attempt slots, at most `max_concurrent_activities' (default 1000)
%% attempts running at once; further attempts queue in arrival order.
%%
%% A paused run (see `aion_lifecycle:pause/2') keeps its executors, but none of
%% its attempts gets a slot until the run is resumed; an attempt already running
%% when the pause is recorded finishes. The set of paused runs is loaded from the
%% store when the runner starts, so a paused run stays held across restarts.
%%
%% The executors are registered in a protected ETS table named like the runner
%% (`aion_ctx:proc_name(Engine, runner)'), keyed `{RunId, ActivityId}', so that
%% {@link cancel/3} and {@link cancel_run/2} find them without asking the runner.
%%
%% This module also owns the activity task format shared with the workflow
%% process: {@link new_task/1}, {@link scheduled_fields/1}, {@link task_row/1} and the
%% mapping of a terminal activity event to the value `aion_workflow:await/1'
%% returns ({@link await_result/1}).
-module(aion_activity_runner).
-behaviour(gen_server).

-export([start_link/1, new_task/1, name_binary/1, scheduled_fields/1, task_row/1,
         task_from_row/1, task_from_scheduled/4, dispatch/2, cancel/3, cancel_run/2,
         pause_run/2, resume_run/2, recover/1, await_result/1, running/1]).
%% Executor side.
-export([acquire/3, release/1]).
-export([init/1, handle_call/3, handle_cast/2, handle_info/2, terminate/2]).

-export_type([task/0, name/0]).

-include_lib("kernel/include/logger.hrl").

-type name() :: {module(), atom()} | binary().
%% One activity as the runner and its executor see it. `attempt' is the attempt the
%% executor runs next; `first_attempt' is where the retry policy counts from (1, or
%% the attempt after a reopen).
-type task() :: #{run_id := binary(),
                  workflow_id := binary(),
                  activity_id := binary(),
                  name := binary(),
                  mf := {module(), atom()} | undefined,
                  args := [term()],
                  options := aion_retry:options(),
                  scheduled_at := integer(),
                  attempt := pos_integer(),
                  first_attempt := pos_integer(),
                  heartbeat_details := term()}.

-define(DEFAULT_MAX, 1000).

-type state() :: map().

%%% ===========================================================================
%%% Task format
%%% ===========================================================================

%% @doc Validates a new activity call and builds its task (attempt 1).
%%
%% `name' is `{Module, Function}' (run as `apply(M, F, Args)' on this node) or a
%% binary (a named activity served on a task queue); `args' a list of JSON payloads
%% (the activity receives them in decoded form, the same as after a restart);
%% `options' the options of `aion_workflow:start_activity/3' (see
%% {@link aion_retry:validate/1}); `scheduled_at' the `recorded_at' of the
%% `activity_scheduled' event (ms), the start of `schedule_to_close_timeout'.
%% Errors: `{error, {invalid_options, Detail}}' (also for a bad name or a non-list
%% `args'), `{error, {invalid_payload, Path, Why}}' (Path starts with the argument's
%% index, 0-based).
-spec new_task(#{run_id := binary(), workflow_id := binary(), activity_id := binary(),
                 name := name(), args := list(), options := map(),
                 scheduled_at := integer()}) ->
          {ok, task()} | {error, {invalid_options, term()} | {invalid_payload, list(), atom()}}.
new_task(#{run_id := RunId, workflow_id := WfId, activity_id := ActId, name := Name,
           args := Args, options := Opts, scheduled_at := At}) ->
    case {check_name(Name), is_list(Args), aion_retry:validate(Opts)} of
        {error, _, _} -> {error, {invalid_options, {bad_value, name, Name}}};
        {_, false, _} -> {error, {invalid_options, {bad_value, args, Args}}};
        {_, _, {error, _} = E} -> E;
        {{NameBin, MF}, true, {ok, Norm}} ->
            case normalise_args(Args) of
                {ok, Decoded} ->
                    {ok, #{run_id => RunId, workflow_id => WfId, activity_id => ActId,
                           name => NameBin, mf => MF, args => Decoded, options => Norm,
                           scheduled_at => At, attempt => 1, first_attempt => 1,
                           heartbeat_details => null}};
                {error, _} = E ->
                    E
            end
    end.

check_name({M, F}) when is_atom(M), is_atom(F) -> {name_binary({M, F}), {M, F}};
check_name(B) when is_binary(B), B =/= <<>> -> {B, undefined};
check_name(_) -> error.

normalise_args(Args) ->
    case aion_json:encode_bin(Args) of
        {ok, Json} ->
            {ok, Decoded} = aion_json:decode(Json),
            {ok, Decoded};
        {error, _} = E ->
            E
    end.

%% @doc The recorded name of an activity: `{M, F}' is `<<"M:F">>', a binary stays.
-spec name_binary(name()) -> binary().
name_binary({M, F}) when is_atom(M), is_atom(F) ->
    <<(atom_to_binary(M, utf8))/binary, ":", (atom_to_binary(F, utf8))/binary>>;
name_binary(B) when is_binary(B) ->
    B.

%% @doc The fields of the task's `activity_scheduled' event: `activity_id', `name',
%% `input' (the argument list), `task_queue', `options' (JSON form, see
%% {@link aion_retry:to_json/1}) and `kind' (`<<"mf">>' for `{M, F}',
%% `<<"named">>' for a task-queue name), all JSON payloads.
-spec scheduled_fields(task()) -> #{atom() => term()}.
scheduled_fields(#{activity_id := Id, name := Name, mf := MF, args := Args,
                   options := #{task_queue := Q} = Opts}) ->
    #{activity_id => Id, name => Name, input => Args, task_queue => Q,
      options => aion_retry:to_json(Opts), kind => kind(MF)}.

kind(undefined) -> <<"named">>;
kind({_, _}) -> <<"mf">>.

%% @doc The task row of the task (for `tasks_put'): `{ActivityId, Attempt,
%% TaskQueue, DataJson}' where Data holds everything needed to dispatch the
%% activity again without reading history.
-spec task_row(task()) -> {binary(), pos_integer(), binary(), binary()}.
task_row(#{activity_id := Id, attempt := Attempt, options := #{task_queue := Q}} = T) ->
    {Id, Attempt, Q, row_data(T)}.

row_data(#{workflow_id := WfId, name := Name, mf := MF, args := Args, options := Opts,
           scheduled_at := At, first_attempt := First, heartbeat_details := HB}) ->
    Data = #{workflow_id => WfId, name => Name, kind => kind(MF), args => Args,
             options => aion_retry:to_json(Opts), scheduled_at => At,
             first_attempt => First, heartbeat_details => HB},
    case aion_json:encode_bin(Data) of
        {ok, Json} -> Json;
        {error, Reason} -> error(Reason)
    end.

%% @doc The task stored in a task row (as `aion_store:activity_tasks/2' returns it),
%% with `attempt' = the row's attempt. Raises `error({bad_task_row, Detail})' when
%% the row cannot be read.
-spec task_from_row({binary(), binary(), integer(), binary(), binary()}) -> task().
task_from_row({RunId, ActId, Attempt, _Queue, Data}) ->
    case aion_json:decode(Data) of
        {ok, #{<<"workflow_id">> := WfId, <<"name">> := Name, <<"kind">> := Kind,
               <<"args">> := Args, <<"options">> := Opts, <<"scheduled_at">> := At} = D} ->
            {ok, Norm} = aion_retry:validate(Opts),
            #{run_id => RunId, workflow_id => WfId, activity_id => ActId, name => Name,
              mf => mf_of(Kind, Name), args => Args, options => Norm, scheduled_at => At,
              attempt => Attempt, first_attempt => maps:get(<<"first_attempt">>, D, 1),
              heartbeat_details => maps:get(<<"heartbeat_details">>, D, null)};
        Other ->
            error({bad_task_row, {ActId, Other}})
    end.

%% @doc Rebuilds a task from its decoded `activity_scheduled' event (used by
%% reopen): `attempt' and `first_attempt' = `Attempt', `scheduled_at' = `At' (a
%% reopened activity's schedule-to-close timeout counts from the reopen).
-spec task_from_scheduled(binary(), binary(), aion_event:event(), {pos_integer(), integer()}) ->
          task().
task_from_scheduled(RunId, WfId, #{activity_id := ActId, name := Name, input := Args,
                                   options := Opts} = Ev, {Attempt, At}) ->
    {ok, Norm} = aion_retry:validate(Opts),
    #{run_id => RunId, workflow_id => WfId, activity_id => ActId, name => Name,
      mf => mf_of(maps:get(kind, Ev, <<"mf">>), Name), args => Args, options => Norm,
      scheduled_at => At, attempt => Attempt, first_attempt => Attempt,
      heartbeat_details => null}.

mf_of(<<"mf">>, Name) ->
    [M, F] = binary:split(Name, <<":">>),
    {binary_to_atom(M, utf8), binary_to_atom(F, utf8)};
mf_of(_, _) ->
    undefined.

%% @doc The value `aion_workflow:await/1' returns for a terminal activity event
%% (decoded, as `aion_event:decode/1' returns it): `activity_completed' ->
%% `{ok, Result}'; final `activity_failed' with error `{activity_timeout, Kind}' ->
%% `{error, {activity_timeout, Kind}}' (Kind = start_to_close | schedule_to_close |
%% heartbeat); any other final `activity_failed' -> `{error, {activity_failed,
%% Error}}'; `activity_cancelled' -> `{error, activity_cancelled}'. Raises
%% `error({not_terminal, Event})' for any other event (a non-final failure too).
-spec await_result(aion_event:event()) ->
          {ok, term()} | {error, {activity_failed, term()}
                                | {activity_timeout, start_to_close | schedule_to_close | heartbeat}
                                | activity_cancelled}.
await_result(#{type := activity_completed, result := R}) ->
    {ok, R};
await_result(#{type := activity_failed, final := true, error := {activity_timeout, K}})
  when K =:= start_to_close; K =:= schedule_to_close; K =:= heartbeat ->
    {error, {activity_timeout, K}};
await_result(#{type := activity_failed, final := true, error := E}) ->
    {error, {activity_failed, E}};
await_result(#{type := activity_cancelled}) ->
    {error, activity_cancelled};
await_result(Event) ->
    error({not_terminal, Event}).

%%% ===========================================================================
%%% Engine API
%%% ===========================================================================

%% @doc Starts the runner of engine `Engine' (registered as
%% `aion_ctx:proc_name(Engine, runner)'); reads the engine context at init.
-spec start_link(atom()) -> {ok, pid()} | {error, term()}.
start_link(Engine) ->
    gen_server:start_link({local, aion_ctx:proc_name(Engine, runner)}, ?MODULE, Engine, []).

%% @doc Starts the executor of a task whose `activity_scheduled' (and task row) is
%% committed. A second dispatch of an activity that already has an executor is
%% ignored. Returns `ok' once the executor is registered (so a later
%% {@link cancel/3} finds it).
-spec dispatch(aion_ctx:ctx(), task()) -> ok.
dispatch(Ctx, Task) ->
    gen_server:call(server(Ctx), {dispatch, Task}, infinity).

%% @doc Cancels one activity: kills its running attempt (or drops it from the queue)
%% and returns after the attempt process and its executor are dead. Records nothing:
%% the caller recorded `activity_cancelled' (with `tasks_take') before. `ok' also
%% when the activity has no executor.
-spec cancel(aion_ctx:ctx(), binary(), binary()) -> ok.
cancel(Ctx, RunId, ActivityId) ->
    stop_all(ets:lookup(table(Ctx), {RunId, ActivityId})).

%% @doc {@link cancel/3} for every activity of a run (killed in parallel); also
%% forgets that the run was paused (call it once the run is closed).
-spec cancel_run(aion_ctx:ctx(), binary()) -> ok.
cancel_run(Ctx, RunId) ->
    stop_all(ets:select(table(Ctx), [{{{RunId, '_'}, '_'}, [], ['$_']}])),
    gen_server:cast(server(Ctx), {forget, RunId}).

stop_all(Entries) ->
    Mons = [{monitor(process, Pid), Pid} || {_, Pid} <- Entries],
    [aion_activity_executor:cancel_async(Pid) || {_, Pid} <- Mons],
    lists:foreach(fun({Mon, Pid}) ->
                          receive {'DOWN', Mon, process, Pid, _} -> ok end
                  end, Mons).

%% @doc Holds the attempts of a run: no attempt of it starts until
%% {@link resume_run/2}. Attempts already running finish. Idempotent.
-spec pause_run(aion_ctx:ctx(), binary()) -> ok.
pause_run(Ctx, RunId) ->
    gen_server:call(server(Ctx), {pause, RunId}, infinity).

%% @doc Releases the held attempts of a run (in their original order). Idempotent.
-spec resume_run(aion_ctx:ctx(), binary()) -> ok.
resume_run(Ctx, RunId) ->
    gen_server:call(server(Ctx), {resume, RunId}, infinity).

%% @doc Dispatches every outstanding task row of the engine's store with
%% attempt = row attempt + 1 (the row's attempt may have run before the restart),
%% skipping rows of runs that are not open (running, paused or stuck); tasks of
%% paused runs are held. Activities that already have an executor are skipped.
%% Named activities are dispatched like the others (they wait for a worker).
-spec recover(aion_ctx:ctx()) -> ok.
recover(#{store := Store} = Ctx) ->
    {ok, Rows} = aion_store:activity_tasks(Store, all),
    Status = fun(RunId, Cache) ->
                     case Cache of
                         #{RunId := S} -> {S, Cache};
                         _ ->
                             S = case aion_store:get_run(Store, RunId) of
                                     {ok, #{status := St}} -> St;
                                     {error, not_found} -> <<"gone">>
                                 end,
                             {S, Cache#{RunId => S}}
                     end
             end,
    _ = lists:foldl(
      fun({RunId, ActId, Attempt, _, _} = Row, Cache0) ->
              {S, Cache} = Status(RunId, Cache0),
              case S of
                  <<"paused">> -> pause_run(Ctx, RunId);
                  _ -> ok
              end,
              case lists:member(S, [<<"running">>, <<"paused">>, <<"stuck">>]) of
                  true ->
                      try task_from_row(Row) of
                          T -> dispatch(Ctx, T#{attempt => Attempt + 1})
                      catch error:Reason ->
                              ?LOG_ERROR("aion: cannot recover activity ~s of run ~s: ~p",
                                         [ActId, RunId, Reason])
                      end;
                  false ->
                      ok
              end,
              Cache
      end, #{}, Rows),
    ok.

%% @doc Number of attempts holding a slot right now (diagnostic).
-spec running(aion_ctx:ctx()) -> non_neg_integer().
running(Ctx) ->
    gen_server:call(server(Ctx), running, infinity).

%% @private
%% @doc Executor side: asks for leave to start an attempt; the runner answers with
%% the message `{aion_slot, RunnerPid}' when the run is not paused and, if `Bounded'
%% (an `{M, F}' activity, run in this node's pool), a slot is free. Named
%% activities run on task-queue workers, bounded by the workers' own concurrency.
-spec acquire(aion_ctx:ctx(), binary(), boolean()) -> ok.
acquire(Ctx, RunId, Bounded) ->
    gen_server:cast(server(Ctx), {acquire, self(), RunId, Bounded}).

%% @private
%% @doc Executor side: gives back the slot of the finished attempt.
-spec release(pid()) -> ok.
release(Runner) ->
    gen_server:cast(Runner, {release, self()}).

server(#{name := Name}) -> aion_ctx:proc_name(Name, runner).

table(#{name := Name}) -> aion_ctx:proc_name(Name, runner).

%%% ===========================================================================
%%% gen_server
%%% ===========================================================================

%% State:
%%   max       slot count
%%   busy      #{Pid => true}: executors holding a slot
%%   queue     queue of {Pid, RunId} waiting for a slot (may hold stale entries)
%%   waiting   #{Pid => RunId}: executors waiting for a slot (the truth for queue)
%%   held      #{RunId => [{Pid, Bounded}]}: waiters of paused runs (newest first)
%%   paused    #{RunId => true}
%%   mons      #{Pid => Key}: registered executors
%% @private
-spec init(atom()) -> {ok, state()}.
init(Engine) ->
    Ctx = aion_ctx:get(Engine),
    Tab = ets:new(table(Ctx), [named_table, ordered_set, protected, {read_concurrency, true}]),
    Opts = maps:get(opts, Ctx, #{}),
    Max = maps:get(max_concurrent_activities, Opts, ?DEFAULT_MAX),
    Paused = case aion_store:runs_by_status(maps:get(store, Ctx), [<<"paused">>]) of
                 {ok, Runs} -> maps:from_list([{R, true} || #{run_id := R} <- Runs]);
                 _ -> #{}
             end,
    {ok, #{ctx => Ctx, tab => Tab, max => Max, busy => #{}, queue => queue:new(),
           waiting => #{}, held => #{}, paused => Paused, mons => #{}}}.

%% @private
-spec handle_call(term(), gen_server:from(), state()) -> {reply, term(), state()}.
handle_call({dispatch, #{run_id := RunId, activity_id := ActId} = Task}, _From,
            #{ctx := Ctx, tab := Tab, mons := Mons} = S) ->
    Key = {RunId, ActId},
    case ets:lookup(Tab, Key) of
        [_] ->
            {reply, ok, S};
        [] ->
            %% A free slot is handed over with the start (no `acquire' round trip
            %% on the activity's critical path); otherwise the executor asks.
            Grant = grantable(Task, S),
            case aion_activity_sup:start_executor(Ctx, Task,
                                                  case Grant of
                                                      false -> undefined;
                                                      _ -> self()
                                                  end) of
                {ok, Pid} ->
                    ets:insert(Tab, {Key, Pid}),
                    _ = monitor(process, Pid),
                    S1 = case Grant of
                             bounded -> S#{busy => maps:put(Pid, true, maps:get(busy, S))};
                             _ -> S
                         end,
                    {reply, ok, S1#{mons => Mons#{Pid => Key}}};
                {error, Reason} ->
                    ?LOG_ERROR("aion: cannot start executor for activity ~s of run ~s: ~p",
                               [ActId, RunId, Reason]),
                    {reply, ok, S}
            end
    end;
handle_call({pause, RunId}, _From, #{paused := P} = S) ->
    {reply, ok, S#{paused => P#{RunId => true}}};
handle_call({resume, RunId}, _From, #{paused := P, held := H, queue := Q, waiting := W,
                                      mons := Mons} = S) ->
    %% Held is newest first: pushing each to the front leaves the oldest in front.
    Held = [E || {Pid, _} = E <- maps:get(RunId, H, []), is_map_key(Pid, Mons)],
    _ = [Pid ! {aion_slot, self()} || {Pid, false} <- Held],
    Bounded = [Pid || {Pid, true} <- Held],
    Q1 = lists:foldl(fun(Pid, Acc) -> queue:in_r({Pid, RunId}, Acc) end, Q, Bounded),
    W1 = lists:foldl(fun(Pid, Acc) -> Acc#{Pid => RunId} end, W, Bounded),
    {reply, ok, fill(S#{paused => maps:remove(RunId, P), held => maps:remove(RunId, H),
                        queue => Q1, waiting => W1})};
handle_call(running, _From, #{busy := B} = S) ->
    {reply, map_size(B), S};
handle_call(_Req, _From, S) ->
    {reply, {error, unknown_call}, S}.

%% @private
-spec handle_cast(term(), state()) -> {noreply, state()}.
handle_cast({acquire, Pid, RunId, true}, #{queue := Q, waiting := W} = S) ->
    {noreply, fill(S#{queue => queue:in({Pid, RunId}, Q), waiting => W#{Pid => RunId}})};
handle_cast({acquire, Pid, RunId, false}, #{paused := P, held := H} = S) ->
    case is_map_key(RunId, P) of
        true ->
            {noreply, S#{held => H#{RunId => [{Pid, false} | maps:get(RunId, H, [])]}}};
        false ->
            Pid ! {aion_slot, self()},
            {noreply, S}
    end;
handle_cast({release, Pid}, #{busy := B} = S) ->
    {noreply, fill(S#{busy => maps:remove(Pid, B)})};
handle_cast({forget, RunId}, #{paused := P, held := H} = S) ->
    {noreply, S#{paused => maps:remove(RunId, P), held => maps:remove(RunId, H)}};
handle_cast(_Msg, S) ->
    {noreply, S}.

%% @private
-spec handle_info(term(), state()) -> {noreply, state()}.
handle_info({'DOWN', _, process, Pid, _}, #{tab := Tab, mons := Mons, busy := B,
                                             waiting := W} = S) ->
    case Mons of
        #{Pid := Key} -> ets:delete_object(Tab, {Key, Pid});
        _ -> ok
    end,
    {noreply, fill(S#{mons => maps:remove(Pid, Mons), busy => maps:remove(Pid, B),
                      waiting => maps:remove(Pid, W)})};
handle_info(_Msg, S) ->
    {noreply, S}.

%% @private
-spec terminate(term(), state()) -> ok.
terminate(_Reason, _S) ->
    ok.

%% Whether a new executor gets its first slot at dispatch: not for a paused run,
%% and for a bounded (`{M, F}') activity only when a slot is free and nobody waits
%% (arrival order). `bounded' takes a slot, `unbounded' does not.
grantable(#{run_id := RunId, mf := MF}, #{paused := P, max := Max, busy := B, waiting := W}) ->
    case is_map_key(RunId, P) of
        true -> false;
        false when MF =:= undefined -> unbounded;
        false when map_size(B) < Max, map_size(W) =:= 0 -> bounded;
        false -> false
    end.

%% Grant slots while there are free ones and waiters.
fill(#{max := Max, busy := B} = S) when map_size(B) >= Max ->
    S;
fill(#{queue := Q, waiting := W, paused := P, held := H, busy := B} = S) ->
    case queue:out(Q) of
        {empty, _} ->
            S;
        {{value, {Pid, RunId}}, Q1} ->
            case W of
                #{Pid := RunId} when is_map_key(RunId, P) ->
                    fill(S#{queue => Q1, waiting => maps:remove(Pid, W),
                            held => H#{RunId => [{Pid, true} | maps:get(RunId, H, [])]}});
                #{Pid := RunId} ->
                    Pid ! {aion_slot, self()},
                    fill(S#{queue => Q1, waiting => maps:remove(Pid, W),
                            busy => B#{Pid => true}});
                _ ->
                    fill(S#{queue => Q1})
            end
    end.
