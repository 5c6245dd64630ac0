%% @doc Operator actions on a run from outside its workflow process (SPEC 2.1,
%% 3.6): terminate, time out, pause/resume, reopen and retry. `aion:terminate/2',
%% `aion:pause/1', ... call these; the timer service calls {@link time_out/3}.
%%
%% Closing a run from outside (terminate, time out) is one append: an
%% `activity_cancelled' for every outstanding activity (each with its `tasks_take'),
%% then the terminal event, the run's status and `closed_at', and `clear_rows'; it
%% is conditional on the history length read just before (`expected_seq'), so an
%% event that lands meanwhile (say an activity completion) makes it read and try
%% again. Only after the commit is the run torn down: its workflow process killed,
%% its running attempts killed (they record nothing: the run is closed), its
%% timers forgotten, its `aion:await/2' callers woken. Nothing is appended to a
%% closed run: the store refuses it (`{error, closed}'), and these functions return
%% `{error, not_running}' then.
-module(aion_lifecycle).

-export([terminate/3, time_out/3, pause/2, resume/2, reopen/2, retry/2,
         reopen_activities/1, is_terminal/1]).

-include_lib("kernel/include/logger.hrl").

-define(CLOSE_TRIES, 100).
%% After this many lost races the workflow process is stopped before the next try,
%% so a run that appends without pause cannot keep its termination out.
-define(CLOSE_QUIET_AFTER, 10).

-type error() :: not_found | not_running | {bad_status, atom()} | term().

%% @doc Terminates the current run of `WorkflowId': records the
%% `activity_cancelled' events of its outstanding activities and
%% `workflow_terminated{reason}' (status `terminated'), then kills the workflow
%% process and the running attempts. `Reason' may be any term.
%% Errors: `not_found', `not_running' (the run is already closed), or a store error.
-spec terminate(aion_ctx:ctx(), binary(), term()) -> ok | {error, error()}.
terminate(#{store := Store} = Ctx, WorkflowId, Reason) ->
    case aion_store:current_run(Store, WorkflowId) of
        {ok, #{run_id := RunId} = Run} ->
            case is_terminal(maps:get(status, Run)) of
                true -> {error, not_running};
                false -> close(Ctx, RunId, workflow_terminated, #{reason => Reason},
                               <<"terminated">>)
            end;
        {error, not_found} ->
            {error, not_found}
    end.

%% @doc Times out run `RunId' (its `run_timeout' or `execution_timeout' passed):
%% records `workflow_timed_out{kind}' (status `timed_out') and tears the run down
%% like {@link terminate/3}. Errors: `not_found', `not_running', or a store error.
-spec time_out(aion_ctx:ctx(), binary(), run_timeout | execution_timeout) ->
          ok | {error, error()}.
time_out(#{store := Store} = Ctx, RunId, Kind)
  when Kind =:= run_timeout; Kind =:= execution_timeout ->
    case aion_store:get_run(Store, RunId) of
        {ok, #{status := Status}} ->
            case is_terminal(Status) of
                true -> {error, not_running};
                false -> close(Ctx, RunId, workflow_timed_out, #{kind => Kind},
                               <<"timed_out">>)
            end;
        {error, not_found} ->
            {error, not_found}
    end.

%% @doc Pauses the current run of `WorkflowId': no activity attempt of it starts
%% until {@link resume/2} (attempts already running finish); records
%% `workflow_paused' and status `paused'. Timers still fire and signals still
%% record. Pausing a paused run is `ok'. Errors: `not_found', `not_running',
%% `{bad_status, stuck}'.
-spec pause(aion_ctx:ctx(), binary()) -> ok | {error, error()}.
pause(#{store := Store} = Ctx, WorkflowId) ->
    case aion_store:current_run(Store, WorkflowId) of
        {ok, #{run_id := RunId, status := <<"running">>}} ->
            %% Hold first, then record: no attempt can start in between.
            ok = aion_activity_runner:pause_run(Ctx, RunId),
            case record(Ctx, RunId, workflow_paused, #{status => <<"paused">>}) of
                ok ->
                    ok;
                {error, _} = E ->
                    ok = aion_activity_runner:resume_run(Ctx, RunId),
                    E
            end;
        {ok, #{status := <<"paused">>}} ->
            ok;
        {ok, #{status := Status}} ->
            status_error(Status);
        {error, not_found} ->
            {error, not_found}
    end.

%% @doc Resumes a paused run: records `workflow_resumed' and status `running', then
%% lets its held attempts start. Resuming a running run is `ok'. Errors:
%% `not_found', `not_running', `{bad_status, stuck}'.
-spec resume(aion_ctx:ctx(), binary()) -> ok | {error, error()}.
resume(#{store := Store} = Ctx, WorkflowId) ->
    case aion_store:current_run(Store, WorkflowId) of
        {ok, #{run_id := RunId, status := <<"paused">>}} ->
            case record(Ctx, RunId, workflow_resumed, #{status => <<"running">>}) of
                ok -> aion_activity_runner:resume_run(Ctx, RunId);
                {error, _} = E -> E
            end;
        {ok, #{status := <<"running">>}} ->
            ok;
        {ok, #{status := Status}} ->
            status_error(Status);
        {error, not_found} ->
            {error, not_found}
    end.

%% @doc Re-drives the current run of `WorkflowId' when it is `failed' or
%% `cancelled': records `workflow_reopened{activities}' (the ids of the activities
%% whose last event is a final `activity_failed', in ordinal order) with status
%% `running', puts their task rows back (next attempt number; the retry policy and
%% the schedule-to-close timeout start over), starts the workflow process (it
%% replays) and dispatches those activities. Errors: `not_found',
%% `{bad_status, Status}' for any other status, or a store error.
-spec reopen(aion_ctx:ctx(), binary()) -> ok | {error, error()}.
reopen(#{store := Store} = Ctx, WorkflowId) ->
    case aion_store:current_run(Store, WorkflowId) of
        {ok, #{run_id := RunId, status := S, next_seq := Next}}
          when S =:= <<"failed">>; S =:= <<"cancelled">> ->
            {ok, Stored} = aion_store:history(Store, RunId, 1),
            Events = aion_event:decode_all(Stored),
            Now = now_ms(),
            Tasks = [aion_activity_runner:task_from_scheduled(RunId, WorkflowId, Sched,
                                                              {Attempt + 1, Now})
                     || {Sched, Attempt} <- reopen_activities(Events)],
            Ids = [Id || #{activity_id := Id} <- Tasks],
            Row = aion_event:encode_row(workflow_reopened, Now, #{activities => Ids}),
            Op = #{run_id => RunId, allow_closed => true, expected_seq => Next,
                   events => [Row],
                   set => #{status => <<"running">>, closed_at => null},
                   tasks_put => [aion_activity_runner:task_row(T) || T <- Tasks],
                   timers_put => aion_child:guard_rows(Events)},
            case aion_store:append(Store, [Op]) of
                {ok, _} ->
                    _ = start_run(Ctx, RunId),
                    lists:foreach(fun(T) -> aion_activity_runner:dispatch(Ctx, T) end, Tasks);
                {error, {sequence_conflict, _, _}} ->
                    %% Someone else reopened (or wrote) meanwhile: look again.
                    reopen(Ctx, WorkflowId);
                {error, _} = E ->
                    E
            end;
        {ok, #{status := Status}} ->
            {error, {bad_status, binary_to_atom(Status, utf8)}};
        {error, not_found} ->
            {error, not_found}
    end.

%% @doc The activities a reopen re-dispatches: for every activity whose last
%% activity event in `Events' (decoded history) is a final `activity_failed', its
%% `activity_scheduled' event and the attempt number of that failure; in
%% scheduling order.
-spec reopen_activities([aion_event:event()]) -> [{aion_event:event(), pos_integer()}].
reopen_activities(Events) ->
    {Scheduled, Last} =
        lists:foldl(
          fun(#{type := activity_scheduled, activity_id := Id} = E, {Sch, L}) ->
                  {[{Id, E} | Sch], L#{Id => E}};
             (#{type := T, activity_id := Id} = E, {Sch, L})
                when T =:= activity_completed; T =:= activity_failed;
                     T =:= activity_cancelled ->
                  {Sch, L#{Id => E}};
             (_, Acc) ->
                  Acc
          end, {[], #{}}, Events),
    [{Sched, Attempt}
     || {Id, Sched} <- lists:reverse(Scheduled),
        #{type := activity_failed, final := true, attempt := Attempt} <- [maps:get(Id, Last)]].

%% @doc Retries a `stuck' run (after a code fix): status `running', stuck reason
%% cleared, and the workflow process started again (it replays). Errors:
%% `not_found', `{bad_status, Status}' for any other status, or a store error.
-spec retry(aion_ctx:ctx(), binary()) -> ok | {error, error()}.
retry(#{store := Store} = Ctx, WorkflowId) ->
    case aion_store:current_run(Store, WorkflowId) of
        {ok, #{run_id := RunId, status := <<"stuck">>}} ->
            Op = #{run_id => RunId, set => #{status => <<"running">>, stuck_reason => null}},
            case aion_store:append(Store, [Op]) of
                {ok, _} -> start_run(Ctx, RunId);
                {error, closed} -> {error, not_running};
                {error, _} = E -> E
            end;
        {ok, #{status := Status}} ->
            {error, {bad_status, binary_to_atom(Status, utf8)}};
        {error, not_found} ->
            {error, not_found}
    end.

%% @doc True for the terminal statuses (binary, as stored).
-spec is_terminal(binary()) -> boolean().
is_terminal(S) ->
    lists:member(S, [<<"completed">>, <<"failed">>, <<"cancelled">>, <<"terminated">>,
                     <<"timed_out">>, <<"continued_as_new">>]).

status_error(Status) ->
    case is_terminal(Status) of
        true -> {error, not_running};
        false -> {error, {bad_status, binary_to_atom(Status, utf8)}}
    end.

%%% ===========================================================================
%%% Internals
%%% ===========================================================================

%% Appends one event with a status change and delivers it to the resident process.
record(#{store := Store} = Ctx, RunId, Type, Set) ->
    {T, At, Data} = aion_event:encode_row(Type, now_ms(), #{}),
    case aion_store:append(Store, [#{run_id => RunId, events => [{T, At, Data}], set => Set}]) of
        {ok, [[Seq]]} -> aion_deliver:events(Ctx, RunId, [{Seq, T, At, Data}]);
        {error, closed} -> {error, not_running};
        {error, {not_found, _}} -> {error, not_found};
        {error, _} = E -> E
    end.

close(Ctx, RunId, Type, Fields, Status) ->
    close(Ctx, RunId, Type, Fields, Status, ?CLOSE_TRIES).

close(_Ctx, RunId, _Type, _Fields, _Status, 0) ->
    {error, {busy, RunId}};
close(#{store := Store} = Ctx, RunId, Type, Fields, Status, Tries) ->
    case aion_store:get_run(Store, RunId) of
        {ok, #{status := S, next_seq := Next}} ->
            case is_terminal(S) of
                true ->
                    {error, not_running};
                false ->
                    {ok, Tasks} = aion_store:activity_tasks(Store, RunId),
                    Ids = [Id || {_, Id, _, _, _} <- Tasks],
                    Now = now_ms(),
                    Events = [aion_event:encode_row(activity_cancelled, Now,
                                                    #{activity_id => Id}) || Id <- Ids]
                        ++ [aion_event:encode_row(Type, Now, Fields)],
                    Op = #{run_id => RunId, expected_seq => Next, events => Events,
                           tasks_take => Ids, set => #{status => Status, closed_at => Now},
                           clear_rows => true},
                    case aion_store:append(Store, [Op]) of
                        {ok, _} ->
                            teardown(Ctx, RunId);
                        {error, {sequence_conflict, _, _}} ->
                            lost_race(Ctx, RunId, Tries),
                            close(Ctx, RunId, Type, Fields, Status, Tries - 1);
                        {error, {task_gone, _}} ->
                            lost_race(Ctx, RunId, Tries),
                            close(Ctx, RunId, Type, Fields, Status, Tries - 1);
                        {error, closed} ->
                            {error, not_running};
                        {error, {not_found, _}} ->
                            {error, not_found};
                        {error, _} = E ->
                            E
                    end
            end;
        {error, not_found} ->
            {error, not_found}
    end.

lost_race(Ctx, RunId, Tries) when ?CLOSE_TRIES - Tries + 1 =:= ?CLOSE_QUIET_AFTER ->
    %% Killing the workflow process early changes nothing observable (it is killed
    %% right after the commit anyway, and runs no cleanup); it only stops it from
    %% appending. Should the close still fail, recovery restarts the run.
    safely(fun() -> aion_run:kill(Ctx, RunId) end);
lost_race(_, _, _) ->
    ok.

%% After a run closed from outside: kill its process, its attempts, its timers; wake
%% its awaiters. Each step tolerates an engine that is stopping (a timer firing
%% during shutdown may close a run after the runner is gone).
teardown(Ctx, RunId) ->
    safely(fun() -> aion_run:kill(Ctx, RunId) end),
    safely(fun() -> aion_activity_runner:cancel_run(Ctx, RunId) end),
    safely(fun() -> aion_timers:disarm_run(Ctx, RunId) end),
    safely(fun() -> aion_waiters:notify(Ctx, RunId) end),
    safely(fun() -> aion_child:closed_from_outside(Ctx, RunId) end),
    ok.

safely(F) ->
    try F() of
        _ -> ok
    catch
        Class:Reason ->
            ?LOG_DEBUG("aion: teardown step skipped: ~p:~p", [Class, Reason]),
            ok
    end.

start_run(Ctx, RunId) ->
    case aion_run_sup:start_run(Ctx, RunId) of
        {ok, _} -> ok;
        {error, {already_started, _}} -> ok;
        {error, {already_resident, _}} -> ok;
        {error, Reason} = E ->
            ?LOG_ERROR("aion: cannot start run ~s: ~p", [RunId, Reason]),
            E
    end.

now_ms() -> erlang:system_time(millisecond).
