%% @doc The demo's side-effect target: a small HTTP shop on 127.0.0.1.
%%
%% An inventory and a payments ledger in its own SQLite file (through `aion_sql'),
%% served by OTP `inets' httpd with this module as the request handler (`do/1').
%% Requests and responses are `application/x-www-form-urlencoded' (stdlib only).
%%
%% Endpoints (every mutating one requires `key', an idempotency key; a repeated key
%% returns the first answer and never acts twice; the same key on another endpoint
%% answers 422 `error=key_reused'):
%% <ul>
%% <li>`POST /reserve' `key, order, sku, qty' -> 200 `status=reserved&amp;reservation=Key'
%%     or 409 `error=out_of_stock' (or `unknown_sku').</li>
%% <li>`POST /release' `key, reservation' -> 200 `status=released' (or `nothing_reserved'
%%     when the reservation is unknown or already released: compensation always succeeds).</li>
%% <li>`POST /charge' `key, order, amount' -> 200 `status=charged&amp;charge=Key' or 402
%%     `error=declined' (amount above the limit).</li>
%% <li>`POST /refund' `key, charge' -> 200 `status=refunded' (or `nothing_charged'); a
%%     charge is refunded at most once whatever the key.</li>
%% <li>`POST /ship' `key, order, reservation' -> 200 `status=shipped&amp;tracking=T' or 409
%%     `error=not_reserved'.</li>
%% <li>`GET /stock?sku=S', `GET /health'.</li>
%% </ul>
%%
%% Faults, on mutating endpoints only: a share `fail_rate' of requests answers 503 at
%% once without acting; a share `hang_rate' acts and then holds the answer for
%% `hang_ms' before sending it (the client has usually timed out: the retry must use
%% the same key). `fail_next/3' and `hang_next/3' script the next N requests of one
%% endpoint (deterministic tests). Hangs are bounded: they always answer in the end.
-module(shop_server).
-behaviour(gen_server).

-export([start/1, stop/1, port/1, url/1, db_path/1, set_faults/2, fail_next/3,
         hang_next/3, stats/1, ledger_check/2, ledger_check_db/3]).
%% httpd module callback
-export([do/1]).
%% gen_server
-export([init/1, handle_call/3, handle_cast/2, handle_info/2, terminate/2]).

-include_lib("inets/include/httpd.hrl").

-export_type([shop/0, expectation/0]).

-opaque shop() :: #{pid := pid(), port := inet:port_number(), db_path := string()}.
-type expectation() :: completed | compensated.

-define(CHARGE_LIMIT, 1000000).

%%% ===========================================================================
%%% API
%%% ===========================================================================

%% @doc Starts a shop. Options: `db_path' (required; created if missing), `port'
%% (0 = chosen by the OS, default), `stock' (`#{Sku :: binary() => Qty}', inserted
%% when the SKU is not there yet), `fail_rate', `hang_rate' (shares in 0.0..1.0,
%% default 0.0), `hang_ms' (default 3000), `seed' (an integer for the fault dice).
%% Errors: `{error, Reason}' from SQLite or httpd.
-spec start(map()) -> {ok, shop()} | {error, term()}.
start(Opts) ->
    {ok, _} = application:ensure_all_started(inets),
    case gen_server:start(?MODULE, Opts, []) of
        {ok, Pid} ->
            {Port, Path} = gen_server:call(Pid, info),
            {ok, #{pid => Pid, port => Port, db_path => Path}};
        {error, _} = E ->
            E
    end.

%% @doc Stops the shop (the HTTP listener and the database handle).
-spec stop(shop()) -> ok.
stop(#{pid := Pid}) ->
    gen_server:stop(Pid).

%% @doc The TCP port the shop listens on (127.0.0.1).
-spec port(shop()) -> inet:port_number().
port(#{port := Port}) -> Port.

%% @doc The base URL, e.g. `"http://127.0.0.1:41234"'.
-spec url(shop()) -> string().
url(#{port := Port}) -> "http://127.0.0.1:" ++ integer_to_list(Port).

%% @doc The shop's database file.
-spec db_path(shop()) -> string().
db_path(#{db_path := P}) -> P.

%% @doc Changes the fault shares: keys `fail_rate', `hang_rate', `hang_ms'.
-spec set_faults(shop(), map()) -> ok.
set_faults(#{pid := Pid}, Faults) ->
    gen_server:call(Pid, {set_faults, Faults}).

%% @doc The next `N' requests to endpoint `Op' (`reserve', `charge', ...) answer 503.
-spec fail_next(shop(), atom(), non_neg_integer()) -> ok.
fail_next(#{pid := Pid}, Op, N) ->
    gen_server:call(Pid, {script, fail, Op, N}).

%% @doc The next `N' requests to endpoint `Op' act, then hold their answer `hang_ms'.
-spec hang_next(shop(), atom(), non_neg_integer()) -> ok.
hang_next(#{pid := Pid}, Op, N) ->
    gen_server:call(Pid, {script, hang, Op, N}).

%% @doc Counters: `requests', `failed_503', `hung', `replayed' (answers served from
%% an idempotency key), and per endpoint `{Op, requests}'.
-spec stats(shop()) -> #{term() => non_neg_integer()}.
stats(#{pid := Pid}) ->
    gen_server:call(Pid, stats).

%% @doc Checks the ledger and the stock against what the orders should have become
%% (`#{OrderId => completed | compensated}'), reading the shop's database.
%% See `ledger_check_db/3'.
-spec ledger_check(shop(), #{binary() => expectation()}) ->
          {ok, map()} | {error, [term()]}.
ledger_check(#{pid := Pid}, Expect) ->
    gen_server:call(Pid, {ledger_check, Expect}, 60000).

%% @doc Checks a shop database: every `completed' order charged exactly once, never
%% refunded, its reservation shipped; every `compensated' order refunded exactly once
%% if it was charged (never otherwise), its reservation released or never made;
%% no order charged twice; for every SKU `available + reserved + shipped' equals the
%% initial stock and `reserved'/`shipped' equal the sums of the reservations in those
%% states. `{ok, Summary}' or `{error, Problems}'.
-spec ledger_check_db(aion_sql:db(), #{binary() => expectation()}, map()) ->
          {ok, map()} | {error, [term()]}.
ledger_check_db(Db, Expect, _Opts) ->
    Charges = count_by_order(Db, <<"SELECT order_id, count(*) FROM ledger WHERE kind = 'charge' GROUP BY order_id">>),
    Refunds = count_by_order(Db, <<"SELECT order_id, count(*) FROM ledger WHERE kind = 'refund' GROUP BY order_id">>),
    {ok, ResRows} = aion_sql:query(Db, <<"SELECT order_id, status FROM reservations">>),
    Res = maps:from_list([{O, S} || {O, S} <- ResRows]),
    OrderProblems =
        maps:fold(
          fun(Order, What, Acc) ->
                  C = maps:get(Order, Charges, 0),
                  R = maps:get(Order, Refunds, 0),
                  RS = maps:get(Order, Res, none),
                  check_order(Order, What, C, R, RS) ++ Acc
          end, [], Expect),
    Double = [{charged_more_than_once, O, N} || {O, N} <- maps:to_list(Charges), N > 1],
    DoubleR = [{refunded_more_than_once, O, N} || {O, N} <- maps:to_list(Refunds), N > 1],
    StockProblems = check_stock(Db),
    Summary = #{orders => map_size(Expect),
                charged => lists:sum(maps:values(Charges)),
                refunded => lists:sum(maps:values(Refunds)),
                completed => length([x || {_, completed} <- maps:to_list(Expect)]),
                compensated => length([x || {_, compensated} <- maps:to_list(Expect)])},
    case OrderProblems ++ Double ++ DoubleR ++ StockProblems of
        [] -> {ok, Summary};
        Problems -> {error, Problems}
    end.

check_order(O, completed, C, R, RS) ->
    [{completed_not_charged_once, O, C} || C =/= 1] ++
    [{completed_but_refunded, O, R} || R =/= 0] ++
    [{completed_not_shipped, O, RS} || RS =/= <<"shipped">>];
check_order(O, compensated, C, R, RS) ->
    [{compensated_refunds_mismatch, O, #{charges => C, refunds => R}} || C =/= R] ++
    [{compensated_stock_held, O, RS} || RS =/= none, RS =/= <<"released">>].

check_stock(Db) ->
    {ok, Rows} = aion_sql:query(
                   Db, <<"SELECT s.sku, s.initial, s.available, s.reserved, s.shipped,"
                         " (SELECT coalesce(sum(qty), 0) FROM reservations r"
                         "   WHERE r.sku = s.sku AND r.status = 'reserved'),"
                         " (SELECT coalesce(sum(qty), 0) FROM reservations r"
                         "   WHERE r.sku = s.sku AND r.status = 'shipped')"
                         " FROM stock s">>),
    lists:append(
      [[{stock_not_conserved, Sku, #{initial => I, available => A, reserved => Rv,
                                     shipped => Sh}} || A + Rv + Sh =/= I] ++
       [{stock_reserved_mismatch, Sku, Rv, SumR} || Rv =/= SumR] ++
       [{stock_shipped_mismatch, Sku, Sh, SumS} || Sh =/= SumS] ++
       [{stock_negative, Sku, A} || A < 0]
       || {Sku, I, A, Rv, Sh, SumR, SumS} <- Rows]).

count_by_order(Db, Sql) ->
    {ok, Rows} = aion_sql:query(Db, Sql),
    maps:from_list([{O, N} || {O, N} <- Rows]).

%%% ===========================================================================
%%% HTTP handler (runs in httpd's request process)
%%% ===========================================================================

%% @private
%% @doc httpd module callback: routes a request to the shop that owns the port.
-spec do(#mod{}) -> {proceed, list()}.
do(#mod{method = Method, request_uri = Uri, entity_body = Body, socket = Sock}) ->
    {ok, {_, Port}} = inet:sockname(Sock),
    {Path, Query} = split_uri(Uri),
    Params = parse_params(Query) ++ parse_params(Body),
    {Code, Reply} =
        case persistent_term:get({?MODULE, Port}, undefined) of
            undefined -> {503, [{<<"error">>, <<"shop_stopped">>}]};
            {Pid, Tab} -> route(Method, Path, Params, Pid, Tab)
        end,
    Text = uri_string:compose_query([{K, to_bin(V)} || {K, V} <- Reply]),
    Bin = unicode:characters_to_binary(Text),
    {proceed, [{response, {response, [{code, Code},
                                      {content_type, "application/x-www-form-urlencoded"},
                                      {content_length, integer_to_list(byte_size(Bin))}],
                           [Bin]}}]}.

route("GET", "/health", _Params, _Pid, _Tab) ->
    {200, [{<<"status">>, <<"ok">>}]};
route("GET", "/stock", Params, Pid, _Tab) ->
    gen_server:call(Pid, {stock, proplists:get_value(<<"sku">>, Params)});
route("POST", "/" ++ OpS, Params, Pid, Tab) ->
    case op(OpS) of
        undefined ->
            {404, [{<<"error">>, <<"not_found">>}]};
        Op ->
            _ = ets:update_counter(Tab, requests, 1, {requests, 0}),
            _ = ets:update_counter(Tab, {Op, requests}, 1, {{Op, requests}, 0}),
            case proplists:get_value(<<"key">>, Params, <<>>) of
                <<>> ->
                    {400, [{<<"error">>, <<"key_required">>}]};
                Key ->
                    case fault(Tab, Op) of
                        fail ->
                            _ = ets:update_counter(Tab, failed_503, 1, {failed_503, 0}),
                            {503, [{<<"error">>, <<"unavailable">>}]};
                        Fault ->
                            Reply = gen_server:call(Pid, {op, Op, Key, Params}, 60000),
                            case Fault of
                                {hang, Ms} ->
                                    _ = ets:update_counter(Tab, hung, 1, {hung, 0}),
                                    receive after Ms -> ok end;
                                none -> ok
                            end,
                            Reply
                    end
            end
    end;
route(_, _, _, _, _) ->
    {404, [{<<"error">>, <<"not_found">>}]}.

op("reserve") -> reserve;
op("release") -> release;
op("charge") -> charge;
op("refund") -> refund;
op("ship") -> ship;
op(_) -> undefined.

%% Decides this request's fault: a scripted one first, else the dice.
fault(Tab, Op) ->
    case take_script(Tab, {fail, Op}) of
        true -> fail;
        false ->
            [{faults, Fail, Hang, HangMs}] = ets:lookup(Tab, faults),
            case take_script(Tab, {hang, Op}) of
                true -> {hang, HangMs};
                false ->
                    X = rand:uniform(),
                    if X < Fail -> fail;
                       X < Fail + Hang -> {hang, HangMs};
                       true -> none
                    end
            end
    end.

%% A scripted count N lets the next N requests take the fault; the counter stops at -1.
take_script(Tab, K) ->
    try ets:update_counter(Tab, {script, K}, {2, -1, -1, -1}) >= 0
    catch error:badarg -> false
    end.

split_uri(Uri) ->
    case string:split(Uri, "?") of
        [P, Q] -> {P, Q};
        [P] -> {P, ""}
    end.

parse_params(undefined) -> [];
parse_params([]) -> [];
parse_params(Text) ->
    case uri_string:dissect_query(Text) of
        L when is_list(L) -> [{to_bin(K), to_bin(V)} || {K, V} <- L, V =/= true];
        _ -> []
    end.

to_bin(B) when is_binary(B) -> B;
to_bin(I) when is_integer(I) -> integer_to_binary(I);
to_bin(A) when is_atom(A) -> atom_to_binary(A);
to_bin(L) when is_list(L) -> unicode:characters_to_binary(L).

%%% ===========================================================================
%%% gen_server: owns the database handle; every mutation runs here, one at a time
%%% ===========================================================================

-record(st, {db, httpd, port, tab, path}).

%% @private
init(Opts) ->
    process_flag(trap_exit, true),
    Path = to_list(maps:get(db_path, Opts)),
    case aion_sql:open(Path) of
        {ok, Db} ->
            ok = aion_sql:exec(Db, schema()),
            ok = seed_stock(Db, maps:get(stock, Opts, #{})),
            Tab = ets:new(shop_counters, [public, set, {write_concurrency, true}]),
            true = ets:insert(Tab, {faults, float(maps:get(fail_rate, Opts, 0.0)),
                                    float(maps:get(hang_rate, Opts, 0.0)),
                                    maps:get(hang_ms, Opts, 3000)}),
            _ = case maps:get(seed, Opts, undefined) of
                    undefined -> ok;
                    Seed -> rand:seed(exsss, Seed)
                end,
            Root = filename:dirname(filename:absname(Path)),
            HttpdOpts = [{port, maps:get(port, Opts, 0)},
                         {bind_address, {127, 0, 0, 1}},
                         {server_name, "shop"},
                         {server_root, Root},
                         {document_root, Root},
                         {modules, [?MODULE]},
                         {max_clients, 4000},
                         {keep_alive, true},
                         {max_keep_alive_request, 100000}],
            case inets:start(httpd, HttpdOpts) of
                {ok, Httpd} ->
                    [{port, Port}] = httpd:info(Httpd, [port]),
                    persistent_term:put({?MODULE, Port}, {self(), Tab}),
                    {ok, #st{db = Db, httpd = Httpd, port = Port, tab = Tab, path = Path}};
                {error, _} = E ->
                    ok = aion_sql:close(Db),
                    {stop, E}
            end;
        {error, Reason} ->
            {stop, Reason}
    end.

%% @private
handle_call(info, _From, S) ->
    {reply, {S#st.port, S#st.path}, S};
handle_call({set_faults, F}, _From, #st{tab = Tab} = S) ->
    [{faults, Fail, Hang, HangMs}] = ets:lookup(Tab, faults),
    true = ets:insert(Tab, {faults, float(maps:get(fail_rate, F, Fail)),
                            float(maps:get(hang_rate, F, Hang)),
                            maps:get(hang_ms, F, HangMs)}),
    {reply, ok, S};
handle_call({script, Kind, Op, N}, _From, #st{tab = Tab} = S) ->
    true = ets:insert(Tab, {{script, {Kind, Op}}, N}),
    {reply, ok, S};
handle_call(stats, _From, #st{tab = Tab} = S) ->
    Base = #{requests => 0, failed_503 => 0, hung => 0, replayed => 0},
    Counters = maps:from_list([{K, V} || {K, V} <- ets:tab2list(Tab), is_integer(V),
                                         not is_script_key(K)]),
    {reply, maps:merge(Base, Counters), S};
handle_call({stock, Sku}, _From, #st{db = Db} = S) ->
    Reply = case aion_sql:one(Db, <<"SELECT available, reserved, shipped FROM stock WHERE sku = ?">>,
                              [null_if_undefined(Sku)]) of
                {ok, {A, R, Sh}} ->
                    {200, [{<<"available">>, A}, {<<"reserved">>, R}, {<<"shipped">>, Sh}]};
                none ->
                    {404, [{<<"error">>, <<"unknown_sku">>}]}
            end,
    {reply, Reply, S};
handle_call({op, Op, Key, Params}, _From, #st{db = Db, tab = Tab} = S) ->
    OpB = atom_to_binary(Op),
    Reply = case aion_sql:one(Db, <<"SELECT op, code, body FROM idempotency WHERE key = ?">>, [Key]) of
                {ok, {OpB, Code, Body}} ->
                    _ = ets:update_counter(Tab, replayed, 1, {replayed, 0}),
                    {Code, uri_string:dissect_query(Body)};
                {ok, {_Other, _, _}} ->
                    {422, [{<<"error">>, <<"key_reused">>}]};
                none ->
                    perform(Db, Op, Key, Params)
            end,
    {reply, Reply, S};
handle_call({ledger_check, Expect}, _From, #st{db = Db} = S) ->
    {reply, ledger_check_db(Db, Expect, #{}), S}.

%% @private
handle_cast(_Msg, S) ->
    {noreply, S}.

%% @private
handle_info(_Msg, S) ->
    {noreply, S}.

%% @private
terminate(_Reason, #st{db = Db, httpd = Httpd, port = Port}) ->
    persistent_term:erase({?MODULE, Port}),
    _ = inets:stop(httpd, Httpd),
    aion_sql:close(Db).

is_script_key({script, _}) -> true;
is_script_key(_) -> false.

null_if_undefined(undefined) -> null;
null_if_undefined(V) -> V.

%% One mutation and its idempotency record, in one transaction.
perform(Db, Op, Key, Params) ->
    Now = erlang:system_time(millisecond),
    Result = aion_sql:transaction(
               Db, fun() ->
                           {Code, Reply} = act(Db, Op, Key, Params, Now),
                           Body = uri_string:compose_query([{K, to_bin(V)} || {K, V} <- Reply]),
                           %% 4xx/2xx answers are final and remembered; nothing else is.
                           {ok, 1} = aion_sql:execute(
                                       Db, <<"INSERT INTO idempotency(key, op, code, body, at)"
                                             " VALUES (?, ?, ?, ?, ?)">>,
                                       [Key, atom_to_binary(Op), Code,
                                        unicode:characters_to_binary(Body), Now]),
                           {ok, {Code, Reply}}
                   end),
    case Result of
        {ok, R} -> R;
        {error, Reason} -> {500, [{<<"error">>, iolist_to_binary(io_lib:format("~0p", [Reason]))}]}
    end.

param(K, Params) ->
    case proplists:get_value(K, Params) of
        undefined -> throw({missing, K});
        V -> V
    end.

int_param(K, Params) ->
    try binary_to_integer(param(K, Params))
    catch error:badarg -> throw({bad, K})
    end.

act(Db, Op, Key, Params, Now) ->
    try act1(Db, Op, Key, Params, Now)
    catch throw:{missing, K} -> {400, [{<<"error">>, <<"missing_", K/binary>>}]};
          throw:{bad, K} -> {400, [{<<"error">>, <<"bad_", K/binary>>}]}
    end.

act1(Db, reserve, Key, Params, Now) ->
    Order = param(<<"order">>, Params),
    Sku = param(<<"sku">>, Params),
    Qty = int_param(<<"qty">>, Params),
    Qty > 0 orelse throw({bad, <<"qty">>}),
    case aion_sql:one(Db, <<"SELECT available FROM stock WHERE sku = ?">>, [Sku]) of
        none -> {409, [{<<"error">>, <<"unknown_sku">>}]};
        {ok, {A}} when A < Qty -> {409, [{<<"error">>, <<"out_of_stock">>}]};
        {ok, {_}} ->
            {ok, 1} = aion_sql:execute(Db, <<"UPDATE stock SET available = available - ?,"
                                             " reserved = reserved + ? WHERE sku = ?">>,
                                       [Qty, Qty, Sku]),
            {ok, 1} = aion_sql:execute(Db, <<"INSERT INTO reservations(key, order_id, sku, qty,"
                                             " status, at) VALUES (?, ?, ?, ?, 'reserved', ?)">>,
                                       [Key, Order, Sku, Qty, Now]),
            {200, [{<<"status">>, <<"reserved">>}, {<<"reservation">>, Key}]}
    end;
act1(Db, release, _Key, Params, _Now) ->
    Res = param(<<"reservation">>, Params),
    case aion_sql:one(Db, <<"SELECT sku, qty, status FROM reservations WHERE key = ?">>, [Res]) of
        {ok, {Sku, Qty, <<"reserved">>}} ->
            {ok, 1} = aion_sql:execute(Db, <<"UPDATE stock SET available = available + ?,"
                                             " reserved = reserved - ? WHERE sku = ?">>,
                                       [Qty, Qty, Sku]),
            {ok, 1} = aion_sql:execute(Db, <<"UPDATE reservations SET status = 'released'"
                                             " WHERE key = ?">>, [Res]),
            {200, [{<<"status">>, <<"released">>}]};
        {ok, {_, _, <<"shipped">>}} ->
            {409, [{<<"error">>, <<"already_shipped">>}]};
        _ ->
            {200, [{<<"status">>, <<"nothing_reserved">>}]}
    end;
act1(Db, charge, Key, Params, Now) ->
    Order = param(<<"order">>, Params),
    Amount = int_param(<<"amount">>, Params),
    if Amount > ?CHARGE_LIMIT ->
            {402, [{<<"error">>, <<"declined">>}]};
       Amount =< 0 ->
            {400, [{<<"error">>, <<"bad_amount">>}]};
       true ->
            {ok, 1} = aion_sql:execute(Db, <<"INSERT INTO ledger(order_id, kind, amount, key,"
                                             " charge_key, at) VALUES (?, 'charge', ?, ?, ?, ?)">>,
                                       [Order, Amount, Key, Key, Now]),
            {200, [{<<"status">>, <<"charged">>}, {<<"charge">>, Key}, {<<"amount">>, Amount}]}
    end;
act1(Db, refund, Key, Params, Now) ->
    Charge = param(<<"charge">>, Params),
    case aion_sql:one(Db, <<"SELECT order_id, amount FROM ledger WHERE kind = 'charge'"
                            " AND key = ?">>, [Charge]) of
        none ->
            {200, [{<<"status">>, <<"nothing_charged">>}]};
        {ok, {Order, Amount}} ->
            case aion_sql:one(Db, <<"SELECT key FROM ledger WHERE kind = 'refund'"
                                    " AND charge_key = ?">>, [Charge]) of
                {ok, {_First}} ->
                    {200, [{<<"status">>, <<"refunded">>}, {<<"amount">>, Amount}]};
                none ->
                    {ok, 1} = aion_sql:execute(
                                Db, <<"INSERT INTO ledger(order_id, kind, amount, key, charge_key,"
                                      " at) VALUES (?, 'refund', ?, ?, ?, ?)">>,
                                [Order, Amount, Key, Charge, Now]),
                    {200, [{<<"status">>, <<"refunded">>}, {<<"amount">>, Amount}]}
            end
    end;
act1(Db, ship, Key, Params, Now) ->
    Order = param(<<"order">>, Params),
    Res = param(<<"reservation">>, Params),
    case aion_sql:one(Db, <<"SELECT sku, qty, status FROM reservations WHERE key = ?">>, [Res]) of
        {ok, {Sku, Qty, <<"reserved">>}} ->
            {ok, 1} = aion_sql:execute(Db, <<"UPDATE stock SET reserved = reserved - ?,"
                                             " shipped = shipped + ? WHERE sku = ?">>,
                                       [Qty, Qty, Sku]),
            {ok, 1} = aion_sql:execute(Db, <<"UPDATE reservations SET status = 'shipped'"
                                             " WHERE key = ?">>, [Res]),
            {ok, 1} = aion_sql:execute(Db, <<"INSERT INTO shipments(key, order_id, reservation,"
                                             " at) VALUES (?, ?, ?, ?)">>,
                                       [Key, Order, Res, Now]),
            {200, [{<<"status">>, <<"shipped">>}, {<<"tracking">>, <<"T-", Key/binary>>}]};
        _ ->
            {409, [{<<"error">>, <<"not_reserved">>}]}
    end.

schema() ->
    <<"PRAGMA journal_mode = WAL;"
      "CREATE TABLE IF NOT EXISTS stock(sku TEXT PRIMARY KEY, initial INTEGER NOT NULL,"
      "  available INTEGER NOT NULL, reserved INTEGER NOT NULL DEFAULT 0,"
      "  shipped INTEGER NOT NULL DEFAULT 0);"
      "CREATE TABLE IF NOT EXISTS reservations(key TEXT PRIMARY KEY, order_id TEXT NOT NULL,"
      "  sku TEXT NOT NULL, qty INTEGER NOT NULL, status TEXT NOT NULL, at INTEGER);"
      "CREATE TABLE IF NOT EXISTS ledger(id INTEGER PRIMARY KEY AUTOINCREMENT,"
      "  order_id TEXT NOT NULL, kind TEXT NOT NULL, amount INTEGER NOT NULL,"
      "  key TEXT NOT NULL UNIQUE, charge_key TEXT NOT NULL, at INTEGER);"
      "CREATE UNIQUE INDEX IF NOT EXISTS ledger_one_refund ON ledger(charge_key)"
      "  WHERE kind = 'refund';"
      "CREATE TABLE IF NOT EXISTS shipments(key TEXT PRIMARY KEY, order_id TEXT NOT NULL,"
      "  reservation TEXT NOT NULL UNIQUE, at INTEGER);"
      "CREATE TABLE IF NOT EXISTS idempotency(key TEXT PRIMARY KEY, op TEXT NOT NULL,"
      "  code INTEGER NOT NULL, body TEXT NOT NULL, at INTEGER);">>.

seed_stock(Db, Stock) ->
    lists:foreach(
      fun({Sku, Qty}) ->
              {ok, _} = aion_sql:execute(Db, <<"INSERT OR IGNORE INTO stock(sku, initial, available)"
                                               " VALUES (?, ?, ?)">>, [to_bin(Sku), Qty, Qty])
      end, maps:to_list(Stock)).

to_list(B) when is_binary(B) -> binary_to_list(B);
to_list(L) when is_list(L) -> L.
