%% Workflows used by aion_b_e2e_SUITE. The input selects what to do.
-module(aion_b_wf).
-behaviour(aion_workflow).
-export([run/1]).

run(#{<<"do">> := <<"activity">>, <<"name">> := [M, F], <<"args">> := Args} = In) ->
    Opts = opts(maps:get(<<"opts">>, In, #{})),
    aion_workflow:execute_activity({binary_to_atom(M), binary_to_atom(F)}, Args, Opts);
run(#{<<"do">> := <<"named">>, <<"name">> := Name, <<"queue">> := Q, <<"args">> := Args}) ->
    aion_workflow:execute_activity(Name, Args, #{task_queue => Q});
run(#{<<"do">> := <<"named_opts">>, <<"name">> := Name, <<"queue">> := Q, <<"args">> := Args,
       <<"opts">> := Opts}) ->
    aion_workflow:execute_activity(Name, Args, (opts(Opts))#{task_queue => Q});
run(#{<<"do">> := <<"sleep_then_named">>, <<"ms">> := Ms, <<"name">> := Name,
       <<"queue">> := Q, <<"args">> := Args}) ->
    ok = aion_workflow:sleep(Ms),
    aion_workflow:execute_activity(Name, Args, #{task_queue => Q});
run(#{<<"do">> := <<"cancel_timer">>}) ->
    T1 = aion_workflow:start_timer(300),
    ok = aion_workflow:cancel(T1),
    {error, cancelled} = aion_workflow:await(T1),
    ok = aion_workflow:sleep(700),
    {ok, <<"slept">>};
run(#{<<"do">> := <<"fanout">>, <<"n">> := N}) ->
    Fs = [aion_workflow:start_activity({aion_b_acts, nap}, [(I * 7) rem 40], #{})
          || I <- lists:seq(1, N)],
    aion_workflow:wait_all(Fs);
run(#{<<"do">> := <<"busy">>}) ->
    busy(0);
run(#{<<"do">> := <<"sleep">>, <<"ms">> := Ms}) ->
    ok = aion_workflow:sleep(Ms),
    {ok, <<"woke">>};
run(#{<<"do">> := <<"sleep_then_activity">>, <<"ms">> := Ms, <<"probe">> := P}) ->
    ok = aion_workflow:sleep(Ms),
    aion_workflow:execute_activity({aion_b_acts, wait_release}, [P], #{}).

%% Options arrive as JSON (binary keys); aion_retry accepts that form too, but keep
%% the workflow-side call in the documented atom-key form.
opts(M) ->
    maps:fold(fun(<<"retry">>, V, Acc) -> Acc#{retry => opts(V)};
                 (<<"non_retryable_errors">>, V, Acc) ->
                      Acc#{non_retryable_errors => [binary_to_atom(E) || E <- V]};
                 (K, V, Acc) -> Acc#{binary_to_atom(K) => V}
              end, #{}, M).

%% Records side effects without pause.
busy(N) ->
    _ = aion_workflow:side_effect(fun() -> N end),
    busy(N + 1).
