%% Example workflow modules used by the core-a suites (one module, several
%% workflow types chosen by the input's "kind").
-module(aion_test_workflows).
-behaviour(aion_workflow).

-export([run/1]).

run(#{<<"kind">> := <<"noop">>}) ->
    {ok, <<"done">>};
run(#{<<"kind">> := <<"echo">>, <<"value">> := V}) ->
    V;
run(#{<<"kind">> := <<"fail">>}) ->
    {error, boom};
run(#{<<"kind">> := <<"crash">>}) ->
    error(kaput);
run(#{<<"kind">> := <<"one_activity">>}) ->
    aion_workflow:execute_activity({aion_test_activities, echo}, [1], #{});
run(#{<<"kind">> := <<"three">>}) ->
    {ok, A} = aion_workflow:execute_activity({aion_test_activities, add}, [1, 2], #{}),
    {ok, B} = aion_workflow:execute_activity({aion_test_activities, add}, [A, 10], #{}),
    {ok, C} = aion_workflow:execute_activity({aion_test_activities, add}, [B, 100], #{}),
    {ok, C};
run(#{<<"kind">> := <<"sleep">>, <<"ms">> := Ms}) ->
    T0 = aion_workflow:now(),
    ok = aion_workflow:sleep(Ms),
    {ok, aion_workflow:now() - T0}.
