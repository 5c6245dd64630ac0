%% @doc The order saga: the demo's workflow, one run per order.
%%
%% reserve stock -> charge -> wait for an `approve' signal (up to `approval_timeout'
%% ms) -> ship. On a rejection, an approval timeout, a final activity failure or a
%% cancellation, the steps already done are compensated in reverse (refund, then
%% release) inside `aion_workflow:non_cancellable/1', so compensation runs to the end
%% even when the workflow was cancelled.
%%
%% Cancellation (`aion:cancel/2'): a step in flight is not interrupted (each step runs
%% inside `non_cancellable/1', so its outcome is known and exactly the steps done are
%% compensated); the saga checks `is_cancel_requested/0' before each step and the
%% approval wait returns `{error, {cancelled, _}}'. Either way it compensates and the
%% run ends `cancelled'. A cancel that arrives while the order is being shipped is
%% too late to undo it (the run still ends `cancelled', with the order shipped).
%%
%% Every step is an activity that calls the shop service (`shop_server') over HTTP
%% with `shop_client'; its idempotency key is the workflow id plus the activity id, so
%% a retried attempt, or an attempt re-dispatched after a crash, can never charge,
%% refund, reserve or release twice. Transient failures (HTTP 503, timeouts, refused
%% connections) are retried; business refusals (out of stock, declined, 4xx) are final.
%%
%% Input (a JSON object): `order_id', `shop' (base URL), `sku', `qty', `amount',
%% `approval' (`"signal"' (default): wait for the `approve' signal; `"auto"': no wait,
%% for engines without signals), `approval_timeout' (ms, default 5000).
%% The `approve' signal's payload is `{"approved": true}' or
%% `{"approved": false, "reason": ...}'.
%%
%% Result: `{ok, #{order_id, status => shipped, charge, tracking}}' (run `completed')
%% or `{error, #{order_id, status => compensated, reason, compensated => [Step]}}'
%% (run `failed'; `cancelled' when the run was cancelled). The query `status' answers
%% the current stage: reserving, charging, awaiting_approval, shipping, compensating,
%% shipped, compensated.
-module(order_saga).
-behaviour(aion_workflow).

-export([run/1, options/0]).
%% activities
-export([reserve/1, charge/1, ship/1, refund/1, release/1]).

-define(STEP_OPTS, #{start_to_close_timeout => 2000,
                     retry => #{initial_interval => 200, backoff_coefficient => 2.0,
                                maximum_interval => 2000, maximum_attempts => 8}}).
%% Compensation must not give up: unlimited attempts.
-define(COMPENSATE_OPTS, #{start_to_close_timeout => 2000,
                           retry => #{initial_interval => 200, backoff_coefficient => 2.0,
                                      maximum_interval => 2000, maximum_attempts => 0}}).
%% The HTTP request must give up before the attempt is killed.
-define(HTTP_TIMEOUT, 1500).

%% @doc Defaults for the type (none beyond the engine's).
-spec options() -> map().
options() -> #{}.

%% @doc Runs one order; see the module doc for input and result.
-spec run(map()) -> {ok, map()} | {error, map()}.
run(#{<<"order_id">> := Id} = Order) ->
    stage(<<"reserving">>),
    case step(reserve, Order) of
        {ok, #{<<"reservation">> := Res}} ->
            stage(<<"charging">>),
            case step(charge, Order) of
                {ok, #{<<"charge">> := Charge}} ->
                    Done = [{refund, Charge}, {release, Res}],
                    case approval(Order) of
                        approved ->
                            stage(<<"shipping">>),
                            case step(ship, Order#{<<"reservation">> => Res}) of
                                {ok, #{<<"tracking">> := Tracking}} ->
                                    stage(<<"shipped">>),
                                    {ok, #{<<"order_id">> => Id, <<"status">> => <<"shipped">>,
                                           <<"charge">> => Charge, <<"tracking">> => Tracking}};
                                {error, Why} ->
                                    compensate(Order, Done, Why)
                            end;
                        {not_approved, Why} ->
                            compensate(Order, Done, Why)
                    end;
                {error, Why} ->
                    compensate(Order, [{release, Res}], Why)
            end;
        {error, Why} ->
            compensate(Order, [], Why)
    end.

approval(#{<<"approval">> := <<"auto">>}) ->
    approved;
approval(Order) ->
    stage(<<"awaiting_approval">>),
    Timeout = maps:get(<<"approval_timeout">>, Order, 5000),
    case aion_workflow:receive_signal(<<"approve">>, Timeout) of
        {ok, #{<<"approved">> := true}} -> approved;
        {ok, Other} -> {not_approved, #{<<"rejected">> => Other}};
        {error, timeout} -> {not_approved, <<"approval timed out">>};
        {error, {cancelled, _}} = C -> {not_approved, reason(C)}
    end.

%% Undoes the steps done so far, newest first, whatever happens meanwhile.
compensate(#{<<"order_id">> := Id, <<"shop">> := Shop}, Done, Why) ->
    stage(<<"compensating">>),
    Steps = aion_workflow:non_cancellable(
              fun() ->
                      [begin
                           {ok, _} = undo(Step, Key, Shop),
                           atom_to_binary(Step)
                       end || {Step, Key} <- Done]
              end),
    stage(<<"compensated">>),
    {error, #{<<"order_id">> => Id, <<"status">> => <<"compensated">>,
              <<"reason">> => reason(Why), <<"compensated">> => Steps}}.

undo(refund, Charge, Shop) ->
    aion_workflow:execute_activity({?MODULE, refund}, [#{<<"charge">> => Charge, <<"shop">> => Shop}],
                                   ?COMPENSATE_OPTS);
undo(release, Res, Shop) ->
    aion_workflow:execute_activity({?MODULE, release}, [#{<<"reservation">> => Res, <<"shop">> => Shop}],
                                   ?COMPENSATE_OPTS).

%% A step runs to its end even if the workflow is cancelled meanwhile (its outcome
%% must be known to compensate exactly what was done); a cancel seen before the step
%% skips it.
step(Step, Order) ->
    case aion_workflow:is_cancel_requested() of
        true ->
            {error, <<"cancelled">>};
        false ->
            Args = [maps:with([<<"order_id">>, <<"shop">>, <<"sku">>, <<"qty">>, <<"amount">>,
                               <<"reservation">>], Order)],
            aion_workflow:non_cancellable(
              fun() -> aion_workflow:execute_activity({?MODULE, Step}, Args, ?STEP_OPTS) end)
    end.

stage(Stage) ->
    ok = aion_workflow:set_query_handler(<<"status">>, fun(_) -> Stage end).

%% A readable JSON reason for the result (errors may be any term).
reason(B) when is_binary(B) -> B;
reason(M) when is_map(M) -> M;
reason(T) -> iolist_to_binary(io_lib:format("~0p", [T])).

%%% ===========================================================================
%%% Activities (run in the engine's activity pool, not in the workflow)
%%% ===========================================================================

%% @doc Reserves `qty' of `sku'. `{ok, #{<<"reservation">> => Key}}'.
-spec reserve(map()) -> {ok, map()} | {error, term()}.
reserve(#{<<"order_id">> := O, <<"sku">> := Sku, <<"qty">> := Q} = A) ->
    http(A, reserve, [{order, O}, {sku, Sku}, {qty, Q}]).

%% @doc Charges `amount'. `{ok, #{<<"charge">> => Key}}'.
-spec charge(map()) -> {ok, map()} | {error, term()}.
charge(#{<<"order_id">> := O, <<"amount">> := Amount} = A) ->
    http(A, charge, [{order, O}, {amount, Amount}]).

%% @doc Ships a held reservation. `{ok, #{<<"tracking">> => T}}'.
-spec ship(map()) -> {ok, map()} | {error, term()}.
ship(#{<<"order_id">> := O, <<"reservation">> := R} = A) ->
    http(A, ship, [{order, O}, {reservation, R}]).

%% @doc Refunds a charge (at most once, whatever the key).
-spec refund(map()) -> {ok, map()} | {error, term()}.
refund(#{<<"charge">> := C} = A) ->
    http(A, refund, [{charge, C}]).

%% @doc Releases a reservation (succeeds when nothing is held).
-spec release(map()) -> {ok, map()} | {error, term()}.
release(#{<<"reservation">> := R} = A) ->
    http(A, release, [{reservation, R}]).

%% Idempotency key: workflow id + activity id (stable across attempts and restarts).
http(#{<<"shop">> := Shop}, Op, Params) ->
    #{workflow_id := Wf, activity_id := Act} = aion_activity:info(),
    Url = binary_to_list(Shop),
    Key = <<Wf/binary, "/", Act/binary>>,
    case shop_client:call(Url, Op, [{key, Key} | Params], ?HTTP_TIMEOUT) of
        {ok, 200, Answer} -> {ok, Answer};
        {ok, 503, _} -> {error, unavailable};
        {ok, Code, Answer} when Code >= 400, Code < 500 ->
            {error, {non_retryable, #{<<"http">> => Code,
                                      <<"error">> => maps:get(<<"error">>, Answer, null)}}};
        {ok, Code, _} -> {error, {http, Code}};
        {error, timeout} -> {error, timeout};
        {error, Reason} -> {error, {http_error, Reason}}
    end.
