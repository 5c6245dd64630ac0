%% @doc Activity functions used by helper B's suites. Test processes talk to them
%% through a registered "probe" name passed as an argument (a binary, since
%% arguments go through JSON).
-module(aion_b_acts).

-export([echo/1, ok_tuple/1, flaky/3, fail/1, non_retryable/1, raise/0, hang/1,
         heartbeat_then_hang/2, heartbeat_and_report/1, report_info/1, bad_result/0,
         counted/2, wait_release/1, nap/1, where/0,
         start_worker_forever/2]).

probe(P) -> binary_to_atom(P, utf8).

tell(P, Msg) ->
    case whereis(probe(P)) of
        undefined -> ok;
        Pid -> Pid ! Msg, ok
    end.

echo(X) -> X.

ok_tuple(X) -> {ok, X}.

%% Fails (retryably) the first N times for Key, then returns {ok, done}.
flaky(Probe, Key, N) ->
    Tab = aion_b_flaky,
    Count = ets:update_counter(Tab, Key, 1, {Key, 0}),
    tell(Probe, {attempt, Key, Count, self()}),
    case Count =< N of
        true -> {error, {try_again, Count}};
        false -> {ok, <<"done">>}
    end.

fail(Reason) -> {error, binary_to_atom(Reason, utf8)}.

non_retryable(Reason) -> {error, {non_retryable, Reason}}.

raise() -> 1 / zero().
zero() -> 0.

%% Reports its pid and attempt, then hangs.
hang(Probe) ->
    #{attempt := A} = aion_activity:info(),
    tell(Probe, {hanging, A, self()}),
    receive after infinity -> ok end.

%% Heartbeats N times (details = the count), then hangs without heartbeating.
heartbeat_then_hang(Probe, N) ->
    #{attempt := A, heartbeat_details := Prev} = aion_activity:info(),
    tell(Probe, {hb_attempt, A, Prev, self()}),
    lists:foreach(fun(I) -> aion_activity:heartbeat(#{<<"n">> => I, <<"attempt">> => A}) end,
                  lists:seq(1, N)),
    tell(Probe, {hb_done, A}),
    receive after infinity -> ok end.

heartbeat_and_report(Probe) ->
    ok = aion_activity:heartbeat(<<"hb">>),
    tell(Probe, {info, aion_activity:info(), aion_activity:is_cancelled()}),
    <<"ok">>.

report_info(Probe) ->
    tell(Probe, {info, aion_activity:info()}),
    ok.

bad_result() -> {ok, {not_json, self()}}.

%% Counts concurrent executions in an atomics array (index 1: current, 2: max),
%% holding its slot for Ms milliseconds of work.
counted(Probe, Ms) ->
    Ref = persistent_term:get({aion_b_counter, Probe}),
    Cur = atomics:add_get(Ref, 1, 1),
    bump_max(Ref, Cur),
    receive after Ms -> ok end,
    atomics:sub(Ref, 1, 1),
    ok.

bump_max(Ref, Cur) ->
    Max = atomics:get(Ref, 2),
    case Cur > Max of
        true ->
            case atomics:compare_exchange(Ref, 2, Max, Cur) of
                ok -> ok;
                _ -> bump_max(Ref, Cur)
            end;
        false ->
            ok
    end.

%% Tells the probe it started, then waits for {release, Pid}; returns <<"released">>.
wait_release(Probe) ->
    #{activity_id := Id} = aion_activity:info(),
    tell(Probe, {started, Id, self()}),
    receive release -> <<"released">> end.

%% Works for Ms milliseconds.
nap(Ms) ->
    receive after Ms -> ok end,
    <<"napped">>.

%% The node the activity runs on, and its heartbeat reaches the executor.
where() ->
    ok = aion_activity:heartbeat(<<"remote">>),
    #{heartbeat_details := <<"remote">>} = aion_activity:info(),
    atom_to_binary(node()).

%% Starts a worker owned by a process that lives on (for peer:call, whose calling
%% process is temporary). Returns the worker pid.
start_worker_forever(Queue, Acts) ->
    Parent = self(),
    spawn(fun() ->
                  {ok, W} = aion_worker:start_link(#{task_queue => Queue, activities => Acts}),
                  Parent ! {worker, W},
                  receive stop -> ok end
          end),
    receive {worker, W} -> W end.
