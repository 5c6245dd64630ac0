%% @private
%% @doc The workflow process: runs one run's `Type:run(Input)' in itself.
%%
%% A process registers in the engine's `runs' table before it learns the history
%% (design.md section 3), so every event committed after that is delivered to it
%% and every event committed before is in what it loads. A fresh run (started by
%% `aion:start/3') is spawned before its `workflow_started' commit and told the
%% event afterwards, so it never reads history; a recovered run loads its history
%% once and replays. The history lives in memory (`aion_replay'); the hot path
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
-export([st/0, st_cmd/0, put_st/1, append/2, block/2, stuck/2, now_ms/0, yield/1]).
%% Machinery for aion_child (same process).
-export([cleanup/1, stop/2, store_failed/2]).

-define(STOP(Why), {aion_run_stopped, Why}).
-define(WID_KEY, '$aion_wid').
%% A blocked workflow process idle this long collects its garbage (ms).
-define(IDLE_GC, 100).

%%% ===========================================================================
%%% Process life
%%% ===========================================================================

%% @doc Starts a workflow process for `RunId' of engine `Engine' (called by
%% `aion_run_sup'). `Mode' is `recover' (load history, replay, continue) or
%% `{new, Caller, Ref}' (a fresh run: wait for `Caller' to commit
%% `workflow_started' and send it). Returns `{error, {already_resident, Pid}}' when
%% the run already has a process.
-spec start_link(atom(), binary(), recover | {new, pid(), reference()}) ->
          {ok, pid()} | {error, term()}.
start_link(Engine, RunId, Mode) ->
    proc_lib:start_link(?MODULE, init, [Engine, RunId, Mode, self()]).

%% @doc proc_lib entry point.
-spec init(atom(), binary(), recover | {new, pid(), reference()}, pid()) -> ok.
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

register_run(#{runs := Runs}, RunId) ->
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
                            register_run(#{runs => Runs}, RunId)
                    end;
                _ ->
                    register_run(#{runs => Runs}, RunId)
            end
    end.

unregister_run(#{runs := Runs} = Ctx, RunId) ->
    ets:delete_object(Runs, {RunId, self()}),
    case {Ctx, get(?WID_KEY)} of
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

begin_run(Ctx, RunId, {new, Caller, Ref}) ->
    MRef = erlang:monitor(process, Caller),
    receive
        {aion_go, Ref, Stored} ->
            erlang:demonitor(MRef, [flush]),
            run(Ctx, RunId, [aion_event:decode(Stored)]);
        {aion_abort, Ref} ->
            erlang:demonitor(MRef, [flush]),
            unregister_run(Ctx, RunId);
        {'DOWN', MRef, process, _, _} ->
            %% The caller died: it may have committed the start or not.
            begin_run(Ctx, RunId, recover)
    end;
begin_run(#{store := Store} = Ctx, RunId, recover) ->
    case aion_store:get_run(Store, RunId) of
        {ok, #{status := Status}} ->
            case aion_util:is_terminal(Status) of
                true ->
                    unregister_run(Ctx, RunId);
                false ->
                    {ok, Stored} = aion_store:history(Store, RunId, 1),
                    run(Ctx, RunId, aion_event:decode_all(Stored))
            end;
        {error, not_found} ->
            unregister_run(Ctx, RunId)
    end.

run(Ctx, RunId, Events) ->
    R = aion_replay:add_all(Events, aion_replay:new()),
    #{type := workflow_started, workflow_type := TypeBin, input := Input,
      workflow_id := Wid, recorded_at := StartedAt} = Start = aion_replay:event(1, R),
    Type = binary_to_atom(TypeBin, utf8),
    register_wid(Ctx, Wid, RunId),
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
            put_st(S),
            logger:update_process_metadata(#{aion_run_id => RunId, aion_workflow_id => Wid}),
            T0 = erlang:monotonic_time(),
            aion_telemetry:execute([aion, workflow, start], #{system_time => erlang:system_time()},
                                   meta(S)),
            Result = try {return, Type:run(Input)}
                     catch
                         exit:?STOP(_) -> stopped;
                         Class:Reason:Stack -> {exception, Class, Reason, Stack}
                     end,
            case get(?AION_RUN_KEY) of
                #wf{stopped = false} = S1 when Result =/= stopped -> close(Result, S1, T0);
                _ -> ok   % stopped (stuck, or closed from outside): nothing to record
            end;
        {error, Why} ->
            logger:error("aion: run ~ts of workflow ~ts cannot resume: type ~p ~p",
                         [RunId, Wid, Type, Why]),
            unregister_run(Ctx, RunId)
    end.

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
            case aion_store:append(Store, [Op]) of
                {ok, [[Seq]]} ->
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
    case aion_store:append(Store, [Op#{run_id => RunId}]) of
        {ok, [Seqs]} ->
            Evs = [aion_event:decode({Seq, T, At, iolist_to_binary(D)})
                   || {Seq, {T, At, D}} <- lists:zip(Seqs, Rows)],
            R1 = lists:foldl(fun(#{seq := Sq} = E, Acc) ->
                                     aion_replay:own(Sq, aion_replay:add(E, Acc))
                             end, R, Evs),
            S1 = S#wf{replay = R1},
            put_st(S1),
            {ok, Evs, S1};
        {error, closed} ->
            closed_from_outside(S);
        {error, {task_gone, _}} = E ->
            E;
        {error, {timer_gone, _}} = E ->
            E;
        {error, Reason} ->
            store_failed(Reason, S)
    end.

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
-spec block([aion_replay:future_key()], #wf{}) ->
          {pos_integer() | cancel, aion_event:event(), #wf{}}.
block(Keys, S) ->
    Cancellable = S#wf.non_cancellable =:= 0,
    %% Deadlines of enclosing `with_timeout/2' calls take part in every wait.
    case wait(Keys ++ aion_sigq:deadlines(S), Cancellable, yield(S)) of
        {Pos, Ev, S1} when is_integer(Pos), Pos > length(Keys) -> aion_sigq:expired(Ev, S1);
        Res -> Res
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

sleep(Keys, Cancellable, S) ->
    answer_queries(S),
    receive
        aion_event -> ok;
        {'$aion_query', _, _, _, _} = Q -> answer(Q, S)
    after ?IDLE_GC ->
            idle(S)
    end,
    wait(Keys, Cancellable, yield(S)).

%% Blocked for ?IDLE_GC ms with nothing to do: a long wait (a timer, a signal).
%% The process keeps only its live state while it sleeps (a collection costs a few
%% microseconds once per long wait; short waits, e.g. for an activity, never pay).
%% The first collection sizes the new heap by what the heap held before it, the
%% second by the live data: together they shrink the heap to fit (~2.8 KB process).
idle(S) ->
    garbage_collect(),
    garbage_collect(),
    receive
        aion_event -> ok;
        {'$aion_query', _, _, _, _} = Q -> answer(Q, S)
    end.

%% @doc A yield point: take retained events, answer queries, bump the wake epoch.
%% Queries are answered once the code has caught up with the recorded commands
%% (a replay answers with the state of the end of its history), and always
%% before the process waits.
-spec yield(#wf{}) -> #wf{}.
yield(#wf{ctx = #{mailbox := Mb}} = S) ->
    flush_markers(),
    S1 = take(S),
    R = S1#wf.replay,
    case aion_replay:position(R) >= aion_replay:commands(R) of
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
