%% Workflows of the parked-runs suite (aion_park_SUITE) and the parked_1m bench:
%% runs that block for a long time, so their processes get evicted.
-module(aion_park_wf).
-behaviour(aion_workflow).

-export([run/1]).

%% Sleeps, then returns.
run(#{<<"kind">> := <<"sleep">>, <<"ms">> := Ms}) ->
    ok = aion_workflow:sleep(Ms),
    {ok, <<"woke">>};
%% Waits for one "go" signal and returns its payload.
run(#{<<"kind">> := <<"signal">>}) ->
    aion_workflow:set_query_handler(<<"state">>, fun(_) -> waiting end),
    {ok, V} = aion_workflow:receive_signal(<<"go">>),
    {ok, V};
%% One activity, then waits for "go".
run(#{<<"kind">> := <<"activity_then_signal">>}) ->
    {ok, A} = aion_workflow:execute_activity({aion_test_activities, echo}, [7], #{}),
    {ok, V} = aion_workflow:receive_signal(<<"go">>),
    {ok, [A, V]};
%% Waits for a gate activity (released by the test).
run(#{<<"kind">> := <<"gated">>, <<"gate">> := Gate}) ->
    aion_workflow:execute_activity({aion_test_activities, gate}, [Gate], #{});
%% Runs a child that waits for "go", and returns the child's result.
run(#{<<"kind">> := <<"parent">>, <<"child">> := ChildId}) ->
    aion_workflow:execute_child(?MODULE, #{kind => signal}, #{id => ChildId});
%% Counts `N' "inc" signals (the query "count" answers how many so far).
run(#{<<"kind">> := <<"counter">>, <<"n">> := N}) ->
    count(0, N);
%% Blocks on a signal or a timer, whichever the input names (the bench's parked
%% runs); a signal completes it.
run(#{<<"kind">> := <<"parked">>, <<"wait">> := <<"signal">>}) ->
    {ok, V} = aion_workflow:receive_signal(<<"go">>),
    {ok, V};
run(#{<<"kind">> := <<"parked">>, <<"wait">> := <<"timer">>, <<"ms">> := Ms}) ->
    ok = aion_workflow:sleep(Ms),
    {ok, <<"woke">>}.

count(N, N) ->
    {ok, N};
count(I, N) ->
    aion_workflow:set_query_handler(<<"count">>, fun(_) -> I end),
    {ok, _} = aion_workflow:receive_signal(<<"inc">>),
    count(I + 1, N).
