%% @doc The demo driver behind `make demo' (scripts/demo.sh).
%%
%% Runs in its own distributed node (the "outside world"): starts the shop service
%% (`shop_server', with fault injection), starts an engine in a separate OS process
%% (an `erl' node running the `aion' application on a fresh database), starts N
%% orders (`order_saga'), approves most of them with the `approve' signal (rejects
%% some, lets some time out, cancels a few), kills the engine node with `kill -9'
%% once about half of the orders are done, restarts it on the same database, waits
%% until every order is terminal and prints a report: orders by final status,
%% retries and timeouts seen, time to recover, the ledger check (every completed order
%% charged exactly once, every compensated order refunded exactly once, stock
%% consistent) and one order's history as a timeline. Halts with status 0 only if
%% every check passed.
%%
%% While the engine lacks signals (`aion:signal/3') the orders run with
%% `approval => auto' and nothing is cancelled; the report says so.
-module(aion_demo).

-export([main/1, engine_main/1, engine_ready/0]).

-define(TERMINAL, [<<"completed">>, <<"failed">>, <<"cancelled">>, <<"terminated">>,
                   <<"timed_out">>]).
-define(DEADLINE_MS, 110000).

%%% ===========================================================================
%%% Driver
%%% ===========================================================================

%% @doc Entry point: `[Orders, WorkDir, ExtraCodePaths...]' (strings). Halts.
-spec main([string()]) -> no_return().
main([OrdersS, Work | Paths]) ->
    N = list_to_integer(OrdersS),
    T0 = now_ms(),
    Status = try run(N, Work, Paths, T0)
             catch C:R:St ->
                     io:format("~nDEMO FAILED: ~p:~p~n~p~n", [C, R, St]),
                     1
             end,
    erlang:halt(Status).

run(N, Work, Paths, T0) ->
    Missing = [M || M <- [aion_json, aion_engine, aion_workflow, aion],
                    code:ensure_loaded(M) =/= {module, M}],
    case Missing of
        [] -> run_demo(N, Work, Paths, T0);
        _ ->
            io:format("aion demo: the engine is not complete in this build (missing ~p);~n"
                      "running the shop service smoke test instead.~n", [Missing]),
            shop_smoke(min(N, 100), Work)
    end.

run_demo(N, Work, Paths, T0) ->
    Signals = exported(aion, signal, 4),
    Cancel = exported(aion, cancel, 2),
    Db = filename:join(Work, "aion.db"),
    {ok, Shop} = shop_server:start(#{db_path => filename:join(Work, "shop.db"),
                                     stock => #{<<"widget">> => 100000, <<"gadget">> => 100000,
                                                <<"rare">> => 15},
                                     fail_rate => 0.08, hang_rate => 0.02, hang_ms => 2500,
                                     seed => 7}),
    Url = list_to_binary(shop_server:url(Shop)),
    say("shop service on ~s (8% of requests answer 503, 2% hang 2.5 s)", [Url]),
    Engine = engine_name(),
    Log = filename:join(Work, "engine.log"),
    {Port1, _} = start_engine(Engine, Db, Paths, Log),
    say("engine node ~s up on a fresh database ~s", [Engine, Db]),
    _ = rand:seed(exsss, 2024),
    Plans = [plan(I, Url, Signals, Cancel) || I <- lists:seq(1, N)],
    TStart = now_ms(),
    ok = pmap(fun({Id, Input, _}) ->
                      case start_order(Engine, Id, Input) of
                          {ok, _} -> ok;
                          %% a start retried across a crash that had committed
                          {error, {already_started, _}} -> ok
                      end
              end, Plans, 16),
    say("started ~b orders in ~b ms~s", [N, now_ms() - TStart,
                                          case Signals of
                                              true -> "";
                                              false -> " (signals not in this build: approval stage skipped)"
                                          end]),
    Driver = spawn_link(fun() -> drive(Engine, Plans) end),
    %% kill -9 once about half are terminal
    Half = N div 2,
    {ok, DoneAtKill} = wait_count(Db, fun(Done) -> Done >= Half end, T0 + ?DEADLINE_MS),
    OsPid = rpc:call(Engine, os, getpid, []),
    TKill = now_ms(),
    _ = os:cmd("kill -9 " ++ OsPid),
    ok = wait_port_exit(Port1),
    say("kill -9 engine (OS pid ~s) with ~b of ~b orders terminal, ~b in flight",
        [OsPid, DoneAtKill, N, N - DoneAtKill]),
    TRestart = now_ms(),
    {Port2, _} = start_engine(Engine, Db, Paths, Log),
    TUp = now_ms(),
    say("engine restarted on the same database in ~b ms", [TUp - TRestart]),
    {ok, _} = wait_count(Db, fun(Done) -> Done > DoneAtKill end, T0 + ?DEADLINE_MS),
    TProgress = now_ms(),
    Result = wait_count(Db, fun(Done) -> Done >= N end, T0 + ?DEADLINE_MS),
    TAll = now_ms(),
    unlink(Driver),
    exit(Driver, kill),
    Report = report(Db, Shop, Plans, #{kill => TKill, restart => TRestart, up => TUp,
                                        progress => TProgress, all => TAll,
                                        all_terminal => Result =/= timeout,
                                        signals => Signals, t0 => T0}),
    _ = rpc:call(Engine, init, stop, []),
    ok = wait_port_exit(Port2),
    ok = shop_server:stop(Shop),
    Report.

%% What the driver does to each order: approve, reject, let time out, cancel.
plan(I, Url, Signals, Cancel) ->
    Id = <<"order-", (integer_to_binary(I))/binary>>,
    {Sku, Qty} = case rand:uniform(100) of
                     X when X =< 4 -> {<<"rare">>, 1 + rand:uniform(2)};
                     X when X =< 50 -> {<<"widget">>, rand:uniform(3)};
                     _ -> {<<"gadget">>, rand:uniform(3)}
                 end,
    Action = case {Signals, rand:uniform(100)} of
                 {false, _} -> none;
                 {true, Y} when Y =< 85 -> approve;
                 {true, Y} when Y =< 91 -> reject;
                 {true, Y} when Y =< 96 -> timeout;
                 {true, _} when Cancel -> cancel;
                 {true, _} -> approve
             end,
    Input = #{<<"order_id">> => Id, <<"shop">> => Url, <<"sku">> => Sku, <<"qty">> => Qty,
              <<"amount">> => 100 + rand:uniform(9900),
              <<"approval">> => case Signals of true -> <<"signal">>; false -> <<"auto">> end,
              <<"approval_timeout">> => 4000},
    {Id, Input, Action}.

start_order(Engine, Id, Input) ->
    retry_rpc(Engine, aion, start, [order_saga, Input, #{id => Id}]).

%% Sends each order's approval, rejection or cancel; retries across the engine's
%% restart (a signal is acknowledged only once durable; its signal_id makes a retry
%% of a signal that was recorded before the crash a no-op).
drive(Engine, Plans) ->
    lists:foreach(
      fun({Id, _, approve}) ->
              _ = retry_rpc(Engine, aion, signal, [Id, <<"approve">>, #{<<"approved">> => true},
                                                   #{signal_id => <<Id/binary, "/approve">>}]);
         ({Id, _, reject}) ->
              _ = retry_rpc(Engine, aion, signal, [Id, <<"approve">>,
                                                   #{<<"approved">> => false,
                                                     <<"reason">> => <<"risk check">>},
                                                   #{signal_id => <<Id/binary, "/approve">>}]);
         ({Id, _, cancel}) ->
              _ = retry_rpc(Engine, aion, cancel, [Id, <<"customer cancelled">>]);
         (_) ->
              ok
      end, Plans).

retry_rpc(Node, M, F, A) ->
    case rpc:call(Node, M, F, A, 30000) of
        {badrpc, _} ->
            %% the engine is down (killed, restarting): wait until it answers again
            wait_node(Node, now_ms() + 60000),
            retry_rpc(Node, M, F, A);
        Other ->
            Other
    end.

%%% ---------------------------------------------------------------------------
%%% The engine node (a separate OS process)
%%% ---------------------------------------------------------------------------

engine_name() ->
    {ok, Host} = inet:gethostname(),
    list_to_atom("aion_demo_engine_" ++ os:getpid() ++ "@" ++ Host).

start_engine(Node, Db, Paths, Log) ->
    start_engine(Node, Db, Paths, Log, 5).

start_engine(Node, _Db, _Paths, Log, 0) ->
    error({engine_does_not_start, Node, {see, Log}});
start_engine(Node, Db, Paths, Log, Tries) ->
    [Name, _] = string:split(atom_to_list(Node), "@"),
    Erl = os:find_executable("erl"),
    PathArgs = lists:append([["-pa", P] || P <- Paths]),
    Args = ["-sname", Name, "-setcookie", atom_to_list(erlang:get_cookie()), "-noshell",
            "+sbwt", "none" | PathArgs] ++
           ["-eval", "aion_demo:engine_main(\"" ++ Db ++ "\")"],
    %% open_port's spawn runs the command as `sh -c "exec ..."': the port's OS
    %% process is the engine node itself
    Cmd = lists:join(" ", [sh_quote(A) || A <- [Erl | Args]]) ++
          " >>" ++ sh_quote(Log) ++ " 2>&1",
    Port = open_port({spawn, lists:flatten(Cmd)}, [exit_status]),
    case wait_ready(Node, Port, now_ms() + 30000) of
        ok -> {Port, Node};
        {exited, S} ->
            %% the old instance's name may linger in epmd for a moment: try again
            say("engine exited at start (status ~b); retrying", [S]),
            start_engine(Node, Db, Paths, Log, Tries - 1)
    end.

sh_quote(S) -> "'" ++ lists:flatten(string:replace(S, "'", "'\\''", all)) ++ "'".

wait_ready(Node, Port, Deadline) ->
    receive
        {Port, {exit_status, S}} -> {exited, S}
    after 0 ->
            case rpc:call(Node, ?MODULE, engine_ready, [], 5000) of
                true -> ok;
                _ ->
                    now_ms() < Deadline orelse error({engine_not_ready, Node}),
                    receive {Port, {exit_status, S}} -> {exited, S}
                    after 100 -> wait_ready(Node, Port, Deadline)
                    end
            end
    end.

wait_node(Node, Deadline) ->
    case rpc:call(Node, ?MODULE, engine_ready, [], 5000) of
        true -> ok;
        _ ->
            now_ms() < Deadline orelse error({engine_unreachable, Node}),
            receive after 100 -> wait_node(Node, Deadline) end
    end.

wait_port_exit(Port) ->
    receive {Port, {exit_status, _}} -> ok
    after 30000 -> error(engine_did_not_exit)
    end.

%% @doc Runs in the engine node: starts the `aion' application on `Db'.
-spec engine_main(string()) -> ok.
engine_main(Db) ->
    ok = application:load(aion),
    ok = application:set_env(aion, db_path, Db),
    ok = application:set_env(aion, synchronous, normal),
    {ok, _} = application:ensure_all_started(aion),
    {ok, _} = application:ensure_all_started(inets),
    ok = shop_client:ensure_started(),
    ok.

%% @doc True once the engine node's default engine is running.
-spec engine_ready() -> boolean().
engine_ready() ->
    lists:keymember(aion, 1, application:which_applications())
        andalso aion_engine:is_running(aion_default).

%%% ---------------------------------------------------------------------------
%%% Watching the engine's database (WAL reader; never writes)
%%% ---------------------------------------------------------------------------

count_terminal(Db) ->
    case aion_sql:open(Db, #{mode => read_only}) of
        {ok, H} ->
            R = aion_sql:query(H, <<"SELECT count(*) FROM runs WHERE workflow_id LIKE 'order-%'"
                                    " AND status IN ('completed', 'failed', 'cancelled',"
                                    " 'terminated', 'timed_out')">>),
            ok = aion_sql:close(H),
            case R of {ok, [{C}]} -> C; _ -> 0 end;
        {error, _} -> 0
    end.

wait_count(Db, Pred, Deadline) ->
    C = count_terminal(Db),
    case Pred(C) of
        true -> {ok, C};
        false ->
            case now_ms() < Deadline of
                true -> receive after 50 -> wait_count(Db, Pred, Deadline) end;
                false -> timeout
            end
    end.

%%% ---------------------------------------------------------------------------
%%% Report
%%% ---------------------------------------------------------------------------

report(Db, Shop, Plans, T) ->
    {ok, H} = aion_sql:open(Db, #{mode => read_only}),
    try report(H, Db, Shop, Plans, T)
    after aion_sql:close(H)
    end.

report(H, _Db, Shop, Plans, #{kill := TKill, restart := TRestart, up := TUp,
                              progress := TProgress, all := TAll, all_terminal := AllDone,
                              signals := Signals, t0 := T0}) ->
    N = length(Plans),
    {ok, Runs} = aion_sql:query(H, <<"SELECT workflow_id, run_id, status FROM runs"
                                      " WHERE workflow_id LIKE 'order-%'">>),
    ByStatus = lists:foldl(fun({_, _, S}, M) -> maps:update_with(S, fun(C) -> C + 1 end, 1, M) end,
                           #{}, Runs),
    io:format("~n==== aion demo: ~b orders, kill -9 in the middle ====~n", [N]),
    io:format("orders by final status:~n"),
    [io:format("  ~-12s ~5b~n", [S, C]) || {S, C} <- lists:sort(maps:to_list(ByStatus))],
    io:format("planned: ~s~n", [plan_summary(Plans, Signals)]),
    {ok, Failed} = aion_sql:query(H, <<"SELECT data FROM events WHERE type = 'activity_failed'">>),
    Kinds = [failure_kind(D) || {D} <- Failed],
    Errors = [K || {false, K} <- Kinds],
    Timeouts = length([x || timeout <- Errors]),
    Unavailable = length([x || unavailable <- Errors]),
    Stats = shop_server:stats(Shop),
    io:format("activity attempts failed and retried: ~b (timeouts ~b, HTTP 503 ~b, other ~b);"
              " final activity failures (out of stock, declined): ~b~n",
              [length(Errors), Timeouts, Unavailable, length(Errors) - Timeouts - Unavailable,
               length([x || {true, _} <- Kinds])]),
    io:format("shop: ~b requests, ~b answered 503, ~b hung, ~b answered from an idempotency key~n",
              [maps:get(requests, Stats), maps:get(failed_503, Stats), maps:get(hung, Stats),
               maps:get(replayed, Stats)]),
    io:format("recovery: engine back ~b ms after the kill, first order finished ~b ms after "
              "restart, all orders terminal ~b ms after restart (total run ~.1f s)~n",
              [TUp - TKill, TProgress - TRestart, TAll - TRestart, (TAll - T0) / 1000]),
    Expect = maps:from_list([{W, expectation(S)} || {W, _, S} <- Runs]),
    NotTerminal = [W || {W, _, S} <- Runs, not lists:member(S, ?TERMINAL)],
    Ledger = shop_server:ledger_check(Shop, maps:filter(fun(_, E) -> E =/= other end, Expect)),
    Checks = [{"every order started", length(Runs) =:= N, length(Runs)},
              {"every order terminal", AllDone andalso NotTerminal =:= [], NotTerminal},
              {"no order stuck, terminated or timed out",
               [x || {_, other} <- maps:to_list(Expect)] =:= [], ByStatus},
              {"ledger: completed charged once, compensated refunded once, stock consistent",
               element(1, Ledger) =:= ok, Ledger}],
    io:format("checks:~n"),
    Ok = lists:foldl(fun({Name, Pass, Detail}, Acc) ->
                             io:format("  [~s] ~s~n", [case Pass of true -> "ok"; false -> "FAIL" end, Name]),
                             Pass orelse io:format("        ~P~n", [Detail, 30]),
                             Acc andalso Pass
                     end, true, Checks),
    timeline(H, Runs, TKill),
    case Ok of
        true -> io:format("~nDEMO PASSED~n"), 0;
        false -> io:format("~nDEMO FAILED~n"), 1
    end.

expectation(<<"completed">>) -> completed;
expectation(<<"failed">>) -> compensated;
expectation(<<"cancelled">>) -> compensated;
expectation(_) -> other.

plan_summary(Plans, true) ->
    Count = fun(A) -> length([x || {_, _, B} <- Plans, B =:= A]) end,
    io_lib:format("~b approved, ~b rejected, ~b left to time out, ~b cancelled",
                  [Count(approve), Count(reject), Count(timeout), Count(cancel)]);
plan_summary(Plans, false) ->
    io_lib:format("~b auto-approved (no signals in this build)", [length(Plans)]).

failure_kind(Data) ->
    try aion_event:decode({1, <<"activity_failed">>, 0, Data}) of
        #{error := E} = Ev -> {maps:get(final, Ev, false) =:= true, error_kind(E)};
        Ev -> {maps:get(final, Ev, false) =:= true, other}
    catch _:_ -> {false, other}
    end.

error_kind({activity_timeout, _}) -> timeout;
error_kind(timeout) -> timeout;
error_kind(unavailable) -> unavailable;
error_kind(_) -> other.

%% One order's history: preferably one that was in flight across the kill and
%% retried something; else any completed one.
timeline(H, Runs, TKill) ->
    {ok, Spanning} = aion_sql:query(
                       H, <<"SELECT e.run_id FROM events e JOIN runs r ON r.run_id = e.run_id"
                            " WHERE r.status = 'completed' AND e.type = 'activity_failed'"
                            " AND r.started_at < ? AND r.closed_at > ? LIMIT 1">>, [TKill, TKill]),
    RunId = case Spanning of
                [{R} | _] -> R;
                [] -> case [R || {_, R, <<"completed">>} <- Runs] ++ [R || {_, R, _} <- Runs] of
                          [R | _] -> R;
                          [] -> none
                      end
            end,
    case RunId of
        none -> ok;
        _ ->
            {ok, [{Wf}]} = aion_sql:query(H, <<"SELECT workflow_id FROM runs WHERE run_id = ?">>, [RunId]),
            {ok, Rows} = aion_sql:query(H, <<"SELECT seq, type, recorded_at, data FROM events"
                                             " WHERE run_id = ? ORDER BY seq">>, [RunId]),
            io:format("~ntimeline of ~s (the engine was killed at +~b ms):~n~s",
                      [Wf, TKill - element(3, hd(Rows)), aion_cli:format_timeline(Rows)])
    end.

%%% ---------------------------------------------------------------------------
%%% Shop-only smoke (a build without the engine)
%%% ---------------------------------------------------------------------------

shop_smoke(N, Work) ->
    {ok, Shop} = shop_server:start(#{db_path => filename:join(Work, "shop.db"),
                                     stock => #{<<"widget">> => N div 2},
                                     fail_rate => 0.1, hang_rate => 0.02, hang_ms => 300,
                                     seed => 7}),
    Url = shop_server:url(Shop),
    Results = pmap_results(fun(I) -> smoke_order(Url, integer_to_binary(I)) end,
                           lists:seq(1, N), 16),
    Expect = maps:from_list([{integer_to_binary(I), R} || {I, R} <- lists:zip(lists:seq(1, N), Results)]),
    Check = shop_server:ledger_check(Shop, Expect),
    Stats = shop_server:stats(Shop),
    ok = shop_server:stop(Shop),
    io:format("shop smoke: ~b orders, ~p~nshop: ~p~nledger: ~p~n", [N, count_values(Results), Stats, Check]),
    case Check of
        {ok, _} -> io:format("SHOP SMOKE PASSED (the full demo needs the engine)~n"), 0;
        _ -> io:format("SHOP SMOKE FAILED~n"), 1
    end.

smoke_order(Url, O) ->
    {ok, 200, _} = smoke_retry(Url, charge, [{key, <<"c", O/binary>>}, {order, O}, {amount, 10}]),
    case smoke_retry(Url, reserve, [{key, <<"r", O/binary>>}, {order, O}, {sku, "widget"}, {qty, 1}]) of
        {ok, 200, _} ->
            {ok, 200, _} = smoke_retry(Url, ship, [{key, <<"s", O/binary>>}, {order, O},
                                                   {reservation, <<"r", O/binary>>}]),
            completed;
        {ok, 409, _} ->
            {ok, 200, _} = smoke_retry(Url, refund, [{key, <<"f", O/binary>>}, {charge, <<"c", O/binary>>}]),
            compensated
    end.

smoke_retry(Url, Op, Params) ->
    case shop_client:call(Url, Op, Params, 200) of
        {ok, 503, _} -> smoke_retry(Url, Op, Params);
        {error, timeout} -> smoke_retry(Url, Op, Params);
        Other -> Other
    end.

count_values(L) ->
    lists:foldl(fun(V, M) -> maps:update_with(V, fun(C) -> C + 1 end, 1, M) end, #{}, L).

%%% ---------------------------------------------------------------------------

exported(M, F, A) ->
    _ = code:ensure_loaded(M),
    erlang:function_exported(M, F, A).

pmap(Fun, List, Width) ->
    _ = pmap_results(Fun, List, Width),
    ok.

%% Applies Fun to every element with at most Width running at once; results in order.
pmap_results(Fun, List, Width) ->
    Chunks = chunk(List, Width),
    lists:append([begin
                      Self = self(),
                      Refs = [begin
                                  Ref = make_ref(),
                                  _ = spawn_link(fun() -> Self ! {Ref, Fun(X)} end),
                                  Ref
                              end || X <- Chunk],
                      [receive {Ref, R} -> R after 120000 -> error(pmap_timeout) end || Ref <- Refs]
                  end || Chunk <- Chunks]).

chunk([], _) -> [];
chunk(L, N) when length(L) =< N -> [L];
chunk(L, N) -> {A, B} = lists:split(N, L), [A | chunk(B, N)].

%% Wall-clock milliseconds: comparable with the recorded_at and started_at columns.
now_ms() -> erlang:system_time(millisecond).

say(Fmt, Args) ->
    io:format("[demo] " ++ Fmt ++ "~n", Args).
