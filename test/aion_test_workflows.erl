%% Example workflows used by the core suites. One module, several workflows,
%% chosen by the input's "kind".
-module(aion_test_workflows).
-behaviour(aion_workflow).

-export([run/1]).

-define(ACT(F), {aion_test_activities, F}).

run(#{<<"kind">> := <<"noop">>}) ->
    {ok, <<"done">>};
run(#{<<"kind">> := <<"echo">>, <<"value">> := V}) ->
    V;
run(#{<<"kind">> := <<"fail">>}) ->
    {error, boom};
run(#{<<"kind">> := <<"crash">>}) ->
    error(kaput);
run(#{<<"kind">> := <<"bad_result">>}) ->
    {ok, {not_json}};
run(#{<<"kind">> := <<"garbage">>, <<"n">> := N}) ->
    %% Tells the test its pid, then leaves ~2N words of garbage on its heap.
    aion_test_sink ! {garbage_wf, self()},
    {ok, length(lists:seq(1, N))};
run(#{<<"kind">> := <<"priority">>}) ->
    %% Tells the test its pid, waits for the signal `go', then tells the test the
    %% priority its code runs at once woken.
    aion_test_sink ! {priority_wf, self()},
    {ok, _} = aion_workflow:receive_signal(<<"go">>),
    aion_test_sink ! {woken, erlang:process_info(self(), priority)},
    {ok, woken};
run(#{<<"kind">> := <<"one_activity">>}) ->
    aion_workflow:execute_activity(?ACT(echo), [1], #{});
run(#{<<"kind">> := <<"three">>}) ->
    {ok, A} = aion_workflow:execute_activity(?ACT(add), [1, 2], #{}),
    {ok, B} = aion_workflow:execute_activity(?ACT(add), [A, 10], #{}),
    {ok, C} = aion_workflow:execute_activity(?ACT(add), [B, 100], #{}),
    {ok, C};
run(#{<<"kind">> := <<"sleep">>, <<"ms">> := Ms}) ->
    T0 = aion_workflow:now(),
    ok = aion_workflow:sleep(Ms),
    {ok, aion_workflow:now() - T0};
run(#{<<"kind">> := <<"race_timer_loses">>}) ->
    T = aion_workflow:start_timer(3600000),
    A = aion_workflow:start_activity(?ACT(echo), [<<"fast">>], #{}),
    {Pos, Out} = aion_workflow:wait_any([T, A]),
    ok = aion_workflow:cancel(T),
    {ok, [Pos, out(Out)]};
run(#{<<"kind">> := <<"race_timer_wins">>, <<"gate">> := Gate}) ->
    T = aion_workflow:start_timer(20),
    A = aion_workflow:start_activity(?ACT(gate), [Gate], #{}),
    {Pos, Out} = aion_workflow:wait_any([T, A]),
    {ok, Later} = aion_workflow:await(A),
    {ok, [Pos, out(Out), Later]};
run(#{<<"kind">> := <<"cancel_timer">>}) ->
    T = aion_workflow:start_timer(100),
    ok = aion_workflow:cancel(T),
    Cancelled = aion_workflow:await(T),
    ok = aion_workflow:sleep(300),
    {ok, out(Cancelled)};
run(#{<<"kind">> := <<"parallel">>, <<"n">> := N}) ->
    Fs = [aion_workflow:start_activity(?ACT(add), [I, I], #{}) || I <- lists:seq(1, N)],
    aion_workflow:wait_all(Fs);
run(#{<<"kind">> := <<"wait_all_fails">>}) ->
    Ok = aion_workflow:start_activity(?ACT(echo), [1], #{}),
    Bad = aion_workflow:start_activity(?ACT(fail), [<<"nope">>], #{}),
    Hang = aion_workflow:start_activity(?ACT(hang), [], #{}),
    R = aion_workflow:wait_all([Ok, Bad, Hang]),
    {ok, [out(R), out(aion_workflow:await(Hang))]};
run(#{<<"kind">> := <<"determinism">>, <<"gate">> := Gate}) ->
    V = [aion_workflow:now(), aion_workflow:random(), aion_workflow:uniform(1000000),
         aion_workflow:uuid(),
         aion_workflow:side_effect(fun() -> rand:uniform(1000000000) end)],
    {ok, _} = aion_workflow:execute_activity(?ACT(report), [<<"values">>, V], #{}),
    {ok, _} = aion_workflow:execute_activity(?ACT(gate), [Gate], #{}),
    V2 = [aion_workflow:now(), aion_workflow:random(), aion_workflow:uuid()],
    {ok, #{<<"before">> => V, <<"after">> => V2}};
run(#{<<"kind">> := <<"switch">>, <<"gate">> := Gate}) ->
    Act = case persistent_term:get({aion_test, switch}, original) of
              original -> ?ACT(echo);
              changed -> ?ACT(echo2)
          end,
    {ok, X} = aion_workflow:execute_activity(Act, [<<"x">>], #{}),
    {ok, Y} = aion_workflow:execute_activity(?ACT(gate), [Gate], #{}),
    {ok, [X, Y]};
run(#{<<"kind">> := <<"lines">>, <<"file">> := File, <<"n">> := N, <<"hang">> := Hang}) ->
    Out = [begin
               {ok, R} = aion_workflow:execute_activity(?ACT(line), [File, I, Hang], #{}),
               R
           end || I <- lists:seq(1, N)],
    {ok, Out};
run(#{<<"kind">> := <<"marked_sleep">>, <<"file">> := File, <<"ms">> := Ms}) ->
    {ok, _} = aion_workflow:execute_activity(?ACT(line), [File, 0, -1], #{}),
    ok = aion_workflow:sleep(Ms),
    {ok, <<"woke">>};
run(#{<<"kind">> := <<"cancellable">>}) ->
    Slept = aion_workflow:sleep(60000),
    Seen = aion_workflow:is_cancel_requested(),
    After = aion_workflow:sleep(1),
    {ok, _} = aion_workflow:non_cancellable(
                fun() ->
                        aion_workflow:execute_activity(
                          ?ACT(report), [<<"cancel">>, [out(Slept), Seen, out(After)]], #{})
                end),
    {ok, <<"cleaned up">>};
run(#{<<"kind">> := <<"info">>}) ->
    I = aion_workflow:info(),
    {ok, maps:with([workflow_id, run_id, attempt, cancel_requested], I)}.

out({ok, V}) -> [<<"ok">>, V];
out(ok) -> <<"ok">>;
out({error, {K, V}}) -> [<<"error">>, K, term_text(V)];
out({error, K}) -> [<<"error">>, K].

term_text(V) when is_binary(V); is_integer(V) -> V;
term_text(V) -> iolist_to_binary(io_lib:format("~p", [V])).
