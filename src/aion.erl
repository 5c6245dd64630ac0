%% @doc The client API of aion (SPEC 2.1): start workflows, wait for their
%% outcomes, inspect runs and histories, and operate on runs.
%%
%% Every call takes an optional final `Opts' map; `#{engine => Name}' selects the
%% engine (default `aion_default', started by the `aion' application). Calling an
%% engine that is not running raises `error({engine_not_running, Name})'.
%% Times are milliseconds; timestamps are milliseconds since the Unix epoch.
%%
%% Error contract of this module (`{error, Reason}' values):
%% <ul>
%% <li>`{unknown_workflow_type, Type}': `Type' is not a loadable module exporting
%%     `run/1' (start).</li>
%% <li>`{invalid_payload, Path, Why}': the input (or a search attribute value) is
%%     not a JSON value; `Path' locates the bad part (start).</li>
%% <li>`{invalid_option, Key}': a start option is unknown or has a bad value; a
%%     list/count filter key is unknown or bad (start, list, count).</li>
%% <li>`{already_started, RunId}': the workflow id has an open run, or the id reuse
%%     policy refuses a new run (start).</li>
%% <li>`not_found': no run of that workflow id (await, describe, history,
%%     lifecycle calls).</li>
%% <li>`timeout': the caller's wait in {@link await/2} ran out (the run goes on);
%%     `engine_stopped': the engine stopped during the wait.</li>
%% <li>`{failed, Error}', `{cancelled, Reason}', `{terminated, Reason}', `timed_out':
%%     the outcome of a run that did not complete (await).</li>
%% <li>`not_running', `{bad_status, Status}': lifecycle calls on a run in the
%%     wrong state (see `aion_lifecycle').</li>
%% </ul>
-module(aion).

-export([start/2, start/3, await/1, await/2, await/3, describe/1, describe/2,
         history/1, history/2, list/1, count/1,
         terminate/2, terminate/3, pause/1, pause/2, resume/1, resume/2,
         reopen/1, reopen/2, retry/1, retry/2]).
%% Signals, queries, cancellation (bulk in aion_signal).
-export([signal/3, signal/4, signal_with_start/5, query/2, query/4, query/5,
         cancel/2, cancel/3]).

-export_type([start_opts/0, status/0, outcome/0]).

-type status() :: running | paused | stuck | completed | failed | cancelled
                | terminated | timed_out | continued_as_new.
-type start_opts() :: #{engine => atom(),
                        id => binary(),
                        id_reuse_policy => allow_duplicate | allow_duplicate_failed_only
                                         | reject_duplicate,
                        id_conflict_policy => fail | use_existing,
                        execution_timeout => pos_integer() | infinity,
                        run_timeout => pos_integer() | infinity,
                        search_attributes => map(),
                        task_queue => binary()}.
-type outcome() :: {ok, term()} | {error, {failed, term()}} | {error, {cancelled, term()}}
                 | {error, {terminated, term()}} | {error, timed_out}.

-define(START_WAIT_MS, 2000).
-define(START_WAIT_MAX_MS, 20000).
-define(DEFAULT_ENGINE, aion_default).
-define(START_KEYS, [engine, id, id_reuse_policy, id_conflict_policy, execution_timeout,
                     run_timeout, search_attributes, task_queue]).

%%% ===========================================================================
%%% Start
%%% ===========================================================================

%% @doc `start(Type, Input, #{})'.
-spec start(module(), term()) -> {ok, #{workflow_id := binary(), run_id := binary()}}
                                     | {error, term()}.
start(Type, Input) ->
    start(Type, Input, #{}).

%% @doc Starts a workflow of type `Type' (a module implementing `aion_workflow')
%% with JSON input `Input'. Returns once `workflow_started' and the run row are
%% durable. The workflow process runs `Type:run(Input)' (with the input as decoded
%% from history: map keys are binaries) and commits `workflow_started' in the
%% transaction of the run's first command or result, so the call returns after the
%% workflow's first step is recorded too (a process whose code blocks outside aion
%% before its first command is replaced after 2 s: the caller then commits the start
%% and the run is replayed).
%%
%% Options: `id' (binary; default a UUIDv4), `id_reuse_policy' (`allow_duplicate'
%% (default) | `allow_duplicate_failed_only' | `reject_duplicate'; an open run
%% always conflicts), `id_conflict_policy' (`fail' (default) | `use_existing':
%% return the open run instead of an error), `execution_timeout' and `run_timeout'
%% (ms or `infinity': durable deadlines; on expiry the run is `timed_out'),
%% `search_attributes' (JSON map), `task_queue' (binary: default activity queue),
%% `engine'. Defaults for the type come from its optional `options/0' callback.
%%
%% Errors (nothing is recorded): `{unknown_workflow_type, Type}',
%% `{invalid_payload, Path, Why}', `{invalid_option, Key}',
%% `{already_started, RunId}', or a store error `{sqlite, Code, Msg}'.
-spec start(module(), term(), start_opts()) ->
          {ok, #{workflow_id := binary(), run_id := binary()}} | {error, term()}.
start(Type, Input, Opts) ->
    start(Type, Input, Opts, []).

%% Starts a run whose first transaction also holds `Extra' event rows.
start(Type, Input, Opts, Extra) when is_map(Opts) ->
    case aion_util:check_type(Type) of
        {error, _} ->
            {error, {unknown_workflow_type, Type}};
        ok ->
            case start_options(Type, Opts) of
                {ok, O} -> start_checked(Type, Input, O#{'$extra_events' => Extra});
                {error, _} = E -> E
            end
    end;
start(_Type, _Input, _Opts, _Extra) ->
    {error, {invalid_option, options}}.

start_options(Type, Opts) ->
    TypeOpts = maps:with(?START_KEYS -- [engine, id], aion_util:type_options(Type)),
    O = maps:merge(TypeOpts, Opts),
    case [K || {K, V} <- maps:to_list(O), not valid_start_option(K, V)] of
        [] -> {ok, O};
        [K | _] -> {error, {invalid_option, K}}
    end.

valid_start_option(engine, E) -> is_atom(E);
valid_start_option(id, Id) -> is_binary(Id) andalso Id =/= <<>>;
valid_start_option(id_reuse_policy, P) ->
    lists:member(P, [allow_duplicate, allow_duplicate_failed_only, reject_duplicate]);
valid_start_option(id_conflict_policy, P) -> P =:= fail orelse P =:= use_existing;
valid_start_option(execution_timeout, T) -> T =:= infinity orelse (is_integer(T) andalso T > 0);
valid_start_option(run_timeout, T) -> T =:= infinity orelse (is_integer(T) andalso T > 0);
valid_start_option(search_attributes, M) -> is_map(M);
valid_start_option(task_queue, Q) -> is_binary(Q) andalso Q =/= <<>>;
valid_start_option(_, _) -> false.

start_checked(Type, Input, O) ->
    Ctx = ctx(O),
    Now = erlang:system_time(millisecond),
    RunId = aion_util:uuid_v4(),
    Wid = case O of
              #{id := Id} -> Id;
              _ -> aion_util:uuid_v4()
          end,
    Deadlines = [{<<"$run_timeout">>, Now + T} || #{run_timeout := T} <- [O], is_integer(T)]
        ++ [{<<"$execution_timeout">>, Now + T}
            || #{execution_timeout := T} <- [O], is_integer(T)],
    Recorded = maps:merge(
                 maps:with([task_queue, run_timeout, id_reuse_policy], O),
                 maps:from_list([{execution_deadline, At}
                                 || {<<"$execution_timeout">>, At} <- Deadlines])),
    Fields = #{workflow_type => atom_to_binary(Type, utf8), input => Input,
               workflow_id => Wid, parent => null, continued_from => null,
               options => Recorded},
    case aion_event:encode(workflow_started, Fields) of
        {error, {invalid_payload, [<<"input">> | Path], Why}} ->
            {error, {invalid_payload, Path, Why}};
        {error, {invalid_payload, Path, Why}} ->
            {error, {invalid_payload, Path, Why}};
        {ok, {EvType, Data}} ->
            case search_attributes_json(O) of
                {ok, SA} -> create(Ctx, Type, O, RunId, Wid, Now, {EvType, Now, Data},
                                   SA, Deadlines);
                {error, _} = E -> E
            end
    end.

search_attributes_json(#{search_attributes := SA}) ->
    case aion_json:encode_bin(SA) of
        {ok, Json} -> {ok, #{search_attributes => Json}};
        {error, {invalid_payload, Path, Why}} ->
            {error, {invalid_payload, [<<"search_attributes">> | Path], Why}}
    end;
search_attributes_json(_) ->
    {ok, #{}}.

create(Ctx, Type, O, RunId, Wid, Now, Row, SA, Deadlines) ->
    Create = SA#{workflow_id => Wid, type => atom_to_binary(Type, utf8),
                 status => <<"running">>, started_at => Now,
                 id_reuse_policy => maps:get(id_reuse_policy, O, allow_duplicate)},
    case maps:get('$extra_events', O, []) of
        [] ->
            Op = #{run_id => RunId, events => [Row], create => Create,
                   timers_put => Deadlines},
            case create_fresh(Ctx, RunId, Op, Deadlines) of
                ok -> {ok, #{workflow_id => Wid, run_id => RunId}};
                {error, {already_started, Existing}} -> conflict(Ctx, O, Wid, Existing);
                {error, _} = E -> E
            end;
        _ ->
            create_new(Ctx, Type, O, RunId, Wid, Now, Row, SA, Deadlines)
    end.

%% A top-level start without extra events: the run's process commits
%% `workflow_started' together with its first command (or its result) and answers
%% (aion_run:begin_run/3, docs/internals/workflow_process.md). A process that dies
%% without answering, or whose code blocks outside aion before its first command
%% (seen after ?START_WAIT_MS), or computes for longer than ?START_WAIT_MAX_MS, is
%% taken over: it is killed and the caller commits the start itself, so
%% `aion:start/3' still returns only after `workflow_started' is committed and
%% exactly one process runs the run.
create_fresh(Ctx, RunId, Op, Deadlines) ->
    Ref = make_ref(),
    Start = #{caller => self(), ref => Ref, op => Op, deadlines => Deadlines},
    case aion_run_sup:start_fresh(Ctx, RunId, Start) of
        {ok, Pid} ->
            MRef = erlang:monitor(process, Pid),
            await_started(Ctx, RunId, Op, Deadlines, Ref, Pid, MRef, 0);
        {error, _} = E ->
            E
    end.

%% Every ?START_WAIT_MS without an answer: a process waiting for the store (its
%% start is being committed) or still computing (up to ?START_WAIT_MAX_MS) is given
%% more time; one blocked in a receive of its own code is taken over.
await_started(Ctx, RunId, Op, Deadlines, Ref, Pid, MRef, Waited) ->
    receive
        {aion_started, Ref, Result} ->
            erlang:demonitor(MRef, [flush]),
            Result;
        {'DOWN', MRef, process, Pid, _} ->
            take_over(Ctx, RunId, Op, Deadlines, Ref)
    after ?START_WAIT_MS ->
            Waited1 = Waited + ?START_WAIT_MS,
            case erlang:process_info(Pid, [status, current_function]) of
                [{status, waiting}, {current_function, {aion_store_sqlite, _, _}}] ->
                    await_started(Ctx, RunId, Op, Deadlines, Ref, Pid, MRef, Waited1);
                [{status, St}, _] when St =/= waiting, Waited1 < ?START_WAIT_MAX_MS ->
                    await_started(Ctx, RunId, Op, Deadlines, Ref, Pid, MRef, Waited1);
                _ ->
                    ok = aion_run:kill(Ctx, RunId),
                    erlang:demonitor(MRef, [flush]),
                    take_over(Ctx, RunId, Op, Deadlines, Ref)
            end
    end.

%% The run's process is dead (and unregistered). A refusal it sent decides;
%% otherwise the caller appends the start itself: the store serialises this behind
%% any append the process queued, so `already_exists' means the process committed
%% it (and may have answered `ok' just before it was killed).
take_over(#{store := Store} = Ctx, RunId, Op, Deadlines, Ref) ->
    ok = aion_run:kill(Ctx, RunId),
    Answer = receive {aion_started, Ref, Result} -> Result
             after 0 -> none
             end,
    case Answer of
        {error, _} = E ->
            E;
        _ ->
            case aion_store:append(Store, [Op]) of
                {ok, _} ->
                    resume_taken(Ctx, RunId, Deadlines, false);
                {error, {already_exists, RunId}} ->
                    resume_taken(Ctx, RunId, Deadlines, true);
                {error, _} = E ->
                    E
            end
    end.

%% A committed run without a process: arm its deadlines and start a process that
%% replays its history. When the dead process had committed its first command, the
%% command's effect may be missing: activities are dispatched here (a dispatched
%% one is ignored), timers come from the timer service's rescan, a child from the
%% next engine start's recovery.
resume_taken(#{store := Store} = Ctx, RunId, Deadlines, Committed) ->
    lists:foreach(fun({Id, At}) -> aion_timers:arm(Ctx, RunId, Id, At) end, Deadlines),
    _ = aion_run_sup:start_run(Ctx, RunId),
    case Committed of
        true ->
            {ok, Rows} = aion_store:activity_tasks(Store, RunId),
            lists:foreach(fun(R) ->
                                  aion_activity_runner:dispatch(
                                    Ctx, aion_activity_runner:task_from_row(R))
                          end, Rows);
        false ->
            ok
    end,
    ok.

%% The start path that commits `workflow_started' (with `Extra' events) before the
%% run's process runs: signal_with_start.
create_new(#{store := Store} = Ctx, Type, O, RunId, Wid, Now, {EvType, _, Data} = Row, SA,
           Deadlines) ->
    Ref = make_ref(),
    case aion_run_sup:start_new(Ctx, RunId, Ref) of
        {ok, Pid} ->
            Create = SA#{workflow_id => Wid, type => atom_to_binary(Type, utf8),
                         status => <<"running">>, started_at => Now,
                         id_reuse_policy => maps:get(id_reuse_policy, O, allow_duplicate)},
            Extra = maps:get('$extra_events', O, []),
            Op = #{run_id => RunId, events => [Row | Extra], create => Create,
                   timers_put => Deadlines},
            case aion_store:append(Store, [Op]) of
                {ok, [[1 | ExtraSeqs]]} ->
                    %% The await hint (see resident_await/2): the run is committed
                    %% and its process registered.
                    case Ctx of
                        #{wids := Wids} -> ets:insert(Wids, {Wid, RunId});
                        _ -> ok
                    end,
                    Pid ! {aion_go, Ref, {1, EvType, Now, Data}},
                    %% Events committed with the start (signal_with_start): the
                    %% process is registered, so it gets them like any arrival.
                    aion_deliver:events(Ctx, RunId,
                                        [{Sq, T, At, iolist_to_binary(D)}
                                         || {Sq, {T, At, D}} <- lists:zip(ExtraSeqs, Extra)]),
                    lists:foreach(fun({Id, At}) -> aion_timers:arm(Ctx, RunId, Id, At) end,
                                  Deadlines),
                    {ok, #{workflow_id => Wid, run_id => RunId}};
                {error, {already_started, Existing}} ->
                    Pid ! {aion_abort, Ref},
                    conflict(Ctx, O, Wid, Existing);
                {error, _} = E ->
                    Pid ! {aion_abort, Ref},
                    E
            end;
        {error, _} = E ->
            E
    end.

conflict(#{store := Store}, #{id_conflict_policy := use_existing}, Wid, Existing) ->
    case aion_store:get_run(Store, Existing) of
        {ok, #{status := S}} ->
            case aion_util:is_terminal(S) of
                false -> {ok, #{workflow_id => Wid, run_id => Existing}};
                true -> {error, {already_started, Existing}}
            end;
        {error, _} ->
            {error, {already_started, Existing}}
    end;
conflict(_, _, _, Existing) ->
    {error, {already_started, Existing}}.

%%% ===========================================================================
%%% Await
%%% ===========================================================================

%% @doc `await(WorkflowId, infinity)'.
-spec await(binary()) -> outcome() | {error, not_found | engine_stopped}.
await(WorkflowId) ->
    await(WorkflowId, infinity, #{}).

%% @doc `await(WorkflowId, TimeoutMs, #{})'.
-spec await(binary(), timeout()) -> outcome() | {error, not_found | timeout | engine_stopped}.
await(WorkflowId, Timeout) ->
    await(WorkflowId, Timeout, #{}).

%% @doc Waits until the workflow's current run is closed and returns its outcome:
%% `{ok, Result}' (completed; the result as decoded from history),
%% `{error, {failed, Error}}', `{error, {cancelled, Reason}}',
%% `{error, {terminated, Reason}}', `{error, timed_out}'. Follows continue-as-new to
%% the final run. A run that closed before the call answers from the store.
%% `{error, timeout}' when `TimeoutMs' (ms or `infinity') ran out first (the run
%% goes on), `{error, not_found}' for an unknown workflow id, `{error,
%% engine_stopped}' when the engine stopped during the wait.
-spec await(binary(), timeout(), map()) ->
          outcome() | {error, not_found | timeout | engine_stopped}.
await(WorkflowId, Timeout, Opts) when is_binary(WorkflowId) ->
    #{store := Store} = Ctx = ctx(Opts),
    Deadline = case Timeout of
                   infinity -> infinity;
                   T when is_integer(T), T >= 0 -> erlang:monotonic_time(millisecond) + T
               end,
    case resident_await(Ctx, WorkflowId) of
        {wait, RunId, Ref} ->
            wait_done(Ctx, RunId, Ref, Deadline);
        no ->
            case aion_store:current_run(Store, WorkflowId) of
                {ok, Run} -> await_run(Ctx, Run, Deadline);
                {error, not_found} -> {error, not_found}
            end
    end.

%% The hot path: the workflow's run has a process. Its `wids' entry names the run;
%% after registering as a waiter, finding the process still registered in `runs'
%% means the run is open (so it is the workflow's current run) and will notify us
%% after its terminal commit. No store read.
resident_await(#{wids := Wids} = Ctx, WorkflowId) ->
    case ets:lookup(Wids, WorkflowId) of
        [{_, RunId}] ->
            Ref = aion_waiters:register(Ctx, RunId),
            case aion_run:whereis(Ctx, RunId) of
                undefined ->
                    aion_waiters:unregister(Ctx, RunId, Ref),
                    no;
                _ ->
                    {wait, RunId, Ref}
            end;
        [] ->
            no
    end;
resident_await(_, _) ->
    no.

await_run(#{store := Store} = Ctx, #{run_id := RunId, status := Status} = Run, Deadline) ->
    case aion_util:is_terminal(Status) of
        true ->
            closed_outcome(Ctx, Run, Deadline);
        false ->
            Ref = aion_waiters:register(Ctx, RunId),
            %% A resident process unregisters only after it appended the terminal
            %% event and before it notifies the waiters: seeing it registered after
            %% our registration guarantees the notification (no read needed).
            Check = case aion_run:whereis(Ctx, RunId) of
                        undefined -> aion_store:get_run(Store, RunId);
                        _ -> {ok, Run}
                    end,
            case Check of
                {ok, #{status := S2} = Run2} ->
                    case aion_util:is_terminal(S2) of
                        true ->
                            aion_waiters:unregister(Ctx, RunId, Ref),
                            closed_outcome(Ctx, Run2, Deadline);
                        false ->
                            wait_done(Ctx, RunId, Ref, Deadline)
                    end;
                {error, not_found} ->
                    aion_waiters:unregister(Ctx, RunId, Ref),
                    {error, not_found}
            end
    end.

wait_done(#{store := Store} = Ctx, RunId, Ref, Deadline) ->
    Left = case Deadline of
               infinity -> infinity;
               _ -> max(0, Deadline - erlang:monotonic_time(millisecond))
           end,
    %% The engine stopping (its store owner exiting) ends the wait: the waiter
    %% registration dies with it.
    Mon = case Ctx of
              #{owner := Owner} -> erlang:monitor(process, Owner);
              _ -> make_ref()
          end,
    receive
        {aion_done, Ref, undefined} ->
            erlang:demonitor(Mon, [flush]),
            {ok, Run} = aion_store:get_run(Store, RunId),
            closed_outcome(Ctx, Run, Deadline);
        {aion_done, Ref, Event} ->
            erlang:demonitor(Mon, [flush]),
            follow(Ctx, aion_waiters:result(Event), Deadline);
        {'DOWN', Mon, process, _, _} ->
            {error, engine_stopped}
    after Left ->
            erlang:demonitor(Mon, [flush]),
            aion_waiters:unregister(Ctx, RunId, Ref),
            {error, timeout}
    end.

closed_outcome(#{store := Store} = Ctx, #{run_id := RunId, next_seq := Next}, Deadline) ->
    {ok, Last} = aion_store:history(Store, RunId, max(1, Next - 1)),
    Terminal = case [E || E <- aion_event:decode_all(Last), is_terminal_event(E)] of
                   [E | _] ->
                       E;
                   [] ->
                       {ok, All} = aion_store:history(Store, RunId, 1),
                       lists:last([E || E <- aion_event:decode_all(All),
                                        is_terminal_event(E)])
               end,
    follow(Ctx, aion_waiters:result(Terminal), Deadline).

follow(#{store := Store} = Ctx, {continued, NewRunId}, Deadline) ->
    case aion_store:get_run(Store, NewRunId) of
        {ok, Run} -> await_run(Ctx, Run, Deadline);
        {error, not_found} -> {error, not_found}
    end;
follow(_Ctx, Outcome, _Deadline) ->
    Outcome.

is_terminal_event(#{type := T}) ->
    lists:member(T, [workflow_completed, workflow_failed, workflow_cancelled,
                     workflow_terminated, workflow_timed_out, workflow_continued_as_new]).

%%% ===========================================================================
%%% Inspection
%%% ===========================================================================

%% @doc `describe(WorkflowId, #{})'.
-spec describe(binary()) -> {ok, map()} | {error, not_found}.
describe(WorkflowId) ->
    describe(WorkflowId, #{}).

%% @doc Describes the current run of a workflow (or the run `run_id' of `Opts'):
%% `{ok, #{workflow_id, run_id, type, status, residency, started_at, closed_at,
%% history_length, pending_activities, pending_timers, pending_children,
%% search_attributes, parent, stuck_reason}}'. `status' is an atom (see
%% `status()'); `residency' is `resident' (the run has a workflow process) or
%% `suspended'; `pending_activities' lists `#{activity_id, name, attempt,
%% task_queue}' of outstanding activities; `pending_timers' lists `#{timer_id,
%% fire_at}'; `stuck_reason' is `null' or `#{kind => nondeterminism, expected,
%% got, seq}' where expected/got are `#{command => Kind, ...}'; `parent' is the
%% run id of the parent run for a child workflow, else `null'. Errors:
%% `{error, not_found}'.
-spec describe(binary(), map()) -> {ok, map()} | {error, not_found}.
describe(WorkflowId, Opts) ->
    #{store := Store} = Ctx = ctx(Opts),
    case find_run(Ctx, WorkflowId, Opts) of
        {ok, #{run_id := RunId, status := Status} = Run} ->
            Open = not aion_util:is_terminal(Status),
            {Acts, Timers, Children} =
                case Open of
                    true ->
                        {ok, Tasks} = aion_store:activity_tasks(Store, RunId),
                        {ok, Hist} = aion_store:history(Store, RunId, 1),
                        pending(Tasks, aion_event:decode_all(Hist));
                    false ->
                        {[], [], []}
                end,
            Summary = summary(Run),
            {ok, Summary#{residency => case aion_run:whereis(Ctx, RunId) of
                                           undefined -> suspended;
                                           _ -> resident
                                       end,
                          pending_activities => Acts, pending_timers => Timers,
                          pending_children => Children}};
        {error, not_found} = E ->
            E
    end.

pending(Tasks, Events) ->
    Names = maps:from_list([{Id, N} || #{type := activity_scheduled, activity_id := Id,
                                          name := N} <- Events]),
    Acts = [#{activity_id => Id, attempt => Attempt, task_queue => Q,
              name => maps:get(Id, Names, null)}
            || {_, Id, Attempt, Q, _} <- Tasks],
    Done = fun(Key) -> [E || E <- Events, aion_replay:future_key(E) =:= Key] =/= [] end,
    Timers = [#{timer_id => Id, fire_at => At}
              || #{type := timer_started, timer_id := Id, fire_at := At} <- Events,
                 not Done({timer, Id})],
    Children = [#{child_id => Id, workflow_id => maps:get(workflow_id, E, null),
                  run_id => maps:get(run_id, E, null)}
                || #{type := child_workflow_started, child_id := Id} = E <- Events,
                   not Done({child, Id})],
    {Acts, Timers, Children}.

summary(#{run_id := RunId, workflow_id := Wid, type := Type, status := Status,
          started_at := StartedAt, next_seq := Next} = Run) ->
    #{workflow_id => Wid, run_id => RunId, type => binary_to_atom(Type, utf8),
      status => aion_util:status_atom(Status), started_at => StartedAt,
      closed_at => maps:get(closed_at, Run, null), history_length => Next - 1,
      parent => maps:get(parent, Run, null),
      search_attributes => decode_json(maps:get(search_attributes, Run, null), #{}),
      stuck_reason => stuck_reason(maps:get(stuck_reason, Run, null))}.

decode_json(null, Default) ->
    Default;
decode_json(Bin, Default) when is_binary(Bin) ->
    case aion_json:decode(Bin) of
        {ok, V} -> V;
        {error, _} -> Default
    end;
decode_json(_, Default) ->
    Default.

stuck_reason(null) ->
    null;
stuck_reason(Bin) ->
    case decode_json(Bin, null) of
        M when is_map(M) -> atomize(M);
        Other -> Other
    end.

%% Stuck reasons are written by aion itself: their keys and the `kind' /
%% `command' values are known atoms.
atomize(M) when is_map(M) ->
    maps:fold(fun(K, V, Acc) ->
                      Key = to_existing_atom(K),
                      Val = case Key of
                                kind -> to_existing_atom(V);
                                command -> to_existing_atom(V);
                                expected -> atomize(V);
                                got -> atomize(V);
                                _ -> V
                            end,
                      Acc#{Key => Val}
              end, #{}, M);
atomize(V) ->
    V.

to_existing_atom(B) when is_binary(B) ->
    try binary_to_existing_atom(B, utf8)
    catch error:badarg -> B
    end;
to_existing_atom(V) ->
    V.

%% @doc `history(WorkflowId, #{})'.
-spec history(binary()) -> {ok, [aion_event:event()]} | {error, not_found}.
history(WorkflowId) ->
    history(WorkflowId, #{}).

%% @doc The events of the workflow's current run (or of run `run_id'), from seq
%% `from_seq' (default 1), as maps `#{seq, type, recorded_at, ...fields}'
%% (SPEC 4). Errors: `{error, not_found}'.
-spec history(binary(), #{run_id => binary(), from_seq => pos_integer(),
                          engine => atom()}) ->
          {ok, [aion_event:event()]} | {error, not_found}.
history(WorkflowId, Opts) ->
    #{store := Store} = Ctx = ctx(Opts),
    case find_run(Ctx, WorkflowId, Opts) of
        {ok, #{run_id := RunId}} ->
            {ok, Stored} = aion_store:history(Store, RunId, maps:get(from_seq, Opts, 1)),
            {ok, aion_event:decode_all(Stored)};
        {error, not_found} = E ->
            E
    end.

find_run(#{store := Store}, WorkflowId, Opts) ->
    case Opts of
        #{run_id := RunId} ->
            case aion_store:get_run(Store, RunId) of
                {ok, #{workflow_id := WorkflowId}} = Ok -> Ok;
                _ -> {error, not_found}
            end;
        _ ->
            aion_store:current_run(Store, WorkflowId)
    end.

%% @doc The runs matching `Filter', sorted by `started_at' then `run_id':
%% `{ok, [#{workflow_id, run_id, type, status, started_at, closed_at,
%% history_length, parent, search_attributes, stuck_reason}]}'. Filter keys (all
%% optional): `type' (module), `status' (atom or list of atoms), `workflow_id',
%% `started_after', `started_before', `closed_after', `closed_before' (ms,
%% exclusive), `search' (`[{Attr, Op, Value}]' with Op one of `=', `/=', `<',
%% `=<', `>', `>=', `in' (Value a list), `contains' (the attribute is a list
%% holding Value, or a string containing Value); an attribute the run lacks never
%% matches), `limit', `cursor' (`{StartedAt, RunId}' of the last
%% run of the previous page, exclusive), `engine'. Errors:
%% `{error, {invalid_option, Key}}' for an unknown or bad filter key,
%% `{error, {invalid_search, Clause}}' for a bad search clause (unknown operator).
-spec list(map()) -> {ok, [map()]} | {error, {invalid_option | invalid_search, term()}}.
list(Filter) when is_map(Filter) ->
    case store_filter(Filter) of
        {ok, SF, Search} ->
            #{store := Store} = ctx(Filter),
            case Search of
                [] ->
                    {ok, Runs} = aion_store:list(Store, SF),
                    {ok, [summary(R) || R <- Runs]};
                _ ->
                    {ok, Runs} = aion_store:list(Store, maps:remove(limit, SF)),
                    Matching = [S || S <- [summary(R) || R <- Runs], matches(Search, S)],
                    {ok, case SF of
                             #{limit := L} -> lists:sublist(Matching, L);
                             _ -> Matching
                         end}
            end;
        {error, _} = E ->
            E
    end;
list(_) ->
    {error, {invalid_option, filter}}.

%% @doc The number of runs matching `Filter' (keys as {@link list/1}; `limit' and
%% `cursor' are ignored). Errors: `{error, {invalid_option, Key}}'.
-spec count(map()) -> {ok, non_neg_integer()} | {error, {invalid_option | invalid_search, term()}}.
count(Filter) when is_map(Filter) ->
    F = maps:without([limit, cursor], Filter),
    case store_filter(F) of
        {ok, SF, []} ->
            #{store := Store} = ctx(Filter),
            aion_store:count(Store, SF);
        {ok, _, _} ->
            {ok, Runs} = list(F),
            {ok, length(Runs)};
        {error, _} = E ->
            E
    end;
count(_) ->
    {error, {invalid_option, filter}}.

store_filter(Filter) ->
    maps:fold(fun(_, _, {error, _} = E) -> E;
                 (K, V, {ok, SF, Search}) ->
                      case filter_key(K, V) of
                          skip -> {ok, SF, Search};
                          {search, S} -> {ok, SF, S};
                          {ok, K2, V2} -> {ok, SF#{K2 => V2}, Search};
                          {error, _} = E -> E;
                          error -> {error, {invalid_option, K}}
                      end
              end, {ok, #{}, []}, Filter).

filter_key(engine, E) when is_atom(E) -> skip;
filter_key(type, T) when is_atom(T) -> {ok, type, atom_to_binary(T, utf8)};
filter_key(type, T) when is_binary(T) -> {ok, type, T};
filter_key(status, S) when is_list(S) ->
    Bins = [aion_util:status_binary(X) || X <- S],
    case lists:member(error, Bins) of
        true -> error;
        false -> {ok, status, [B || {ok, B} <- Bins]}
    end;
filter_key(status, S) ->
    case aion_util:status_binary(S) of
        {ok, B} -> {ok, status, B};
        error -> error
    end;
filter_key(workflow_id, W) when is_binary(W) -> {ok, workflow_id, W};
filter_key(parent, P) when is_binary(P) -> {ok, parent, P};
filter_key(K, T) when (K =:= started_after orelse K =:= started_before orelse
                       K =:= closed_after orelse K =:= closed_before), is_integer(T) ->
    {ok, K, T};
filter_key(limit, L) when is_integer(L), L >= 0 -> {ok, limit, L};
filter_key(cursor, {At, RunId} = C) when is_integer(At), is_binary(RunId) -> {ok, cursor, C};
filter_key(search, S) when is_list(S) ->
    case [C || C <- S, not valid_search(C)] of
        [] -> {search, S};
        [Bad | _] -> {error, {invalid_search, Bad}}
    end;
filter_key(_, _) ->
    error.

valid_search({A, Op, _}) when is_atom(A); is_binary(A) ->
    lists:member(Op, ['=', '==', '=:=', '/=', '=/=', '<', '=<', '>', '>=', in, contains]);
valid_search(_) ->
    false.

matches(Search, #{search_attributes := SA}) ->
    lists:all(fun({A, Op, V}) ->
                      Key = if is_atom(A) -> atom_to_binary(A, utf8); true -> A end,
                      case SA of
                          #{Key := X} -> compare(Op, X, V);
                          _ -> false
                      end
              end, Search).

compare(Op, X, V) when Op =:= '='; Op =:= '=='; Op =:= '=:=' -> X == norm(V);
compare(Op, X, V) when Op =:= '/='; Op =:= '=/=' -> X /= norm(V);
compare('<', X, V) -> X < norm(V);
compare('=<', X, V) -> X =< norm(V);
compare('>', X, V) -> X > norm(V);
compare('>=', X, V) -> X >= norm(V);
compare(in, X, Vs) when is_list(Vs) -> lists:any(fun(V) -> X == norm(V) end, Vs);
compare(contains, Xs, V) when is_list(Xs) -> lists:any(fun(X) -> X == norm(V) end, Xs);
compare(contains, X, V) when is_binary(X) ->
    case norm(V) of
        B when is_binary(B), B =/= <<>> -> binary:match(X, B) =/= nomatch;
        _ -> false
    end;
compare(_, _, _) -> false.

%% Search values compare with decoded JSON (atoms other than booleans/null are
%% strings there).
norm(V) when is_atom(V), V =/= true, V =/= false, V =/= null -> atom_to_binary(V, utf8);
norm(V) -> V.

%%% ===========================================================================
%%% Signals, queries, cancellation (aion_signal)
%%% ===========================================================================

%% @doc `signal(WorkflowId, Name, Payload, #{})'.
-spec signal(binary(), binary() | atom(), term()) -> ok | {error, term()}.
signal(WorkflowId, Name, Payload) ->
    signal(WorkflowId, Name, Payload, #{}).

%% @doc Sends signal `Name' (a binary; an atom is converted) with the JSON
%% `Payload' to the workflow's current run: appends
%% `signal_received{name, payload, signal_id}' and returns `ok' once it is durable
%% (then the workflow process is woken). Signals are FIFO per name and buffered in
%% history until a `receive_signal' consumes them. Options: `signal_id' (binary):
%% a repeat of an id the run already received is a no-op returning `ok'
%% (deduplication within the current run; the check reads the run's history:
%% O(history length) per signal); `engine'. Errors (nothing is
%% appended): `not_found' (no such workflow), `not_running' (its current run is
%% closed), `{invalid_payload, Path, Why}', `{invalid_name, Name}',
%% `{invalid_option, signal_id}', or a store error.
-spec signal(binary(), binary() | atom(), term(), map()) -> ok | {error, term()}.
signal(WorkflowId, Name, Payload, Opts) when is_map(Opts) ->
    aion_signal:signal(ctx(Opts), WorkflowId, Name, Payload, Opts).

%% @doc Signals the open run of workflow `id' (from `Opts'), or, when it has no
%% open run, starts a new run of `Type' with `Input' whose `workflow_started' and
%% `signal_received' commit in one transaction (atomic: the signal is never lost
%% and never lands in another run). Without `id' a new workflow is always started.
%% `Opts' are those of {@link start/3} plus `signal_id' (`id_conflict_policy' is
%% moot: an open run is always signalled). Returns
%% `{ok, #{workflow_id, run_id}}' (the run signalled). Errors: those of
%% {@link start/3} and {@link signal/4}; nothing is recorded on an error.
-spec signal_with_start(module(), term(), binary() | atom(), term(), map()) ->
          {ok, #{workflow_id := binary(), run_id := binary()}} | {error, term()}.
signal_with_start(Type, Input, Name, Payload, Opts) when is_map(Opts) ->
    aion_signal:signal_with_start(ctx(Opts), Name, Payload, Opts,
                                  fun(O, Extra) -> start(Type, Input, O, Extra) end);
signal_with_start(_, _, _, _, _) ->
    {error, {invalid_option, options}}.

%% @doc `query(WorkflowId, Name, [], QueryTimeout, #{})' (the engine's
%% `query_timeout', default 5000 ms).
-spec query(binary(), binary() | atom()) -> {ok, term()} | {error, term()}.
query(WorkflowId, Name) ->
    query(WorkflowId, Name, [], default, #{}).

%% @doc `query(WorkflowId, Name, Args, TimeoutMs, #{})'.
-spec query(binary(), binary() | atom(), term(), timeout()) -> {ok, term()} | {error, term()}.
query(WorkflowId, Name, Args, TimeoutMs) ->
    query(WorkflowId, Name, Args, TimeoutMs, #{}).

%% @doc Runs the workflow's query handler `Name' (registered with
%% `aion_workflow:set_query_handler/2') with `Args' in its process, at its next
%% yield point (any blocking primitive, also one that resolves at once from
%% history; a run rebuilt by replay answers once it caught up). Queries append
%% nothing. A suspended run is rebuilt by replay to answer. Returns
%% `{ok, Reply}'. Errors: `{unknown_query, Name}', `{query_failed, Reason}' (the
%% handler raised `Reason'; a handler calling a recording or blocking primitive
%% fails with `query_handler_must_not_record'; the workflow is unharmed),
%% `query_timeout' (no answer within `TimeoutMs' ms), `not_running' (the current
%% run is closed, closed while asked, or stuck), `not_found',
%% `{invalid_option, timeout}' (`TimeoutMs' not a non-negative integer or
%% `infinity').
-spec query(binary(), binary() | atom(), term(), timeout() | default, map()) ->
          {ok, term()} | {error, term()}.
query(WorkflowId, Name, Args, TimeoutMs, Opts) when is_map(Opts) ->
    #{opts := EOpts} = Ctx = ctx(Opts),
    case TimeoutMs of
        default ->
            aion_signal:query(Ctx, WorkflowId, Name, Args, maps:get(query_timeout, EOpts, 5000));
        T when T =:= infinity; is_integer(T), T >= 0 ->
            aion_signal:query(Ctx, WorkflowId, Name, Args, T);
        _ ->
            {error, {invalid_option, timeout}}
    end.

%% @doc `cancel(WorkflowId, Reason, #{})'.
-spec cancel(binary(), term()) -> ok | {error, term()}.
cancel(WorkflowId, Reason) ->
    cancel(WorkflowId, Reason, #{}).

%% @doc Requests cooperative cancellation of the workflow's current run: records
%% `workflow_cancel_requested{reason}' (`Reason' any term) and returns `ok' once it
%% is durable. The workflow's current (or next) blocking primitive outside
%% `aion_workflow:non_cancellable/1' returns `{error, {cancelled, Reason}}' (the
%% activity or timer it awaited is cancelled); it may compensate inside
%% `non_cancellable/1'; when `run/1' returns, the run is `cancelled'. Errors:
%% `not_found', `not_running' (nothing appended).
-spec cancel(binary(), term(), map()) -> ok | {error, term()}.
cancel(WorkflowId, Reason, Opts) when is_map(Opts) ->
    aion_signal:cancel(ctx(Opts), WorkflowId, Reason).

%%% ===========================================================================
%%% Lifecycle (aion_lifecycle)
%%% ===========================================================================

%% @doc `terminate(WorkflowId, Reason, #{})'.
-spec terminate(binary(), term()) -> ok | {error, term()}.
terminate(WorkflowId, Reason) ->
    terminate(WorkflowId, Reason, #{}).

%% @doc Terminates the workflow's current run at once: records
%% `workflow_terminated{reason}' (any term), then kills its process and running
%% activities; no workflow code runs afterwards. Errors: `not_found',
%% `not_running'.
-spec terminate(binary(), term(), map()) -> ok | {error, term()}.
terminate(WorkflowId, Reason, Opts) ->
    aion_lifecycle:terminate(ctx(Opts), WorkflowId, Reason).

%% @doc `pause(WorkflowId, #{})'.
-spec pause(binary()) -> ok | {error, term()}.
pause(WorkflowId) ->
    pause(WorkflowId, #{}).

%% @doc Durable operator hold (`workflow_paused'): no activity attempt starts until
%% {@link resume/2}; timers still fire and signals still record. Errors:
%% `not_found', `not_running', `{bad_status, Status}'.
-spec pause(binary(), map()) -> ok | {error, term()}.
pause(WorkflowId, Opts) ->
    aion_lifecycle:pause(ctx(Opts), WorkflowId).

%% @doc `resume(WorkflowId, #{})'.
-spec resume(binary()) -> ok | {error, term()}.
resume(WorkflowId) ->
    resume(WorkflowId, #{}).

%% @doc Ends a pause (`workflow_resumed'). Errors: `not_found', `not_running',
%% `{bad_status, Status}'.
-spec resume(binary(), map()) -> ok | {error, term()}.
resume(WorkflowId, Opts) ->
    aion_lifecycle:resume(ctx(Opts), WorkflowId).

%% @doc `reopen(WorkflowId, #{})'.
-spec reopen(binary()) -> ok | {error, term()}.
reopen(WorkflowId) ->
    reopen(WorkflowId, #{}).

%% @doc Re-drives a `failed' or `cancelled' run: records `workflow_reopened', replays
%% it and re-dispatches its finally failed activities. Errors: `not_found',
%% `{bad_status, Status}'.
-spec reopen(binary(), map()) -> ok | {error, term()}.
reopen(WorkflowId, Opts) ->
    aion_lifecycle:reopen(ctx(Opts), WorkflowId).

%% @doc `retry(WorkflowId, #{})'.
-spec retry(binary()) -> ok | {error, term()}.
retry(WorkflowId) ->
    retry(WorkflowId, #{}).

%% @doc Re-attempts the replay of a `stuck' run (after a code fix): status
%% `running' again and a new workflow process; still-mismatching code makes it
%% stuck again. Errors: `not_found', `{bad_status, Status}'.
-spec retry(binary(), map()) -> ok | {error, term()}.
retry(WorkflowId, Opts) ->
    aion_lifecycle:retry(ctx(Opts), WorkflowId).

%%% ===========================================================================

ctx(Opts) ->
    aion_ctx:get(maps:get(engine, Opts, ?DEFAULT_ENGINE)).
