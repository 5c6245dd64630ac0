%% @doc The durable timer service of one engine (SPEC 3.3, design.md section 5).
%%
%% Timer rows live in the store (`timers(run_id, timer_id, fire_at)'); the workflow
%% process writes the row with its `timer_started' and then calls {@link arm/4}.
%% The service keeps in memory only the timers due within a horizon
%% (`timer_horizon', default 60000 ms). Its first scan (at once) reads every row due
%% within the horizon, so timers that fell due while the node was down fire at
%% start; then every `timer_rescan_interval' (default 10000 ms) it reads only the
%% rows that came within the horizon since (a timer armed far in the future): an
%% arm within the horizon reaches the service by {@link arm/4}, so rows due before
%% the last scan's bound are all in memory. A fire that failed (its row stays), a
%% firer that died or {@link rescan/1} make the next scan read every row again; so
%% does the first periodic scan 6 intervals after the last full read (an arm lost
%% with a process killed between its append and its arm, see aion:resume_taken/4,
%% is recovered without a restart).
%% (Re-reading all rows every interval held firing for up to 0.5 s with 100,000
%% sleeping runs.)
%%
%% The server and its firers run at high priority (fires stay punctual while many
%% workflow processes are runnable). Firing does not go through this server: due
%% timers are handed, in batches of up to 500, to short-lived firer processes (linked and tracked: the server's
%% `terminate' waits for them, so no fire lands after the engine stopped). A batch
%% fires groups of 20 timers in parallel processes, each group as one append of one
%% op per timer, so many fires share a transaction and the store's group commit; if
%% the store refuses a group (all or nothing), its timers are fired one by one. A
%% fire appends `timer_fired{timer_id}' with `timers_take' (a cancelled timer's row
%% is gone, so it never fires; a closed run refuses the append) and then delivers
%% the event to the resident workflow process. Engine deadlines (`$run_timeout',
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
-define(GROUP, 20).
-define(MAX_TIMER, 16#FFFFFFFF).
-define(BEFORE_ALL, -(1 bsl 63)).
-define(FULL_EVERY, 6).

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

%% @doc Starts a rescan of every timer row due within the horizon now (the periodic
%% scans read only rows new to the horizon). Returns at once; the result is merged
%% when the read is done.
-spec rescan(aion_ctx:ctx()) -> ok.
rescan(Ctx) ->
    gen_server:cast(server(Ctx), rescan).

%% @doc The number of timers armed in memory plus those being fired (diagnostic).
-spec armed(aion_ctx:ctx()) -> non_neg_integer().
armed(Ctx) ->
    gen_server:call(server(Ctx), armed, infinity).

server(#{name := Name}) -> aion_ctx:proc_name(Name, timers).

-type state() :: map().

%%% ===========================================================================
%%% gen_server
%%% ===========================================================================

%% State:
%%   armed     ETS ordered_set {{RunId, TimerId}, FireAt}: the timers in memory
%%   sched     ETS ordered_set {{FireAt, RunId, TimerId}}: the same, by fire time
%%   inflight  ETS set {{RunId, TimerId}, FirerPid}: being fired
%%   wake      undefined | {TRef, FireAt}: the timer for the earliest entry;
%%             queued: a `wake' message was sent to self
%%   firers    #{Pid => [Key]}
%%   scanner   undefined | pid(); rescan_due: a rescan was asked while scanning
%%   covered   undefined (the next scan reads every row) | every row due up to this
%%             time (ms) is armed, being fired or gone; epoch counts full rescans
%%             asked for (a scan started before one does not set covered);
%%             full_at: when the last full read started (ms)
%% ETS keeps the per-timer cost of arming and firing at a few microseconds without
%% garbage, so 100,000 timers falling due together leave this server in well under
%% a second, a batch at a time.
%% @private
-spec init(atom()) -> {ok, state(), {continue, scan}}.
init(Engine) ->
    process_flag(trap_exit, true),
    %% Punctual firing: the server and its firers run ahead of the (many) runnable
    %% workflow processes. Their work per message is small; a large scan merge
    %% drops to normal priority (merge/3).
    process_flag(priority, high),
    Ctx = aion_ctx:get(Engine),
    Opts = maps:get(opts, Ctx, #{}),
    S = #{ctx => Ctx,
          horizon => maps:get(timer_horizon, Opts, ?HORIZON),
          interval => maps:get(timer_rescan_interval, Opts, ?RESCAN),
          limit => maps:get(timer_scan_limit, Opts, ?SCAN_LIMIT),
          armed => ets:new(armed, [ordered_set, protected]),
          sched => ets:new(sched, [ordered_set, protected]),
          inflight => ets:new(inflight, [set, protected]),
          wake => undefined, firers => #{}, scanner => undefined, rescan_due => false,
          covered => undefined, epoch => 0, full_at => now_ms(),
          tick => undefined},
    {ok, S, {continue, scan}}.

%% @private
-spec handle_continue(scan, state()) -> {noreply, state()}.
handle_continue(scan, S) ->
    {noreply, start_scan(S)}.

%% @private
-spec handle_call(term(), gen_server:from(), state()) -> {reply, term(), state()}.
handle_call(armed, _From, #{armed := A, inflight := I} = S) ->
    {reply, ets:info(A, size) + ets:info(I, size), S};
handle_call(_Req, _From, S) ->
    {reply, {error, unknown_call}, S}.

%% @private
-spec handle_cast(term(), state()) -> {noreply, state()}.
handle_cast({arm, RunId, TimerId, FireAt}, #{horizon := H} = S) ->
    case FireAt =< now_ms() + H of
        true -> insert(RunId, TimerId, FireAt, S);
        false -> remove(RunId, TimerId, S)
    end,
    {noreply, reschedule(S)};
handle_cast({disarm, RunId, TimerId}, S) ->
    remove(RunId, TimerId, S),
    {noreply, reschedule(S)};
handle_cast({disarm_run, RunId}, #{armed := A} = S) ->
    Keys = ets:select(A, [{{{RunId, '$1'}, '_'}, [], ['$1']}]),
    lists:foreach(fun(TimerId) -> remove(RunId, TimerId, S) end, Keys),
    {noreply, reschedule(S)};
handle_cast(rescan, S) ->
    {noreply, start_scan(full_rescan(S))};
handle_cast(fire_failed, S) ->
    %% The row stays: the next periodic scan reads every row again.
    {noreply, full_rescan(S)};
handle_cast(_Msg, S) ->
    {noreply, S}.

%% @private
-spec handle_info(term(), state()) -> {noreply, state()}.
handle_info(wake, S) ->
    {noreply, reschedule(fire_due(S#{wake => undefined}))};
handle_info(tick, #{full_at := At, interval := I} = S) ->
    S1 = case now_ms() - At >= ?FULL_EVERY * I of
             true -> full_rescan(S);
             false -> S
         end,
    {noreply, start_scan(S1#{tick => undefined})};
handle_info({scan_result, Pid, Epoch, Rows, {Covered, Next}}, #{scanner := Pid} = S) ->
    S1 = case S of
             #{epoch := Epoch} -> S#{covered => Covered};
             _ -> S
         end,
    {noreply, reschedule(merge(Rows, Next, S1))};
handle_info({'EXIT', Pid, Reason}, #{firers := F, inflight := I, scanner := Scanner} = S) ->
    case F of
        #{Pid := Keys} ->
            lists:foreach(fun(K) -> ets:delete(I, K) end, Keys),
            S1 = S#{firers => maps:remove(Pid, F)},
            case Reason of
                normal ->
                    {noreply, S1};
                _ ->
                    %% Some of its timers may not have fired: read them all again.
                    ?LOG_ERROR("aion: timer firer exited: ~p", [Reason]),
                    {noreply, full_rescan(S1)}
            end;
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
-spec terminate(term(), state()) -> ok.
terminate(_Reason, #{firers := F, scanner := Scanner}) ->
    Pids = maps:keys(F) ++ [Scanner || is_pid(Scanner)],
    lists:foreach(fun(Pid) -> receive {'EXIT', Pid, _} -> ok end end, Pids).

%%% ===========================================================================
%%% In-memory schedule
%%% ===========================================================================

insert(RunId, TimerId, FireAt, #{armed := A, sched := Q, inflight := I} = S) ->
    Key = {RunId, TimerId},
    case ets:member(I, Key) of
        true ->
            %% Being fired right now; its row decides.
            ok;
        false ->
            remove(RunId, TimerId, S),
            true = ets:insert(A, {Key, FireAt}),
            true = ets:insert(Q, {{FireAt, RunId, TimerId}}),
            ok
    end.

remove(RunId, TimerId, #{armed := A, sched := Q}) ->
    case ets:take(A, {RunId, TimerId}) of
        [{_, FireAt}] -> true = ets:delete(Q, {FireAt, RunId, TimerId}), ok;
        [] -> ok
    end.

%% Points the wake timer at the earliest armed timer.
reschedule(#{wake := queued} = S) ->
    %% A wake message is already on its way.
    S;
reschedule(#{sched := Q, wake := Wake} = S) ->
    case ets:first(Q) of
        '$end_of_table' ->
            cancel_wake(Wake),
            S#{wake => undefined};
        {FireAt, _, _} ->
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

%% Hands one batch of due timers to a firer; when more are due, comes back at once
%% (through its own mailbox, so arms and disarms queued meanwhile go first).
fire_due(S) ->
    case take_due(now_ms(), ?BATCH, [], S) of
        {[], _} ->
            S;
        {Batch, More} ->
            S1 = spawn_batch(lists:reverse(Batch), S),
            case More of
                true -> self() ! wake, S1#{wake => queued};
                false -> S1
            end
    end.

take_due(_Now, 0, Acc, _S) ->
    {Acc, true};
take_due(Now, N, Acc, #{sched := Q, armed := A} = S) ->
    case ets:first(Q) of
        {FireAt, RunId, TimerId} = K when FireAt =< Now ->
            true = ets:delete(Q, K),
            true = ets:delete(A, {RunId, TimerId}),
            take_due(Now, N - 1, [{RunId, TimerId, FireAt} | Acc], S);
        _ ->
            {Acc, false}
    end.

spawn_batch(Batch, #{ctx := Ctx, firers := F, inflight := I} = S) ->
    Pid = spawn_opt(fun() -> fire_batch(Ctx, Batch) end, [link, {priority, high}]),
    Keys = [{R, T} || {R, T, _} <- Batch],
    true = ets:insert(I, [{K, Pid} || K <- Keys]),
    S#{firers => F#{Pid => Keys}}.

split(N, L) ->
    split(N, L, []).

split(0, L, Acc) -> {lists:reverse(Acc), L};
split(_, [], Acc) -> {lists:reverse(Acc), []};
split(N, [X | L], Acc) -> split(N - 1, L, [X | Acc]).

%%% ===========================================================================
%%% Scanning
%%% ===========================================================================

start_scan(#{scanner := P} = S) when is_pid(P) ->
    S#{rescan_due => true};
start_scan(#{ctx := #{store := Store}, horizon := H, limit := Limit, armed := A,
             inflight := I, covered := Covered, epoch := Epoch} = S) ->
    Self = self(),
    {After, FullAt} = case Covered of
                          undefined -> {?BEFORE_ALL, now_ms()};
                          _ -> {Covered, maps:get(full_at, S)}
                      end,
    Pid = spawn_link(fun() ->
                             UpTo = now_ms() + H,
                             {ok, Rows} = aion_store:due_timers(Store, After, UpTo, Limit),
                             Self ! {scan_result, self(), Epoch, new_rows(Rows, A, I),
                                     scan_end(Rows, After, UpTo, Limit)}
                     end),
    S#{scanner => Pid, rescan_due => false, full_at => FullAt}.

%% The next scan reads every row again (a fire failed or a firer died, leaving rows
%% the schedule may not hold; a rescan was asked for). A scan running now was
%% started before: its result does not advance `covered'.
full_rescan(#{epoch := Epoch} = S) ->
    S#{covered => undefined, epoch => Epoch + 1}.

%% The scanned rows not armed or being fired (read in the scanner: the tables are
%% protected, readable by all), so a scan that finds nothing new costs the server
%% nothing. A row armed or fired after this check is checked again by the merge.
new_rows(Rows, A, I) ->
    [R || {RunId, TimerId, _} = R <- Rows,
          not ets:member(A, {RunId, TimerId}), not ets:member(I, {RunId, TimerId})].

%% {Covered, Next}: every row due up to Covered was read (rows come by fire time:
%% a scan cut at its limit covers up to just before its last row's fire time; if
%% all its rows share one fire time, no further than before); Next as for
%% schedule_tick/2.
scan_end(Rows, _After, UpTo, Limit) when length(Rows) < Limit -> {UpTo, false};
scan_end([], After, _UpTo, _Limit) -> {After, true};
scan_end(Rows, After, _UpTo, _Limit) ->
    Last = element(3, lists:last(Rows)),
    {max(After, Last - 1), {full, Last}}.

merge(Rows, Next, #{armed := A, inflight := I} = S0) ->
    S = S0#{scanner => undefined},
    %% Up to `timer_scan_limit' rows (at start): not at high priority (it would hold
    %% a scheduler against every normal process for the whole merge).
    Prio = process_flag(priority, normal),
    lists:foreach(fun({RunId, TimerId, FireAt}) ->
                          Key = {RunId, TimerId},
                          case ets:member(A, Key) orelse ets:member(I, Key) of
                              true -> ok;
                              false -> insert(RunId, TimerId, FireAt, S)
                          end
                  end, Rows),
    _ = process_flag(priority, Prio),
    case S of
        #{rescan_due := true} -> start_scan(S);
        _ -> schedule_tick(S, Next)
    end.

%% The next periodic scan. A scan that came back full (`timer_scan_limit' rows)
%% read the earliest rows by fire time, so no row it left behind is due before the
%% last row it returned: the next scan waits until then (at least 100 ms, at most
%% the rescan interval) instead of re-reading the same rows over and over.
schedule_tick(#{tick := Old, interval := Interval} = S, Full) ->
    _ = Old =:= undefined orelse erlang:cancel_timer(Old),
    Delay = case Full of
                {full, LastFireAt} -> min(Interval, max(100, LastFireAt - now_ms()));
                true -> min(Interval, 100);
                false -> Interval
            end,
    S#{tick => erlang:send_after(Delay, self(), tick)}.

%%% ===========================================================================
%%% Firing (in firer processes)
%%% ===========================================================================

fire_batch(Ctx, Batch) ->
    {Engine, User} = lists:partition(fun({_, <<"$", _/binary>>, _}) -> true;
                                        (_) -> false
                                     end, Batch),
    Procs = [spawn_monitor(fun() -> fire(Ctx, RunId, TimerId) end)
             || {RunId, TimerId, _} <- Engine]
        ++ [spawn_opt(fun() -> fire_group(Ctx, Group) end, [monitor, {priority, high}])
            || Group <- groups(?GROUP, User)],
    lists:foreach(fun({Pid, Mon}) ->
                          receive {'DOWN', Mon, process, Pid, _} -> ok end
                  end, Procs).

groups(_, []) -> [];
groups(N, L) ->
    {G, Rest} = split(N, L),
    [G | groups(N, Rest)].

%% Fires a group of timers in one append (one op per timer, one transaction):
%% cheaper than one append each. The append is all or nothing, so on any refusal
%% (a timer cancelled meanwhile, a run closed) each timer is fired on its own.
fire_group(#{store := Store} = Ctx, [_, _ | _] = Group) ->
    Now = now_ms(),
    Rows = [{RunId, aion_event:encode_row(timer_fired, Now, #{timer_id => TimerId}), TimerId}
            || {RunId, TimerId, _} <- Group],
    Ops = [#{run_id => RunId, events => [Row], timers_take => [TimerId]}
           || {RunId, Row, TimerId} <- Rows],
    case aion_store:append(Store, Ops, #{priority => high}) of
        {ok, Seqs} ->
            lists:foreach(fun({{RunId, {T, At, D}, _}, [Seq]}) ->
                                  aion_deliver:events(Ctx, RunId, [{Seq, T, At, D}])
                          end, lists:zip(Rows, Seqs));
        {error, _} ->
            Procs = [spawn_monitor(fun() -> fire(Ctx, RunId, TimerId) end)
                     || {RunId, TimerId, _} <- Group],
            lists:foreach(fun({Pid, Mon}) ->
                                  receive {'DOWN', Mon, process, Pid, _} -> ok end
                          end, Procs)
    end;
fire_group(Ctx, [{RunId, TimerId, _}]) ->
    fire(Ctx, RunId, TimerId).

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
    case aion_store:append(Store, [Op], #{priority => high}) of
        {ok, [[Seq]]} ->
            aion_deliver:events(Ctx, RunId, [{Seq, Type, At, Data}]);
        {error, {timer_gone, _}} -> ok;
        {error, closed} -> ok;
        {error, {not_found, _}} -> ok;
        {error, Reason} ->
            %% The row stays: the next rescan arms the timer again.
            ?LOG_WARNING("aion: timer ~s of run ~s not fired: ~p", [TimerId, RunId, Reason]),
            gen_server:cast(server(Ctx), fire_failed)
    end.

time_out(Ctx, RunId, Kind) ->
    case aion_lifecycle:time_out(Ctx, RunId, Kind) of
        ok -> ok;
        {error, not_running} -> ok;
        {error, Reason} ->
            ?LOG_WARNING("aion: ~p of run ~s not applied: ~p", [Kind, RunId, Reason]),
            gen_server:cast(server(Ctx), fire_failed)
    end.

now_ms() -> erlang:system_time(millisecond).
