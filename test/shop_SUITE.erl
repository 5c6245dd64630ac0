%% Tests of the demo shop service (examples/shop): endpoints, idempotency, faults,
%% and the ledger check the demo uses.
-module(shop_SUITE).
-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-export([all/0, init_per_testcase/2, end_per_testcase/2]).
-export([happy_path/1, idempotent_repeat/1, key_rules/1, out_of_stock_and_declined/1,
         compensation/1, refund_at_most_once/1, scripted_503/1, hang_then_retry/1,
         fault_rates/1, ledger_check_finds_problems/1, concurrent_orders/1]).

all() ->
    [happy_path, idempotent_repeat, key_rules, out_of_stock_and_declined, compensation,
     refund_at_most_once, scripted_503, hang_then_retry, fault_rates,
     ledger_check_finds_problems, concurrent_orders].

init_per_testcase(Case, Config) ->
    Db = filename:join(?config(priv_dir, Config), atom_to_list(Case) ++ ".db"),
    {ok, Shop} = shop_server:start(#{db_path => Db, stock => #{<<"widget">> => 10},
                                     hang_ms => 400, seed => 42}),
    [{shop, Shop} | Config].

end_per_testcase(_Case, Config) ->
    ok = shop_server:stop(?config(shop, Config)).

post(Config, Op, Params) ->
    shop_client:call(shop_server:url(?config(shop, Config)), Op, Params, 5000).

stock(Config) ->
    {ok, 200, M} = shop_client:get(shop_server:url(?config(shop, Config)),
                                   "/stock?sku=widget", 5000),
    maps:map(fun(_, V) -> binary_to_integer(V) end, M).

happy_path(Config) ->
    {ok, 200, #{<<"status">> := <<"ok">>}} =
        shop_client:get(shop_server:url(?config(shop, Config)), "/health", 5000),
    {ok, 200, #{<<"status">> := <<"reserved">>, <<"reservation">> := <<"r1">>}} =
        post(Config, reserve, [{key, "r1"}, {order, "o1"}, {sku, "widget"}, {qty, 3}]),
    ?assertEqual(#{<<"available">> => 7, <<"reserved">> => 3, <<"shipped">> => 0}, stock(Config)),
    {ok, 200, #{<<"status">> := <<"charged">>, <<"charge">> := <<"c1">>}} =
        post(Config, charge, [{key, "c1"}, {order, "o1"}, {amount, 1500}]),
    {ok, 200, #{<<"status">> := <<"shipped">>}} =
        post(Config, ship, [{key, "s1"}, {order, "o1"}, {reservation, "r1"}]),
    ?assertEqual(#{<<"available">> => 7, <<"reserved">> => 0, <<"shipped">> => 3}, stock(Config)),
    {ok, #{charged := 1, refunded := 0}} =
        shop_server:ledger_check(?config(shop, Config), #{<<"o1">> => completed}),
    %% shipping needs a reservation still held
    {ok, 409, #{<<"error">> := <<"not_reserved">>}} =
        post(Config, ship, [{key, "s2"}, {order, "o1"}, {reservation, "r1"}]).

idempotent_repeat(Config) ->
    First = post(Config, charge, [{key, "k"}, {order, "o1"}, {amount, 10}]),
    {ok, 200, #{<<"status">> := <<"charged">>}} = First,
    %% same key, even with other parameters: the first answer, no second charge
    ?assertEqual(First, post(Config, charge, [{key, "k"}, {order, "o1"}, {amount, 10}])),
    ?assertEqual(First, post(Config, charge, [{key, "k"}, {order, "o1"}, {amount, 99}])),
    {ok, 200, _} = post(Config, reserve, [{key, "r"}, {order, "o1"}, {sku, "widget"}, {qty, 2}]),
    {ok, 200, _} = post(Config, reserve, [{key, "r"}, {order, "o1"}, {sku, "widget"}, {qty, 2}]),
    ?assertEqual(8, maps:get(<<"available">>, stock(Config))),
    {ok, #{charged := 1}} =
        shop_server:ledger_check_db(open_ro(Config), #{}, #{}),
    #{replayed := 3} = shop_server:stats(?config(shop, Config)).

key_rules(Config) ->
    {ok, 400, #{<<"error">> := <<"key_required">>}} =
        post(Config, charge, [{order, "o1"}, {amount, 10}]),
    {ok, 400, #{<<"error">> := <<"missing_amount">>}} =
        post(Config, charge, [{key, "a"}, {order, "o1"}]),
    {ok, 200, _} = post(Config, charge, [{key, "b"}, {order, "o1"}, {amount, 10}]),
    {ok, 422, #{<<"error">> := <<"key_reused">>}} =
        post(Config, refund, [{key, "b"}, {charge, "b"}]),
    {ok, 404, _} = post(Config, teleport, [{key, "c"}]).

out_of_stock_and_declined(Config) ->
    {ok, 409, #{<<"error">> := <<"out_of_stock">>}} =
        post(Config, reserve, [{key, "r"}, {order, "o"}, {sku, "widget"}, {qty, 11}]),
    {ok, 409, #{<<"error">> := <<"unknown_sku">>}} =
        post(Config, reserve, [{key, "r2"}, {order, "o"}, {sku, "gadget"}, {qty, 1}]),
    {ok, 402, #{<<"error">> := <<"declined">>}} =
        post(Config, charge, [{key, "c"}, {order, "o"}, {amount, 100000000}]),
    %% a final answer is remembered too
    {ok, 402, _} = post(Config, charge, [{key, "c"}, {order, "o"}, {amount, 1}]),
    ?assertEqual(10, maps:get(<<"available">>, stock(Config))).

compensation(Config) ->
    {ok, 200, _} = post(Config, reserve, [{key, "r1"}, {order, "o1"}, {sku, "widget"}, {qty, 4}]),
    {ok, 200, _} = post(Config, charge, [{key, "c1"}, {order, "o1"}, {amount, 40}]),
    {ok, 200, #{<<"status">> := <<"refunded">>}} = post(Config, refund, [{key, "f1"}, {charge, "c1"}]),
    {ok, 200, #{<<"status">> := <<"released">>}} = post(Config, release, [{key, "l1"}, {reservation, "r1"}]),
    ?assertEqual(#{<<"available">> => 10, <<"reserved">> => 0, <<"shipped">> => 0}, stock(Config)),
    %% compensating what never happened succeeds and changes nothing
    {ok, 200, #{<<"status">> := <<"nothing_charged">>}} = post(Config, refund, [{key, "f2"}, {charge, "c9"}]),
    {ok, 200, #{<<"status">> := <<"nothing_reserved">>}} = post(Config, release, [{key, "l2"}, {reservation, "r9"}]),
    {ok, 200, #{<<"status">> := <<"nothing_reserved">>}} = post(Config, release, [{key, "l3"}, {reservation, "r1"}]),
    {ok, #{compensated := 2}} =
        shop_server:ledger_check(?config(shop, Config), #{<<"o1">> => compensated,
                                                          <<"o2">> => compensated}).

refund_at_most_once(Config) ->
    {ok, 200, _} = post(Config, charge, [{key, "c1"}, {order, "o1"}, {amount, 40}]),
    {ok, 200, #{<<"status">> := <<"refunded">>}} = post(Config, refund, [{key, "f1"}, {charge, "c1"}]),
    %% another key for the same charge: answered as refunded, no second refund row
    {ok, 200, #{<<"status">> := <<"refunded">>}} = post(Config, refund, [{key, "f2"}, {charge, "c1"}]),
    {ok, #{refunded := 1}} =
        shop_server:ledger_check(?config(shop, Config), #{<<"o1">> => compensated}).

scripted_503(Config) ->
    Shop = ?config(shop, Config),
    ok = shop_server:fail_next(Shop, charge, 2),
    {ok, 503, _} = post(Config, charge, [{key, "c1"}, {order, "o1"}, {amount, 5}]),
    {ok, 503, _} = post(Config, charge, [{key, "c1"}, {order, "o1"}, {amount, 5}]),
    {ok, 200, _} = post(Config, charge, [{key, "c1"}, {order, "o1"}, {amount, 5}]),
    %% other endpoints were not affected by the charge script
    {ok, 200, _} = post(Config, reserve, [{key, "r1"}, {order, "o1"}, {sku, "widget"}, {qty, 1}]),
    #{failed_503 := 2} = shop_server:stats(Shop),
    {ok, #{charged := 1}} = shop_server:ledger_check(Shop, #{}).

%% A hung request acts, then answers late; the client gives up; its retry with the
%% same key gets the first answer and nothing is charged twice.
hang_then_retry(Config) ->
    Shop = ?config(shop, Config),
    Url = shop_server:url(Shop),
    ok = shop_server:hang_next(Shop, charge, 1),
    {error, timeout} = shop_client:call(Url, charge, [{key, "c1"}, {order, "o1"}, {amount, 5}], 100),
    {ok, 200, #{<<"charge">> := <<"c1">>}} =
        shop_client:call(Url, charge, [{key, "c1"}, {order, "o1"}, {amount, 5}], 5000),
    #{hung := 1} = shop_server:stats(Shop),
    {ok, #{charged := 1}} = shop_server:ledger_check(Shop, #{}).

fault_rates(Config) ->
    Shop = ?config(shop, Config),
    ok = shop_server:set_faults(Shop, #{fail_rate => 1.0}),
    [{ok, 503, _} = post(Config, charge, [{key, integer_to_list(I)}, {order, "o"}, {amount, 1}])
     || I <- lists:seq(1, 20)],
    ok = shop_server:set_faults(Shop, #{fail_rate => 0.3}),
    Codes = [element(2, post(Config, charge, [{key, "x" ++ integer_to_list(I)}, {order, "o" ++ integer_to_list(I)},
                                             {amount, 1}]))
             || I <- lists:seq(1, 200)],
    N503 = length([C || C <- Codes, C =:= 503]),
    ct:pal("503s at 0.3: ~p of 200", [N503]),
    ?assert(N503 > 30 andalso N503 < 90),
    ok = shop_server:set_faults(Shop, #{fail_rate => 0.0}),
    [{ok, 200, _} = post(Config, charge, [{key, "y" ++ integer_to_list(I)}, {order, "p"}, {amount, 1}])
     || I <- lists:seq(1, 5)],
    %% reads never fail
    ok = shop_server:set_faults(Shop, #{fail_rate => 1.0}),
    #{<<"available">> := 10} = stock(Config).

ledger_check_finds_problems(Config) ->
    Shop = ?config(shop, Config),
    {ok, 200, _} = post(Config, reserve, [{key, "r1"}, {order, "o1"}, {sku, "widget"}, {qty, 1}]),
    {ok, 200, _} = post(Config, charge, [{key, "c1"}, {order, "o1"}, {amount, 5}]),
    {ok, 200, _} = post(Config, charge, [{key, "c2"}, {order, "o1"}, {amount, 5}]),
    {error, Problems} = shop_server:ledger_check(Shop, #{<<"o1">> => completed,
                                                         <<"o2">> => completed}),
    ct:pal("~p", [Problems]),
    ?assert(lists:member({charged_more_than_once, <<"o1">>, 2}, Problems)),
    ?assert(lists:member({completed_not_charged_once, <<"o1">>, 2}, Problems)),
    ?assert(lists:member({completed_not_shipped, <<"o1">>, <<"reserved">>}, Problems)),
    ?assert(lists:member({completed_not_charged_once, <<"o2">>, 0}, Problems)),
    {error, P2} = shop_server:ledger_check(Shop, #{<<"o1">> => compensated}),
    ?assert(lists:member({compensated_stock_held, <<"o1">>, <<"reserved">>}, P2)),
    %% stock conservation is checked from the database itself
    Db = open_rw(Config),
    {ok, 1} = aion_sql:execute(Db, "UPDATE stock SET available = available + 1", []),
    {error, P3} = shop_server:ledger_check(Shop, #{}),
    ?assertMatch([_ | _], [P || {stock_not_conserved, <<"widget">>, _} = P <- P3]).

%% Many clients at once, each with its own keys: every order charged exactly once.
concurrent_orders(Config) ->
    Shop = ?config(shop, Config),
    ok = shop_server:set_faults(Shop, #{fail_rate => 0.2}),
    Url = shop_server:url(Shop),
    Self = self(),
    Orders = [integer_to_list(I) || I <- lists:seq(1, 40)],
    Pids = [spawn_link(fun() -> Self ! {done, self(), order_until_done(Url, O)} end) || O <- Orders],
    Results = [receive {done, P, R} -> R after 60000 -> error(timeout) end || P <- Pids],
    Expect = maps:from_list(lists:zip([list_to_binary(O) || O <- Orders], Results)),
    %% 10 in stock: 10 orders ship, 30 are refunded
    {ok, #{charged := 40, refunded := 30, completed := 10, compensated := 30}} =
        shop_server:ledger_check(Shop, Expect).

order_until_done(Url, O) ->
    {ok, 200, _} = retry(Url, charge, [{key, "c" ++ O}, {order, O}, {amount, 3}]),
    case retry(Url, reserve, [{key, "r" ++ O}, {order, O}, {sku, "widget"}, {qty, 1}]) of
        {ok, 200, _} ->
            {ok, 200, _} = retry(Url, ship, [{key, "s" ++ O}, {order, O}, {reservation, "r" ++ O}]),
            completed;
        {ok, 409, _} ->
            {ok, 200, _} = retry(Url, refund, [{key, "f" ++ O}, {charge, "c" ++ O}]),
            compensated
    end.

retry(Url, Op, Params) ->
    case shop_client:call(Url, Op, Params, 5000) of
        {ok, 503, _} -> retry(Url, Op, Params);
        Other -> Other
    end.

open_ro(Config) ->
    {ok, Db} = aion_sql:open(shop_server:db_path(?config(shop, Config)), #{mode => read_only}),
    Db.

open_rw(Config) ->
    {ok, Db} = aion_sql:open(shop_server:db_path(?config(shop, Config)), #{mode => read_write}),
    Db.
