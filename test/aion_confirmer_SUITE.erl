%% The confirmer: re-sends markers with backoff until the epoch moves or the
%% target exits.
-module(aion_confirmer_SUITE).
-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-export([all/0, init_per_testcase/2, end_per_testcase/2]).
-export([resends_until_epoch_moves/1, backoff_grows_to_cap/1, gives_up_on_exit/1,
         deliveries_share_an_entry/1, delivery_path/1]).

-define(H, aion_b_harness).

all() ->
    [resends_until_epoch_moves, backoff_grows_to_cap, gives_up_on_exit,
     deliveries_share_an_entry, delivery_path].

init_per_testcase(_TC, Config) ->
    Ctx = ?H:start(?config(priv_dir, Config), #{confirm_initial_backoff => 20,
                                                 confirm_max_backoff => 100}),
    [{ctx, Ctx} | Config].

end_per_testcase(_TC, Config) ->
    ?H:stop(?config(ctx, Config)).

%% A process that reports every marker to the test and bumps its epoch on `look'.
lazy(Mb, Test) ->
    spawn(fun() -> lazy_loop(Mb, Test) end).

lazy_loop(Mb, Test) ->
    receive
        look -> _ = aion_mailbox:bump_epoch(Mb, self()), lazy_loop(Mb, Test);
        M when is_atom(M) ->
            Test ! {marker, M, erlang:monotonic_time(millisecond)},
            lazy_loop(Mb, Test)
    end.

pending_is(Ctx, N) ->
    ?H:wait_until(fun() -> aion_confirmer:pending(Ctx) =:= N end, 5000).

resends_until_epoch_moves(Config) ->
    #{mailbox := Mb} = Ctx = ?config(ctx, Config),
    P = lazy(Mb, self()),
    P ! look,
    Epoch = ?H:wait_until(fun() -> case aion_mailbox:epoch(Mb, P) of
                                       0 -> false;
                                       E -> E
                                   end end, 5000),
    ok = aion_confirmer:watch(Ctx, P, Epoch, aion_event),
    [_, _, _] = ?H:collect(marker, 3),
    ?assertEqual(1, aion_confirmer:pending(Ctx)),
    P ! look,
    pending_is(Ctx, 0),
    exit(P, kill).

backoff_grows_to_cap(Config) ->
    #{mailbox := Mb} = Ctx = ?config(ctx, Config),
    P = lazy(Mb, self()),
    T0 = erlang:monotonic_time(millisecond),
    ok = aion_confirmer:watch(Ctx, P, 0, aion_event),
    Ts = [T || {marker, aion_event, T} <- ?H:collect(marker, 6)],
    Gaps = [B - A || {A, B} <- lists:zip([T0 | lists:droplast(Ts)], Ts)],
    ct:pal("resend gaps ~p", [Gaps]),
    %% 20, 40, 80, 100, 100, 100 (ms), with scheduling slack.
    [G1 | _] = Gaps,
    ?assert(G1 >= 20 andalso G1 < 80),
    ?assert(lists:all(fun(G) -> G >= 95 andalso G < 250 end, lists:nthtail(3, Gaps))),
    exit(P, kill),
    pending_is(Ctx, 0).

gives_up_on_exit(Config) ->
    #{mailbox := Mb} = Ctx = ?config(ctx, Config),
    P = lazy(Mb, self()),
    ok = aion_mailbox:retain(Mb, P, 1, x, aion_event),
    ok = aion_confirmer:watch(Ctx, P, aion_mailbox:epoch(Mb, P), aion_event),
    ?assertEqual(1, aion_confirmer:pending(Ctx)),
    exit(P, kill),
    pending_is(Ctx, 0),
    %% A pid the mailbox never saw, dead: given up too.
    Q = spawn(fun() -> ok end),
    ?H:wait_until(fun() -> not is_process_alive(Q) end, 1000),
    ok = aion_confirmer:watch(Ctx, Q, 0, aion_event),
    pending_is(Ctx, 0).

deliveries_share_an_entry(Config) ->
    #{mailbox := Mb} = Ctx = ?config(ctx, Config),
    P = lazy(Mb, self()),
    [ok = aion_confirmer:watch(Ctx, P, 0, aion_event) || _ <- lists:seq(1, 100)],
    ok = aion_confirmer:watch(Ctx, P, 0, aion_query),
    ?assertEqual(1, aion_confirmer:pending(Ctx)),
    Ms = lists:usort([M || {marker, M, _} <- ?H:collect(marker, 4)]),
    ?assertEqual([aion_event, aion_query], Ms),
    P ! look,
    pending_is(Ctx, 0),
    exit(P, kill).

delivery_path(Config) ->
    %% aion_deliver retains + marks + watches; a process that never looks keeps
    %% getting the marker, and its retained event is taken exactly once.
    #{mailbox := Mb, runs := Runs} = Ctx = ?config(ctx, Config),
    P = lazy(Mb, self()),
    true = ets:insert_new(Runs, {<<"r1">>, P}),
    ok = aion_deliver:events(Ctx, <<"r1">>, [{5, <<"timer_fired">>, 1, <<"{}">>}]),
    [_, _] = ?H:collect(marker, 2),
    ?assertEqual([{5, {5, <<"timer_fired">>, 1, <<"{}">>}}], aion_mailbox:take_all(Mb, P)),
    P ! look,
    pending_is(Ctx, 0),
    %% No resident process: nothing retained, nothing watched.
    ok = aion_deliver:events(Ctx, <<"r2">>, [{1, <<"timer_fired">>, 1, <<"{}">>}]),
    ?assertEqual(0, aion_confirmer:pending(Ctx)),
    exit(P, kill).
