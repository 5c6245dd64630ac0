%% @doc The workflow side of aion: the behaviour a workflow module implements and
%% the primitives its code calls (SPEC 2.2).
%%
%% Every primitive is record-or-replay: live, it records what it does before it
%% acts; on replay (a run rebuilt from its history) it returns the recorded outcome
%% without acting. Commands are matched strictly and positionally against the
%% history; a mismatch makes the run `stuck' (SPEC 3.2). Primitives may only be
%% called from the workflow process itself; anywhere else they raise
%% `error(not_in_workflow)'. Inside a query handler the recording and blocking
%% primitives raise `error(query_handler_must_not_record)'.
%%
%% Payloads (activity arguments, side-effect values) must be JSON values (SPEC 1);
%% a non-JSON payload raises `error({invalid_payload, Path, Why})' before anything
%% is recorded. Durations are milliseconds.
-module(aion_workflow).

-include("aion_run.hrl").

-export([execute_activity/3, start_activity/3, await/1, await/2, wait_all/1,
         wait_any/1, cancel/1, sleep/1, start_timer/1,
         now/0, random/0, uniform/1, uuid/0, side_effect/1, info/0,
         is_cancel_requested/0, non_cancellable/1, set_query_handler/2]).
%% Signals, deadlines, versioning, search attributes (bulk in aion_sigq).
-export([receive_signal/1, receive_signal/2, send_signal/3, with_timeout/2,
         patched/1, deprecate_patch/1, upsert_search_attributes/1]).
-export([future_key/1]).

%% Children and continue-as-new (aion_child).
-export([start_child/3, execute_child/3, continue_as_new/1, continue_as_new/2]).

-export_type([future/0, activity/0, activity_outcome/0, timer_outcome/0, child_outcome/0]).

-callback run(Input :: term()) -> {ok, Result :: term()} | {error, Reason :: term()} | term().
-callback options() -> map().
-optional_callbacks([options/0]).

-record(future, {kind :: activity | timer | child, run_id :: binary(), id :: binary()}).

-opaque future() :: #future{}.
-type activity() :: {module(), atom()} | binary().
-type activity_outcome() :: {ok, term()}
                          | {error, {activity_failed, term()}}
                          | {error, {activity_timeout, start_to_close | schedule_to_close
                                                       | heartbeat}}
                          | {error, activity_cancelled}.
-type timer_outcome() :: ok | {error, cancelled}.
-type child_outcome() :: {ok, term()}
                       | {error, {child_failed | child_cancelled | child_terminated
                                  | child_timed_out, term()}}.
-type cancelled() :: {error, {cancelled, Reason :: term()}}.

%%% ===========================================================================
%%% Activities
%%% ===========================================================================

%% @doc Runs an activity and waits for its outcome: `await(start_activity(...))'.
%% Returns `{ok, Result}' (the result as decoded from history: maps have binary
%% keys), `{error, {activity_failed, Reason}}', `{error, {activity_timeout, Kind}}',
%% `{error, activity_cancelled}', or `{error, {cancelled, Reason}}' when the
%% workflow was cancelled. Raises as {@link start_activity/3} does.
-spec execute_activity(activity(), [term()], map()) -> activity_outcome() | cancelled().
execute_activity(Activity, Args, Opts) ->
    await(start_activity(Activity, Args, Opts)).

%% @doc Schedules an activity and returns its future at once. `Activity' is
%% `{Module, Function}' (called as `apply(M, F, Args)') or a binary name served on
%% a task queue; `Args' a list of JSON values. Options (SPEC 2.2): `task_queue',
%% `start_to_close_timeout', `schedule_to_close_timeout', `heartbeat_timeout' (ms),
%% `retry' (`initial_interval', `backoff_coefficient', `maximum_interval',
%% `maximum_attempts', `non_retryable_errors'). Defaults come from the workflow
%% type's `options()' (`activity_options' map, `task_queue') and the start options.
%% Records `activity_scheduled' (with its task row), then dispatches the first
%% attempt. Raises `error({invalid_payload, Path, Why})' for non-JSON arguments,
%% `error({invalid_options, Detail})' for bad options, `error(badarg)' for a bad
%% activity.
-spec start_activity(activity(), [term()], map()) -> future().
start_activity(Activity, Args, Opts) when is_list(Args), is_map(Opts) ->
    S = aion_run:st_cmd(),
    Name = activity_name(Activity),
    N = S#wf.act_n + 1,
    case aion_replay:command(#{command => activity, name => Name}, S#wf.replay) of
        {recorded, #{activity_id := Id}, R1} ->
            aion_run:put_st(S#wf{act_n = N, replay = R1}),
            #future{kind = activity, run_id = S#wf.run_id, id = Id};
        {live, R1} ->
            Id = integer_to_binary(N),
            Now = aion_run:now_ms(),
            Task = case aion_activity_runner:new_task(
                          #{run_id => S#wf.run_id, workflow_id => S#wf.workflow_id,
                            activity_id => Id, name => Activity, args => Args,
                            options => activity_options(Opts, S), scheduled_at => Now}) of
                       {ok, T} -> T;
                       {error, Why2} -> error(Why2)
                   end,
            Row = aion_event:encode_row(activity_scheduled, Now,
                                        aion_activity_runner:scheduled_fields(Task)),
            Op = #{events => [Row], tasks_put => [aion_activity_runner:task_row(Task)]},
            {ok, _, S1} = aion_run:append(Op, S#wf{act_n = N, replay = R1}),
            ok = aion_activity_runner:dispatch(S1#wf.ctx, Task),
            #future{kind = activity, run_id = S#wf.run_id, id = Id};
        {nondeterminism, D} ->
            aion_run:stuck(D, S)
    end;
start_activity(_, _, _) ->
    error(badarg).

activity_name({M, F}) when is_atom(M), is_atom(F) ->
    aion_activity_runner:name_binary({M, F});
activity_name(Name) when is_binary(Name), Name =/= <<>> ->
    Name;
activity_name(_) ->
    error(badarg).

%% Activity options: explicit ones over the type's `activity_options' over the
%% workflow's `task_queue'.
activity_options(Opts, #wf{type = Type, options = WfOpts}) ->
    TypeOpts = aion_util:type_options(Type),
    Defaults0 = case maps:get(activity_options, TypeOpts, #{}) of
                    M when is_map(M) -> M;
                    _ -> #{}
                end,
    Defaults = case WfOpts of
                   #{<<"task_queue">> := Q} when is_binary(Q) -> Defaults0#{task_queue => Q};
                   _ -> Defaults0
               end,
    maps:merge(Defaults, Opts).

%%% ===========================================================================
%%% Futures
%%% ===========================================================================

%% @doc Waits for a future. Activity: see {@link execute_activity/3}. Timer: `ok'
%% when it fired, `{error, cancelled}' when it was cancelled. `{error, {cancelled,
%% Reason}}' when the workflow is cancelled (outside {@link non_cancellable/1});
%% the awaited activity or timer is then cancelled too.
%% Resolves by history order (the lowest-seq settling event). Raises `error(badarg)'
%% for a future of another run.
-spec await(future()) -> activity_outcome() | timer_outcome() | cancelled().
await(F) ->
    case wait_any([F]) of
        {1, Outcome} -> Outcome;
        {error, {cancelled, _}} = C ->
            %% The workflow was cancelled: so is what it was waiting for (SPEC 3.6).
            ok = cancel(F),
            C
    end.

%% @doc Waits for a future at most `TimeoutMs' (a durable timer: the outcome is
%% decided by history order, the same live and on replay). Returns what
%% {@link await/1} returns, or `{error, timeout}' when the timer fired first (the
%% future stays pending).
-spec await(future(), non_neg_integer()) ->
          activity_outcome() | timer_outcome() | cancelled() | {error, timeout}.
await(F, TimeoutMs) when is_integer(TimeoutMs), TimeoutMs >= 0 ->
    Timer = start_timer(TimeoutMs),
    case wait_any([F, Timer]) of
        {1, Outcome} ->
            ok = cancel(Timer),
            Outcome;
        {2, _} ->
            {error, timeout};
        {error, {cancelled, _}} = C ->
            ok = cancel(Timer),
            C
    end;
await(_, _) ->
    error(badarg).

%% @doc Waits for the first of several futures: `{Position, Outcome}' (1-based) for
%% the future whose settling event has the lowest seq in history; the others stay
%% pending. `{error, {cancelled, Reason}}' when the workflow is cancelled first.
%% Raises `error(badarg)' for an empty list or a future of another run.
-spec wait_any([future(), ...]) -> {pos_integer(), activity_outcome() | timer_outcome()}
                                       | cancelled().
wait_any([_ | _] = Fs) ->
    S = aion_run:st_cmd(),
    Keys = [key(F, S) || F <- Fs],
    case aion_run:block(Keys, S) of
        {cancel, Ev, _} -> {error, {cancelled, maps:get(reason, Ev, null)}};
        {Pos, Ev, _} -> {Pos, outcome(Ev)}
    end;
wait_any(_) ->
    error(badarg).

%% @doc Waits for all futures: `{ok, [Result]}' in input order (activity results,
%% `ok' for timers), or the first failure in history order (an `{error, _}' outcome
%% of one future); the futures still unsettled are then cancelled.
%% `{error, {cancelled, Reason}}' when the workflow is cancelled.
-spec wait_all([future()]) -> {ok, [term()]} | {error, term()}.
wait_all(Fs) when is_list(Fs) ->
    S = aion_run:st_cmd(),
    _ = [key(F, S) || F <- Fs],
    wait_all(lists:zip(lists:seq(1, length(Fs)), Fs), #{}, length(Fs)).

wait_all([], Done, N) ->
    {ok, [maps:get(I, Done) || I <- lists:seq(1, N)]};
wait_all(Pending, Done, N) ->
    case wait_any([F || {_, F} <- Pending]) of
        {error, {cancelled, _}} = C ->
            C;
        {Pos, Outcome} ->
            {I, _} = lists:nth(Pos, Pending),
            Rest = [P || {J, _} = P <- Pending, J =/= I],
            case Outcome of
                {ok, V} -> wait_all(Rest, Done#{I => V}, N);
                ok -> wait_all(Rest, Done#{I => ok}, N);
                {error, _} = E ->
                    _ = [cancel(F) || {_, F} <- Rest],
                    E
            end
    end.

%% @doc Requests cancellation of an activity, timer or child future; returns `ok'.
%% For a child, a cancel request (`workflow_cancel_requested{reason =
%% cancelled_by_parent}') is recorded in the child's current run and nothing in this
%% run; the child's outcome (often `{error, {child_cancelled, _}}') arrives as usual.
%% Records `activity_cancelled' / `timer_cancelled' (and kills the running attempt or
%% disarms the timer) unless the future already settled (then nothing happens; a
%% completion that raced the cancel wins and is what `await/1' returns).
-spec cancel(future()) -> ok.
cancel(#future{} = F) ->
    S = aion_run:st_cmd(),
    Key = key(F, S),
    case aion_replay:outcome(Key, S#wf.replay) of
        {ok, #{type := T, seq := Seq}} when T =:= activity_cancelled; T =:= timer_cancelled ->
            aion_run:put_st(S#wf{replay = aion_replay:own(Seq, S#wf.replay)});
        {ok, _} ->
            ok;
        none ->
            live_cancel(Key, S)
    end;
cancel(_) ->
    error(badarg).

live_cancel({activity, Id}, S) ->
    Row = aion_event:encode_row(activity_cancelled, aion_run:now_ms(), #{activity_id => Id}),
    case aion_run:append(#{events => [Row], tasks_take => [Id]}, S) of
        {ok, _, S1} -> aion_activity_runner:cancel(S1#wf.ctx, S1#wf.run_id, Id);
        {error, {task_gone, _}} -> ok
    end;
live_cancel({child, Id}, S) ->
    aion_child:cancel(S, Id);
live_cancel({timer, Id}, S) ->
    Row = aion_event:encode_row(timer_cancelled, aion_run:now_ms(), #{timer_id => Id}),
    case aion_run:append(#{events => [Row], timers_take => [Id]}, S) of
        {ok, _, S1} -> aion_timers:disarm(S1#wf.ctx, S1#wf.run_id, Id);
        {error, {timer_gone, _}} -> ok
    end.

key(#future{kind = Kind, run_id = RunId, id = Id}, #wf{run_id = RunId}) -> {Kind, Id};
key(_, _) -> error(badarg).

outcome(#{type := T} = Ev) when T =:= activity_completed; T =:= activity_failed;
                               T =:= activity_cancelled ->
    aion_activity_runner:await_result(Ev);
outcome(#{type := T} = Ev) when T =:= child_workflow_completed;
                               T =:= child_workflow_failed ->
    aion_child:await_result(Ev);
outcome(#{type := timer_fired}) ->
    ok;
outcome(#{type := timer_cancelled}) ->
    {error, cancelled}.

%%% ===========================================================================
%%% Timers
%%% ===========================================================================

%% @doc Sleeps `Ms' milliseconds on a durable timer (it survives restarts and fires
%% at `recorded_at(timer_started) + Ms'). Returns `ok', or `{error, {cancelled,
%% Reason}}' when the workflow is cancelled meanwhile (the timer is then cancelled).
-spec sleep(non_neg_integer()) -> ok | cancelled().
sleep(Ms) ->
    F = start_timer(Ms),
    case await(F) of
        ok -> ok;
        {error, {cancelled, _}} = C -> ok = cancel(F), C;
        {error, cancelled} -> ok
    end.

%% @doc Starts a cancellable durable timer of `Ms' milliseconds and returns its
%% future (await it, or pass it to `wait_any/1', `cancel/1'). Records
%% `timer_started{timer_id, fire_at}' with its timer row, then arms it.
%% Raises `error(badarg)' for a negative or non-integer `Ms'.
-spec start_timer(non_neg_integer()) -> future().
start_timer(Ms) when is_integer(Ms), Ms >= 0 ->
    S = aion_run:st_cmd(),
    N = S#wf.timer_n + 1,
    case aion_replay:command(#{command => timer}, S#wf.replay) of
        {recorded, #{timer_id := Id}, R1} ->
            aion_run:put_st(S#wf{timer_n = N, replay = R1}),
            #future{kind = timer, run_id = S#wf.run_id, id = Id};
        {live, R1} ->
            Id = <<"t", (integer_to_binary(N))/binary>>,
            Now = aion_run:now_ms(),
            FireAt = Now + Ms,
            Row = aion_event:encode_row(timer_started, Now, #{timer_id => Id, fire_at => FireAt}),
            Op = #{events => [Row], timers_put => [{Id, FireAt}]},
            {ok, _, S1} = aion_run:append(Op, S#wf{timer_n = N, replay = R1}),
            ok = aion_timers:arm(S1#wf.ctx, S1#wf.run_id, Id, FireAt),
            #future{kind = timer, run_id = S#wf.run_id, id = Id};
        {nondeterminism, D} ->
            aion_run:stuck(D, S)
    end;
start_timer(_) ->
    error(badarg).

%%% ===========================================================================
%%% Deterministic helpers
%%% ===========================================================================

%% @doc Deterministic time in milliseconds since the Unix epoch (SPEC 3.3): the
%% `recorded_at' of the latest event the run has consumed (its own latest command,
%% or the latest arrival a blocking wait resolved on). Never records anything.
-spec now() -> integer().
now() ->
    aion_replay:now((aion_run:st())#wf.replay).

%% @doc A deterministic float in [0.0, 1.0), derived from the run id and the call
%% ordinal (shared by `random/0', `uniform/1', `uuid/0'); a replay gets the same
%% values. Records nothing.
-spec random() -> float().
random() ->
    <<X:53, _/bitstring>> = next_random(),
    X / (1 bsl 53).

%% @doc A deterministic integer in 1..N (see {@link random/0}).
%% Raises `error(badarg)' unless `N' is a positive integer.
-spec uniform(pos_integer()) -> pos_integer().
uniform(N) when is_integer(N), N >= 1 ->
    <<X:256>> = next_random(),
    X rem N + 1;
uniform(_) ->
    error(badarg).

%% @doc A deterministic UUIDv4 binary (see {@link random/0}).
-spec uuid() -> binary().
uuid() ->
    <<B:16/binary, _/binary>> = next_random(),
    aion_util:format_uuid(B).

next_random() ->
    S = aion_run:st(),
    N = S#wf.rand_n + 1,
    aion_run:put_st(S#wf{rand_n = N}),
    crypto:hash(sha256, [S#wf.run_id, <<N:64>>]).

%% @doc Runs `Fun()' once and records its result (a JSON value) as
%% `marker_recorded{kind = side_effect}'; on replay returns the recorded value
%% without calling `Fun'. The value returned is the decoded JSON (live equals
%% replay). Raises `error({invalid_payload, Path, Why})' for a non-JSON result;
%% exceptions of `Fun' propagate (nothing is recorded).
-spec side_effect(fun(() -> term())) -> term().
side_effect(Fun) when is_function(Fun, 0) ->
    S = aion_run:st_cmd(),
    N = S#wf.side_n + 1,
    case aion_replay:command(#{command => side_effect}, S#wf.replay) of
        {recorded, Ev, R1} ->
            aion_run:put_st(S#wf{side_n = N, replay = R1}),
            maps:get(value, Ev, null);
        {live, R1} ->
            V = Fun(),
            S0 = aion_run:st_cmd(),
            Row = case aion_event:encode(marker_recorded,
                                         #{kind => <<"side_effect">>, id => N, value => V}) of
                      {ok, {T, Data}} -> {T, aion_run:now_ms(), Data};
                      {error, {invalid_payload, [_ | Path], Why}} ->
                          error({invalid_payload, Path, Why})
                  end,
            {ok, [Ev], _} = aion_run:append(#{events => [Row]},
                                           S0#wf{side_n = N, replay = R1}),
            maps:get(value, Ev, null);
        {nondeterminism, D} ->
            aion_run:stuck(D, S)
    end;
side_effect(_) ->
    error(badarg).

%% @doc Facts about the running workflow: `#{workflow_id, run_id, type, attempt,
%% started_at, parent, continued_from, cancel_requested}'. `attempt' is 1 plus the
%% number of reopens; `cancel_requested' follows the knowledge watermark.
-spec info() -> #{workflow_id := binary(), run_id := binary(), type := module(),
                  attempt := pos_integer(), started_at := integer(),
                  parent := binary() | null, continued_from := binary() | null,
                  cancel_requested := boolean()}.
info() ->
    S = aion_run:st(),
    #{workflow_id => S#wf.workflow_id, run_id => S#wf.run_id, type => S#wf.type,
      attempt => 1 + aion_replay:reopens(S#wf.replay), started_at => S#wf.started_at,
      parent => S#wf.parent, continued_from => S#wf.continued_from,
      cancel_requested => aion_replay:cancel_requested(S#wf.replay) =/= false}.

%%% ===========================================================================
%%% Cancellation and queries
%%% ===========================================================================

%% @doc Whether a workflow cancel request is visible (non-blocking observation:
%% only history up to the knowledge watermark counts, so live equals replay).
-spec is_cancel_requested() -> boolean().
is_cancel_requested() ->
    aion_replay:cancel_requested((aion_run:st())#wf.replay) =/= false.

%% @doc Runs `Fun()' with cancellation suppressed: blocking primitives inside it
%% wait normally even after a cancel request (for compensation). Returns `Fun()'s
%% value.
-spec non_cancellable(fun(() -> T)) -> T.
non_cancellable(Fun) when is_function(Fun, 0) ->
    S = aion_run:st(),
    aion_run:put_st(S#wf{non_cancellable = S#wf.non_cancellable + 1}),
    try Fun()
    after
        case get(?AION_RUN_KEY) of
            #wf{non_cancellable = N} = S1 when N > 0 ->
                aion_run:put_st(S1#wf{non_cancellable = N - 1});
            _ ->
                ok
        end
    end.

%% @doc Registers (or replaces) the handler of query `Name' (a binary). Handlers run
%% in the workflow process at its next yield point and must not record (recording
%% primitives raise `error(query_handler_must_not_record)' inside them).
-spec set_query_handler(binary(), fun((term()) -> term())) -> ok.
set_query_handler(Name, Fun) when is_binary(Name), is_function(Fun, 1) ->
    S = aion_run:st_cmd(),
    aion_run:put_st(S#wf{query_handlers = (S#wf.query_handlers)#{Name => Fun}});
set_query_handler(_, _) ->
    error(badarg).

%%% ===========================================================================
%%% Child workflows and continue-as-new
%%% ===========================================================================

%% @doc Starts a child workflow of type `Type' (a module implementing this
%% behaviour) with JSON input `Input' and returns its future (await it, or pass it
%% to `wait_all/1', `wait_any/1', `cancel/1'). Records
%% `child_workflow_started{child_id, workflow_id, run_id, workflow_type, input,
%% options}' first, then creates the child run (its own history, `parent' = this
%% workflow's id) and process. The child's outcome is recorded in this run's history
%% when it happens (`child_workflow_completed' / `child_workflow_failed'), whether or
%% not the parent awaits it; a child that continues as new is followed to its final
%% run. Awaiting gives `{ok, Result}' or `{error, {child_failed | child_cancelled |
%% child_terminated | child_timed_out, Detail}}'; a child whose workflow id is taken
%% by an open run (or refused by its id reuse policy) fails with
%% `{error, {child_failed, {already_started, RunId}}}'.
%%
%% Options (as `aion:start/3'): `id' (default a UUIDv4), `id_reuse_policy',
%% `execution_timeout', `run_timeout' (ms), `search_attributes', `task_queue' (default:
%% this workflow's task queue), and
%% `parent_close_policy': what happens to the child when this run closes (any
%% terminal status, continue-as-new included): `terminate' (default; the child is
%% terminated with reason `#{parent_closed => ParentWorkflowId}'), `request_cancel'
%% (a cancel request with that reason is recorded in the child) or `abandon' (it runs
%% on). Defaults come from the child type's `options/0'.
%%
%% Bad input returns an error and records nothing: `{error, {unknown_workflow_type,
%% Type}}', `{error, {invalid_option, Key}}', `{error, {invalid_payload, Path,
%% Why}}'.
-spec start_child(module(), term(), map()) -> future() | {error, term()}.
start_child(Type, Input, Opts) ->
    case aion_child:start(Type, Input, Opts) of
        {ok, Id} ->
            #future{kind = child, run_id = (aion_run:st())#wf.run_id, id = Id};
        {error, _} = E ->
            E
    end.

%% @doc Starts a child workflow and waits for its outcome:
%% `await(start_child(Type, Input, Opts))'. Returns `{ok, Result}',
%% `{error, {child_failed | child_cancelled | child_terminated | child_timed_out,
%% Detail}}', `{error, {cancelled, Reason}}' when this workflow is cancelled, or the
%% errors of {@link start_child/3} for bad input.
-spec execute_child(module(), term(), map()) -> child_outcome() | cancelled()
                                                   | {error, term()}.
execute_child(Type, Input, Opts) ->
    case start_child(Type, Input, Opts) of
        #future{} = F -> await(F);
        {error, _} = E -> E
    end.

%% @doc `continue_as_new(Input, #{})'.
-spec continue_as_new(term()) -> no_return() | {error, term()}.
continue_as_new(Input) ->
    continue_as_new(Input, #{}).

%% @doc Ends this run with `workflow_continued_as_new{new_run_id, input}' and starts
%% the next run of the same workflow id with a fresh history
%% (`workflow_started{continued_from}'), both in one transaction; does not return.
%% Outstanding activities and timers of this run are cancelled; its children follow
%% their parent close policy; the execution deadline, the parent link and the
%% options `task_queue' and `run_timeout' carry over. `aion:await/1' and
%% `aion:describe/1' follow the chain. Options: `workflow_type' (module; default
%% this type), `run_timeout' (ms), `task_queue', `search_attributes'. Bad input
%% returns (nothing recorded): `{error, {invalid_payload, Path, Why}}',
%% `{error, {invalid_option, Key}}', `{error, {unknown_workflow_type, Type}}'.
-spec continue_as_new(term(), map()) -> no_return() | {error, term()}.
continue_as_new(Input, Opts) ->
    aion_child:continue_as_new(Input, Opts).

%%% ===========================================================================
%%% Signals, deadlines, versioning, search attributes
%%% ===========================================================================

%% @doc `receive_signal(Name, infinity)'.
-spec receive_signal(binary() | atom()) -> {ok, term()} | cancelled().
receive_signal(Name) ->
    aion_sigq:receive_signal(aion_sigq:name(Name), infinity).

%% @doc Receives the next signal named `Name' (a binary; an atom is converted):
%% the k-th receive of a name returns the payload of the k-th `signal_received' of
%% that name (FIFO per name; signals that arrived before the receive are buffered
%% in history). `{ok, Payload}' (the JSON payload as decoded), `{error, timeout}'
%% when `TimeoutMs' (ms, or `infinity') passed first (a durable timer, recorded
%% only when the signal is not already there; the race is decided by history
%% order, the same on replay), or `{error, {cancelled, Reason}}' when the workflow
%% is cancelled first (outside {@link non_cancellable/1}). `TimeoutMs = 0' only
%% looks (records nothing). A signal left unconsumed by a timeout is returned by
%% the next receive. Raises `error(badarg)' for a bad name or timeout.
-spec receive_signal(binary() | atom(), timeout()) ->
          {ok, term()} | {error, timeout} | cancelled().
receive_signal(Name, Timeout) when Timeout =:= infinity;
                                   is_integer(Timeout), Timeout >= 0 ->
    aion_sigq:receive_signal(aion_sigq:name(Name), Timeout);
receive_signal(_, _) ->
    error(badarg).

%% @doc Signals workflow `WorkflowId' (its current run) with `Name' and the JSON
%% `Payload', like `aion:signal/3' but recorded: `signal_sent{target, name,
%% signal_id, outcome}' holds the outcome, which a replay returns without sending
%% again (a send interrupted by a crash is repeated with the same signal id and
%% deduplicated by the target). Returns `ok' or `{error, not_found | not_running}'.
%% Raises `error({invalid_payload, Path, Why})' for a non-JSON payload,
%% `error(badarg)' for a bad id or name.
-spec send_signal(binary(), binary() | atom(), term()) -> ok | {error, not_found | not_running}.
send_signal(WorkflowId, Name, Payload) when is_binary(WorkflowId) ->
    aion_sigq:send_signal(WorkflowId, aion_sigq:name(Name), Payload);
send_signal(_, _, _) ->
    error(badarg).

%% @doc Runs `Fun()' under a durable deadline of `TimeoutMs' ms: `{ok, Value}', or
%% `{error, timeout}' when the deadline timer fires first. Every blocking
%% primitive inside `Fun' also waits on the deadline and, when the timer's
%% `timer_fired' is the lowest-seq resolving event, aborts `Fun' (decided by
%% history order, identical on replay). Futures started inside stay pending
%% (await or cancel them; the run's close cancels what is left). Nests; an outer
%% deadline aborts the inner scopes too. Raises `error(badarg)' for bad arguments.
-spec with_timeout(non_neg_integer(), fun(() -> T)) -> {ok, T} | {error, timeout}.
with_timeout(TimeoutMs, Fun) when is_integer(TimeoutMs), TimeoutMs >= 0,
                                  is_function(Fun, 0) ->
    #future{id = Id} = T = start_timer(TimeoutMs),
    ok = aion_sigq:push_deadline(Id),
    Res = try {ok, Fun()}
          catch throw:{'$aion_deadline', Id} -> {error, timeout}
          after aion_sigq:pop_deadline(Id)
          end,
    case Res of
        {ok, _} -> ok = cancel(T);
        _ -> ok
    end,
    Res;
with_timeout(_, _) ->
    error(badarg).

%% @doc Versioning (SPEC 2.2): `true' when the run reaches this point on code that
%% has the change `ChangeId' (a binary or atom): live, it records
%% `marker_recorded{kind = patch, id}' and takes the new branch; a replay finds
%% the marker and returns `true' again. `false' when replaying a history recorded
%% before the change (its next recorded command is not this marker): the old
%% branch. The answer is remembered per id for the rest of the run.
-spec patched(binary() | atom()) -> boolean().
patched(ChangeId) ->
    aion_sigq:patched(aion_sigq:name(ChangeId)).

%% @doc The clean-up step of a patch, once no run of the old code is left: the
%% code keeps only the new branch and calls `deprecate_patch(ChangeId)' where it
%% called `patched/1'; a history that holds the marker consumes it, one that does
%% not is fine too. Records nothing. Returns `ok'.
-spec deprecate_patch(binary() | atom()) -> ok.
deprecate_patch(ChangeId) ->
    aion_sigq:deprecate_patch(aion_sigq:name(ChangeId)).

%% @doc Merges `Attributes' (a map of JSON values) into the run's search
%% attributes, recorded as `search_attributes_upserted{attributes}' together with
%% the run row (visible to `aion:list/1' `search' filters once recorded). Returns
%% `ok'. Raises `error({invalid_payload, Path, Why})' for non-JSON values,
%% `error(badarg)' for a non-map.
-spec upsert_search_attributes(map()) -> ok.
upsert_search_attributes(Attributes) ->
    aion_sigq:upsert_search_attributes(Attributes).

%% @private
%% @doc The replay key of a future of the calling run (internal).
-spec future_key(future()) -> aion_replay:future_key().
future_key(F) ->
    key(F, aion_run:st()).
