%% @private
%% @doc The workflow process: runs one run's `Type:run(Input)' in itself.
%%
%% A process registers in the engine's `runs' table before it learns the history
%% (design.md section 3), so every event committed after that is delivered to it
%% and every event committed before is in what it loads. A fresh top-level run
%% (`aion:start/3') is handed its uncommitted `workflow_started' and commits it
%% with its first command or result (`{fresh, Start}'); other fresh runs (children,
%% continue-as-new, signal_with_start) are spawned before their start commit and
%% told the event afterwards. Neither reads history; a recovered run loads its
%% history once and replays. The history lives in memory (`aion_replay'); the hot path
%% never reads the store.
%%
%% The run state sits in the process dictionary (`aion_run.hrl') where the
%% `aion_workflow' primitives find it. This module holds the machinery the
%% primitives share: appends, blocking waits (drain, bump the wake epoch, resolve by
%% history order, gap fill), the stuck path and the close path.
-module(aion_run).

-include("aion_run.hrl").

-export([start_link/3, init/4, kill/2, whereis/2]).
%% Machinery for aion_workflow (same process).
-export([st/0, st_cmd/0, put_st/1, append/2, block/2, stuck/2, now_ms/0, yield/1,
         ensure_started/1]).
%% Machinery for aion_child (same process).
-export([cleanup/1, stop/2, store_failed/2]).

-define(STOP(Why), {aion_run_stopped, Why}).
-define(WID_KEY, '$aion_wid').
-define(SETTLE_KEY, '$aion_settle').
%% Set while a rebuilt run replays, until its first real wait (no field in #wf:
%% every word of a sleeping process counts).
-define(REPLAYING_KEY, '$aion_replaying').
%% The uncommitted start of a fresh top-level run (see begin_run/3): its
%% `workflow_started' op goes into the run's first append.
-define(START_KEY, '$aion_start').

-type fresh_start() :: #{caller := pid(), ref := reference(), op := map(),
                         deadlines := [{binary(), integer()}]}.
-export_type([fresh_start/0]).

-type mode() :: recover | {rehydrate, pid()} | {new, pid(), reference()}
              | {fresh, fresh_start()}.

%% Histories longer than this many events are loaded into a presized heap
%% (load_history/3); the size is capped (words).
-define(PRESIZE_EVENTS, 1000).
-define(PRESIZE_MAX_WORDS, 16#1000000).

%% A blocked workflow process idle this long collects its garbage (ms).
-define(IDLE_GC, 100).

%% A closing run whose heaps hold at most this many words collects its garbage
%% before it waits for the close to commit (close/3).
-define(CLOSE_GC_MAX_WORDS, 8192).

%%% ===========================================================================
%%% Process life
%%% ===========================================================================

%% @doc Starts a workflow process for `RunId' of engine `Engine' (called by
%% `aion_run_sup'). `Mode' is `recover' (load history, replay, continue),
%% `{rehydrate, Notify}' (the same, for a suspended run; `Notify', the residency
%% server, is told when the replay is done: {@link aion_residency:settled/1}),
%% `{new, Caller, Ref}' (a fresh run: wait for `Caller' to commit
%% `workflow_started' and send it) or `{fresh, Start}' (a fresh top-level run whose
%% `workflow_started' op the process commits itself, together with the run's first
%% command or its result, then answers the caller `{aion_started, Ref, ok |
%% {error, Reason}}'). Returns `{error, {already_resident, Pid}}' when the run
%% already has a process.
-spec start_link(atom(), binary(), mode()) -> {ok, pid()} | {error, term()}.
start_link(Engine, RunId, Mode) ->
    proc_lib:start_link(?MODULE, init, [Engine, RunId, Mode, self()]).

%% @doc proc_lib entry point.
-spec init(atom(), binary(), mode(), pid()) -> ok.
init(Engine, RunId, Mode, Parent) ->
    Ctx = aion_ctx:get(Engine),
    case register_run(Ctx, RunId) of
        ok ->
            proc_lib:init_ack(Parent, {ok, self()}),
            try begin_run(Ctx, RunId, Mode)
            after unregister_run(Ctx, RunId)
            end,
            ok;
        {error, _} = E ->
            proc_lib:init_ack(Parent, E),
            ok
    end.

%% Registration is `ets:insert_new': concurrent starts of one run make one process.
%% With `max_resident' set, a registration over the limit asks the residency server
%% to evict the longest-idle runs.
register_run(Ctx, RunId) ->
    case register_pid(Ctx, RunId) of
        ok ->
            case Ctx of
                #{opts := #{max_resident := Max}, runs := Runs} when is_integer(Max) ->
                    case ets:info(Runs, size) > Max of
                        true -> aion_residency:over_limit(Ctx);
                        false -> ok
                    end;
                _ ->
                    ok
            end;
        {error, _} = E ->
            E
    end.

register_pid(#{runs := Runs}, RunId) ->
    case ets:insert_new(Runs, {RunId, self()}) of
        true ->
            ok;
        false ->
            case ets:lookup(Runs, RunId) of
                [{_, Pid}] when Pid =/= self() ->
                    case is_process_alive(Pid) of
                        true ->
                            {error, {already_resident, Pid}};
                        false ->
                            %% A process that died without unregistering.
                            ets:delete_object(Runs, {RunId, Pid}),
                            register_pid(#{runs => Runs}, RunId)
                    end;
                _ ->
                    register_pid(#{runs => Runs}, RunId)
            end
    end.

unregister_run(#{runs := Runs} = Ctx, RunId) ->
    ets:delete_object(Runs, {RunId, self()}),
    case {Ctx, erase(?WID_KEY)} of
        {#{wids := Wids}, Wid} when is_binary(Wid) -> ets:delete_object(Wids, {Wid, RunId});
        _ -> ok
    end,
    ok.

%% The workflow id -> run id hint of `aion:await/2' (only for a committed run whose
%% process is registered; see aion:await/3).
register_wid(#{wids := Wids}, Wid, RunId) ->
    put(?WID_KEY, Wid),
    ets:insert(Wids, {Wid, RunId});
register_wid(_, _, _) ->
    ok.

%% @doc The resident process of a run, if any.
-spec whereis(aion_ctx:ctx(), binary()) -> pid() | undefined.
whereis(#{runs := Runs}, RunId) ->
    case ets:lookup(Runs, RunId) of
        [{_, Pid}] -> Pid;
        [] -> undefined
    end.

%% @doc Kills the resident process of `RunId' (if any), waits until it is dead and
%% removes its registration. Used when a run is closed from outside (terminate,
%% timeout) so no workflow code runs after the close.
-spec kill(aion_ctx:ctx(), binary()) -> ok.
kill(#{runs := Runs} = Ctx, RunId) ->
    case whereis(Ctx, RunId) of
        undefined ->
            ok;
        Pid when Pid =:= self() ->
            ets:delete_object(Runs, {RunId, Pid}),
            exit(kill);
        Pid ->
            MRef = erlang:monitor(process, Pid),
            exit(Pid, kill),
            receive {'DOWN', MRef, process, Pid, _} -> ok end,
            ets:delete_object(Runs, {RunId, Pid}),
            case Ctx of
                #{wids := Wids} -> ets:match_delete(Wids, {'_', RunId});
                _ -> ok
            end,
            ok
    end.

begin_run(Ctx, RunId, {fresh, #{op := #{events := [{EvType, At, Data}]}} = Start}) ->
    %% Nothing is recorded yet: the code runs up to its first command (or its
    %% result), whose append carries the start (append/2, ensure_started/1, close/3).
    put(?START_KEY, Start),
    run(Ctx, RunId, [aion_event:decode({1, EvType, At, Data})], false);
begin_run(Ctx, RunId, {new, Caller, Ref}) ->
    MRef = erlang:monitor(process, Caller),
    receive
        {aion_go, Ref, Stored} ->
            erlang:demonitor(MRef, [flush]),
            run(Ctx, RunId, [aion_event:decode(Stored)], false);
        {aion_abort, Ref} ->
            erlang:demonitor(MRef, [flush]),
            unregister_run(Ctx, RunId);
        {'DOWN', MRef, process, _, _} ->
            %% The caller died: it may have committed the start or not.
            begin_run(Ctx, RunId, recover)
    end;
begin_run(Ctx, RunId, {rehydrate, Notify}) ->
    put(?SETTLE_KEY, Notify),
    begin_run(Ctx, RunId, recover);
begin_run(#{store := Store} = Ctx, RunId, recover) ->
    case aion_store:get_run(Store, RunId) of
        {ok, #{status := Status} = Run} ->
            case aion_util:is_terminal(Status) of
                true ->
                    unregister_run(Ctx, RunId);
                false ->
                    run(Ctx, RunId, load_history(Store, RunId, maps:get(next_seq, Run, 1)),
                        true)
            end;
        {error, not_found} ->
            unregister_run(Ctx, RunId)
    end.

%% The whole history, decoded. A long one is read into a heap sized for it up
%% front (about 80 words per event: the rows, the event maps, the replay index):
%% the NIF results then land in the heap instead of heap fragments, and the
%% collections a growing heap needs (each copying what was loaded so far) are
%% saved. The minimum goes back to the default at once, so the next collection
%% sizes the heap by what is live.
load_history(Store, RunId, NextSeq) when NextSeq > ?PRESIZE_EVENTS ->
    Old = erlang:process_flag(min_heap_size, min(NextSeq * 80, ?PRESIZE_MAX_WORDS)),
    erlang:garbage_collect(),
    {ok, Stored} = aion_store:history(Store, RunId, 1),
    Events = aion_event:decode_all(Stored),
    _ = erlang:process_flag(min_heap_size, Old),
    Events;
load_history(Store, RunId, _NextSeq) ->
    {ok, Stored} = aion_store:history(Store, RunId, 1),
    aion_event:decode_all(Stored).

run(Ctx, RunId, Events, Replaying) ->
    R = aion_replay:add_all(Events, aion_replay:new()),
    #{type := workflow_started, workflow_type := TypeBin, input := Input,
      workflow_id := Wid, recorded_at := StartedAt} = Start = aion_replay:event(1, R),
    Type = binary_to_atom(TypeBin, utf8),
    case get(?START_KEY) of
        undefined -> register_wid(Ctx, Wid, RunId);
        _ -> ok    % registered once the start is committed (started/4)
    end,
    case aion_util:check_type(Type) of
        ok ->
            S = #wf{ctx = Ctx, run_id = RunId, workflow_id = Wid, type = Type,
                    started_at = StartedAt, input = Input,
                    parent = maps:get(parent, Start, null),
                    continued_from = maps:get(continued_from, Start, null),
                    options = case maps:get(options, Start, #{}) of
                                  O when is_map(O) -> O;
                                  _ -> #{}
                              end,
                    replay = R},
            _ = [put(?REPLAYING_KEY, true) || Replaying],
            put_st(S),
            logger:update_process_metadata(#{aion_run_id => RunId, aion_workflow_id => Wid}),
            T0 = erlang:monotonic_time(),
            case get(?START_KEY) of
                undefined -> start_telemetry(S);
                _ -> ok    % once the start is committed (started/4)
            end,
            execute(Type, Input, T0);
        {error, Why} ->
            case erase(?START_KEY) of
                undefined -> ok;
                #{caller := Caller, ref := Ref} ->
                    Caller ! {aion_started, Ref, {error, {unknown_workflow_type, Type}}},
                    ok
            end,
            logger:error("aion: run ~ts of workflow ~ts cannot resume: type ~p ~p",
                         [RunId, Wid, Type, Why]),
            unregister_run(Ctx, RunId)
    end.

%% The workflow code itself. A tail call from run/4, so that while the code runs
%% (and sleeps) the stack holds this frame only, not what building the state took
%% (every word of a sleeping process counts).
execute(Type, Input, T0) ->
    Result = try {return, Type:run(Input)}
             catch
                 exit:?STOP(_) -> stopped;
                 Class:Reason:Stack -> {exception, Class, Reason, Stack}
             end,
    case get(?AION_RUN_KEY) of
        #wf{stopped = false} = S1 when Result =/= stopped -> close(Result, S1, T0);
        _ -> ok   % stopped (stuck, or closed from outside): nothing to record
    end.

start_telemetry(S) ->
    aion_telemetry:execute([aion, workflow, start], #{system_time => erlang:system_time()},
                           meta(S)).

meta(#wf{ctx = #{name := Engine}, run_id = RunId, workflow_id = Wid, type = Type}) ->
    #{engine => Engine, run_id => RunId, workflow_id => Wid, type => Type}.

%%% ===========================================================================
%%% Closing
%%% ===========================================================================

close(Result, #wf{replay = R} = S, T0) ->
    case aion_replay:finish(R) of
        {nondeterminism, D} ->
            catch stuck(D, S),
            ok;
        ok ->
            Now = now_ms(),
            {EvType, Status, Fields} = terminal(Result, S),
            Row = case aion_event:encode(EvType, Fields) of
                      {ok, {T, Data}} ->
                          {T, Now, Data};
                      {error, Bad} ->
                          {ok, {T, Data}} = aion_event:encode(
                                              workflow_failed,
                                              #{error => {invalid_result, Bad}}),
                          {T, Now, Data}
                  end,
            FinalStatus = case Row of
                              {<<"workflow_failed">>, _, _} -> <<"failed">>;
                              _ -> Status
                          end,
            #wf{ctx = #{store := Store} = Ctx, run_id = RunId} = S,
            Op = #{run_id => RunId, events => [Row],
                   set => #{status => FinalStatus, closed_at => Now},
                   clear_rows => true},
            %% A run that ends before its first command records its start in the
            %% same transaction (its deadline rows are moot: the run is closed).
            Start = erase(?START_KEY),
            Op1 = with_start(Start, Op, no_deadlines),
            shed_garbage(),
            case aion_store:append(Store, [Op1]) of
                {error, Reason} when Start =/= undefined ->
                    started(Start, {error, Reason}, no_deadlines, S),
                    unregister_run(Ctx, RunId);
                {ok, [Seqs0]} ->
                    %% A closed run is never registered for await (no_deadlines).
                    [Seq] = case Start of
                                undefined -> Seqs0;
                                _ -> started(Start, ok, no_deadlines, S), tl(Seqs0)
                            end,
                    {T1, At, D1} = Row,
                    Ev = aion_event:decode({Seq, T1, At, D1}),
                    unregister_run(Ctx, RunId),
                    cleanup(S),
                    aion_waiters:notify(Ctx, RunId, Ev),
                    aion_child:run_closed(Ctx, RunId, S#wf.replay, Ev),
                    aion_telemetry:execute(
                      [aion, workflow, stop],
                      #{duration => erlang:monotonic_time() - T0},
                      (meta(S))#{status => binary_to_atom(FinalStatus, utf8)}),
                    ok;
                {error, closed} ->
                    unregister_run(Ctx, RunId);
                {error, Reason} ->
                    error({aion_append_failed, Reason})
            end
    end.

%% The close waits for its commit; when the store's writer is behind (a timer
%% storm: ~25,000 closes queued) the woken runs wait seconds, each holding the young
%% and old heaps its wake-up grew (~9.6 KB a process against ~3 KB sleeping), and
%% that growth is fresh memory: page faults that cost the schedulers ~15-20 us each
%% in a VM. A small heap is collected first (a few us); a large one is left alone:
%% its collection costs with its live data (bench/RESULTS.md, "sixth pass").
shed_garbage() ->
    case erlang:process_info(self(), total_heap_size) of
        {total_heap_size, W} when W =< ?CLOSE_GC_MAX_WORDS -> erlang:garbage_collect();
        _ -> true
    end.

terminal(Result, #wf{replay = R}) ->
    case {aion_replay:cancel_requested(R), Result} of
        {{true, Req}, {return, _}} ->
            {workflow_cancelled, <<"cancelled">>, #{reason => maps:get(reason, Req, null)}};
        {_, {return, {ok, V}}} ->
            {workflow_completed, <<"completed">>, #{result => V}};
        {_, {return, {error, E}}} ->
            {workflow_failed, <<"failed">>, #{error => E}};
        {_, {return, V}} ->
            {workflow_completed, <<"completed">>, #{result => V}};
        {_, {exception, Class, Reason, Stack}} ->
            {workflow_failed, <<"failed">>,
             #{error => #{class => Class, reason => Reason, stacktrace => Stack}}}
    end.

%% @doc Tears down what the closed run may still have outstanding (its activities
%% and timers).
-spec cleanup(#wf{}) -> ok.
cleanup(#wf{ctx = Ctx, run_id = RunId, replay = R, options = Opts}) ->
    {Acts, Timers} = aion_replay:outstanding(R),
    case Acts of
        [] -> ok;
        _ -> aion_activity_runner:cancel_run(Ctx, RunId)
    end,
    Deadlines = is_map_key(<<"run_timeout">>, Opts)
        orelse is_map_key(<<"execution_deadline">>, Opts),
    case Timers =/= [] orelse Deadlines of
        true -> aion_timers:disarm_run(Ctx, RunId);
        false -> ok
    end.

%% @doc The run becomes `stuck' (SPEC 3.2): nothing is recorded but the status and
%% `stuck_reason'; a logger error names both sides; the process stops (the
%% exception unwinds the workflow code).
-spec stuck(aion_replay:nondeterminism(), #wf{}) -> no_return().
stuck(#{expected := Exp, got := Got, seq := Seq} = D,
      #wf{ctx = #{store := Store} = Ctx, run_id = RunId, workflow_id = Wid, type = Type} = S) ->
    logger:error("aion: nondeterminism in workflow ~ts (run ~ts, type ~p) at seq ~p: "
                 "history has ~0p, code issued ~0p; the run is stuck until aion:retry/1",
                 [Wid, RunId, Type, Seq, Exp, Got]),
    {ok, Json} = aion_json:encode_bin(D#{kind => nondeterminism}),
    _ = ensure_started(S),
    Op = #{run_id => RunId, set => #{status => <<"stuck">>, stuck_reason => Json}},
    case aion_store:append(Store, [Op]) of
        {ok, _} -> ok;
        {error, closed} -> ok;
        {error, Reason} -> error({aion_append_failed, Reason})
    end,
    unregister_run(Ctx, RunId),
    put_st(S#wf{stopped = stuck}),
    exit(?STOP(stuck)).

%% @doc Stops the workflow process without recording anything more (`Why' is
%% `closed' when the run is closed, e.g. after continue-as-new).
-spec stop(closed, #wf{}) -> no_return().
stop(Why, #wf{ctx = Ctx, run_id = RunId} = S) ->
    unregister_run(Ctx, RunId),
    put_st(S#wf{stopped = Why}),
    exit(?STOP(Why)).

-spec closed_from_outside(#wf{}) -> no_return().
closed_from_outside(#wf{ctx = Ctx, run_id = RunId} = S) ->
    unregister_run(Ctx, RunId),
    put_st(S#wf{stopped = closed}),
    exit(?STOP(closed)).

%%% ===========================================================================
%%% Machinery for the primitives
%%% ===========================================================================

%% @doc The run state of the calling workflow process; raises
%% `error(not_in_workflow)' in any other process, and stops again if workflow code
%% caught the exception that stopped the run.
-spec st() -> #wf{}.
st() ->
    case get(?AION_RUN_KEY) of
        #wf{stopped = false} = S -> S;
        #wf{stopped = Why} -> exit(?STOP(Why));
        undefined -> error(not_in_workflow)
    end.

%% @doc Like {@link st/0}, for primitives that record or block: inside a query
%% handler they raise `error(query_handler_must_not_record)'.
-spec st_cmd() -> #wf{}.
st_cmd() ->
    case st() of
        #wf{in_query = true} -> error(query_handler_must_not_record);
        S -> S
    end.

%% @doc Stores the run state.
-spec put_st(#wf{}) -> ok.
put_st(S) ->
    put(?AION_RUN_KEY, S),
    ok.

%% @doc Wall-clock milliseconds (the `recorded_at' of what the run appends).
-spec now_ms() -> integer().
now_ms() ->
    erlang:system_time(millisecond).

%% @doc Appends one op (without `run_id') for the run; adds the appended events to
%% the in-memory history as the run's own. `{error, {task_gone | timer_gone, Id}}'
%% is returned (a cancel lost its race); a closed run stops the process; any other
%% error raises.
-spec append(map(), #wf{}) ->
          {ok, [aion_event:event()], #wf{}} | {error, {task_gone | timer_gone, binary()}}.
append(Op, #wf{ctx = #{store := Store}, run_id = RunId, replay = R} = S) ->
    Rows = maps:get(events, Op, []),
    %% The run's first command carries its start (one commit instead of two).
    Start = erase(?START_KEY),
    case aion_store:append(Store, [with_start(Start, Op#{run_id => RunId}, deadlines)]) of
        {ok, [Seqs0]} ->
            Seqs = case Start of
                       undefined -> Seqs0;
                       _ -> started(Start, ok, deadlines, S), tl(Seqs0)
                   end,
            Evs = [aion_event:decode({Seq, T, At, iolist_to_binary(D)})
                   || {Seq, {T, At, D}} <- lists:zip(Seqs, Rows)],
            R1 = lists:foldl(fun(#{seq := Sq} = E, Acc) ->
                                     aion_replay:own(Sq, aion_replay:add(E, Acc))
                             end, R, Evs),
            S1 = S#wf{replay = R1},
            put_st(S1),
            {ok, Evs, S1};
        {error, Reason} when Start =/= undefined ->
            start_refused(Start, Reason, S);
        {error, closed} ->
            closed_from_outside(S);
        {error, {task_gone, _}} = E ->
            E;
        {error, {timer_gone, _}} = E ->
            E;
        {error, Reason} ->
            store_failed(Reason, S)
    end.

%% @doc Commits the start of a fresh run that has not recorded anything yet (its
%% code waits, answers queries or acts before issuing a command); a no-op
%% otherwise. Stops the process (nothing recorded; the caller of `aion:start/3'
%% gets the error) when the store refuses the start.
-spec ensure_started(#wf{}) -> #wf{}.
ensure_started(#wf{ctx = #{store := Store}} = S) ->
    case erase(?START_KEY) of
        undefined ->
            S;
        #{op := Op} = Start ->
            case aion_store:append(Store, [Op]) of
                {ok, _} -> started(Start, ok, deadlines, S), S;
                {error, Reason} -> start_refused(Start, Reason, S)
            end
    end.

%% The op with the pending start in front: the start's events come first (seq 1),
%% its `create' and deadline timers go with them. `no_deadlines' for a closing op.
with_start(undefined, Op, _) ->
    Op;
with_start(#{op := #{events := StartRows, create := Create} = SOp}, Op, Deadlines) ->
    Timers = case Deadlines of
                 deadlines -> maps:get(timers_put, SOp, []) ++ maps:get(timers_put, Op, []);
                 no_deadlines -> maps:get(timers_put, Op, [])
             end,
    Op1 = (maps:remove(expected_seq, Op))#{events => StartRows ++ maps:get(events, Op, []),
                                          create => Create},
    case Timers of
        [] -> maps:remove(timers_put, Op1);
        _ -> Op1#{timers_put => Timers}
    end.

%% After the start's commit (Result = ok) or its refusal: registers the run for
%% `aion:await/2', arms its deadlines and answers the caller of `aion:start/3'.
started(#{caller := Caller, ref := Ref, deadlines := Deadlines},
        Result, Arm, #wf{ctx = Ctx, run_id = RunId, workflow_id = Wid} = S) ->
    case {Result, Arm} of
        {ok, deadlines} ->
            register_wid(Ctx, Wid, RunId),
            Caller ! {aion_started, Ref, ok},
            start_telemetry(S),
            lists:foreach(fun({Id, At}) -> aion_timers:arm(Ctx, RunId, Id, At) end,
                          Deadlines);
        {ok, no_deadlines} ->
            Caller ! {aion_started, Ref, ok},
            start_telemetry(S);
        _ ->
            Caller ! {aion_started, Ref, Result},
            ok
    end.

%% The store refused the start: nothing is recorded, the caller gets the error and
%% the process stops.
-spec start_refused(fresh_start(), term(), #wf{}) -> no_return().
start_refused(Start, Reason, #wf{ctx = Ctx, run_id = RunId} = S) ->
    started(Start, {error, Reason}, deadlines, S),
    unregister_run(Ctx, RunId),
    put_st(S#wf{stopped = crashed}),
    exit(?STOP(crashed)).

%% @doc The store refused an append for a reason other than the run's state (an
%% SQLite error): the workflow must not observe it as its own failure. The process
%% stops; the run stays open and is resumed by the next engine start.
-spec store_failed(term(), #wf{}) -> no_return().
store_failed(Reason, #wf{ctx = Ctx, run_id = RunId, workflow_id = Wid} = S) ->
    logger:error("aion: append for run ~ts of workflow ~ts failed: ~p; the workflow "
                 "process stops (the run is resumed at the next engine start)",
                 [RunId, Wid, Reason]),
    unregister_run(Ctx, RunId),
    put_st(S#wf{stopped = crashed}),
    exit(?STOP(crashed)).

%% @doc A blocking wait on futures (positions 1..N of `Keys'): a yield point
%% (drain retained events, answer queries, bump the wake epoch), then the lowest-seq
%% settling event of the contiguous known prefix decides (design.md section 3).
%% Returns `{Position | cancel, Event, State}'.
%%
%% While the code replays recorded commands (it has not issued all of them yet), a
%% wait the known prefix already resolves skips the yield: what the mailbox may
%% hold has a seq above the prefix (every seq up to it is known), so it cannot
%% change the lowest-seq answer, and the first wait that does not resolve at once
%% (at the latest when the code is live again) yields as usual.
-spec block([aion_replay:future_key()], #wf{}) ->
          {pos_integer() | cancel, aion_event:event(), #wf{}}.
block(Keys, #wf{replay = R} = S) ->
    Cancellable = S#wf.non_cancellable =:= 0,
    %% Deadlines of enclosing `with_timeout/2' calls take part in every wait.
    All = Keys ++ aion_sigq:deadlines(S),
    Res = case aion_replay:position(R) < aion_replay:commands(R) andalso
              aion_replay:resolve(All, Cancellable, R) of
              {ok, Which, Ev, R1} ->
                  S1 = S#wf{replay = R1},
                  put_st(S1),
                  {Which, Ev, S1};
              _ ->
                  wait(All, Cancellable, yield(S))
          end,
    case Res of
        {Pos, Ev1, S2} when is_integer(Pos), Pos > length(Keys) -> aion_sigq:expired(Ev1, S2);
        _ -> Res
    end.

wait(Keys, Cancellable, #wf{replay = R} = S) ->
    case aion_replay:resolve(Keys, Cancellable, R) of
        {ok, Which, Ev, R1} ->
            S1 = S#wf{replay = R1},
            put_st(S1),
            {Which, Ev, S1};
        pending ->
            case aion_replay:gap(R) of
                {gap, From} ->
                    S1 = fill(From, S),
                    case aion_replay:known(S1#wf.replay) > aion_replay:known(R) of
                        true -> wait(Keys, Cancellable, S1);
                        false -> sleep(Keys, Cancellable, S1)
                    end;
                none ->
                    sleep(Keys, Cancellable, S)
            end
    end.

%% Long waits: a run blocked longer than ?IDLE_GC ms (a timer, a signal) waits at
%% high priority and drops back to its own priority once woken, so its wake runs
%% within at most one time slice at high priority, before the normal work queued.
%% When many runs wake at once (100,000 sleepers due over 9 s: 11,100 fires/s) a
%% woken run otherwise waited in the run queue behind the closes of the runs woken
%% before it (their commits are answered thousands at a time): from the fire's
%% commit to the workflow running took p99 22-33 ms, 2-14 ms with this
%% (bench/RESULTS.md, "seventh pass"). Short waits (an activity) stay at normal.
%%
%% The blocking receive. After `idle_evict_after' ms without an arrival, or when
%% the residency server asks (`max_resident'), the process evicts itself.
sleep(Keys, Cancellable, #wf{ctx = Ctx} = S) ->
    %% Blocking: nothing more resolves from the known history, so a rebuilt run has
    %% caught up and queries see the state of the end of its history.
    _ = erase(?REPLAYING_KEY),
    answer_queries(S),
    settle(),
    Idle = idle_enter(Ctx),
    S1 = case evict_after(Ctx) of
             T when is_integer(T), T =< ?IDLE_GC ->
                 or_evict(arrival(S, Ctx, Idle, T), S, Ctx, Idle);
             T ->
                 case arrival(S, Ctx, Idle, ?IDLE_GC) of
                     timeout ->
                         %% Blocked ?IDLE_GC ms with nothing to do: a long wait (a
                         %% timer, a signal). The process keeps only its live state
                         %% while it sleeps (the first collection sizes the new heap
                         %% by what the heap held before it, the second by the live
                         %% data: a 233-word heap (2.8 KB process) when the live
                         %% data fits the minimum heap, the next size (4.0 KB) when
                         %% not); short waits, e.g. for an activity, never pay.
                         %% It then waits at high priority and goes back to its own
                         %% as soon as it is woken (see "Long waits" above).
                         idle_release(S),
                         garbage_collect(),
                         garbage_collect(),
                         Prio = process_flag(priority, high),
                         Arrived = arrival(S, Ctx, Idle, after_gc(T)),
                         _ = process_flag(priority, Prio),
                         or_evict(Arrived, S, Ctx, Idle);
                     Woken ->
                         Woken
                 end
         end,
    wait(Keys, Cancellable, yield(S1)).

%% Waits for an arrival, a query or an eviction request: the state to go on with,
%% or `timeout' after `Timeout' ms without one. (No closures here: a sleeping
%% process's heap is what a resident parked run costs.)
arrival(S, Ctx, Idle, Timeout) ->
    receive
        aion_event ->
            idle_leave(Ctx, Idle),
            S;
        {'$aion_query', _, _, _, _} = Q ->
            idle_leave(Ctx, Idle),
            answer(Q, S),
            S;
        '$aion_evict' ->
            idle_leave(Ctx, Idle),
            evict(S, asked)
    after Timeout ->
            timeout
    end.

or_evict(timeout, S, Ctx, Idle) ->
    idle_leave(Ctx, Idle),
    evict(S, idle);
or_evict(Woken, _S, _Ctx, _Idle) ->
    Woken.

%% A long-blocked process gives back the bookkeeping it does not need while it
%% waits: its mailbox record (epoch and monitor; the next arrival or blocking entry
%% makes a new one) and the `aion:await/2' hint in `wids' (a hint: without it
%% `await' reads the store). About 460 bytes of a sleeping workflow's ~4 KB.
idle_release(#wf{ctx = #{mailbox := Mb} = Ctx, run_id = RunId}) ->
    _ = aion_mailbox:release(Mb, self()),
    case {Ctx, erase(?WID_KEY)} of
        {#{wids := Wids}, Wid} when is_binary(Wid) -> ets:delete_object(Wids, {Wid, RunId});
        _ -> true
    end.

after_gc(infinity) -> infinity;
after_gc(T) -> T - ?IDLE_GC.

evict_after(#{opts := #{idle_evict_after := T}}) -> T;
evict_after(_) -> infinity.

%% A rehydrated process tells the residency server once its replay is done.
settle() ->
    case erase(?SETTLE_KEY) of
        undefined -> ok;
        Notify -> aion_residency:settled(Notify)
    end.

%% The `idle' table (only with `max_resident'): blocked processes by the time they
%% blocked, so the residency server finds the longest-idle first.
idle_enter(#{idle := Idle}) ->
    Key = {erlang:monotonic_time(), self()},
    ets:insert(Idle, {Key}),
    Key;
idle_enter(_) ->
    undefined.

idle_leave(#{idle := Idle}, Key) when Key =/= undefined ->
    ets:delete(Idle, Key);
idle_leave(_, _) ->
    true.

%% Eviction (SPEC 1, 2.4; design.md section 8). Everything the run waits for is
%% durable, so the process may go: it records the history length it has seen
%% (`parked_seq': engine start leaves such a run suspended unless an event came
%% after it), unregisters, and then reads the run's head. An appender that commits
%% after that read finds no process and asks for rehydration (`aion_deliver'); one
%% that committed before it is seen here: the process registers again (if nobody
%% else did meanwhile), reads what it missed, and goes on waiting.
evict(#wf{ctx = #{store := Store} = Ctx, run_id = RunId, workflow_id = Wid,
          replay = R} = S, Why) ->
    Known = aion_replay:known(R),
    case aion_store:append(Store, [#{run_id => RunId, set => #{parked_seq => Known}}]) of
        {ok, _} -> ok;
        {error, closed} -> closed_from_outside(S);
        {error, Reason} -> store_failed(Reason, S)
    end,
    unregister_run(Ctx, RunId),
    Head = case aion_store:get_run(Store, RunId) of
               {ok, #{status := St, next_seq := Next}} ->
                   case aion_util:is_terminal(St) of
                       true -> closed;
                       false -> Next - 1
                   end;
               {error, not_found} ->
                   closed
           end,
    case Head of
        Known ->
            parked(S);
        closed ->
            parked(S);
        _ ->
            case register_run(Ctx, RunId) of
                ok ->
                    register_wid(Ctx, Wid, RunId),
                    %% Asked by the residency server (max_resident): it counts this
                    %% process as leaving until told otherwise.
                    _ = [aion_residency:stayed(Ctx) || Why =:= asked],
                    fill(Known + 1, S);
                {error, _} ->
                    %% Another process holds the run now (a rehydration).
                    parked(S)
            end
    end.

-spec parked(#wf{}) -> no_return().
parked(S) ->
    aion_telemetry:execute([aion, workflow, evicted], #{count => 1}, meta(S)),
    put_st(S#wf{stopped = evicted}),
    exit(?STOP(evicted)).

%% @doc A yield point: take retained events, answer queries, bump the wake epoch.
%% Queries are answered once the code has caught up with the recorded commands,
%% and always before the process waits; a process rebuilding a run from its
%% history (recovery, rehydration) answers only from its first real wait, so a
%% query to a suspended run sees the state of the end of its history, not that of
%% an earlier yield point of the replay (signals are consumed without commands).
-spec yield(#wf{}) -> #wf{}.
yield(#wf{ctx = #{mailbox := Mb}} = S0) ->
    S = ensure_started(S0),
    flush_markers(),
    S1 = take(S),
    R = S1#wf.replay,
    case get(?REPLAYING_KEY) =/= true andalso
        aion_replay:position(R) >= aion_replay:commands(R) of
        true -> answer_queries(S1);
        false -> ok
    end,
    _ = aion_mailbox:bump_epoch(Mb, self()),
    put_st(S1),
    S1.

flush_markers() ->
    receive aion_event -> flush_markers()
    after 0 -> ok
    end.

take(#wf{ctx = #{mailbox := Mb}, replay = R} = S) ->
    case aion_mailbox:take_all(Mb, self()) of
        [] ->
            S;
        Taken ->
            R1 = lists:foldl(
                   fun({_, {Seq, _, _, _} = Stored}, Acc) ->
                           case aion_replay:has_event(Seq, Acc) of
                               true -> Acc;
                               false -> aion_replay:add(aion_event:decode(Stored), Acc)
                           end;
                      (_, Acc) ->
                           Acc
                   end, R, Taken),
            S#wf{replay = R1}
    end.

%% Reads the events missing below a known one (their deliveries follow their
%% commits, so they are committed).
fill(From, #wf{ctx = #{store := Store}, run_id = RunId, replay = R} = S) ->
    {ok, Stored} = aion_store:history(Store, RunId, From),
    R1 = lists:foldl(fun({Seq, _, _, _} = E, Acc) ->
                             case aion_replay:has_event(Seq, Acc) of
                                 true -> Acc;
                                 false -> aion_replay:add(aion_event:decode(E), Acc)
                             end
                     end, R, Stored),
    S1 = S#wf{replay = R1},
    put_st(S1),
    S1.

answer_queries(S) ->
    receive {'$aion_query', _, _, _, _} = Q -> answer(Q, S), answer_queries(S)
    after 0 -> ok
    end.

%% Queries never change the run: the handler runs with `in_query' set (recording
%% primitives raise) and the state is restored afterwards.
answer({'$aion_query', From, Ref, Name, Args}, #wf{query_handlers = Hs} = S) ->
    Reply = case Hs of
                #{Name := Fun} ->
                    put_st(S#wf{in_query = true}),
                    try {ok, Fun(Args)}
                    catch _:Reason -> {error, {query_failed, Reason}}
                    after put_st(S)
                    end;
                _ ->
                    {error, {unknown_query, Name}}
            end,
    From ! {Ref, Reply},
    ok.
