%% @private
%% @doc Child workflows and continue-as-new (SPEC 2.2, 3.5): the parent-side logic
%% of `aion_workflow:start_child/3' and `continue_as_new/2', and the engine tasks
%% that carry a child's outcome into its parent and apply parent close policies.
%%
%% <b>Record, then spawn.</b> The parent records `child_workflow_started{child_id,
%% workflow_id, run_id, workflow_type, input, options}' (the child's run id is
%% chosen before the append) together with a guard timer row `$child/ChildId' that
%% never falls due; then it creates the child run (its `workflow_started' carries
%% `parent', `parent_run_id', `child_id') and process. Creation is idempotent (the
%% run id is fixed: `{already_exists, _}' means done). If it fails after the record
%% (an error, or a crash in between), a repair task under the child-task supervisor
%% creates it; a rebuilt parent starts that task for every recorded child without
%% outcome, so recovery at engine start repairs too.
%%
%% <b>Outcome into the parent.</b> Whoever appends a child run's terminal event (its
%% own process, or `aion_lifecycle' for terminate/time-out) starts a report task
%% after the commit. It appends `child_workflow_completed{child_id, result}' or
%% `child_workflow_failed{child_id, error, kind}' to the parent together with
%% `timers_take' of the guard row: the outcome is recorded at most once however
%% many reporters race, never into a closed parent, and is then delivered
%% (`aion_deliver'). A child that continued as new reports nothing: its next run
%% carries the parent link and reports when the chain ends. A rebuilt parent
%% re-checks every recorded child without outcome (the crash between a child's
%% close and the report).
%%
%% <b>Parent close policy.</b> When a run closes (any terminal status, including
%% continued_as_new) a task applies the policy of each of its open child runs
%% (found by the `parent' column): `terminate' (`aion_lifecycle:terminate/3'),
%% `request_cancel' (records `workflow_cancel_requested{reason = parent_closed}' in
%% the child), `abandon'. Recovery at engine start re-applies it for open children
%% of closed parents.
%%
%% Tasks run under `aion_child_tasks'; engine shutdown stops them and waits for
%% them before the store closes.
-module(aion_child).

-include("aion_run.hrl").

-export([guard_rows/1]).
-export([start/3, await_result/1, cancel/2, continue_as_new/2, run_closed/4,
         closed_from_outside/2, recover/1, request_cancel/3, validate_start/3]).
%% Task entry points.
-export([ensure/4, report/2, close_children/3]).

-define(FAR, 253402300799999).   % year 9999: a guard timer row never falls due
-define(OPEN, [<<"running">>, <<"paused">>, <<"stuck">>]).
-define(RECOVER_PAGE, 5000).
-define(START_KEYS, [id, id_reuse_policy, execution_timeout, run_timeout,
                     search_attributes, task_queue, parent_close_policy]).
-define(CAN_KEYS, [workflow_type, run_timeout, task_queue, search_attributes]).
-define(RETRY_MS, 200).
-define(RETRY_MAX_MS, 5000).

%%% ===========================================================================
%%% Starting a child (in the parent's workflow process)
%%% ===========================================================================

%% @doc Validates `start_child' arguments: `{ok, TypeBin, Options}' with
%% `Options' the JSON-ready option map recorded in `child_workflow_started', or
%% `{error, {unknown_workflow_type, Type}}', `{error, {invalid_option, Key}}',
%% `{error, {invalid_payload, Path, Why}}' (input or search attributes).
-spec validate_start(term(), term(), term()) -> {ok, binary(), map()} | {error, term()}.
validate_start(Type, Input, Opts) ->
    case aion_util:check_type(Type) of
        {error, _} ->
            {error, {unknown_workflow_type, Type}};
        ok when not is_map(Opts) ->
            {error, {invalid_option, options}};
        ok ->
            TypeOpts = maps:with(?START_KEYS -- [id], aion_util:type_options(Type)),
            O = maps:merge(TypeOpts, Opts),
            case [K || {K, V} <- maps:to_list(O), not valid_opt(K, V)] of
                [K | _] ->
                    {error, {invalid_option, K}};
                [] ->
                    case aion_json:encode(Input) of
                        {error, {invalid_payload, _, _}} = E ->
                            E;
                        {ok, _} ->
                            case check_sa(O) of
                                ok -> {ok, atom_to_binary(Type, utf8), recorded_opts(O)};
                                {error, _} = E -> E
                            end
                    end
            end
    end.

valid_opt(id, Id) -> is_binary(Id) andalso Id =/= <<>>;
valid_opt(id_reuse_policy, P) ->
    lists:member(P, [allow_duplicate, allow_duplicate_failed_only, reject_duplicate]);
valid_opt(execution_timeout, T) -> T =:= infinity orelse (is_integer(T) andalso T > 0);
valid_opt(run_timeout, T) -> T =:= infinity orelse (is_integer(T) andalso T > 0);
valid_opt(search_attributes, M) -> is_map(M);
valid_opt(task_queue, Q) -> is_binary(Q) andalso Q =/= <<>>;
valid_opt(parent_close_policy, P) -> lists:member(P, [terminate, request_cancel, abandon]);
valid_opt(_, _) -> false.

check_sa(#{search_attributes := SA}) ->
    case aion_json:encode(SA) of
        {ok, _} -> ok;
        {error, {invalid_payload, Path, Why}} ->
            {error, {invalid_payload, [<<"search_attributes">> | Path], Why}}
    end;
check_sa(_) ->
    ok.

%% The options as recorded (binary keys and values: what the event decodes to).
recorded_opts(O) ->
    maps:from_list(
      [{atom_to_binary(K, utf8), case V of
                                     A when is_atom(A) -> atom_to_binary(A, utf8);
                                     _ -> V
                                 end}
       || {K, V} <- maps:to_list(maps:without([id], O)), V =/= infinity]
      ++ [{<<"parent_close_policy">>, <<"terminate">>}
          || not is_map_key(parent_close_policy, O)]).

%% @doc `aion_workflow:start_child/3' in the workflow process: `{ok, ChildId}' (the
%% future's id) or the `{error, _}' of {@link validate_start/3} (nothing recorded).
%% Live, records `child_workflow_started' and creates the child; on replay returns
%% the recorded child and, when no outcome is known yet, starts a task that
%% creates a missing child or reports a closed one.
-spec start(term(), term(), term()) -> {ok, binary()} | {error, term()}.
start(Type, Input, Opts) ->
    S = aion_run:st_cmd(),
    case validate_start(Type, Input, Opts) of
        {error, _} = E ->
            E;
        {ok, TypeBin, Recorded} ->
            R0 = S#wf.replay,
            case aion_replay:command(#{command => child, workflow_type => TypeBin}, R0) of
                {recorded, #{child_id := Id} = Ev, R1} ->
                    aion_run:put_st(S#wf{replay = R1}),
                    case aion_replay:outcome({child, Id}, R1) of
                        {ok, _} -> ok;
                        none -> start_task(S#wf.ctx, ensure,
                                           [S#wf.ctx, S#wf.run_id, S#wf.workflow_id, Ev])
                    end,
                    {ok, Id};
                {live, R1} ->
                    Id = <<"c", (integer_to_binary(aion_replay:position(R1)))/binary>>,
                    Wid = case Opts of
                              #{id := W} -> W;
                              _ -> aion_util:uuid_v4()
                          end,
                    %% A child runs its activities on the parent's task queue unless
                    %% told otherwise (as in Temporal).
                    Recorded1 = case {Recorded, S#wf.options} of
                                    {#{<<"task_queue">> := _}, _} -> Recorded;
                                    {_, #{<<"task_queue">> := Q}} ->
                                        Recorded#{<<"task_queue">> => Q};
                                    _ -> Recorded
                                end,
                    Fields = #{child_id => Id, workflow_id => Wid,
                               run_id => aion_util:uuid_v4(), workflow_type => TypeBin,
                               input => Input, options => Recorded1},
                    Row = aion_event:encode_row(child_workflow_started, aion_run:now_ms(),
                                                Fields),
                    Op = #{events => [Row], timers_put => [{guard(Id), ?FAR}]},
                    {ok, [Ev], S1} = aion_run:append(Op, S#wf{replay = R1}),
                    spawn_child(S1#wf.ctx, S1#wf.run_id, S1#wf.workflow_id, Ev),
                    {ok, Id};
                {nondeterminism, D} ->
                    aion_run:stuck(D, S)
            end
    end.

guard(ChildId) -> <<"$child/", ChildId/binary>>.

%% @doc The guard timer rows of the children in `Events' (a decoded history) whose
%% outcome is not recorded: a reopen puts them back (the close cleared them) so
%% the outcomes of those children can still be recorded.
-spec guard_rows([aion_event:event()]) -> [{binary(), integer()}].
guard_rows(Events) ->
    Done = [Id || #{type := T, child_id := Id} <- Events,
                  T =:= child_workflow_completed orelse T =:= child_workflow_failed],
    [{guard(Id), ?FAR} || #{type := child_workflow_started, child_id := Id} <- Events,
                          not lists:member(Id, Done)].

%% Creates the child of a recorded `child_workflow_started' (live path): a failure
%% other than a definite answer leaves it to a repair task.
spawn_child(Ctx, ParentRunId, ParentWid, Ev) ->
    case create_child(Ctx, ParentRunId, ParentWid, Ev) of
        ok -> ok;
        retry -> start_task(Ctx, ensure, [Ctx, ParentRunId, ParentWid, Ev])
    end.

%% ok: the child exists (or can never exist and the parent was told); retry: try
%% again later.
create_child(Ctx, ParentRunId, ParentWid,
             #{child_id := ChildId, workflow_id := Wid, run_id := RunId,
               workflow_type := TypeBin, input := Input} = Ev) ->
    O = case maps:get(options, Ev, #{}) of
            M when is_map(M) -> M;
            _ -> #{}
        end,
    Policy = maps:get(<<"parent_close_policy">>, O, <<"terminate">>),
    Spec = #{run_id => RunId, workflow_id => Wid, type => TypeBin, input => Input,
             options => O, parent => ParentWid, parent_run_id => ParentRunId,
             child_id => ChildId, policy => Policy, continued_from => null,
             reuse => binary_to_atom(maps:get(<<"id_reuse_policy">>, O,
                                              <<"allow_duplicate">>), utf8)},
    case new_run(Ctx, Spec, []) of
        {ok, _} ->
            ok;
        {error, {already_exists, _}} ->
            ok;
        {error, {already_started, Other}} ->
            Row = aion_event:encode_row(child_workflow_failed, now_ms(),
                                        #{child_id => ChildId,
                                          error => {already_started, Other},
                                          kind => failed}),
            case record_outcome(Ctx, ParentRunId, ChildId, Row) of
                ok -> ok;
                {error, _} -> retry
            end;
        {error, Reason} ->
            logger:warning("aion: creating child ~ts (run ~ts) failed: ~p; retrying",
                           [Wid, RunId, Reason]),
            retry
    end.

%% Creates a run (with `Before' ops committed in the same transaction, e.g. the
%% close of the run that continues as new) and its process. The process is started
%% before the commit, so it never reads history.
new_run(#{store := Store} = Ctx, Spec, Before) ->
    #{run_id := RunId, workflow_id := Wid, type := TypeBin, input := Input,
      options := O} = Spec,
    Now = now_ms(),
    ExecAt = case Spec of
                 #{execution_deadline := At} when is_integer(At) -> At;
                 _ -> case O of
                          #{<<"execution_timeout">> := T} when is_integer(T) -> Now + T;
                          _ -> undefined
                      end
             end,
    Deadlines = [{<<"$run_timeout">>, Now + T}
                 || #{<<"run_timeout">> := T} <- [O], is_integer(T)]
        ++ [{<<"$execution_timeout">>, ExecAt} || is_integer(ExecAt)],
    Recorded = maps:merge(
                 maps:with([<<"task_queue">>, <<"run_timeout">>, <<"id_reuse_policy">>], O),
                 maps:from_list([{<<"execution_deadline">>, ExecAt} || is_integer(ExecAt)])),
    Parent = maps:get(parent_run_id, Spec, null),
    Fields0 = #{workflow_type => TypeBin, input => Input, workflow_id => Wid,
                parent => maps:get(parent, Spec, null),
                continued_from => maps:get(continued_from, Spec, null),
                options => Recorded},
    Fields = case Parent of
                 null -> Fields0;
                 _ -> Fields0#{parent_run_id => Parent,
                               child_id => maps:get(child_id, Spec),
                               parent_close_policy => maps:get(policy, Spec)}
             end,
    {EvType, Data} = case aion_event:encode(workflow_started, Fields) of
                         {ok, TD} -> TD;
                         {error, Bad} -> error(Bad)
                     end,
    Create0 = #{workflow_id => Wid, type => TypeBin, status => <<"running">>,
                started_at => Now, id_reuse_policy => maps:get(reuse, Spec, allow_duplicate)},
    Create1 = case O of
                  #{<<"search_attributes">> := SA} ->
                      {ok, SAJ} = aion_json:encode_bin(SA),
                      Create0#{search_attributes => SAJ};
                  _ -> Create0
              end,
    Create = case Parent of
                 null -> Create1;
                 _ ->
                     {ok, Meta} = aion_json:encode_bin(
                                    #{child_id => maps:get(child_id, Spec),
                                      parent_close_policy => maps:get(policy, Spec),
                                      parent_workflow_id => maps:get(parent, Spec)}),
                     Create1#{parent => Parent, data => Meta}
             end,
    Create2 = case maps:get(continued_from, Spec, null) of
                  null -> Create;
                  From -> Create#{continued_from => From}
              end,
    Op = #{run_id => RunId, events => [{EvType, Now, Data}], create => Create2,
           timers_put => Deadlines},
    Ref = make_ref(),
    case aion_run_sup:start_new(Ctx, RunId, Ref) of
        {ok, Pid} ->
            case aion_store:append(Store, Before ++ [Op]) of
                {ok, Seqs} ->
                    Pid ! {aion_go, Ref, {1, EvType, Now, Data}},
                    lists:foreach(fun({Id, At}) -> aion_timers:arm(Ctx, RunId, Id, At) end,
                                  Deadlines),
                    {ok, Seqs};
                {error, _} = E ->
                    Pid ! {aion_abort, Ref},
                    E
            end;
        {error, {already_resident, _}} ->
            {error, {already_exists, RunId}};
        {error, _} = E ->
            E
    end.

%% @doc Task: makes sure the child of a recorded `child_workflow_started' (parent
%% `ParentRunId') exists, and reports its outcome if it already closed. Retries
%% with backoff while the store refuses; stops when the parent is closed.
-spec ensure(aion_ctx:ctx(), binary(), binary(), aion_event:event()) -> ok.
ensure(Ctx, ParentRunId, ParentWid, Ev) ->
    ensure(Ctx, ParentRunId, ParentWid, Ev, ?RETRY_MS).

ensure(#{store := Store} = Ctx, ParentRunId, ParentWid, #{run_id := RunId} = Ev, Backoff) ->
    Again = fun() ->
                    receive after Backoff -> ok end,
                    ensure(Ctx, ParentRunId, ParentWid, Ev, min(Backoff * 2, ?RETRY_MAX_MS))
            end,
    case aion_store:get_run(Store, RunId) of
        {ok, _} ->
            report(Ctx, RunId);
        {error, not_found} ->
            case aion_store:get_run(Store, ParentRunId) of
                {ok, #{status := PS}} ->
                    case aion_util:is_terminal(PS) of
                        true ->
                            ok;
                        false ->
                            case create_child(Ctx, ParentRunId, ParentWid, Ev) of
                                ok -> after_create(Ctx, ParentRunId, RunId);
                                retry -> Again()
                            end
                    end;
                {error, not_found} ->
                    ok
            end
    end.

%% The parent may have closed while the child was being created: apply its policy.
after_create(#{store := Store} = Ctx, ParentRunId, RunId) ->
    case aion_store:get_run(Store, ParentRunId) of
        {ok, #{status := PS, workflow_id := PWid}} ->
            case aion_util:is_terminal(PS) of
                true ->
                    case aion_store:get_run(Store, RunId) of
                        {ok, Run} -> apply_policy(Ctx, PWid, Run);
                        _ -> ok
                    end;
                false ->
                    ok
            end;
        _ ->
            ok
    end.

%%% ===========================================================================
%%% Child outcomes into the parent
%%% ===========================================================================

%% @doc Task: if run `RunId' is a closed child run, records its outcome in its
%% parent (at most once, only while the parent is open) and delivers it. A run that
%% continued as new is followed to the next run of the chain.
-spec report(aion_ctx:ctx(), binary()) -> ok.
report(#{store := Store} = Ctx, RunId) ->
    case aion_store:get_run(Store, RunId) of
        {ok, #{status := <<"continued_as_new">>} = Run} ->
            case terminal_event(Store, Run) of
                #{new_run_id := Next} -> report(Ctx, Next);
                _ -> ok
            end;
        {ok, #{status := Status, parent := Parent} = Run} when is_binary(Parent) ->
            case aion_util:is_terminal(Status) of
                true ->
                    #{<<"child_id">> := ChildId} = meta(Run),
                    case terminal_event(Store, Run) of
                        #{} = T -> report_terminal(Ctx, Parent, ChildId, T);
                        none -> ok
                    end;
                false ->
                    ok
            end;
        _ ->
            ok
    end.

report_terminal(Ctx, ParentRunId, ChildId, T) ->
    case outcome_row(ChildId, T) of
        none -> ok;
        Row -> report_loop(Ctx, ParentRunId, ChildId, Row, ?RETRY_MS)
    end.

report_loop(Ctx, ParentRunId, ChildId, Row, Backoff) ->
    case record_outcome(Ctx, ParentRunId, ChildId, Row) of
        ok ->
            ok;
        {error, Reason} ->
            logger:warning("aion: recording the outcome of child ~ts in run ~ts failed: ~p;"
                           " retrying", [ChildId, ParentRunId, Reason]),
            receive after Backoff -> ok end,
            report_loop(Ctx, ParentRunId, ChildId, Row, min(Backoff * 2, ?RETRY_MAX_MS))
    end.

%% The outcome append, guarded by the child's guard timer row of the parent.
record_outcome(#{store := Store} = Ctx, ParentRunId, ChildId, {T, At, Data} = Row) ->
    Op = #{run_id => ParentRunId, events => [Row], timers_take => [guard(ChildId)]},
    case aion_store:append(Store, [Op]) of
        {ok, [[Seq]]} -> aion_deliver:events(Ctx, ParentRunId, [{Seq, T, At, Data}]);
        {error, {timer_gone, _}} -> ok;     % recorded already
        {error, closed} -> ok;              % the parent closed: nobody to tell
        {error, {not_found, _}} -> ok;
        {error, _} = E -> E
    end.

outcome_row(ChildId, #{type := Type} = T) ->
    Now = now_ms(),
    case Type of
        workflow_completed ->
            aion_event:encode_row(child_workflow_completed, Now,
                                  #{child_id => ChildId, result => maps:get(result, T, null)});
        workflow_continued_as_new ->
            none;
        _ ->
            {Kind, Error} = case Type of
                                workflow_failed -> {failed, maps:get(error, T, null)};
                                workflow_cancelled -> {cancelled, maps:get(reason, T, null)};
                                workflow_terminated -> {terminated, maps:get(reason, T, null)};
                                workflow_timed_out -> {timed_out, timeout_kind(T)}
                            end,
            aion_event:encode_row(child_workflow_failed, Now,
                                  #{child_id => ChildId, error => Error, kind => Kind})
    end.

timeout_kind(T) ->
    case maps:get(kind, T, null) of
        <<"run_timeout">> -> run_timeout;
        <<"execution_timeout">> -> execution_timeout;
        K -> K
    end.

terminal_event(Store, #{run_id := RunId, next_seq := Next}) ->
    {ok, Stored} = aion_store:history(Store, RunId, max(1, Next - 1)),
    case [E || E <- aion_event:decode_all(Stored), is_terminal_event(E)] of
        [E | _] ->
            E;
        [] ->
            {ok, All} = aion_store:history(Store, RunId, 1),
            case [E || E <- aion_event:decode_all(All), is_terminal_event(E)] of
                [] -> none;
                Ts -> lists:last(Ts)
            end
    end.

is_terminal_event(#{type := T}) ->
    lists:member(T, [workflow_completed, workflow_failed, workflow_cancelled,
                     workflow_terminated, workflow_timed_out, workflow_continued_as_new]).

meta(#{data := D}) when is_binary(D) ->
    case aion_json:decode(D) of
        {ok, M} when is_map(M) -> M;
        _ -> #{}
    end;
meta(_) ->
    #{}.

%% @doc The `aion_workflow:await/1' value of a child's settling event:
%% `{ok, Result}' or `{error, {child_failed | child_cancelled | child_terminated |
%% child_timed_out, Detail}}'.
-spec await_result(aion_event:event()) -> {ok, term()} | {error, {atom(), term()}}.
await_result(#{type := child_workflow_completed} = E) ->
    {ok, maps:get(result, E, null)};
await_result(#{type := child_workflow_failed} = E) ->
    Why = case maps:get(kind, E, <<"failed">>) of
              <<"cancelled">> -> child_cancelled;
              <<"terminated">> -> child_terminated;
              <<"timed_out">> -> child_timed_out;
              _ -> child_failed
          end,
    {error, {Why, maps:get(error, E, null)}}.

%%% ===========================================================================
%%% Cancel
%%% ===========================================================================

%% @doc `aion_workflow:cancel/1' of a child future whose outcome is not known:
%% requests cancellation of the child's current run (records
%% `workflow_cancel_requested{reason = cancelled_by_parent}' there unless one is
%% recorded already). Nothing is recorded in the parent; the child's outcome
%% arrives as usual.
-spec cancel(#wf{}, binary()) -> ok.
cancel(#wf{ctx = #{store := Store} = Ctx, run_id = ParentRunId, replay = R}, ChildId) ->
    case aion_replay:child_started(ChildId, R) of
        {ok, #{workflow_id := Wid}} ->
            case aion_store:current_run(Store, Wid) of
                {ok, #{run_id := RunId, parent := ParentRunId, status := St}} ->
                    %% A replay repeats the cancel: once is enough.
                    case aion_util:is_terminal(St) orelse cancel_requested(Ctx, RunId) of
                        true -> ok;
                        false -> _ = request_cancel(Ctx, RunId, cancelled_by_parent), ok
                    end;
                _ ->
                    ok
            end;
        none ->
            ok
    end.

%% @doc Records `workflow_cancel_requested{reason}' in run `RunId' and delivers it.
%% Errors: `not_running' (closed), `not_found', or a store error.
-spec request_cancel(aion_ctx:ctx(), binary(), term()) -> ok | {error, term()}.
request_cancel(#{store := Store} = Ctx, RunId, Reason) ->
    {T, At, Data} = aion_event:encode_row(workflow_cancel_requested, now_ms(),
                                          #{reason => Reason}),
    case aion_store:append(Store, [#{run_id => RunId, events => [{T, At, Data}]}]) of
        {ok, [[Seq]]} -> aion_deliver:events(Ctx, RunId, [{Seq, T, At, Data}]);
        {error, closed} -> {error, not_running};
        {error, {not_found, _}} -> {error, not_found};
        {error, _} = E -> E
    end.

%%% ===========================================================================
%%% Closing: reports and close policies
%%% ===========================================================================

%% @doc Called by a workflow process after its own terminal commit (`Terminal' is
%% the decoded terminal event): starts a task reporting the outcome to the parent
%% (a child run) and applying the close policy to its open children.
-spec run_closed(aion_ctx:ctx(), binary(), aion_replay:replay(), aion_event:event()) -> ok.
run_closed(Ctx, RunId, R, #{type := TType}) ->
    #{workflow_id := Wid} = Start = aion_replay:event(1, R),
    HasParent = is_binary(maps:get(parent_run_id, Start, null))
        andalso TType =/= workflow_continued_as_new,
    HasChildren = aion_replay:open_children(R) =/= [],
    case HasParent orelse HasChildren of
        true -> start_task(Ctx, closed_task, [Ctx, RunId, Wid, HasParent, HasChildren]);
        false -> ok
    end.

%% @doc Called after a run was closed from outside (terminate, time out): the same
%% as {@link run_closed/4}, reading what it needs from the store (in a task).
-spec closed_from_outside(aion_ctx:ctx(), binary()) -> ok.
closed_from_outside(#{store := Store} = Ctx, RunId) ->
    case aion_store:get_run(Store, RunId) of
        {ok, #{workflow_id := Wid, parent := Parent}} ->
            start_task(Ctx, closed_task, [Ctx, RunId, Wid, is_binary(Parent), true]);
        _ ->
            ok
    end.

%% @doc Task: applies the parent close policy of every open child run of
%% `ParentRunId' (a closed run of workflow `ParentWid').
-spec close_children(aion_ctx:ctx(), binary(), binary()) -> ok.
close_children(#{store := Store} = Ctx, ParentRunId, ParentWid) ->
    {ok, Runs} = aion_store:list(Store, #{parent => ParentRunId, status => ?OPEN}),
    lists:foreach(fun(Run) -> apply_policy(Ctx, ParentWid, Run) end, Runs).

apply_policy(Ctx, ParentWid, #{run_id := RunId, workflow_id := Wid, status := S} = Run) ->
    case aion_util:is_terminal(S) of
        true ->
            ok;
        false ->
            Reason = #{parent_closed => ParentWid},
            case maps:get(<<"parent_close_policy">>, meta(Run), <<"terminate">>) of
                <<"terminate">> ->
                    _ = aion_lifecycle:terminate(Ctx, Wid, Reason),
                    ok;
                <<"request_cancel">> ->
                    case cancel_requested(Ctx, RunId) of
                        true -> ok;
                        false -> _ = request_cancel(Ctx, RunId, Reason), ok
                    end;
                _ ->
                    ok
            end
    end.

cancel_requested(#{store := Store}, RunId) ->
    {ok, Stored} = aion_store:history(Store, RunId, 1),
    lists:any(fun({_, T, _, _}) -> T =:= <<"workflow_cancel_requested">> end, Stored).

%% @doc Recovery at engine start: a task re-applies the close policy of every open
%% child run whose parent is closed (the engine stopped between the parent's close
%% and the policy).
-spec recover(aion_ctx:ctx()) -> ok.
recover(Ctx) ->
    start_task(Ctx, recover_task, [Ctx]).

%%% ===========================================================================
%%% Continue-as-new (in the workflow process)
%%% ===========================================================================

%% @doc `aion_workflow:continue_as_new/2': closes this run with
%% `workflow_continued_as_new{new_run_id, input}' and creates the next run of the
%% same workflow id (`workflow_started{continued_from}') in one transaction, then
%% stops the process. Options: `workflow_type' (module; default the same type),
%% `run_timeout', `task_queue', `search_attributes'; the execution deadline and the
%% parent link carry over. Returns `{error, Reason}' (nothing recorded) for bad
%% input: `{invalid_payload, Path, Why}', `{invalid_option, Key}',
%% `{unknown_workflow_type, Type}'.
-spec continue_as_new(term(), term()) -> {error, term()}.
continue_as_new(Input, Opts) ->
    S = aion_run:st_cmd(),
    case validate_can(S, Input, Opts) of
        {error, _} = E -> E;
        {ok, TypeBin, O} -> do_continue(S, Input, TypeBin, O)
    end.

validate_can(#wf{type = Type0, options = WfOpts}, Input, Opts) when is_map(Opts) ->
    Type = maps:get(workflow_type, Opts, Type0),
    Bad = [K || {K, V} <- maps:to_list(Opts),
                not (lists:member(K, ?CAN_KEYS) andalso
                     (K =:= workflow_type orelse valid_opt(K, V)))],
    case {aion_util:check_type(Type), Bad} of
        {{error, _}, _} ->
            {error, {unknown_workflow_type, Type}};
        {ok, [K | _]} ->
            {error, {invalid_option, K}};
        {ok, []} ->
            case aion_json:encode(Input) of
                {error, {invalid_payload, _, _}} = E ->
                    E;
                {ok, _} ->
                    case check_sa(Opts) of
                        ok ->
                            Carried = maps:with([<<"task_queue">>, <<"run_timeout">>],
                                                WfOpts),
                            {ok, atom_to_binary(Type, utf8),
                             maps:merge(Carried, recorded_opts(Opts))};
                        {error, _} = E ->
                            E
                    end
            end
    end;
validate_can(_, _, _) ->
    {error, {invalid_option, options}}.

-spec do_continue(#wf{}, term(), binary(), map()) -> no_return().
do_continue(S0, Input, TypeBin, O) ->
    %% A fresh run continuing before any command: its start is committed first.
    #wf{ctx = Ctx, run_id = RunId, workflow_id = Wid, replay = R,
        options = WfOpts} = S = aion_run:ensure_started(S0),
    case aion_replay:finish(R) of
        {nondeterminism, D} ->
            aion_run:stuck(D, S);
        ok ->
            Start = aion_replay:event(1, R),
            NewRunId = aion_util:uuid_v4(),
            Now = now_ms(),
            Row = aion_event:encode_row(workflow_continued_as_new, Now,
                                        #{new_run_id => NewRunId, input => Input}),
            Close = #{run_id => RunId, events => [Row],
                      set => #{status => <<"continued_as_new">>, closed_at => Now},
                      clear_rows => true},
            Parent = maps:get(parent_run_id, Start, null),
            Spec0 = #{run_id => NewRunId, workflow_id => Wid, type => TypeBin,
                      input => Input, options => maps:remove(<<"parent_close_policy">>, O),
                      continued_from => RunId, reuse => allow_duplicate,
                      execution_deadline => maps:get(<<"execution_deadline">>, WfOpts,
                                                     undefined)},
            Spec = case Parent of
                       null -> Spec0;
                       _ -> Spec0#{parent => maps:get(parent, Start, null),
                                   parent_run_id => Parent,
                                   child_id => maps:get(child_id, Start),
                                   policy => maps:get(parent_close_policy, Start,
                                                      <<"terminate">>)}
                   end,
            case new_run(Ctx, Spec, [Close]) of
                {ok, [[Seq] | _]} ->
                    {T, At, Data} = Row,
                    Ev = aion_event:decode({Seq, T, At, Data}),
                    #{runs := Runs} = Ctx,
                    ets:delete_object(Runs, {RunId, self()}),
                    aion_run:cleanup(S),
                    aion_waiters:notify(Ctx, RunId, Ev),
                    run_closed(Ctx, RunId, R, Ev),
                    aion_run:stop(closed, S);
                {error, closed} ->
                    aion_run:stop(closed, S);
                {error, Reason} ->
                    aion_run:store_failed(Reason, S)
            end
    end.

%%% ===========================================================================
%%% Tasks
%%% ===========================================================================

start_task(#{name := Name}, F, Args) ->
    try aion_child_tasks:start_task(Name, fun() -> task(F, Args) end) of
        {ok, _} -> ok;
        {error, Reason} ->
            logger:warning("aion: child task ~p not started: ~p", [F, Reason]),
            ok
    catch
        exit:Why ->
            %% The engine is stopping: recovery redoes the work at the next start.
            logger:info("aion: child task ~p not started: ~p", [F, Why]),
            ok
    end.

task(F, Args) ->
    try run_task(F, Args)
    catch
        error:{closed, _} -> ok;
        error:closed -> ok;
        exit:{noproc, _} -> ok;          % the engine is stopping (run_sup gone)
        exit:{shutdown, _} -> ok;
        Class:Reason:Stack ->
            logger:error("aion: child task ~p failed: ~p:~p ~p", [F, Class, Reason, Stack])
    end.

run_task(ensure, [Ctx, ParentRunId, ParentWid, Ev]) ->
    ensure(Ctx, ParentRunId, ParentWid, Ev);
run_task(closed_task, [Ctx, RunId, Wid, HasParent, HasChildren]) ->
    _ = [report(Ctx, RunId) || HasParent],
    _ = [close_children(Ctx, RunId, Wid) || HasChildren],
    ok;
run_task(recover_task, [Ctx]) ->
    recover_page(Ctx, #{status => ?OPEN, limit => ?RECOVER_PAGE}).

%% Open runs are read a page at a time: with a million parked runs in the database
%% this task must not hold all their rows at once.
recover_page(#{store := Store} = Ctx, Filter) ->
    {ok, Runs} = aion_store:list(Store, Filter),
    recover_children(Ctx, Runs),
    case length(Runs) < ?RECOVER_PAGE of
        true ->
            ok;
        false ->
            #{started_at := At, run_id := RunId} = lists:last(Runs),
            recover_page(Ctx, Filter#{cursor => {At, RunId}})
    end.

recover_children(#{store := Store} = Ctx, Runs) ->
    lists:foreach(
      fun(#{parent := Parent} = Run) when is_binary(Parent) ->
              case aion_store:get_run(Store, Parent) of
                  {ok, #{status := PS, workflow_id := PWid}} ->
                      case aion_util:is_terminal(PS) of
                          true -> apply_policy(Ctx, PWid, Run);
                          false -> ok
                      end;
                  _ ->
                      ok
              end;
         (_) ->
              ok
      end, Runs).

now_ms() -> erlang:system_time(millisecond).
