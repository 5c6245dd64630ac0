%% @private
%% @doc The last process of an engine: at start it resumes what the previous life
%% of the engine left open (SPEC 3.4, design.md section 1). Outstanding activities
%% are re-dispatched by the activity runner (`aion_activity_runner:recover/1'); the
%% timer service fires due timers itself. Recovery is lazy (issue 7): only the open
%% runs that had a process when the engine stopped, or got an event after theirs
%% was evicted (`aion_store:runs_to_resume/1': `parked_seq' differs from the
%% history length), and stuck runs get a workflow process that replays its history.
%% A cleanly parked run stays suspended: whatever it waits for arrives as a
%% committed event (a due timer fired by the timer service, a re-dispatched
%% activity's outcome, a signal, a child's outcome, a cancel), and that brings it
%% back (`aion_deliver', `aion_residency'); so engine start reads the rows of parked
%% runs but starts nothing for them. A stuck run is retried (its
%% status goes back to running; fixed code resumes it, unchanged code makes it
%% stuck again). A run that cannot be resumed (its module is not loadable) is
%% reported with `logger' and skipped; it never blocks the others.
-module(aion_recovery).
-behaviour(gen_server).

-export([start_link/1, recover/1]).
-export([init/1, handle_continue/2, handle_call/3, handle_cast/2, handle_info/2]).

%% @doc Starts the recovery worker of engine `Name'; recovery runs right after.
-spec start_link(atom()) -> {ok, pid()} | {error, term()}.
start_link(Name) ->
    gen_server:start_link({local, aion_ctx:proc_name(Name, recovery)}, ?MODULE, Name, []).

%% @private
%% Outstanding activities are re-dispatched before the engine's start returns, so
%% that no activity a new run schedules afterwards can be picked up twice; workflow
%% processes are started right after, asynchronously.
-spec init(atom()) -> {ok, atom(), {continue, recover}}.
init(Name) ->
    Ctx = aion_ctx:get(Name),
    recover_activities(Ctx),
    %% The workflow supervisor runs (it starts before this worker): rehydration
    %% requests held since the engine started may go.
    ok = aion_residency:ready(Ctx),
    {ok, Name, {continue, recover}}.

%% @private
-spec handle_continue(recover, atom()) -> {noreply, atom()}.
handle_continue(recover, Name) ->
    Ctx = aion_ctx:get(Name),
    _ = recover_runs(Ctx),
    ok = aion_child:recover(Ctx),
    {noreply, Name}.

%% @doc Resumes what the engine left open (see the module doc). Returns the
%% number of workflow processes started.
-spec recover(aion_ctx:ctx()) -> non_neg_integer().
recover(Ctx) ->
    recover_activities(Ctx),
    recover_runs(Ctx).

recover_activities(Ctx) ->
    try aion_activity_runner:recover(Ctx)
    catch C:R:St ->
            logger:error("aion: re-dispatching outstanding activities failed: ~p:~p ~p",
                         [C, R, St])
    end.

recover_runs(#{store := Store} = Ctx) ->
    {ok, Runs} = aion_store:runs_to_resume(Store),
    lists:foldl(fun(Run, N) -> N + resume(Ctx, Run) end, 0, Runs).

resume(#{store := Store} = Ctx, #{run_id := RunId, workflow_id := Wid, type := TypeBin,
                                   status := Status}) ->
    Type = binary_to_atom(TypeBin, utf8),
    case aion_util:check_type(Type) of
        ok ->
            Ready = case Status of
                        <<"stuck">> ->
                            Op = #{run_id => RunId,
                                   set => #{status => <<"running">>, stuck_reason => null}},
                            case aion_store:append(Store, [Op]) of
                                {ok, _} -> ok;
                                {error, _} = E -> E
                            end;
                        _ ->
                            ok
                    end,
            Started = case Ready of
                          ok -> aion_run_sup:start_run(Ctx, RunId);
                          {error, _} = E2 -> E2
                      end,
            case Started of
                {ok, _} ->
                    1;
                {error, {already_resident, _}} ->
                    0;
                Error ->
                    logger:error("aion: cannot resume run ~ts of workflow ~ts: ~p",
                                 [RunId, Wid, Error]),
                    0
            end;
        {error, Why} ->
            logger:error("aion: cannot resume run ~ts of workflow ~ts: workflow type ~p ~p",
                         [RunId, Wid, Type, Why]),
            0
    end.

%% @private
-spec handle_call(term(), gen_server:from(), atom()) -> {reply, {error, unknown_call}, atom()}.
handle_call(_Req, _From, Name) ->
    {reply, {error, unknown_call}, Name}.

%% @private
-spec handle_cast(term(), atom()) -> {noreply, atom()}.
handle_cast(_Msg, Name) ->
    {noreply, Name}.

%% @private
-spec handle_info(term(), atom()) -> {noreply, atom()}.
handle_info(_Msg, Name) ->
    {noreply, Name}.
