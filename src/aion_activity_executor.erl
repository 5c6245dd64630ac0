%% @private
%% @doc One process per dispatched activity: runs its attempts, enforces its
%% timeouts, sleeps the backoff and records every outcome (SPEC 3.4, design.md
%% section 4).
%%
%% Each attempt runs in a spawned, monitored process (linked to nobody) whose
%% process dictionary holds the `aion_activity' context. Before every attempt the
%% executor asks the runner for a slot (`aion_activity_runner:acquire/3'), so the
%% pool bound and pauses apply to retries too; the slot is given back when the
%% attempt ends. The first attempt's slot may come with the start instead
%% ({@link start_link/3}: the runner had one free at dispatch). Named activities (run by `aion_worker's) take no slot of this
%% node's pool, but are held by pauses all the same.
%%
%% Timeouts: `start_to_close_timeout' (from the attempt's start) and
%% `heartbeat_timeout' (from the start or the last heartbeat) kill the attempt and
%% count as the retryable failures `{activity_timeout, start_to_close | heartbeat}';
%% `schedule_to_close_timeout' (from `scheduled_at') kills a running attempt and is
%% the final failure `{activity_timeout, schedule_to_close}', also when the backoff
%% before the next attempt would end after it.
%%
%% Recording (design.md section 2; the store's row guards settle races with a
%% cancel or a close of the run):
%% - success: `activity_completed' + `tasks_take';
%% - retryable failure: `activity_failed{final = false}' + `tasks_take' (the guard)
%%   + `tasks_put' of the row with the next attempt (and the last heartbeat
%%   details), one op -- written before the backoff starts;
%% - final failure: `activity_failed{final = true}' + `tasks_take'.
%% After each commit the event is delivered with `aion_deliver:events/3'. An answer
%% `{task_gone, _}', `closed' or `{not_found, _}' means the activity was cancelled or
%% the run closed: nothing more is recorded and the executor stops.
-module(aion_activity_executor).
-behaviour(gen_server).

-export([start_link/2, start_link/3, cancel_async/1]).
-export([init/1, handle_continue/2, handle_call/3, handle_cast/2, handle_info/2,
         terminate/2]).

-include_lib("kernel/include/logger.hrl").

-define(MAX_TIMER, 16#FFFFFFFF).
-define(COMMIT_TRIES, 8).

%% @doc Starts the executor of `Task' (called through `aion_activity_sup').
-spec start_link(aion_ctx:ctx(), aion_activity_runner:task()) -> {ok, pid()} | {error, term()}.
start_link(Ctx, Task) ->
    start_link(Ctx, Task, undefined).

%% @doc Starts the executor of `Task' holding the slot of its first attempt when
%% `Runner' is the runner's pid (it granted the slot at dispatch: no `acquire'
%% round trip), or asking for it when `Runner' is `undefined'.
-spec start_link(aion_ctx:ctx(), aion_activity_runner:task(), pid() | undefined) ->
          {ok, pid()} | {error, term()}.
start_link(Ctx, Task, Runner) ->
    gen_server:start_link(?MODULE, {Ctx, Task, Runner}, []).

%% @doc Asks the executor to kill its attempt (if one runs) and stop without
%% recording anything. The caller monitors the executor to know when it is done.
-spec cancel_async(pid()) -> ok.
cancel_async(Pid) ->
    Pid ! aion_cancel,
    ok.

-type state() :: map().

%%% ===========================================================================
%%% gen_server
%%% ===========================================================================

%% State:
%%   ctx, task         the engine context and the task (attempt = current/next)
%%   phase             waiting (for a slot) | running | backoff | committing
%%   runner            pid of the runner that granted the current slot
%%   attempt           undefined | #{pid, mon, ref, hb_timer, stc_timer}
%%   deadline          schedule-to-close deadline (ms since epoch) | infinity
%%   timer             backoff / commit-retry timer reference
%% @private
-spec init({aion_ctx:ctx(), aion_activity_runner:task(), pid() | undefined}) ->
          {ok, state(), {continue, acquire | {slot, pid()}}}.
init({Ctx, #{scheduled_at := At, options := Opts} = Task, Runner}) ->
    process_flag(trap_exit, true),
    Deadline = add(At, maps:get(schedule_to_close_timeout, Opts)),
    _ = arm_at(Deadline, schedule_to_close),
    Next = case Runner of
               undefined -> acquire;
               _ -> {slot, Runner}
           end,
    {ok, #{ctx => Ctx, task => Task, phase => waiting, runner => undefined,
           attempt => undefined, deadline => Deadline, timer => undefined},
     {continue, Next}}.

%% @private
-spec handle_continue(acquire | {slot, pid()}, state()) -> {noreply, state()}.
handle_continue(acquire, #{ctx := Ctx, task := #{run_id := RunId}} = S) ->
    ok = aion_activity_runner:acquire(Ctx, RunId, bounded(S)),
    {noreply, S#{phase => waiting}};
handle_continue({slot, Runner}, S) ->
    %% Granted at dispatch: the same as receiving `{aion_slot, Runner}'.
    handle_info({aion_slot, Runner}, S).

%% @private
-spec handle_call(term(), gen_server:from(), state()) -> {reply, term(), state()}.
handle_call(_Req, _From, S) ->
    {reply, {error, unknown_call}, S}.

%% @private
-spec handle_cast(term(), state()) -> {noreply, state()}.
handle_cast(_Msg, S) ->
    {noreply, S}.

%% @private
-spec handle_info(term(), state()) -> {noreply, state()} | {stop, term(), state()}.
handle_info({aion_slot, Runner}, #{phase := waiting} = S) ->
    case passed(S) of
        true -> deadline(schedule_to_close, S#{runner => Runner});
        false -> {noreply, start_attempt(S#{runner => Runner})}
    end;
handle_info({aion_slot, Runner}, S) ->
    %% Not wanted any more (e.g. schedule-to-close passed meanwhile).
    aion_activity_runner:release(Runner),
    {noreply, S};
handle_info({aion_attempt_done, Ref, Result},
            #{attempt := #{ref := Ref, mon := Mon}} = S) ->
    demonitor(Mon, [flush]),
    S1 = end_attempt(S),
    settle(classify(Result, S1), S1);
handle_info({'DOWN', Mon, process, _, Reason}, #{attempt := #{mon := Mon}} = S) ->
    %% The attempt died without reporting: something killed it from outside.
    settle({retryable, {exception, exit, Reason}}, end_attempt(S));
handle_info({aion_heartbeat, Ref, Details},
            #{attempt := #{ref := Ref} = A, task := Task} = S) ->
    cancel_timer(maps:get(hb_timer, A)),
    HbT = arm_after(heartbeat_timeout(Task), {attempt_timeout, Ref, heartbeat}),
    {noreply, S#{attempt => A#{hb_timer => HbT},
                 task => Task#{heartbeat_details => Details}}};
handle_info({aion_at, At, What}, S) ->
    case now_ms() >= At of
        true -> deadline(What, S);
        false -> _ = arm_at(At, What), {noreply, S}
    end;
handle_info(aion_backoff_done, #{phase := backoff, task := #{run_id := RunId}, ctx := Ctx} = S) ->
    case passed(S) of
        true ->
            deadline(schedule_to_close, S#{timer => undefined});
        false ->
            ok = aion_activity_runner:acquire(Ctx, RunId, bounded(S)),
            {noreply, S#{phase => waiting, timer => undefined}}
    end;
handle_info({aion_commit_retry, Pending}, #{phase := committing} = S) ->
    commit(Pending, S#{timer => undefined});
handle_info(aion_cancel, S) ->
    {stop, normal, kill_attempt(S)};
handle_info(_Msg, S) ->
    {noreply, S}.

%% @private
-spec terminate(term(), state()) -> ok.
terminate(_Reason, S) ->
    _ = kill_attempt(S),
    ok.

%%% ===========================================================================
%%% Attempts
%%% ===========================================================================

start_attempt(#{task := Task, deadline := S2C} = S) ->
    #{workflow_id := WfId, run_id := RunId, activity_id := ActId, attempt := N,
      heartbeat_details := HB, options := Opts} = Task,
    Stc = maps:get(start_to_close_timeout, Opts),
    Ref = make_ref(),
    Info = #{workflow_id => WfId, run_id => RunId, activity_id => ActId, attempt => N,
             heartbeat_details => HB, deadline => min_deadline(add(now_ms(), Stc), S2C),
             ref => Ref},
    Self = self(),
    {Pid, Mon} = spawn_monitor(fun() -> run_attempt(Self, Info, Task) end),
    StcT = arm_after(Stc, {attempt_timeout, Ref, start_to_close}),
    HbT = arm_after(heartbeat_timeout(Task), {attempt_timeout, Ref, heartbeat}),
    aion_telemetry:execute([aion, activity, start], #{system_time => erlang:system_time()},
                           telemetry_meta(Task)),
    S#{phase => running,
       attempt => #{pid => Pid, mon => Mon, ref => Ref, stc_timer => StcT, hb_timer => HbT,
                    started => erlang:monotonic_time()}}.

telemetry_meta(#{workflow_id := WfId, run_id := RunId, activity_id := ActId, name := Name,
                 attempt := N}) ->
    #{workflow_id => WfId, run_id => RunId, activity_id => ActId, name => Name, attempt => N}.

run_attempt(Executor, #{ref := Ref} = Info, Task) ->
    ok = aion_activity:init_attempt(Executor, Info),
    Result = try
                 {returned, call(Task)}
             catch
                 Class:Reason:Stack -> {raised, Class, Reason, Stack}
             end,
    Executor ! {aion_attempt_done, Ref, Result},
    ok.

call(#{mf := {M, F}, args := Args}) ->
    apply(M, F, Args);
call(#{mf := undefined, name := Name, args := Args, options := #{task_queue := Q}}) ->
    aion_worker:execute(Q, Name, Args).

heartbeat_timeout(#{options := #{heartbeat_timeout := Hb}}) -> Hb.

%% `{M, F}' activities run in this node's pool; named ones on task-queue workers.
bounded(#{task := #{mf := MF}}) -> MF =/= undefined.

classify({returned, V}, #{task := #{options := #{retry := R}}}) ->
    aion_retry:classify(R, {returned, V});
classify({raised, Class, Reason, Stack}, #{task := #{options := #{retry := R}} = T}) ->
    ?LOG_INFO("aion: activity ~s (~s) attempt ~b raised ~p:~p~n~p",
              [maps:get(activity_id, T), maps:get(name, T), maps:get(attempt, T), Class,
               Reason, Stack]),
    aion_retry:classify(R, {raised, Class, Reason}).

%% A start-to-close, heartbeat or schedule-to-close deadline passed.
deadline({attempt_timeout, Ref, Kind}, #{attempt := #{ref := Ref}} = S) ->
    settle({retryable, {activity_timeout, Kind}}, kill_attempt(S));
deadline({attempt_timeout, _, _}, S) ->
    {noreply, S};
deadline(schedule_to_close, #{phase := committing} = S) ->
    %% The outcome being recorded decides; nothing runs any more.
    {noreply, S};
deadline(schedule_to_close, S) ->
    S1 = cancel_phase_timer(end_attempt(kill_attempt(S))),
    settle({final, {activity_timeout, schedule_to_close}}, S1).

%% True when the schedule-to-close deadline has passed.
passed(#{deadline := infinity}) -> false;
passed(#{deadline := D}) -> now_ms() >= D.

%% Kills the running attempt (if any) and waits until it is dead.
kill_attempt(#{attempt := #{pid := Pid, mon := Mon}} = S) ->
    exit(Pid, kill),
    receive {'DOWN', Mon, process, Pid, _} -> ok end,
    end_attempt(S);
kill_attempt(S) ->
    S.

%% Forgets the attempt (cancelling its timers) and gives its slot back.
end_attempt(#{attempt := A, runner := Runner, task := Task} = S) ->
    case A of
        #{stc_timer := T1, hb_timer := T2, started := Started} ->
            cancel_timer(T1),
            cancel_timer(T2),
            aion_telemetry:execute([aion, activity, stop],
                                   #{duration => erlang:monotonic_time() - Started},
                                   telemetry_meta(Task));
        _ ->
            ok
    end,
    case Runner of
        undefined -> ok;
        _ -> aion_activity_runner:release(Runner)
    end,
    S#{attempt => undefined, runner => undefined}.

cancel_phase_timer(#{timer := undefined} = S) -> S;
cancel_phase_timer(#{timer := T} = S) -> cancel_timer(T), S#{timer => undefined}.

%%% ===========================================================================
%%% Outcomes
%%% ===========================================================================

settle({ok, V}, #{task := #{activity_id := Id, attempt := N}} = S) ->
    case aion_event:encode(activity_completed, #{activity_id => Id, attempt => N,
                                                 result => V}) of
        {ok, {Type, Data}} ->
            Row = {Type, now_ms(), Data},
            commit({[op(S, #{events => [Row], tasks_take => [Id]})], Row, stop}, S);
        {error, Invalid} ->
            settle({final, {invalid_result, Invalid}}, S)
    end;
settle({retryable, E}, #{task := Task, deadline := S2C} = S) ->
    #{attempt := N, first_attempt := First, options := #{retry := R}} = Task,
    case aion_retry:attempts_exhausted(R, N, First) of
        true ->
            settle({final, E}, S);
        false ->
            Backoff = aion_retry:backoff(R, N, First),
            Now = now_ms(),
            case is_integer(S2C) andalso Now + Backoff >= S2C of
                true ->
                    settle({final, {activity_timeout, schedule_to_close}}, S);
                false ->
                    #{activity_id := Id} = Task,
                    Row = failed_row(Id, N, E, false, Now),
                    Next = aion_activity_runner:task_row(Task#{attempt => N + 1}),
                    %% Within one op the store applies takes before puts: the take
                    %% is the guard (a cancelled activity has no row), the put
                    %% writes the next attempt.
                    Ops = [op(S, #{events => [Row], tasks_take => [Id], tasks_put => [Next]})],
                    commit({Ops, Row, {backoff, Backoff}}, S)
            end
    end;
settle({final, E}, #{task := #{activity_id := Id, attempt := N}} = S) ->
    Row = failed_row(Id, N, E, true, now_ms()),
    commit({[op(S, #{events => [Row], tasks_take => [Id]})], Row, stop}, S).

failed_row(Id, N, E, Final, Now) ->
    aion_event:encode_row(activity_failed, Now, #{activity_id => Id, attempt => N,
                                                  error => E, final => Final}).

op(#{task := #{run_id := RunId}}, Op) ->
    Op#{run_id => RunId}.

commit({Ops, {Type, At, Data}, Then} = Pending, #{ctx := Ctx, task := Task} = S) ->
    #{run_id := RunId} = Task,
    S0 = S#{phase => committing},
    case aion_store:append(maps:get(store, Ctx), Ops) of
        {ok, [[Seq] | _]} ->
            S1 = maps:remove(commit_tries, S0),
            ok = aion_deliver:events(Ctx, RunId, [{Seq, Type, At, Data}]),
            case Then of
                stop ->
                    {stop, normal, S1};
                {backoff, Ms} ->
                    #{attempt := N} = Task,
                    T = erlang:send_after(Ms, self(), aion_backoff_done),
                    {noreply, S1#{phase => backoff, timer => T,
                                  task => Task#{attempt => N + 1}}}
            end;
        {error, {task_gone, _}} ->
            {stop, normal, S0};
        {error, closed} ->
            {stop, normal, S0};
        {error, {not_found, _}} ->
            {stop, normal, S0};
        {error, Reason} ->
            Tries = maps:get(commit_tries, S0, 0) + 1,
            case Tries >= ?COMMIT_TRIES of
                true ->
                    ?LOG_ERROR("aion: cannot record outcome of activity ~s of run ~s: ~p",
                               [maps:get(activity_id, Task), RunId, Reason]),
                    {stop, {commit_failed, Reason}, S0};
                false ->
                    Delay = min(5000, 50 bsl Tries),
                    T = erlang:send_after(Delay, self(), {aion_commit_retry, Pending}),
                    {noreply, S0#{commit_tries => Tries, timer => T}}
            end
    end.

%%% ===========================================================================
%%% Time
%%% ===========================================================================

now_ms() -> erlang:system_time(millisecond).

add(_, infinity) -> infinity;
add(T, Ms) -> T + Ms.

min_deadline(infinity, B) -> B;
min_deadline(A, infinity) -> A;
min_deadline(A, B) -> min(A, B).

%% A message `{aion_at, At, What}' to self at absolute time At (ms since epoch);
%% re-armed on arrival when At lies beyond the longest Erlang timer.
arm_at(infinity, _) ->
    undefined;
arm_at(At, What) ->
    Delay = min(?MAX_TIMER, max(0, At - now_ms())),
    erlang:send_after(Delay, self(), {aion_at, At, What}).

arm_after(infinity, _) -> undefined;
arm_after(Ms, What) -> arm_at(now_ms() + Ms, What).

cancel_timer(undefined) -> ok;
cancel_timer(T) -> _ = erlang:cancel_timer(T), ok.
