%% @doc A subscription: bill once per period, sleep a durable timer, continue as new.
%%
%% Each run bills one period (an activity with an idempotency key made of the
%% workflow id and the period number, so a retried or re-dispatched attempt never
%% bills twice), then sleeps until the next period with a durable timer (it survives
%% restarts; a timer due while the node was down fires at start) and continues as a
%% new run with the next period number, so the history stays short however long the
%% subscription lives. A `cancel' signal received before the period ends stops it.
%%
%% Input: `customer', `shop' (base URL of the demo shop), `amount', `period_ms'
%% (a "month", default 30 days), `period' (starts at 1), `periods' (stop after this
%% many; 0 = never). Result: `{ok, #{customer, periods => N}}' or
%% `{ok, #{customer, cancelled_at_period => N}}'.
-module(subscription).
-behaviour(aion_workflow).

-export([run/1]).
%% activity
-export([bill/1]).

-define(MONTH, 30 * 24 * 3600 * 1000).

%% @doc One period of the subscription; see the module doc.
-spec run(map()) -> {ok, map()}.
run(#{<<"customer">> := Customer} = In) ->
    Period = maps:get(<<"period">>, In, 1),
    Periods = maps:get(<<"periods">>, In, 0),
    PeriodMs = maps:get(<<"period_ms">>, In, ?MONTH),
    ok = aion_workflow:set_query_handler(<<"period">>, fun(_) -> Period end),
    Bill = maps:with([<<"customer">>, <<"shop">>, <<"amount">>], In),
    {ok, _Receipt} = aion_workflow:execute_activity(
                       {?MODULE, bill}, [Bill#{<<"period">> => Period}],
                       #{start_to_close_timeout => 5000,
                         retry => #{initial_interval => 500, maximum_attempts => 0}}),
    case Periods =/= 0 andalso Period >= Periods of
        true ->
            {ok, #{<<"customer">> => Customer, <<"periods">> => Period}};
        false ->
            %% wait for the next period, unless the customer cancels first
            case aion_workflow:receive_signal(<<"cancel">>, PeriodMs) of
                {ok, _} ->
                    {ok, #{<<"customer">> => Customer, <<"cancelled_at_period">> => Period}};
                {error, timeout} ->
                    aion_workflow:continue_as_new(In#{<<"period">> => Period + 1})
            end
    end.

%% @doc Bills one period through the shop's charge endpoint.
-spec bill(map()) -> {ok, map()} | {error, term()}.
bill(#{<<"customer">> := C, <<"shop">> := Shop, <<"amount">> := A, <<"period">> := P}) ->
    #{workflow_id := Wf} = aion_activity:info(),
    Key = <<Wf/binary, "/period/", (integer_to_binary(P))/binary>>,
    Order = <<C/binary, "/", (integer_to_binary(P))/binary>>,
    case shop_client:call(binary_to_list(Shop), charge,
                          [{key, Key}, {order, Order}, {amount, A}], 4000) of
        {ok, 200, Answer} -> {ok, Answer};
        {ok, 402, _} -> {error, {non_retryable, declined}};
        {ok, Code, _} -> {error, {http, Code}};
        {error, Reason} -> {error, Reason}
    end.
