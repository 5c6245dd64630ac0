%% @doc The durable timer service of one engine (SPEC 3.3, design.md section 5).
%%
%% Timer rows live in the store (`timers(run_id, timer_id, fire_at)'); the workflow
%% process writes the row with its `timer_started' and then calls {@link arm/4}.
%% The service keeps in memory only the timers due within a horizon
%% (`timer_horizon', default 60000 ms); every `timer_rescan_interval' (default
%% 10000 ms) it reads the rows due within the horizon again, so a timer armed
%% before a restart, one far in the future, or a fire that failed is picked up
%% without a restart; timers that fell due while the node was down fire at start
%% (the first scan runs at once).
%%
%% Firing does not go through this server: due timers are handed, in batches, to
%% short-lived firer processes (linked and tracked: the server's `terminate' waits
%% for them, so no fire lands after the engine stopped), each timer in its own
%% process so that many fires share the store's group commit. A fire appends
%% `timer_fired{timer_id}' with `timers_take' (a cancelled timer's row is gone, so it
%% never fires; a closed run refuses the append) and then delivers the event to the
%% resident workflow process. Engine deadlines (`$run_timeout',
%% `$execution_timeout') call `aion_lifecycle:time_out/3' instead.
-module(aion_timers).
-behaviour(gen_server).

-export([start_link/1, arm/4, disarm/3, disarm_run/2, rescan/1, armed/1]).
-export([init/1, handle_continue/2, handle_call/3, handle_cast/2, handle_info/2,
         terminate/2]).

-include_lib("kernel/include/logger.hrl").

-define(HORIZON, 60000).
-define(RESCAN, 10000).
-define(SCAN_LIMIT, 50000).
-define(BATCH, 500).
-define(MAX_TIMER, 16#FFFFFFFF).

%% @doc Starts the timer service of engine `Engine' (registered as
%% `aion_ctx:proc_name(Engine, timers)'). Engine options read: `timer_horizon',
%% `timer_rescan_interval', `timer_scan_limit' (rows per scan, default 50000).
-spec start_link(atom()) -> {ok, pid()} | {error, term()}.
start_link(Engine) ->
    gen_server:start_link({local, aion_ctx:proc_name(Engine, timers)}, ?MODULE, Engine, []).

%% @doc Arms a timer whose row (`timers_put') is committed: it fires at `FireAt'
%% (ms since the Unix epoch; a past time fires at once). A timer beyond the horizon
%% is left to a later rescan. Arming a timer again replaces its fire time.
-spec arm(aion_ctx:ctx(), binary(), binary(), integer()) -> ok.
arm(Ctx, RunId, TimerId, FireAt) when is_binary(RunId), is_binary(TimerId),
                                      is_integer(FireAt) ->
    gen_server:cast(server(Ctx), {arm, RunId, TimerId, FireAt}).

%% @doc Forgets an armed timer (after its row was taken, e.g. `timer_cancelled').
%% Only saves work: the row guard already keeps a cancelled timer from firing.
-spec disarm(aion_ctx:ctx(), binary(), binary()) -> ok.
disarm(Ctx, RunId, TimerId) ->
    gen_server:cast(server(Ctx), {disarm, RunId, TimerId}).

%% @doc Forgets every armed timer of a run (after the run closed).
-spec disarm_run(aion_ctx:ctx(), binary()) -> ok.
disarm_run(Ctx, RunId) ->
    gen_server:cast(server(Ctx), {disarm_run, RunId}).

%% @doc Starts a rescan of the store now (it also runs periodically). Returns at
%% once; the result is merged when the read is done.
-spec rescan(aion_ctx:ctx()) -> ok.
rescan(Ctx) ->
    gen_server:cast(server(Ctx), rescan).

%% @doc The number of timers armed in memory plus those being fired (diagnostic).
-spec armed(aion_ctx:ctx()) -> non_neg_integer().
armed(Ctx) ->
    gen_server:call(server(Ctx), armed, infinity).

server(#{name := Name}) -> aion_ctx:proc_name(Name, timers).

%%% ===========================================================================
%%% gen_server
%%% ===========================================================================

%% State:
%%   armed     #{{RunId, TimerId} => FireAt}
%%   by_run    #{RunId => #{TimerId => FireAt}}
%%   sched     gb_set of {FireAt, RunId, TimerId} (exactly the armed timers)
%%   wake      undefined | {TRef, FireAt}: the timer for the earliest entry
%%   inflight  #{{RunId, TimerId} => true}: being fired
%%   firers    #{Pid => [Key]}
%%   scanner   undefined | pid(); rescan_due: a rescan was asked while scanning
%% @private
init(Engine) ->
    process_flag(trap_exit, true),
    Ctx = aion_ctx:get(Engine),
    Opts = maps:get(opts, Ctx, #{}),
    S = #{ctx => Ctx,
          horizon => maps:get(timer_horizon, Opts, ?HORIZON),
          interval => maps:get(timer_rescan_interval, Opts, ?RESCAN),
          limit => maps:get(timer_scan_limit, Opts, ?SCAN_LIMIT),
          armed => #{}, by_run => #{}, sched => gb_sets:new(), wake => undefined,
          inflight => #{}, firers => #{}, scanner => undefined, rescan_due => false,
          tick => undefined},
    {ok, S, {continue, scan}}.

%% @private
handle_continue(scan, S) ->
    {noreply, start_scan(S)}.

%% @private
handle_call(armed, _From, #{armed := A, inflight := I} = S) ->
    {reply, map_size(A) + map_size(I), S};
handle_call(_Req, _From, S) ->
    {reply, {error, unknown_call}, S}.

%% @private
handle_cast({arm, RunId, TimerId, FireAt}, #{horizon := H} = S) ->
    case FireAt =< now_ms() + H of
        true -> {noreply, reschedule(insert(RunId, TimerId, FireAt, S))};
        false -> {noreply, reschedule(remove(RunId, TimerId, S))}
    end;
handle_cast({disarm, RunId, TimerId}, S) ->
    {noreply, reschedule(remove(RunId, TimerId, S))};
handle_cast({disarm_run, RunId}, #{by_run := ByRun} = S) ->
    S1 = maps:fold(fun(TimerId, _, Acc) -> remove(RunId, TimerId, Acc) end, S,
                   maps:get(RunId, ByRun, #{})),
    {noreply, reschedule(S1)};
handle_cast(rescan, S) ->
    {noreply, start_scan(S)};
handle_cast(_Msg, S) ->
    {noreply, S}.

%% @private
handle_info(wake, S) ->
    {noreply, reschedule(fire_due(S#{wake => undefined}))};
handle_info(tick, S) ->
    {noreply, start_scan(S#{tick => undefined})};
handle_info({scan_result, Pid, Rows, Full}, #{scanner := Pid} = S) ->
    {noreply, reschedule(merge(Rows, Full, S))};
handle_info({'EXIT', Pid, Reason}, #{firers := F, inflight := I, scanner := Scanner} = S) ->
    case F of
        #{Pid := Keys} ->
            Reason =:= normal orelse
                ?LOG_ERROR("aion: timer firer exited: ~p", [Reason]),
            I1 = lists:foldl(fun maps:remove/2, I, Keys),
            {noreply, S#{firers => maps:remove(Pid, F), inflight => I1}};
        _ when Pid =:= Scanner ->
            %% The scan died before answering (a store error): try at the next tick.
            ?LOG_ERROR("aion: timer scan failed: ~p", [Reason]),
            {noreply, schedule_tick(S#{scanner => undefined}, false)};
        _ ->
            {noreply, S}
    end;
handle_info(_Msg, S) ->
    {noreply, S}.

%% @private
%% Waits for the firers (and the scanner): no fire may land after the engine stopped.
terminate(_Reason, #{firers := F, scanner := Scanner}) ->
    Pids = maps:keys(F) ++ [Scanner || is_pid(Scanner)],
    lists:foreach(fun(Pid) -> receive {'EXIT', Pid, _} -> ok end end, Pids).

%%% ===========================================================================
%%% In-memory schedule
%%% ===========================================================================

insert(RunId, TimerId, FireAt, #{inflight := I} = S) when is_map_key({RunId, TimerId}, I) ->
    %% Being fired right now; its row decides.
    _ = FireAt,
    S;
insert(RunId, TimerId, FireAt, S0) ->
    #{armed := A, by_run := B, sched := Q} = S = remove(RunId, TimerId, S0),
    S#{armed => A#{{RunId, TimerId} => FireAt},
       by_run => B#{RunId => (maps:get(RunId, B, #{}))#{TimerId => FireAt}},
       sched => gb_sets:add({FireAt, RunId, TimerId}, Q)}.

remove(RunId, TimerId, #{armed := A, by_run := B, sched := Q} = S) ->
    case A of
        #{{RunId, TimerId} := FireAt} ->
            Timers = maps:remove(TimerId, maps:get(RunId, B)),
            B1 = case map_size(Timers) of
                     0 -> maps:remove(RunId, B);
                     _ -> B#{RunId => Timers}
                 end,
            S#{armed => maps:remove({RunId, TimerId}, A), by_run => B1,
               sched => gb_sets:delete({FireAt, RunId, TimerId}, Q)};
        _ ->
            S
    end.

%% Points the wake timer at the earliest armed timer.
reschedule(#{sched := Q, wake := Wake} = S) ->
    case gb_sets:is_empty(Q) of
        true ->
            cancel_wake(Wake),
            S#{wake => undefined};
        false ->
            {FireAt, _, _} = gb_sets:smallest(Q),
            case Wake of
                {_, FireAt} ->
                    S;
                _ ->
                    cancel_wake(Wake),
                    Delay = min(?MAX_TIMER, max(0, FireAt - now_ms())),
                    S#{wake => {erlang:send_after(Delay, self(), wake), FireAt}}
            end
    end.

cancel_wake(undefined) -> ok;
cancel_wake({TRef, _}) -> _ = erlang:cancel_timer(TRef), ok.

%% Hands every due timer to firers, in batches.
fire_due(S) ->
    Now = now_ms(),
    {Due, S1} = take_due(Now, [], S),
    spawn_batches(Due, S1).

take_due(Now, Acc, #{sched := Q} = S) ->
    case gb_sets:is_empty(Q) of
        true ->
            {Acc, S};
        false ->
            case gb_sets:smallest(Q) of
                {FireAt, RunId, TimerId} when FireAt =< Now ->
                    take_due(Now, [{RunId, TimerId, FireAt} | Acc], remove(RunId, TimerId, S));
                _ ->
                    {Acc, S}
            end
    end.

spawn_batches([], S) ->
    S;
spawn_batches(Due, #{ctx := Ctx, firers := F, inflight := I} = S) ->
    {Batch, Rest} = split(?BATCH, Due),
    Pid = spawn_link(fun() -> fire_batch(Ctx, Batch) end),
    Keys = [{R, T} || {R, T, _} <- Batch],
    I1 = lists:foldl(fun(K, Acc) -> Acc#{K => true} end, I, Keys),
    spawn_batches(Rest, S#{firers => F#{Pid => Keys}, inflight => I1}).

split(N, L) when length(L) =< N -> {L, []};
split(N, L) -> lists:split(N, L).

%%% ===========================================================================
%%% Scanning
%%% ===========================================================================

start_scan(#{scanner := P} = S) when is_pid(P) ->
    S#{rescan_due => true};
start_scan(#{ctx := #{store := Store}, horizon := H, limit := Limit} = S) ->
    Self = self(),
    Pid = spawn_link(fun() ->
                             UpTo = now_ms() + H,
                             {ok, Rows} = aion_store:due_timers(Store, UpTo, Limit),
                             Self ! {scan_result, self(), Rows, length(Rows) >= Limit}
                     end),
    S#{scanner => Pid, rescan_due => false}.

merge(Rows, Full, #{armed := A, inflight := I} = S) ->
    S1 = lists:foldl(fun({RunId, TimerId, FireAt}, Acc) ->
                             Key = {RunId, TimerId},
                             case is_map_key(Key, A) orelse is_map_key(Key, I) of
                                 true -> Acc;
                                 false -> insert(RunId, TimerId, FireAt, Acc)
                             end
                     end, S#{scanner => undefined}, Rows),
    case S1 of
        #{rescan_due := true} -> start_scan(S1);
        _ -> schedule_tick(S1, Full)
    end.

%% The next periodic scan; sooner when the last one did not read everything due.
schedule_tick(#{tick := Old, interval := Interval} = S, Full) ->
    _ = Old =:= undefined orelse erlang:cancel_timer(Old),
    Delay = case Full of
                true -> min(Interval, 100);
                false -> Interval
            end,
    S#{tick => erlang:send_after(Delay, self(), tick)}.

%%% ===========================================================================
%%% Firing (in firer processes)
%%% ===========================================================================

fire_batch(Ctx, Batch) ->
    Procs = [spawn_monitor(fun() -> fire(Ctx, RunId, TimerId) end)
             || {RunId, TimerId, _} <- Batch],
    lists:foreach(fun({Pid, Mon}) ->
                          receive {'DOWN', Mon, process, Pid, _} -> ok end
                  end, Procs).

fire(Ctx, RunId, <<"$", _/binary>> = TimerId) ->
    case TimerId of
        <<"$run_timeout">> -> time_out(Ctx, RunId, run_timeout);
        <<"$execution_timeout">> -> time_out(Ctx, RunId, execution_timeout);
        _ ->
            ?LOG_WARNING("aion: unknown engine timer ~s of run ~s dropped", [TimerId, RunId]),
            _ = aion_store:append(maps:get(store, Ctx),
                                  [#{run_id => RunId, timers_del => [TimerId]}]),
            ok
    end;
fire(#{store := Store} = Ctx, RunId, TimerId) ->
    {Type, At, Data} = aion_event:encode_row(timer_fired, now_ms(), #{timer_id => TimerId}),
    Op = #{run_id => RunId, events => [{Type, At, Data}], timers_take => [TimerId]},
    case aion_store:append(Store, [Op]) of
        {ok, [[Seq]]} ->
            aion_deliver:events(Ctx, RunId, [{Seq, Type, At, Data}]);
        {error, {timer_gone, _}} -> ok;
        {error, closed} -> ok;
        {error, {not_found, _}} -> ok;
        {error, Reason} ->
            %% The row stays: the next rescan arms the timer again.
            ?LOG_WARNING("aion: timer ~s of run ~s not fired: ~p", [TimerId, RunId, Reason]),
            ok
    end.

time_out(Ctx, RunId, Kind) ->
    case aion_lifecycle:time_out(Ctx, RunId, Kind) of
        ok -> ok;
        {error, not_running} -> ok;
        {error, Reason} ->
            ?LOG_WARNING("aion: ~p of run ~s not applied: ~p", [Kind, RunId, Reason]),
            ok
    end.

now_ms() -> erlang:system_time(millisecond).
