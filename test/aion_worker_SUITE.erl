%% Named activities on task queues (aion_worker), locally and on another node.
-module(aion_worker_SUITE).
-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-export([all/0, init_per_suite/1, end_per_suite/1, init_per_testcase/2,
         end_per_testcase/2]).
-export([runs_on_worker/1, waits_for_a_worker/1, unknown_activity_is_retryable/1,
         worker_concurrency_bound/1, timeout_kills_worker_attempt/1, worker_dies_mid_attempt/1,
         bad_options/1, worker_on_another_node/1, named_bypasses_local_pool/1,
         named_held_by_pause/1]).

-define(H, aion_b_harness).

all() ->
    [runs_on_worker, waits_for_a_worker, unknown_activity_is_retryable,
     worker_concurrency_bound, timeout_kills_worker_attempt, worker_dies_mid_attempt,
     bad_options, worker_on_another_node, named_bypasses_local_pool,
     named_held_by_pause].

init_per_suite(Config) ->
    application:load(aion),
    application:set_env(aion, start_default_engine, false),
    {ok, _} = application:ensure_all_started(aion),
    Config.

end_per_suite(_Config) ->
    application:stop(aion).

init_per_testcase(TC, Config) ->
    Engine = list_to_atom("wk_" ++ atom_to_list(TC)),
    Db = filename:join(?config(priv_dir, Config), atom_to_list(TC) ++ ".db"),
    Extra = case TC of
                named_bypasses_local_pool -> #{max_concurrent_activities => 1};
                _ -> #{}
            end,
    {ok, _} = aion_engine:start(Extra#{name => Engine, db_path => Db, synchronous => normal}),
    Probe = list_to_atom("probe_" ++ atom_to_list(TC)),
    register(Probe, self()),
    ets:new(aion_b_flaky, [named_table, public]),
    [{engine, Engine}, {probe, atom_to_binary(Probe)} | Config].

end_per_testcase(_TC, Config) ->
    ok = aion_engine:stop(?config(engine, Config)).

e(Config) -> #{engine => ?config(engine, Config)}.

named(Config, Queue, Name, Args, Opts) ->
    {ok, #{workflow_id := W}} =
        aion:start(aion_b_wf, #{do => named_opts, name => Name, queue => Queue, args => Args,
                                opts => Opts}, e(Config)),
    W.

await(Config, W) -> aion:await(W, 30000, e(Config)).

failures(Config, W) ->
    {ok, H} = aion:history(W, e(Config)),
    [E || #{type := activity_failed} = E <- H].

worker(Queue, Acts) ->
    worker(Queue, Acts, 100).
worker(Queue, Acts, Max) ->
    {ok, W} = aion_worker:start_link(#{task_queue => Queue, activities => Acts,
                                       max_concurrency => Max}),
    unlink(W),
    W.

%%% ---------------------------------------------------------------------------

runs_on_worker(Config) ->
    Wk = worker(<<"q">>, #{<<"echo">> => {aion_b_acts, echo},
                           <<"info">> => {aion_b_acts, heartbeat_and_report}}),
    W = named(Config, <<"q">>, <<"echo">>, [[1, <<"two">>]], #{}),
    ?assertEqual({ok, [1, <<"two">>]}, await(Config, W)),
    W2 = named(Config, <<"q">>, <<"info">>, [?config(probe, Config)], #{}),
    ?assertEqual({ok, <<"ok">>}, await(Config, W2)),
    [{info, #{attempt := 1, heartbeat_details := <<"hb">>}, false}] = ?H:collect(info, 1),
    aion_worker:stop(Wk).

waits_for_a_worker(Config) ->
    W = named(Config, <<"late">>, <<"echo">>, [<<"x">>], #{}),
    ?H:wait_until(fun() ->
                          {ok, H} = aion:history(W, e(Config)),
                          lists:any(fun(#{type := T}) -> T =:= activity_scheduled end, H)
                  end, 10000),
    ?assertEqual({error, timeout}, aion:await(W, 100, e(Config))),
    Wk = worker(<<"late">>, #{<<"echo">> => {aion_b_acts, echo}}),
    ?assertEqual({ok, <<"x">>}, await(Config, W)),
    aion_worker:stop(Wk).

unknown_activity_is_retryable(Config) ->
    Wk = worker(<<"q">>, #{<<"echo">> => {aion_b_acts, echo}}),
    W = named(Config, <<"q">>, <<"nope">>, [],
              #{retry => #{maximum_attempts => 2, initial_interval => 10}}),
    ?assertEqual({error, {failed, {activity_failed, {unknown_activity, <<"nope">>}}}},
                 await(Config, W)),
    ?assertMatch([#{final := false}, #{final := true}], failures(Config, W)),
    aion_worker:stop(Wk).

worker_concurrency_bound(Config) ->
    Probe = ?config(probe, Config),
    Counter = atomics:new(2, []),
    persistent_term:put({aion_b_counter, Probe}, Counter),
    Wk = worker(<<"q">>, #{<<"counted">> => {aion_b_acts, counted}}, 2),
    Ws = [named(Config, <<"q">>, <<"counted">>, [Probe, 40], #{}) || _ <- lists:seq(1, 6)],
    [?assertEqual({ok, <<"ok">>}, await(Config, W)) || W <- Ws],
    ?assertEqual(2, atomics:get(Counter, 2)),
    persistent_term:erase({aion_b_counter, Probe}),
    aion_worker:stop(Wk).

timeout_kills_worker_attempt(Config) ->
    Wk = worker(<<"q">>, #{<<"hang">> => {aion_b_acts, hang}}),
    W = named(Config, <<"q">>, <<"hang">>, [?config(probe, Config)],
              #{start_to_close_timeout => 200, retry => #{maximum_attempts => 1}}),
    ?assertEqual({error, {failed, {activity_timeout, start_to_close}}}, await(Config, W)),
    [{hanging, 1, P}] = ?H:collect(hanging, 1),
    ?H:wait_until(fun() -> not is_process_alive(P) end, 5000),
    aion_worker:stop(Wk).

worker_dies_mid_attempt(Config) ->
    Wk = worker(<<"q">>, #{<<"hang">> => {aion_b_acts, hang},
                           <<"echo">> => {aion_b_acts, echo}}),
    W = named(Config, <<"q">>, <<"hang">>, [?config(probe, Config)],
              #{retry => #{maximum_attempts => 1}}),
    [{hanging, 1, P}] = ?H:collect(hanging, 1),
    aion_worker:stop(Wk),
    %% Stopping the worker kills its attempts: a (here final) retryable failure.
    ?assertMatch({error, {failed, {activity_failed, {exception, exit, killed}}}},
                 await(Config, W)),
    ?assertNot(is_process_alive(P)).

bad_options(_Config) ->
    ?assertEqual({error, {invalid_option, task_queue}},
                 aion_worker:start_link(#{task_queue => q, activities => #{}})),
    ?assertEqual({error, {invalid_option, activities}},
                 aion_worker:start_link(#{task_queue => <<"q">>, activities => #{a => {m, f}}})),
    ?assertEqual({error, {invalid_option, max_concurrency}},
                 aion_worker:start_link(#{task_queue => <<"q">>, activities => #{},
                                          max_concurrency => 0})).

worker_on_another_node(Config) ->
    os:cmd("epmd -daemon"),
    case net_kernel:start([list_to_atom("aion_ct_" ++ os:getpid()), shortnames]) of
        {ok, _} -> remote(Config);
        {error, R} -> {skip, {no_distribution, R}}
    end.

remote(Config) ->
    Paths = lists:append([["-pa", D] || D <- code:get_path(), filelib:is_dir(D)]),
    {ok, Peer, Node} = peer:start_link(#{name => peer:random_name(), args => Paths,
                                         connection => 0}),
    try
        pong = net_adm:ping(Node),
        ok = peer:call(Peer, application, load, [aion]),
        ok = peer:call(Peer, application, set_env, [aion, start_default_engine, false]),
        {ok, _} = peer:call(Peer, application, ensure_all_started, [aion]),
        _ = peer:call(Peer, aion_b_acts, start_worker_forever,
                      [<<"remote">>, #{<<"where">> => {aion_b_acts, where}}]),
        ?H:wait_until(fun() -> pg:get_members(aion_pg, {aion_worker, <<"remote">>}) =/= [] end,
                      10000),
        W = named(Config, <<"remote">>, <<"where">>, [], #{}),
        ?assertEqual({ok, atom_to_binary(Node)}, await(Config, W))
    after
        peer:stop(Peer),
        net_kernel:stop()
    end.

named_bypasses_local_pool(Config) ->
    %% The node's pool (1 slot) is taken by a hanging {M, F} activity; a named
    %% activity still runs: its bound is the worker's max_concurrency.
    {ok, #{workflow_id := Local}} =
        aion:start(aion_b_wf, #{do => activity, name => [aion_b_acts, hang],
                                args => [?config(probe, Config)]}, e(Config)),
    [{hanging, 1, _}] = ?H:collect(hanging, 1),
    Wk = worker(<<"q">>, #{<<"echo">> => {aion_b_acts, echo}}),
    W = named(Config, <<"q">>, <<"echo">>, [<<"through">>], #{}),
    ?assertEqual({ok, <<"through">>}, await(Config, W)),
    ok = aion:terminate(Local, done, e(Config)),
    aion_worker:stop(Wk).

named_held_by_pause(Config) ->
    Wk = worker(<<"q">>, #{<<"wait">> => {aion_b_acts, wait_release},
                           <<"echo">> => {aion_b_acts, echo}}),
    {ok, #{workflow_id := W}} =
        aion:start(aion_b_wf, #{do => sleep_then_named, ms => 200, name => <<"wait">>,
                                queue => <<"q">>, args => [?config(probe, Config)]}, e(Config)),
    ok = aion:pause(W, e(Config)),
    ?H:wait_until(fun() ->
                          {ok, H} = aion:history(W, e(Config)),
                          lists:any(fun(#{type := T}) -> T =:= activity_scheduled end, H)
                  end, 10000),
    %% Barrier: another named activity goes through the same worker meanwhile.
    W2 = named(Config, <<"q">>, <<"echo">>, [<<"x">>], #{}),
    ?assertEqual({ok, <<"x">>}, await(Config, W2)),
    receive {started, _, _} -> ct:fail(started_while_paused) after 0 -> ok end,
    ok = aion:resume(W, e(Config)),
    [{started, _, P}] = ?H:collect(started, 1),
    P ! release,
    ?assertEqual({ok, <<"released">>}, await(Config, W)),
    aion_worker:stop(Wk).
