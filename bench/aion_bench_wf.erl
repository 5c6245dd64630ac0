%% @doc Benchmark workflows and activities (bench only, never in `src/').
%%
%% One workflow type, chosen by the input's `kind'. Workflows that the harness
%% must observe send a message to the registered process `aion_bench_collector'
%% (a side channel outside the recorded history: fine for measuring, never do it
%% in real workflow code).
-module(aion_bench_wf).
-behaviour(aion_workflow).

-export([run/1, noop/0, noop/1]).

-define(COLLECTOR, aion_bench_collector).

%% @doc The workflows:
%% <ul>
%% <li>`hello': one no-op activity.</li>
%% <li>`steps3': three sequential no-op activities.</li>
%% <li>`replay_n' (`n'): `n' sequential no-op activities, then tells the collector
%% `{replayed, RunId, MonotonicUs}' and returns.</li>
%% <li>`park': starts a 1 h timer, tells the collector `{parked, RunId}', awaits it.</li>
%% <li>`park_signal': tells the collector `{parked, RunId}', then blocks in
%% `receive_signal(<<"wake">>)' (records nothing while it waits).</li>
%% <li>`sleeper' (`base', `ms'): sleeps until `base + ms' (ms since the epoch; at
%% least 0 ms), tells the collector `{sleeping, RunId}' once the timer is
%% recorded and `{fired, FireAt, NowMs}' when it wakes.</li>
%% <li>`pingpong': signal loop for signal_roundtrip (needs `receive_signal').</li>
%% <li>`drain' (`n'): waits for `go', then consumes `n' `item' signals and tells
%% the collector `{drained, RunId, StartUs, EndUs}'.</li>
%% </ul>
-spec run(map()) -> term().
run(#{<<"kind">> := <<"hello">>}) ->
    {ok, _} = aion_workflow:execute_activity({?MODULE, noop}, [], #{}),
    {ok, <<"hello">>};
run(#{<<"kind">> := <<"steps3">>}) ->
    {ok, _} = aion_workflow:execute_activity({?MODULE, noop}, [], #{}),
    {ok, _} = aion_workflow:execute_activity({?MODULE, noop}, [], #{}),
    {ok, _} = aion_workflow:execute_activity({?MODULE, noop}, [], #{}),
    {ok, 3};
run(#{<<"kind">> := <<"replay_n">>, <<"n">> := N}) ->
    lists:foreach(fun(_) -> {ok, _} = aion_workflow:execute_activity({?MODULE, noop}, [], #{})
                  end, lists:seq(1, N)),
    #{run_id := RunId} = aion_workflow:info(),
    tell({replayed, RunId, erlang:monotonic_time(microsecond)}),
    {ok, N};
run(#{<<"kind">> := <<"park">>}) ->
    T = aion_workflow:start_timer(3600000),
    #{run_id := RunId} = aion_workflow:info(),
    tell({parked, RunId}),
    ok = aion_workflow:await(T),
    {ok, parked};
run(#{<<"kind">> := <<"park_signal">>}) ->
    #{run_id := RunId} = aion_workflow:info(),
    tell({parked, RunId}),
    {ok, _} = aion_workflow:receive_signal(<<"wake">>),
    {ok, woken};
run(#{<<"kind">> := <<"sleeper">>, <<"base">> := Base, <<"ms">> := Ms}) ->
    %% now() is the recorded_at of workflow_started: deterministic. The timer's
    %% fire_at is recorded_at(timer_started) + Wait; the wall clock read just
    %% before start_timer is at most that recorded_at (no I/O in between), so
    %% FireAt below is the recorded fire_at to well within 1 ms.
    Wait = max(0, Base - aion_workflow:now()) + Ms,
    FireAt = erlang:system_time(millisecond) + Wait,
    T = aion_workflow:start_timer(Wait),
    #{run_id := RunId} = aion_workflow:info(),
    tell({sleeping, RunId}),
    ok = aion_workflow:await(T),
    tell({fired, FireAt, erlang:system_time(millisecond)}),
    {ok, fired};
run(#{<<"kind">> := <<"pingpong">>}) ->
    pingpong(0);
run(#{<<"kind">> := <<"drain">>, <<"n">> := N}) ->
    {ok, _} = aion_workflow:receive_signal(<<"go">>),
    T0 = erlang:monotonic_time(microsecond),
    N = drain(N, 0),
    #{run_id := RunId} = aion_workflow:info(),
    tell({drained, RunId, T0, erlang:monotonic_time(microsecond)}),
    {ok, N}.

drain(0, Sum) ->
    Sum;
drain(N, Sum) ->
    {ok, P} = aion_workflow:receive_signal(<<"item">>),
    drain(N - 1, Sum + P).

pingpong(Last) ->
    ok = aion_workflow:set_query_handler(<<"last">>, fun(_) -> Last end),
    case aion_workflow:receive_signal(<<"ping">>) of
        {ok, <<"stop">>} -> {ok, Last};
        {ok, N} -> pingpong(N)
    end.

tell(Msg) ->
    case whereis(?COLLECTOR) of
        undefined -> ok;
        Pid -> Pid ! Msg, ok
    end.

%% @doc The no-op activity.
-spec noop() -> {ok, null}.
noop() -> {ok, null}.

%% @doc The no-op activity with one (ignored) argument.
-spec noop(term()) -> {ok, null}.
noop(_) -> {ok, null}.
