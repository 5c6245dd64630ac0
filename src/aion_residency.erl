%% @private
%% @doc Which runs of an engine have a process (SPEC 1 "resident" / "suspended",
%% 2.4 `idle_evict_after', issue 7; design.md section 8).
%%
%% A run is resident while a workflow process is registered for it in the engine's
%% `runs' table, suspended otherwise. A workflow process evicts itself after
%% `idle_evict_after' ms blocked (`aion_run'); this server brings suspended runs
%% back and keeps the number of resident runs bounded:
%% <ul>
%% <li>Rehydration: `aion_deliver' asks for it (a cast, so no appender ever waits)
%%     when it commits an event for a run without a process. Requests are queued,
%%     deduplicated, and started through `aion_run_sup' at most
%%     `max_rehydrations' at a time: a rehydrating process counts until it reaches
%%     its first blocking wait (it replayed its history) or exits, so a herd of timers
%%     firing for parked runs cannot make thousands of processes replay at once.
%%     Concurrent arrivals start one process: registration is `ets:insert_new'.</li>
%% <li>`max_resident': when registrations push the count of resident runs over it,
%%     the longest-idle blocked processes (the engine's `idle' table, ordered by the
%%     time they blocked) are asked to evict themselves. Runs that are busy are
%%     never evicted, so the bound is soft while more than `max_resident' runs are
%%     working at once.</li>
%% </ul>
%% Requests that arrive while the engine is still starting are held until the
%% recovery worker reports {@link ready/1} (the workflow supervisor exists).
-module(aion_residency).
-behaviour(gen_server).

-export([start_link/1, rehydrate/2, over_limit/1, ready/1, settled/1, stayed/1, stats/1]).
-export([init/1, handle_call/3, handle_cast/2, handle_info/2]).

-define(DEFAULT_MAX_REHYDRATIONS, 64).

%% @doc Starts the residency server of engine `Engine' (registered as
%% `aion_ctx:proc_name(Engine, residency)'). Engine options read:
%% `max_rehydrations' (pos_integer, default 64), `max_resident'.
-spec start_link(atom()) -> {ok, pid()} | {error, term()}.
start_link(Engine) ->
    gen_server:start_link({local, aion_ctx:proc_name(Engine, residency)}, ?MODULE, Engine,
                          []).

%% @doc Asks for a process for `RunId', which has a committed event and no
%% resident process. Returns at once; a run that is closed by the time its turn
%% comes gets a process that exits at once.
-spec rehydrate(aion_ctx:ctx(), binary()) -> ok.
rehydrate(Ctx, RunId) when is_binary(RunId) ->
    gen_server:cast(server(Ctx), {rehydrate, RunId}).

%% @doc Tells the server that the number of resident runs may exceed
%% `max_resident' (called by a registering workflow process). Returns at once.
-spec over_limit(aion_ctx:ctx()) -> ok.
over_limit(Ctx) ->
    gen_server:cast(server(Ctx), over_limit).

%% @doc Called once by the recovery worker when the workflow supervisor runs:
%% held rehydration requests start.
-spec ready(aion_ctx:ctx()) -> ok.
ready(Ctx) ->
    gen_server:cast(server(Ctx), ready).

%% @doc Called by a rehydrated workflow process when it first blocks (its replay is
%% done): it no longer counts against `max_rehydrations'. `Notify' is the pid it
%% was given at start.
-spec settled(pid()) -> ok.
settled(Notify) when is_pid(Notify) ->
    Notify ! {'$aion_settled', self()},
    ok.

%% @doc Called by a workflow process that was asked to evict itself but stays
%% (an event came while it was leaving): it no longer counts as leaving, and the
%% count against `max_resident' is made again.
-spec stayed(aion_ctx:ctx()) -> ok.
stayed(Ctx) ->
    gen_server:cast(server(Ctx), {stayed, self()}).

%% @doc Diagnostic counters: `#{queued, rehydrating, rehydrated, resident}'.
-spec stats(aion_ctx:ctx()) -> #{atom() => non_neg_integer()}.
stats(#{runs := Runs} = Ctx) ->
    (gen_server:call(server(Ctx), stats, infinity))#{resident => ets:info(Runs, size)}.

server(#{name := Name}) -> aion_ctx:proc_name(Name, residency).

%%% ===========================================================================
%%% gen_server
%%% ===========================================================================

%% @private
-spec init(atom()) -> {ok, map()}.
init(Engine) ->
    #{opts := Opts} = aion_ctx:get(Engine),
    {ok, #{engine => Engine, ready => false,
           limit => maps:get(max_rehydrations, Opts, ?DEFAULT_MAX_REHYDRATIONS),
           queue => queue:new(), queued => #{}, active => #{}, evicting => #{},
           done => 0}}.

%% @private
-spec handle_call(term(), gen_server:from(), map()) -> {reply, term(), map()}.
handle_call(stats, _From, #{queued := Q, active := A, done := D} = S) ->
    {reply, #{queued => map_size(Q), rehydrating => map_size(A), rehydrated => D}, S};
handle_call(_Req, _From, S) ->
    {reply, {error, unknown_call}, S}.

%% @private
-spec handle_cast(term(), map()) -> {noreply, map()}.
handle_cast({rehydrate, RunId}, #{queue := Q, queued := Qd} = S) ->
    case is_map_key(RunId, Qd) of
        true -> {noreply, S};
        false -> {noreply, pump(S#{queue := queue:in(RunId, Q), queued := Qd#{RunId => []}})}
    end;
handle_cast(ready, S) ->
    {noreply, pump(S#{ready := true})};
handle_cast(over_limit, #{engine := Engine} = S) ->
    {noreply, evict_idle(aion_ctx:get(Engine), S)};
handle_cast({stayed, Pid}, S) ->
    {noreply, not_leaving(Pid, S)};
handle_cast(_Msg, S) ->
    {noreply, S}.

%% @private
-spec handle_info(term(), map()) -> {noreply, map()}.
handle_info({'$aion_settled', Pid}, #{active := A} = S) ->
    case maps:take(Pid, A) of
        {MRef, A1} ->
            erlang:demonitor(MRef, [flush]),
            {noreply, pump(S#{active := A1})};
        error ->
            {noreply, S}
    end;
handle_info({'DOWN', _MRef, process, Pid, _}, #{active := A} = S) ->
    {noreply, not_leaving(Pid, pump(S#{active := maps:remove(Pid, A)}))};
handle_info(_Msg, S) ->
    {noreply, S}.

%%% ===========================================================================
%%% Internals
%%% ===========================================================================

pump(#{ready := false} = S) ->
    S;
pump(#{limit := Limit, active := A} = S) when map_size(A) >= Limit ->
    S;
pump(#{engine := Engine, queue := Q, queued := Qd, active := A, done := D} = S) ->
    case queue:out(Q) of
        {empty, _} ->
            S;
        {{value, RunId}, Q1} ->
            S1 = S#{queue := Q1, queued := maps:remove(RunId, Qd)},
            Ctx = aion_ctx:get(Engine),
            case aion_run:whereis(Ctx, RunId) of
                undefined ->
                    case catch aion_run_sup:start_run(Ctx, RunId, self()) of
                        {ok, Pid} ->
                            MRef = erlang:monitor(process, Pid),
                            pump(S1#{active := A#{Pid => MRef}, done := D + 1});
                        _ ->
                            %% Resident meanwhile (it gets the event), or the engine
                            %% is stopping.
                            pump(S1)
                    end;
                _ ->
                    pump(S1)
            end
    end.

%% A process asked to evict itself is gone, or stayed: it no longer counts as
%% leaving, so count again (registrations that came while it was counted may have
%% left the engine over the limit).
not_leaving(Pid, #{engine := Engine, evicting := E} = S) ->
    case maps:take(Pid, E) of
        {MRef, E1} ->
            erlang:demonitor(MRef, [flush]),
            evict_idle(aion_ctx:get(Engine), S#{evicting := E1});
        error ->
            S
    end.

%% Asks the longest-idle blocked processes to evict themselves until the count of
%% resident runs (less those already asked and not yet gone) is back under
%% `max_resident'.
evict_idle(#{opts := #{max_resident := Max}, runs := Runs, idle := Idle},
           #{evicting := E} = S) when is_integer(Max) ->
    Over = ets:info(Runs, size) - Max - map_size(E),
    S#{evicting := evict_oldest(Idle, ets:first(Idle), Over, E)};
evict_idle(_Ctx, S) ->
    S.

evict_oldest(_Idle, _Key, N, E) when N =< 0 ->
    E;
evict_oldest(_Idle, '$end_of_table', _N, E) ->
    E;
evict_oldest(Idle, {_, Pid} = Key, N, E) ->
    Next = ets:next(Idle, Key),
    ets:delete(Idle, Key),
    case is_map_key(Pid, E) of
        true ->
            evict_oldest(Idle, Next, N, E);
        false ->
            Pid ! '$aion_evict',
            evict_oldest(Idle, Next, N - 1, E#{Pid => erlang:monitor(process, Pid)})
    end.
