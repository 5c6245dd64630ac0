%% Workflows of aion_sigq_SUITE (signals, queries, cancellation, deadlines,
%% patches, search attributes), chosen by the input's "kind".
-module(aion_sigq_wf).
-behaviour(aion_workflow).

-export([run/1]).

-define(ACT(F), {aion_test_activities, F}).
-define(W, aion_workflow).

run(#{<<"kind">> := <<"approval">>, <<"timeout">> := T}) ->
    ok = ?W:set_query_handler(<<"stage">>, fun(_) -> <<"awaiting_approval">> end),
    case ?W:receive_signal(<<"approve">>, T) of
        {ok, P} -> {ok, P};
        {error, timeout} -> {ok, <<"timeout">>}
    end;
run(#{<<"kind">> := <<"buffered">>}) ->
    {ok, _} = ?W:receive_signal(<<"go">>),
    R = ?W:receive_signal(<<"x">>, 86400000),
    {ok, out(R)};
run(#{<<"kind">> := <<"fifo">>, <<"n">> := N}) ->
    {ok, _} = ?W:receive_signal(<<"go">>),
    Got = [begin {ok, P} = ?W:receive_signal(<<"n">>), P end || _ <- lists:seq(1, N)],
    {ok, Other} = ?W:receive_signal(<<"other">>, 0),
    {ok, [Got, Other]};
run(#{<<"kind">> := <<"drain">>, <<"n">> := N}) ->
    ok = ?W:set_query_handler(<<"count">>, fun(_) -> 0 end),
    {ok, _} = ?W:receive_signal(<<"go">>),
    drain(N, 0);
run(#{<<"kind">> := <<"queries">>, <<"ms">> := Ms, <<"gate">> := Gate}) ->
    ok = ?W:set_query_handler(<<"stage">>, fun(_) -> <<"sleeping">> end),
    ok = ?W:set_query_handler(<<"echo">>, fun(A) -> A end),
    ok = ?W:set_query_handler(<<"boom">>, fun(_) -> error(boom) end),
    ok = ?W:set_query_handler(<<"record">>, fun(_) -> ?W:sleep(1) end),
    ok = ?W:set_query_handler(<<"signal">>, fun(_) -> ?W:receive_signal(<<"x">>, 0) end),
    ok = ?W:sleep(Ms),
    ok = ?W:set_query_handler(<<"stage">>, fun(_) -> <<"in_activity">> end),
    {ok, R} = ?W:execute_activity(?ACT(gate), [Gate], #{}),
    {ok, R};
run(#{<<"kind">> := <<"replayed">>, <<"gate">> := Gate}) ->
    ok = ?W:set_query_handler(<<"stage">>, fun(_) -> <<"start">> end),
    {ok, X} = ?W:execute_activity(?ACT(echo), [<<"one">>], #{}),
    ok = ?W:set_query_handler(<<"stage">>, fun(_) -> [<<"after">>, X] end),
    {ok, Y} = ?W:execute_activity(?ACT(gate), [Gate], #{}),
    {ok, [X, Y]};
run(#{<<"kind">> := <<"busy">>, <<"ms">> := Ms}) ->
    ok = ?W:set_query_handler(<<"stage">>, fun(_) -> <<"busy">> end),
    {ok, _} = ?W:receive_signal(<<"go">>),
    tell({busy, self()}),
    timer:sleep(Ms),                 % plain code: no yield point, queries wait
    {ok, _} = ?W:receive_signal(<<"end">>),
    {ok, <<"done">>};
run(#{<<"kind">> := <<"bad_calls">>}) ->
    Errors = [raised(F) || F <- [fun() -> ?W:upsert_search_attributes(#{a => self()}) end,
                                 fun() -> ?W:upsert_search_attributes([1]) end,
                                 fun() -> ?W:send_signal(<<"x">>, <<"n">>, {1}) end,
                                 fun() -> ?W:send_signal(x, <<"n">>, 1) end,
                                 fun() -> ?W:receive_signal(42) end,
                                 fun() -> ?W:receive_signal(<<"n">>, -1) end,
                                 fun() -> ?W:with_timeout(-1, fun() -> ok end) end,
                                 fun() -> ?W:patched(7) end]],
    {ok, Errors};
run(#{<<"kind">> := <<"quick">>}) ->
    ok = ?W:set_query_handler(<<"stage">>, fun(_) -> <<"quick">> end),
    {ok, _} = ?W:execute_activity(?ACT(echo), [1], #{}),
    {ok, <<"done">>};
run(#{<<"kind">> := <<"saga">>, <<"wait">> := Wait} = In) ->
    ok = ?W:set_query_handler(<<"stage">>, fun(_) -> <<"reserving">> end),
    {ok, _} = ?W:execute_activity(?ACT(echo), [<<"reserve">>], #{}),
    ok = ?W:set_query_handler(<<"stage">>, fun(_) -> <<"waiting">> end),
    Step = case Wait of
               <<"signal">> -> ?W:receive_signal(<<"approve">>, 86400000);
               <<"activity">> -> ?W:execute_activity(?ACT(gate), [maps:get(<<"gate">>, In)], #{})
           end,
    case Step of
        {ok, _} ->
            {ok, <<"approved">>};
        {error, {cancelled, Why}} ->
            Seen = ?W:is_cancel_requested(),
            ok = ?W:set_query_handler(<<"stage">>, fun(_) -> <<"compensating">> end),
            Undone = ?W:non_cancellable(
                       fun() ->
                               {ok, A} = ?W:execute_activity(?ACT(echo), [<<"refund">>], #{}),
                               ok = ?W:sleep(10),
                               {ok, B} = ?W:execute_activity(?ACT(echo), [<<"release">>], #{}),
                               [A, B]
                       end),
            %% outside non_cancellable, blocking primitives return at once
            {error, {cancelled, _}} = ?W:sleep(3600000),
            {error, #{<<"undone">> => Undone, <<"seen">> => Seen, <<"why">> => Why}}
    end;
run(#{<<"kind">> := <<"deadline">>, <<"ms">> := Ms}) ->
    R = ?W:with_timeout(Ms, fun() -> ?W:receive_signal(<<"s">>) end),
    Out = case R of
              {ok, {ok, P}} -> [<<"signal">>, P];
              {error, timeout} -> [<<"timeout">>]
          end,
    #{workflow_id := Wid} = ?W:info(),
    tell({decided, Wid, Out}),
    {ok, _} = ?W:receive_signal(<<"end">>),
    {ok, Out};
run(#{<<"kind">> := <<"nested_deadline">>}) ->
    %% the outer deadline (50 ms) fires inside the inner scope (1 h)
    Outer = ?W:with_timeout(50, fun() ->
                                        ?W:with_timeout(3600000, fun() -> ?W:sleep(3600000) end)
                                end),
    %% a scope that ends in time cancels its deadline timer
    Quick = ?W:with_timeout(3600000, fun() -> ?W:sleep(10), fine end),
    %% a receive with its own (longer) timeout inside a deadline
    Recv = ?W:with_timeout(30, fun() -> ?W:receive_signal(<<"never">>, 3600000) end),
    {ok, [out(Outer), out(Quick), out(Recv)]};
run(#{<<"kind">> := <<"patch">>, <<"gate">> := Gate}) ->
    V = case persistent_term:get({aion_test, patch}, old) of
            old ->
                {ok, X} = ?W:execute_activity(?ACT(echo), [<<"old">>], #{}),
                X;
            new ->
                case ?W:patched(<<"use-echo2">>) of
                    true ->
                        {ok, X} = ?W:execute_activity(?ACT(echo2), [<<"new">>], #{}),
                        X;
                    false ->
                        {ok, X} = ?W:execute_activity(?ACT(echo), [<<"old">>], #{}),
                        X
                end;
            deprecated ->
                ok = ?W:deprecate_patch(<<"use-echo2">>),
                {ok, X} = ?W:execute_activity(?ACT(echo2), [<<"new">>], #{}),
                X
        end,
    {ok, Y} = ?W:execute_activity(?ACT(gate), [Gate], #{}),
    {ok, [V, Y]};
run(#{<<"kind">> := <<"search">>, <<"attrs">> := A}) ->
    ok = ?W:upsert_search_attributes(A),
    ok = ?W:upsert_search_attributes(#{<<"stage">> => <<"upserted">>}),
    {ok, _} = ?W:receive_signal(<<"end">>),
    {ok, <<"done">>};
run(#{<<"kind">> := <<"sender">>, <<"target">> := T}) ->
    R1 = ?W:send_signal(T, <<"approve">>, #{<<"from">> => <<"sender">>}),
    R2 = ?W:send_signal(<<"no-such-workflow">>, <<"x">>, 1),
    #{workflow_id := Wid} = ?W:info(),
    tell({sent, Wid}),
    {ok, _} = ?W:receive_signal(<<"end">>),
    {ok, [out(R1), out(R2)]}.

drain(0, Sum) ->
    {ok, Sum};
drain(N, Sum) ->
    {ok, P} = ?W:receive_signal(<<"item">>),
    drain(N - 1, Sum + P).

raised(F) ->
    try F() of
        V -> [<<"returned">>, out(V)]
    catch
        error:{invalid_payload, _, _} -> <<"invalid_payload">>;
        error:badarg -> <<"badarg">>
    end.

tell(Msg) ->
    case whereis(aion_test_sink) of
        undefined -> ok;
        Pid -> Pid ! Msg, ok
    end.

out(ok) -> <<"ok">>;
out({ok, V}) -> [<<"ok">>, out(V)];
out({error, {K, _}}) -> [<<"error">>, K];
out({error, K}) -> [<<"error">>, K];
out(V) when is_atom(V) -> atom_to_binary(V);
out(V) -> V.
