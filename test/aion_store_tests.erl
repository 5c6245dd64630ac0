%% EUnit tests of aion_store over the SQLite backend (c_src/store.c).
-module(aion_store_tests).

-include_lib("eunit/include/eunit.hrl").

-import(aion_store_fixture, [tmp_path/1, rm_db/1, with_store/1]).

%%% ------------------------------------------------------------------ fixtures

create(RunId, Wid) ->
    create(RunId, Wid, #{}).

create(RunId, Wid, Extra) ->
    #{run_id => RunId,
      create => maps:merge(#{workflow_id => Wid, type => <<"wf">>, status => <<"running">>,
                             started_at => 1000}, Extra),
      events => [{<<"workflow_started">>, 1000, <<"{}">>}]}.

ev(N) ->
    {<<"e">>, 1000 + N, iolist_to_binary(io_lib:format("{\"n\":~b}", [N]))}.

new_run(S, RunId) ->
    {ok, [[1]]} = aion_store:append(S, [create(RunId, <<"w-", RunId/binary>>)]),
    ok.

seqs(S, RunId) ->
    {ok, H} = aion_store:history(S, RunId, 1),
    [Seq || {Seq, _, _, _} <- H].

%%% --------------------------------------------------------------------- tests

round_trip_test() ->
    with_store(fun(S) ->
        {ok, [[1, 2]]} =
            aion_store:append(S, [(create(<<"r1">>, <<"w1">>))#{
                                      events => [{<<"workflow_started">>, 5, <<"{\"a\":1}">>},
                                                 {<<"x">>, 6, [<<"{\"b\":">>, "[1,2]", $}]}]}]),
        ?assertEqual({ok, [{1, <<"workflow_started">>, 5, <<"{\"a\":1}">>},
                           {2, <<"x">>, 6, <<"{\"b\":[1,2]}">>}]},
                     aion_store:history(S, <<"r1">>, 1)),
        {ok, Run} = aion_store:get_run(S, <<"r1">>),
        ?assertEqual(#{run_id => <<"r1">>, workflow_id => <<"w1">>, type => <<"wf">>,
                       status => <<"running">>, started_at => 1000, closed_at => null,
                       parent => null, continued_from => null, search_attributes => null,
                       stuck_reason => null, data => null, next_seq => 3,
                       parked_seq => null}, Run),
        ?assertEqual({error, not_found}, aion_store:get_run(S, <<"nope">>)),
        ?assertEqual({ok, []}, aion_store:append(S, [])),
        ?assertEqual({ok, [[]]}, aion_store:append(S, [#{run_id => <<"r1">>}]))
    end).

large_event_test() ->
    with_store(fun(S) ->
        ok = new_run(S, <<"big">>),
        Data = binary:copy(<<"0123456789abcdef">>, 65536),
        {ok, [[2]]} = aion_store:append(S, [#{run_id => <<"big">>,
                                              events => [{<<"e">>, 1, Data}]}]),
        {ok, [{2, <<"e">>, 1, Data}]} = aion_store:history(S, <<"big">>, 2),
        %% empty and odd bytes round-trip as they are
        Odd = <<0, 255, 1, 0>>,
        {ok, [[3, 4]]} = aion_store:append(S, [#{run_id => <<"big">>,
                                                 events => [{<<>>, -5, <<>>}, {<<"o">>, 0, Odd}]}]),
        ?assertEqual({ok, [{3, <<>>, -5, <<>>}, {4, <<"o">>, 0, Odd}]},
                     aion_store:history(S, <<"big">>, 3)),
        %% big requests (parsed on a dirty scheduler): many events, many ops
        {ok, [Seqs]} = aion_store:append(S, [#{run_id => <<"big">>, events => [ev(N) || N <- lists:seq(1, 5000)]}]),
        ?assertEqual(lists:seq(5, 5004), Seqs),
        Ids = [integer_to_binary(I) || I <- lists:seq(1, 1000)],
        {ok, Created} = aion_store:append(S, [create(Id, Id) || Id <- Ids]),
        ?assertEqual(lists:duplicate(1000, [1]), Created),
        ?assertEqual(lists:seq(1, 5004), seqs(S, <<"big">>)),
        ?assertError(badarg, aion_store:append(S, [#{run_id => <<"big">>, events => [ev(1) || _ <- lists:seq(1, 999)] ++ [bad]}]))
    end).

range_reads_test() ->
    with_store(fun(S) ->
        ok = new_run(S, <<"r">>),
        {ok, [[2, 3, 4, 5]]} =
            aion_store:append(S, [#{run_id => <<"r">>, events => [ev(N) || N <- [2, 3, 4, 5]]}]),
        ?assertEqual([1, 2, 3, 4, 5], seqs(S, <<"r">>)),
        {ok, Mid} = aion_store:history(S, <<"r">>, 3),
        ?assertEqual([3, 4, 5], [Q || {Q, _, _, _} <- Mid]),
        ?assertEqual({ok, [{5, <<"e">>, 1005, <<"{\"n\":5}">>}]},
                     aion_store:history(S, <<"r">>, 5)),
        ?assertEqual({ok, []}, aion_store:history(S, <<"r">>, 6)),
        ?assertEqual({ok, []}, aion_store:history(S, <<"r">>, 1000000)),
        ?assertEqual({ok, []}, aion_store:history(S, <<"unknown">>, 1)),
        {ok, All} = aion_store:history(S, <<"r">>, 0),
        ?assertEqual(5, length(All))
    end).

multi_batch_appends_test() ->
    with_store(fun(S) ->
        ok = new_run(S, <<"r">>),
        ?assertEqual({ok, [[2, 3]]}, aion_store:append(S, [#{run_id => <<"r">>, events => [ev(2), ev(3)]}])),
        ?assertEqual({ok, [[4, 5]]}, aion_store:append(S, [#{run_id => <<"r">>, events => [ev(4), ev(5)]}])),
        %% several ops of one call, the same run twice: seqs continue
        ok = new_run(S, <<"q">>),
        ?assertEqual({ok, [[6], [2, 3], [7, 8]]},
                     aion_store:append(S, [#{run_id => <<"r">>, events => [ev(6)], expected_seq => 6},
                                           #{run_id => <<"q">>, events => [ev(2), ev(3)]},
                                           #{run_id => <<"r">>, events => [ev(7), ev(8)],
                                             expected_seq => 7}])),
        ?assertEqual(lists:seq(1, 8), seqs(S, <<"r">>)),
        ?assertMatch({ok, #{next_seq := 9}}, aion_store:get_run(S, <<"r">>))
    end).

stale_expected_seq_test() ->
    with_store(fun(S) ->
        ok = new_run(S, <<"r">>),
        ok = new_run(S, <<"other">>),
        {ok, [[2]]} = aion_store:append(S, [#{run_id => <<"r">>, events => [ev(2)], expected_seq => 2}]),
        ?assertEqual({error, {sequence_conflict, 2, 3}},
                     aion_store:append(S, [#{run_id => <<"other">>, events => [ev(9)],
                                             timers_put => [{<<"t">>, 5}]},
                                           #{run_id => <<"r">>, events => [ev(3)],
                                             expected_seq => 2,
                                             timers_put => [{<<"t">>, 5}],
                                             set => #{status => <<"completed">>}}])),
        %% nothing of the call was written (the first op included)
        ?assertEqual([1, 2], seqs(S, <<"r">>)),
        ?assertEqual([1], seqs(S, <<"other">>)),
        ?assertEqual({ok, []}, aion_store:due_timers(S, 10, infinity)),
        ?assertMatch({ok, #{status := <<"running">>, next_seq := 3}}, aion_store:get_run(S, <<"r">>)),
        %% an expected_seq ahead of the head conflicts too; a guard without events works
        ?assertEqual({error, {sequence_conflict, 9, 3}},
                     aion_store:append(S, [#{run_id => <<"r">>, events => [ev(3)], expected_seq => 9}])),
        ?assertEqual({ok, [[]]}, aion_store:append(S, [#{run_id => <<"r">>, expected_seq => 3}]))
    end).

concurrent_conditional_appends_test_() ->
    {timeout, 60, fun() ->
        with_store(fun(S) ->
            ok = new_run(S, <<"r">>),
            lists:foreach(fun(Round) ->
                Expected = Round + 1,
                Parent = self(),
                Pids = [spawn_link(fun() ->
                                       Parent ! {self(), aion_store:append(S, [#{run_id => <<"r">>,
                                                                                 events => [ev(I)],
                                                                                 expected_seq => Expected}])}
                                   end) || I <- lists:seq(1, 8)],
                Results = [receive {P, R} -> R end || P <- Pids],
                Wins = [R || {ok, _} = R <- Results],
                ?assertEqual([{ok, [[Expected]]}], Wins),
                ?assertEqual(7, length([R || {error, {sequence_conflict, E, F}} = R <- Results,
                                             E =:= Expected, F =:= Expected + 1]))
            end, lists:seq(1, 50)),
            ?assertEqual(lists:seq(1, 51), seqs(S, <<"r">>))
        end)
    end}.

closed_run_test() ->
    with_store(fun(S) ->
        ok = new_run(S, <<"r">>),
        {ok, [[2]]} = aion_store:append(S, [#{run_id => <<"r">>, events => [ev(2)],
                                              timers_put => [{<<"t1">>, 10}],
                                              tasks_put => [{<<"1">>, 1, <<"q">>, <<"{}">>}]}]),
        {ok, [[3]]} = aion_store:append(S, [#{run_id => <<"r">>, events => [ev(3)], clear_rows => true,
                                              set => #{status => <<"completed">>, closed_at => 77}}]),
        ?assertEqual({ok, []}, aion_store:due_timers(S, 100, 10)),
        ?assertEqual({ok, []}, aion_store:activity_tasks(S, <<"r">>)),
        ?assertMatch({ok, #{status := <<"completed">>, closed_at := 77, next_seq := 4}},
                     aion_store:get_run(S, <<"r">>)),
        ok = new_run(S, <<"o">>),
        ?assertEqual({error, closed},
                     aion_store:append(S, [#{run_id => <<"o">>, events => [ev(2)]},
                                           #{run_id => <<"r">>, events => [ev(4)],
                                             timers_put => [{<<"t2">>, 10}]}])),
        ?assertEqual({error, closed}, aion_store:append(S, [#{run_id => <<"r">>}])),
        ?assertEqual([1, 2, 3], seqs(S, <<"r">>)),
        ?assertEqual([1], seqs(S, <<"o">>)),
        ?assertEqual({ok, []}, aion_store:due_timers(S, 100, 10)),
        %% every terminal status closes; a status set earlier in the same call counts
        [begin
             Id = <<"s-", St/binary>>,
             ok = new_run(S, Id),
             ?assertEqual({error, closed},
                          aion_store:append(S, [#{run_id => Id, set => #{status => St}},
                                                #{run_id => Id, events => [ev(2)]}])),
             {ok, [[]]} = aion_store:append(S, [#{run_id => Id, set => #{status => St}}]),
             ?assertEqual({error, closed}, aion_store:append(S, [#{run_id => Id, events => [ev(2)]}]))
         end || St <- [<<"completed">>, <<"failed">>, <<"cancelled">>, <<"terminated">>,
                       <<"timed_out">>, <<"continued_as_new">>]],
        %% allow_closed (reopen/retry) writes to a closed run
        ?assertEqual({ok, [[4]]},
                     aion_store:append(S, [#{run_id => <<"r">>, events => [ev(4)], allow_closed => true,
                                             set => #{status => <<"running">>, closed_at => null}}])),
        ?assertMatch({ok, #{status := <<"running">>, closed_at := null}}, aion_store:get_run(S, <<"r">>)),
        ?assertEqual({ok, [[5]]}, aion_store:append(S, [#{run_id => <<"r">>, events => [ev(5)]}]))
    end).

not_found_test() ->
    with_store(fun(S) ->
        ?assertEqual({error, {not_found, <<"ghost">>}},
                     aion_store:append(S, [#{run_id => <<"ghost">>, events => [ev(1)]}])),
        ?assertEqual({error, {not_found, <<"ghost">>}},
                     aion_store:append(S, [#{run_id => <<"ghost">>, timers_put => [{<<"t">>, 1}]}])),
        ?assertEqual({ok, []}, aion_store:due_timers(S, 100, infinity)),
        ?assertEqual({ok, 0}, aion_store:count(S, #{}))
    end).

concurrent_appenders_test_() ->
    {timeout, 120, fun() ->
        with_store(fun(S) ->
            N = 1000,
            Parent = self(),
            Pids = [spawn_link(fun() ->
                                   Id = integer_to_binary(I),
                                   {ok, [[1]]} = aion_store:append(S, [create(Id, Id)]),
                                   R = [aion_store:append(S, [#{run_id => Id, events => [ev(K), ev(K + 1)]}])
                                        || K <- [2, 4, 6]],
                                   Parent ! {self(), R}
                               end) || I <- lists:seq(1, N)],
            Results = [receive {P, R} -> R end || P <- Pids],
            ?assertEqual(lists:duplicate(N, [{ok, [[2, 3]]}, {ok, [[4, 5]]}, {ok, [[6, 7]]}]), Results),
            [?assertEqual(lists:seq(1, 7), seqs(S, integer_to_binary(I))) || I <- lists:seq(1, N)],
            ?assertEqual({ok, N}, aion_store:count(S, #{}))
        end)
    end}.

batch_isolation_test_() ->
    {timeout, 60, fun() ->
        with_store(fun(S) ->
            Parent = self(),
            [ok = new_run(S, integer_to_binary(I)) || I <- lists:seq(1, 100)],
            Pids = [spawn_link(fun() ->
                                   Id = integer_to_binary(I),
                                   Op = case I rem 2 of
                                            0 -> #{run_id => Id, events => [ev(2)]};
                                            1 -> #{run_id => Id, events => [ev(2)], expected_seq => 5}
                                        end,
                                   Parent ! {self(), I, aion_store:append(S, [Op])}
                               end) || I <- lists:seq(1, 100)],
            [receive
                 {P, I, R} when I rem 2 =:= 0 -> ?assertEqual({ok, [[2]]}, R);
                 {P, _, R} -> ?assertEqual({error, {sequence_conflict, 5, 2}}, R)
             end || P <- Pids],
            [?assertEqual(case I rem 2 of 0 -> [1, 2]; 1 -> [1] end, seqs(S, integer_to_binary(I)))
             || I <- lists:seq(1, 100)]
        end)
    end}.

timers_test() ->
    with_store(fun(S) ->
        ok = new_run(S, <<"a">>),
        ok = new_run(S, <<"b">>),
        {ok, [[], []]} = aion_store:append(S, [#{run_id => <<"a">>, timers_put => [{<<"t1">>, 100}, {<<"t2">>, 300}]},
                                               #{run_id => <<"b">>, timers_put => [{<<"t1">>, 200}]}]),
        ?assertEqual({ok, []}, aion_store:due_timers(S, 99, 10)),
        ?assertEqual({ok, [{<<"a">>, <<"t1">>, 100}]}, aion_store:due_timers(S, 100, 10)),
        ?assertEqual({ok, [{<<"a">>, <<"t1">>, 100}, {<<"b">>, <<"t1">>, 200}]},
                     aion_store:due_timers(S, 299, infinity)),
        ?assertEqual({ok, [{<<"a">>, <<"t1">>, 100}]}, aion_store:due_timers(S, 1000, 1)),
        ?assertEqual({ok, []}, aion_store:due_timers(S, 1000, 0)),
        ?assertMatch({ok, [_, _, _]}, aion_store:due_timers(S, 1000, 1 bsl 80)),
        %% After is exclusive, UpTo inclusive
        ?assertEqual({ok, [{<<"b">>, <<"t1">>, 200}, {<<"a">>, <<"t2">>, 300}]},
                     aion_store:due_timers(S, 100, 300, infinity)),
        ?assertEqual({ok, [{<<"b">>, <<"t1">>, 200}]}, aion_store:due_timers(S, 100, 299, 10)),
        ?assertEqual({ok, []}, aion_store:due_timers(S, 300, 1000, 10)),
        ?assertError(badarg, aion_store:due_timers(S, after_all, 1000, 10)),
        %% rescheduling replaces
        {ok, [[]]} = aion_store:append(S, [#{run_id => <<"a">>, timers_put => [{<<"t1">>, 250}]}]),
        ?assertEqual({ok, [{<<"b">>, <<"t1">>, 200}, {<<"a">>, <<"t1">>, 250}, {<<"a">>, <<"t2">>, 300}]},
                     aion_store:due_timers(S, 1000, 10)),
        %% take: must exist; del: need not
        {ok, [[2]]} = aion_store:append(S, [#{run_id => <<"a">>, events => [ev(2)], timers_take => [<<"t1">>]}]),
        ?assertEqual({error, {timer_gone, <<"t1">>}},
                     aion_store:append(S, [#{run_id => <<"b">>, events => [ev(2)], timers_del => [<<"t1">>]},
                                           #{run_id => <<"a">>, events => [ev(3)], timers_take => [<<"t1">>]}])),
        ?assertEqual([1], seqs(S, <<"b">>)),
        ?assertEqual([1, 2], seqs(S, <<"a">>)),
        ?assertEqual({ok, [{<<"b">>, <<"t1">>, 200}, {<<"a">>, <<"t2">>, 300}]},
                     aion_store:due_timers(S, 1000, 10)),
        {ok, [[]]} = aion_store:append(S, [#{run_id => <<"a">>, timers_del => [<<"t1">>, <<"t2">>]}]),
        ?assertEqual({ok, [{<<"b">>, <<"t1">>, 200}]}, aion_store:due_timers(S, 1000, 10))
    end).

tasks_test() ->
    with_store(fun(S) ->
        ok = new_run(S, <<"a">>),
        ok = new_run(S, <<"b">>),
        {ok, [[2], []]} =
            aion_store:append(S, [#{run_id => <<"a">>, events => [ev(2)],
                                    tasks_put => [{<<"1">>, 1, <<"default">>, <<"{\"x\":1}">>},
                                                  {<<"2">>, 1, <<"q2">>, [<<"{}">>]}]},
                                  #{run_id => <<"b">>, tasks_put => [{<<"1">>, 3, <<"q">>, <<"{}">>}]}]),
        ?assertEqual({ok, [{<<"a">>, <<"1">>, 1, <<"default">>, <<"{\"x\":1}">>},
                           {<<"a">>, <<"2">>, 1, <<"q2">>, <<"{}">>}]},
                     aion_store:activity_tasks(S, <<"a">>)),
        ?assertMatch({ok, [_, _, {<<"b">>, <<"1">>, 3, <<"q">>, <<"{}">>}]}, aion_store:activity_tasks(S, all)),
        %% retry: upsert replaces the attempt
        {ok, [[]]} = aion_store:append(S, [#{run_id => <<"a">>, tasks_put => [{<<"1">>, 2, <<"default">>, <<"{}">>}]}]),
        ?assertMatch({ok, [{<<"a">>, <<"1">>, 2, <<"default">>, <<"{}">>}, _]}, aion_store:activity_tasks(S, <<"a">>)),
        %% a completion racing a cancel records nothing
        {ok, [[3]]} = aion_store:append(S, [#{run_id => <<"a">>, events => [ev(3)], tasks_take => [<<"2">>]}]),
        ?assertEqual({error, {task_gone, <<"2">>}},
                     aion_store:append(S, [#{run_id => <<"a">>, events => [ev(4)], tasks_take => [<<"2">>]}])),
        ?assertEqual({error, {task_gone, <<"9">>}},
                     aion_store:append(S, [#{run_id => <<"b">>, tasks_take => [<<"1">>, <<"9">>]}])),
        ?assertMatch({ok, [_]}, aion_store:activity_tasks(S, <<"b">>)),
        ?assertEqual([1, 2, 3], seqs(S, <<"a">>)),
        {ok, [[]]} = aion_store:append(S, [#{run_id => <<"b">>, tasks_del => [<<"1">>, <<"nope">>]}]),
        ?assertEqual({ok, []}, aion_store:activity_tasks(S, <<"b">>)),
        {ok, [[]]} = aion_store:append(S, [#{run_id => <<"a">>, clear_rows => true,
                                             timers_put => [{<<"t">>, 5}]}]),
        ?assertEqual({ok, []}, aion_store:activity_tasks(S, all)),
        %% puts come after clear_rows within one op
        ?assertEqual({ok, [{<<"a">>, <<"t">>, 5}]}, aion_store:due_timers(S, 5, 1))
    end).

set_fields_test() ->
    with_store(fun(S) ->
        {ok, [[1]]} = aion_store:append(S, [create(<<"r">>, <<"w">>,
                                                   #{parent => <<"p">>, continued_from => <<"c">>,
                                                     search_attributes => <<"{\"k\":1}">>,
                                                     data => [<<"{\"d\"">>, <<":1}">>]})]),
        ?assertMatch({ok, #{parent := <<"p">>, continued_from := <<"c">>,
                            search_attributes := <<"{\"k\":1}">>, data := <<"{\"d\":1}">>}},
                     aion_store:get_run(S, <<"r">>)),
        {ok, [[]]} = aion_store:append(S, [#{run_id => <<"r">>,
                                             set => #{stuck_reason => <<"{\"why\":1}">>,
                                                      search_attributes => <<"{}">>,
                                                      data => <<"{\"d\":2}">>}}]),
        ?assertMatch({ok, #{stuck_reason := <<"{\"why\":1}">>, search_attributes := <<"{}">>,
                            data := <<"{\"d\":2}">>, status := <<"running">>, next_seq := 2}},
                     aion_store:get_run(S, <<"r">>)),
        {ok, [[]]} = aion_store:append(S, [#{run_id => <<"r">>, set => #{stuck_reason => null}}]),
        ?assertMatch({ok, #{stuck_reason := null, data := <<"{\"d\":2}">>}}, aion_store:get_run(S, <<"r">>))
    end).

id_reuse_test() ->
    with_store(fun(S) ->
        {ok, [[1]]} = aion_store:append(S, [create(<<"r1">>, <<"w">>)]),
        ?assertEqual({error, {already_exists, <<"r1">>}}, aion_store:append(S, [create(<<"r1">>, <<"w2">>)])),
        %% an open run blocks every policy
        [?assertEqual({error, {already_started, <<"r1">>}},
                      aion_store:append(S, [create(<<"r2">>, <<"w">>, #{id_reuse_policy => P})]))
         || P <- [allow_duplicate, allow_duplicate_failed_only, reject_duplicate]],
        ?assertEqual({error, {already_started, <<"r1">>}}, aion_store:append(S, [create(<<"r2">>, <<"w">>)])),
        close_run(S, <<"r1">>, <<"completed">>),
        ?assertEqual({error, {already_started, <<"r1">>}},
                     aion_store:append(S, [create(<<"r2">>, <<"w">>, #{id_reuse_policy => reject_duplicate})])),
        ?assertEqual({error, {already_started, <<"r1">>}},
                     aion_store:append(S, [create(<<"r2">>, <<"w">>,
                                                  #{id_reuse_policy => allow_duplicate_failed_only})])),
        ?assertEqual({ok, [[1]]},
                     aion_store:append(S, [create(<<"r2">>, <<"w">>, #{id_reuse_policy => allow_duplicate})])),
        ?assertMatch({ok, #{run_id := <<"r2">>}}, aion_store:current_run(S, <<"w">>)),
        [begin
             close_run(S, Prev, St),
             ?assertEqual({ok, [[1]]},
                          aion_store:append(S, [create(Next, <<"w">>,
                                                       #{id_reuse_policy => allow_duplicate_failed_only})])),
             ?assertMatch({ok, #{run_id := Next}}, aion_store:current_run(S, <<"w">>))
         end || {Prev, St, Next} <- [{<<"r2">>, <<"failed">>, <<"r3">>},
                                     {<<"r3">>, <<"cancelled">>, <<"r4">>},
                                     {<<"r4">>, <<"terminated">>, <<"r5">>},
                                     {<<"r5">>, <<"timed_out">>, <<"r6">>}]],
        close_run(S, <<"r6">>, <<"continued_as_new">>),
        ?assertEqual({error, {already_started, <<"r6">>}},
                     aion_store:append(S, [create(<<"r7">>, <<"w">>,
                                                  #{id_reuse_policy => allow_duplicate_failed_only})])),
        %% reject_duplicate on a fresh workflow id is fine; a create in the same call as
        %% a failing op is rolled back
        ?assertEqual({ok, [[1]]},
                     aion_store:append(S, [create(<<"x1">>, <<"wx">>, #{id_reuse_policy => reject_duplicate})])),
        ?assertEqual({error, {not_found, <<"ghost">>}},
                     aion_store:append(S, [create(<<"y1">>, <<"wy">>), #{run_id => <<"ghost">>}])),
        ?assertEqual({error, not_found}, aion_store:get_run(S, <<"y1">>)),
        ?assertEqual({error, not_found}, aion_store:current_run(S, <<"wy">>))
    end).

close_run(S, RunId, Status) ->
    {ok, [[]]} = aion_store:append(S, [#{run_id => RunId, clear_rows => true,
                                         set => #{status => Status, closed_at => 5000}}]),
    ok.

list_count_test() ->
    with_store(fun(S) ->
        Runs = [{<<"r", (integer_to_binary(I))/binary>>, I} || I <- lists:seq(1, 20)],
        [begin
             Type = case I rem 2 of 0 -> <<"even">>; 1 -> <<"odd">> end,
             Parent = case I =< 5 of true -> #{parent => <<"p">>}; false -> #{} end,
             {ok, _} = aion_store:append(S, [create(Id, Id, Parent#{type => Type,
                                                                    started_at => 100 * (I div 2)})])
         end || {Id, I} <- Runs],
        [close_run2(S, Id, 10000 + I) || {Id, I} <- Runs, I rem 3 =:= 0],
        Ids = fun({ok, L}) -> [maps:get(run_id, R) || R <- L] end,
        {ok, All} = aion_store:list(S, #{}),
        ?assertEqual(20, length(All)),
        %% ordered by started_at, then run_id
        Keys = [{maps:get(started_at, R), maps:get(run_id, R)} || R <- All],
        ?assertEqual(lists:sort(Keys), Keys),
        ?assertEqual({ok, 20}, aion_store:count(S, #{})),
        ?assertEqual({ok, 10}, aion_store:count(S, #{type => <<"even">>})),
        ?assertEqual({ok, 6}, aion_store:count(S, #{status => <<"completed">>})),
        ?assertEqual({ok, 20}, aion_store:count(S, #{status => [<<"completed">>, <<"running">>]})),
        ?assertEqual({ok, 0}, aion_store:count(S, #{status => []})),
        ?assertEqual({ok, 3}, aion_store:count(S, #{status => <<"completed">>, type => <<"even">>})),
        ?assertEqual({ok, 5}, aion_store:count(S, #{parent => <<"p">>})),
        ?assertEqual([<<"r7">>], Ids(aion_store:list(S, #{workflow_id => <<"r7">>}))),
        %% exclusive time bounds: started_at = 100 * (I div 2)
        ?assertEqual([<<"r2">>, <<"r3">>], Ids(aion_store:list(S, #{started_after => 0, started_before => 200}))),
        ?assertEqual({ok, 3}, aion_store:count(S, #{started_after => 800})),
        ?assertEqual({ok, 2}, aion_store:count(S, #{closed_after => 10012})),
        ?assertEqual([<<"r3">>, <<"r6">>], Ids(aion_store:list(S, #{closed_before => 10009}))),
        ?assertEqual({ok, 1}, aion_store:count(S, #{closed_after => 10003, closed_before => 10009})),
        %% pages of 3 through the cursor visit every run once, in order
        Pages = page(S, #{limit => 3}, []),
        ?assertEqual([maps:get(run_id, R) || R <- All], Pages),
        ?assertEqual({ok, []}, aion_store:list(S, #{limit => 0})),
        ?assertMatch({ok, [_ | _]}, aion_store:list(S, #{limit => infinity})),
        ?assertEqual({ok, 20}, aion_store:count(S, #{limit => 1 bsl 70})),
        ?assertEqual([<<"r10">>, <<"r11">>], Ids(aion_store:list(S, #{cursor => {400, <<"r9">>}, limit => 2}))),
        {ok, ByStatus} = aion_store:runs_by_status(S, [<<"completed">>]),
        ?assertEqual([<<"r3">>, <<"r6">>, <<"r9">>, <<"r12">>, <<"r15">>, <<"r18">>],
                     [maps:get(run_id, R) || R <- ByStatus]),
        ?assertEqual({ok, []}, aion_store:runs_by_status(S, [])),
        {ok, Both} = aion_store:runs_by_status(S, [<<"completed">>, <<"running">>]),
        ?assertEqual(20, length(Both))
    end).

close_run2(S, Id, ClosedAt) ->
    {ok, [[]]} = aion_store:append(S, [#{run_id => Id, set => #{status => <<"completed">>,
                                                               closed_at => ClosedAt}}]),
    ok.

page(S, Filter, Acc) ->
    {ok, L} = aion_store:list(S, Filter),
    case L of
        [] -> lists:append(lists:reverse(Acc));
        _ ->
            #{started_at := T, run_id := Id} = lists:last(L),
            page(S, Filter#{cursor => {T, Id}}, [[maps:get(run_id, R) || R <- L] | Acc])
    end.

reopen_and_options_test() ->
    Path = tmp_path("reopen"),
    try
        {ok, S1} = aion_store:open(Path, #{synchronous => normal, busy_timeout => 10,
                                           checkpoint_interval => 20}),
        ok = new_run(S1, <<"r">>),
        {ok, [[2]]} = aion_store:append(S1, [#{run_id => <<"r">>, events => [ev(2)],
                                               timers_put => [{<<"t">>, 9}]}]),
        ok = aion_store:checkpoint(S1),
        ok = aion_store:close(S1),
        {ok, S2} = aion_store:open(list_to_binary(Path), #{}),
        ?assertEqual([1, 2], seqs(S2, <<"r">>)),
        ?assertEqual({ok, [{<<"r">>, <<"t">>, 9}]}, aion_store:due_timers(S2, 9, 1)),
        {ok, [[3]]} = aion_store:append(S2, [#{run_id => <<"r">>, events => [ev(3)]}]),
        ok = aion_store:close(S2)
    after
        rm_db(Path)
    end.

checkpoint_runs_in_background_test_() ->
    {timeout, 60, fun() ->
        Path = tmp_path("ckpt"),
        try
            {ok, S} = aion_store:open(Path, #{checkpoint_interval => 50}),
            ok = new_run(S, <<"r">>),
            Big = binary:copy(<<"x">>, 4000),
            %% 80 MB through the WAL, 40 KB per commit: the WAL size threshold wakes
            %% the checkpoint thread several times
            [{ok, _} = aion_store:append(S, [#{run_id => <<"r">>,
                                               events => lists:duplicate(10, {<<"e">>, 1, Big})}])
             || _ <- lists:seq(1, 2000)],
            %% pages reach the main file only through checkpoints, and the WAL is
            %% reused (it restarts after each complete checkpoint), so it stays well
            %% below the data written
            Sizes = fun() -> {filelib:file_size(Path), filelib:file_size(Path ++ "-wal")} end,
            ?assertEqual(ok, wait_until(fun() ->
                                            {ok, [_]} = aion_store:append(S, [#{run_id => <<"r">>,
                                                                                events => [{<<"e">>, 1, <<"{}">>}]}]),
                                            {Db, Wal} = Sizes(),
                                            Db > 60000000 andalso Wal < 70000000
                                        end, 20000), Sizes()),
            ok = aion_store:close(S)
        after
            rm_db(Path)
        end
    end}.

%% Under appends that never pause (6 concurrent appenders keep the writer busy), the
%% checkpoint thread alone never finds the whole WAL backfilled and the WAL grows with
%% everything written (~315 MB here before the fix); the writer backfills the last
%% frames itself once the thread caught up, so the WAL restarts: its largest size
%% here was 49-58 MB. (With synchronous=normal a writer that never syncs can run
%% ahead of the checkpoint's fsyncs, and a cycle grows up to ~2x further.)
wal_bounded_under_steady_appends_test_() ->
    {timeout, 120, fun() ->
        Path = tmp_path("walsteady"),
        try
            {ok, S} = aion_store:open(Path, #{}),
            Page = binary:copy(<<"x">>, 4000),
            Self = self(),
            Ws = [begin
                      Id = <<"r", (integer_to_binary(I))/binary>>,
                      ok = new_run(S, Id),
                      spawn_link(fun() ->
                                         [{ok, _} = aion_store:append(
                                                      S, [#{run_id => Id,
                                                            events => lists:duplicate(
                                                                        16, {<<"e">>, 1, Page})}])
                                          || _ <- lists:seq(1, 800)],
                                         Self ! {done, self()}
                                 end)
                  end || I <- lists:seq(1, 6)],
            Max = wal_max(Path ++ "-wal", Ws, 0),
            ok = aion_store:close(S),
            ?assert(Max < 150000000, Max)
        after
            rm_db(Path)
        end
    end}.

wal_max(_Wal, [], Max) ->
    Max;
wal_max(Wal, Ws, Max) ->
    M = max(Max, filelib:file_size(Wal)),
    receive
        {done, W} -> wal_max(Wal, lists:delete(W, Ws), M)
    after 5 -> wal_max(Wal, Ws, M)
    end.

wait_until(Fun, Ms) ->
    Deadline = erlang:monotonic_time(millisecond) + Ms,
    wait_until_(Fun, Deadline).

wait_until_(Fun, Deadline) ->
    case Fun() of
        true -> ok;
        false ->
            case erlang:monotonic_time(millisecond) > Deadline of
                true -> timeout;
                false -> receive after 10 -> wait_until_(Fun, Deadline) end
            end
    end.

double_close_and_use_after_close_test() ->
    Path = tmp_path("closed"),
    {ok, S} = aion_store:open(Path, #{}),
    ok = new_run(S, <<"r">>),
    ?assertEqual(ok, aion_store:close(S)),
    ?assertEqual(ok, aion_store:close(S)),
    Calls = [fun() -> aion_store:append(S, [#{run_id => <<"r">>}]) end,
             fun() -> aion_store:append(S, []) end,
             fun() -> aion_store:history(S, <<"r">>, 1) end,
             fun() -> aion_store:get_run(S, <<"r">>) end,
             fun() -> aion_store:current_run(S, <<"w">>) end,
             fun() -> aion_store:runs_by_status(S, [<<"running">>]) end,
             fun() -> aion_store:list(S, #{}) end,
             fun() -> aion_store:count(S, #{}) end,
             fun() -> aion_store:due_timers(S, 1, 1) end,
             fun() -> aion_store:activity_tasks(S, all) end,
             fun() -> aion_store:checkpoint(S) end],
    [?assertError(closed, F()) || F <- Calls],
    rm_db(Path).

close_drains_queued_appends_test_() ->
    {timeout, 60, fun() ->
        Path = tmp_path("drain"),
        try
            {ok, S} = aion_store:open(Path, #{}),
            [ok = new_run(S, integer_to_binary(I)) || I <- lists:seq(1, 200)],
            Parent = self(),
            Pids = [spawn_link(fun() ->
                                   Id = integer_to_binary(I),
                                   Parent ! {self(), loop_until_closed(S, Id, 2)}
                               end) || I <- lists:seq(1, 200)],
            %% let them run until at least a few hundred appends committed
            ok = wait_until(fun() -> {ok, N} = total_events(S), N > 600 end, 20000),
            ok = aion_store:close(S),
            Acked = [receive {P, Last} -> {integer_to_binary(I), Last} end
                     || {P, I} <- lists:zip(Pids, lists:seq(1, 200))],
            {ok, S2} = aion_store:open(Path, #{}),
            %% every acknowledged append is there; nothing beyond it
            [?assertEqual(lists:seq(1, Last), seqs(S2, Id)) || {Id, Last} <- Acked],
            ok = aion_store:close(S2)
        after
            rm_db(Path)
        end
    end}.

total_events(S) ->
    {ok, Runs} = aion_store:list(S, #{}),
    {ok, lists:sum([maps:get(next_seq, R) - 1 || R <- Runs])}.

%% Appends until the store is closed; returns the last acknowledged seq.
loop_until_closed(S, Id, Next) ->
    try aion_store:append(S, [#{run_id => Id, events => [ev(Next)], expected_seq => Next}]) of
        {ok, [[Next]]} -> loop_until_closed(S, Id, Next + 1)
    catch
        error:closed -> Next - 1
    end.

killed_caller_test_() ->
    {timeout, 60, fun() ->
        with_store(fun(S) ->
            [ok = new_run(S, integer_to_binary(I)) || I <- lists:seq(1, 50)],
            Pids = [spawn(fun() -> loop_until_closed(S, integer_to_binary(I), 2) end)
                    || I <- lists:seq(1, 50)],
            ok = wait_until(fun() -> {ok, N} = total_events(S), N > 200 end, 20000),
            [begin
                 M = monitor(process, P),
                 exit(P, kill),
                 receive {'DOWN', M, _, _, _} -> ok end
             end || P <- Pids],
            %% the store carries on; histories are gap-free
            %% appends queued by the killed callers are still committed: FIFO, so once
            %% a later append of ours returned, theirs are in
            {ok, _} = aion_store:append(S, [#{run_id => integer_to_binary(I)} || I <- lists:seq(1, 50)]),
            [begin
                 Id = integer_to_binary(I),
                 {ok, #{next_seq := NS}} = aion_store:get_run(S, Id),
                 ?assertEqual(lists:seq(1, NS - 1), seqs(S, Id)),
                 ?assertEqual({ok, [[NS]]}, aion_store:append(S, [#{run_id => Id, events => [ev(0)],
                                                                    expected_seq => NS}]))
             end || I <- lists:seq(1, 50)]
        end)
    end}.

unclosed_handle_is_released_test() ->
    Path = tmp_path("gc"),
    Parent = self(),
    {Pid, M} = spawn_monitor(fun() ->
                                 {ok, S} = aion_store:open(Path, #{}),
                                 ok = new_run(S, <<"r">>),
                                 Parent ! opened
                             end),
    receive opened -> ok end,
    receive {'DOWN', M, process, Pid, normal} -> ok end,
    erlang:garbage_collect(),
    %% the destructor closed the database; it opens again with the data
    {ok, S2} = aion_store:open(Path, #{}),
    ?assertEqual([1], seqs(S2, <<"r">>)),
    ok = aion_store:close(S2),
    rm_db(Path).

badarg_test() ->
    with_store(fun(S) ->
        {aion_store_sqlite, Ref} = S,
        ok = new_run(S, <<"r">>),
        Bad = [not_a_list,
               [not_a_map],
               [#{}],
               [#{run_id => "r"}],
               [#{run_id => <<"r">>, unknown_key => 1}],
               [#{run_id => <<"r">>, events => [{<<"t">>, 1}]}],
               [#{run_id => <<"r">>, events => [{"t", 1, <<"{}">>}]}],
               [#{run_id => <<"r">>, events => [{<<"t">>, 1.5, <<"{}">>}]}],
               [#{run_id => <<"r">>, events => [{<<"t">>, 1, {bad}}]}],
               [#{run_id => <<"r">>, events => not_a_list}],
               [#{run_id => <<"r">>, events => [{<<"t">>, 1, <<"{}">>} | improper]}],
               [#{run_id => <<"r">>, events => [{<<"t">>, 1 bsl 64, <<"{}">>}]}],
               [#{run_id => <<"r">>, expected_seq => 0}],
               [#{run_id => <<"r">>, allow_closed => yes}],
               [#{run_id => <<"r">>, clear_rows => 1}],
               [#{run_id => <<"r">>, timers_put => [{<<"t">>, x}]}],
               [#{run_id => <<"r">>, timers_take => [t]}],
               [#{run_id => <<"r">>, tasks_put => [{<<"1">>, 1, <<"q">>}]}],
               [#{run_id => <<"r">>, tasks_del => <<"1">>}],
               [#{run_id => <<"r">>, set => #{status => running}}],
               [#{run_id => <<"r">>, set => #{what => 1}}],
               [#{run_id => <<"r">>, set => #{parked_seq => <<"1">>}}],
               [#{run_id => <<"r">>, set => #{parked_seq => 1.0}}],
               [#{run_id => <<"r">>, set => #{parked_seq => undefined}}],
               [#{run_id => <<"r">>, set => #{parked_seq => 1 bsl 64}}],
               [#{run_id => <<"r">>, set => not_a_map}],
               [#{run_id => <<"x">>, create => #{workflow_id => <<"w">>}}],
               [#{run_id => <<"x">>, create => #{workflow_id => <<"w">>, type => <<"t">>,
                                                 status => <<"s">>, started_at => 1,
                                                 id_reuse_policy => sometimes}}],
               [#{run_id => <<"r">>}, bad]],
        [?assertError(badarg, aion_store:append(S, Ops)) || Ops <- Bad],
        %% nothing was written by any of them
        ?assertEqual([1], seqs(S, <<"r">>)),
        ?assertError(badarg, aion_nif:store_append(Ref, not_a_ref, [], normal)),
        ?assertError(badarg, aion_nif:store_append(Ref, make_ref(), [], urgent)),
        ?assertError(badarg, aion_store:append({aion_store_sqlite, make_ref()}, [])),
        ?assertError(badarg, aion_store:history(S, "r", 1)),
        ?assertError(badarg, aion_store:history(S, <<"r">>, one)),
        ?assertError(badarg, aion_store:get_run(S, r)),
        ?assertError(badarg, aion_store:current_run(S, 1)),
        ?assertError(badarg, aion_store:runs_by_status(S, <<"running">>)),
        ?assertError(badarg, aion_store:runs_by_status(S, [running])),
        ?assertError(badarg, aion_store:list(S, #{bogus => 1})),
        ?assertError(badarg, aion_store:list(S, #{limit => -1})),
        ?assertError(badarg, aion_store:list(S, #{cursor => {1, 2}})),
        ?assertError(badarg, aion_store:list(S, #{status => [<<"a">>, b]})),
        ?assertError(badarg, aion_store:count(S, [])),
        ?assertError(badarg, aion_store:due_timers(S, 1, -1)),
        ?assertError(badarg, aion_store:due_timers(S, now, 1)),
        ?assertError(badarg, aion_store:activity_tasks(S, some)),
        ?assertError(badarg, aion_store:runs_to_resume({aion_store_sqlite, make_ref()})),
        ?assertError(badarg, aion_store:checkpoint({aion_store_sqlite, self()})),
        ?assertError(badarg, aion_store:close({aion_store_sqlite, make_ref()})),
        ?assertError(badarg, aion_store:open("/tmp/x.db", #{synchronous => off})),
        ?assertError(badarg, aion_store:open("/tmp/x.db", #{busy_timeout => -1})),
        ?assertError(badarg, aion_store:open("/tmp/x.db", #{checkpoint_interval => 0})),
        ?assertError(badarg, aion_store:open("/tmp/x.db", #{bogus => 1})),
        ?assertError(badarg, aion_store:open("", #{})),
        ?assertError(badarg, aion_store:open(<<"a", 0, "b">>, #{})),
        ?assertError(badarg, aion_store:open("/tmp/x.db", [])),
        %% the store still works
        ?assertEqual({ok, [[2]]}, aion_store:append(S, [#{run_id => <<"r">>, events => [ev(2)]}]))
    end).

schema_too_new_test() ->
    Path = tmp_path("schema"),
    try
        {ok, S} = aion_store:open(Path, #{}),
        ok = aion_store:close(S),
        "" = os:cmd("/usr/bin/sqlite3 " ++ Path ++ " 'UPDATE schema_version SET version = 99'"),
        ?assertEqual({error, {schema_too_new, 99, 3}}, aion_store:open(Path, #{})),
        ?assertEqual("99\n", os:cmd("/usr/bin/sqlite3 " ++ Path ++ " 'SELECT version FROM schema_version'")),
        "" = os:cmd("/usr/bin/sqlite3 " ++ Path ++ " 'UPDATE schema_version SET version = 3'"),
        {ok, S2} = aion_store:open(Path, #{}),
        ok = aion_store:close(S2)
    after
        rm_db(Path)
    end.

not_a_database_test() ->
    Path = tmp_path("garbage"),
    try
        ok = file:write_file(Path, binary:copy(<<"this is not a database">>, 100)),
        ?assertMatch({error, {sqlite, 26, _}}, aion_store:open(Path, #{})),
        ?assertMatch({error, {sqlite, _, _}}, aion_store:open("/nonexistent/dir/x.db", #{}))
    after
        rm_db(Path)
    end.

reads_concurrent_with_writes_test_() ->
    {timeout, 60, fun() ->
        with_store(fun(S) ->
            ok = new_run(S, <<"r">>),
            Parent = self(),
            W = spawn_link(fun() -> Parent ! {self(), write_n(S, 2, 500)} end),
            Readers = [spawn_link(fun() -> Parent ! {self(), read_until(S, 501)} end)
                       || _ <- lists:seq(1, 4)],
            [receive {P, ok} -> ok end || P <- [W | Readers]],
            ?assertEqual(lists:seq(1, 501), seqs(S, <<"r">>))
        end)
    end}.

write_n(_S, N, Max) when N > Max + 1 -> ok;
write_n(S, N, Max) ->
    {ok, [[N]]} = aion_store:append(S, [#{run_id => <<"r">>, events => [ev(N)]}]),
    write_n(S, N + 1, Max).

%% Every read sees a gap-free prefix of the history.
read_until(S, Last) ->
    {ok, H} = aion_store:history(S, <<"r">>, 1),
    Seqs = [Q || {Q, _, _, _} <- H],
    ?assertEqual(lists:seq(1, length(Seqs)), Seqs),
    case length(Seqs) >= Last of
        true -> ok;
        false -> read_until(S, Last)
    end.

schema_sql_matches_test() ->
    %% a database made from the documentation copy priv/schema.sql by the sqlite3
    %% CLI is one the store accepts and works with
    Path = tmp_path("schema_sql"),
    Schema = filename:join(code:priv_dir(aion), "schema.sql"),
    try
        "" = os:cmd("/usr/bin/sqlite3 " ++ Path ++ " < " ++ Schema),
        {ok, S} = aion_store:open(Path, #{}),
        ok = new_run(S, <<"r">>),
        {ok, [[2]]} = aion_store:append(S, [#{run_id => <<"r">>, events => [ev(2)]}]),
        ?assertEqual([1, 2], seqs(S, <<"r">>)),
        ok = aion_store:close(S),
        Dump = fun(P) -> os:cmd("/usr/bin/sqlite3 " ++ P ++ " .schema") end,
        Path2 = tmp_path("schema_c"),
        {ok, S2} = aion_store:open(Path2, #{}),
        ok = aion_store:close(S2),
        Norm = fun(Txt) -> re:replace(Txt, "\\s+", "", [global, {return, list}]) end,
        ?assertEqual(Norm(Dump(Path2)), Norm(re:replace(Dump(Path), "--[^\n]*", "", [global, {return, list}]))),
        rm_db(Path2)
    after
        rm_db(Path)
    end.

%% history/3 scans consecutive rowids and seeks where the chain jumps: runs whose
%% events interleave (single appends, batches, several runs in one call) read back
%% complete and in order, from any seq.
interleaved_history_test() ->
    with_store(fun(S) ->
        ok = new_run(S, <<"a">>),
        ok = new_run(S, <<"b">>),
        Step = fun(N) ->
                   Op = fun(R, Evs) -> #{run_id => R, events => Evs} end,
                   case N rem 3 of
                       0 -> {ok, _} = aion_store:append(S, [Op(<<"a">>, [ev(N)])]),
                            {ok, _} = aion_store:append(S, [Op(<<"b">>, [ev(N)])]);
                       1 -> {ok, _} = aion_store:append(S, [Op(<<"a">>, [ev(N), ev(N + 100)])]);
                       2 -> {ok, _} = aion_store:append(S, [Op(<<"b">>, [ev(N)]),
                                                           Op(<<"a">>, [ev(N)]),
                                                           Op(<<"b">>, [ev(N + 100)])])
                   end
               end,
        lists:foreach(Step, lists:seq(1, 60)),
        {ok, #{next_seq := NA}} = aion_store:get_run(S, <<"a">>),
        {ok, #{next_seq := NB}} = aion_store:get_run(S, <<"b">>),
        ?assertEqual(lists:seq(1, NA - 1), seqs(S, <<"a">>)),
        ?assertEqual(lists:seq(1, NB - 1), seqs(S, <<"b">>)),
        [begin
             {ok, H} = aion_store:history(S, R, From),
             ?assertEqual(lists:seq(From, Next - 1), [Q || {Q, _, _, _} <- H])
         end || {R, Next} <- [{<<"a">>, NA}, {<<"b">>, NB}], From <- [2, 7, 30, Next - 1]]
    end).

broken_event_chain_test() ->
    Path = tmp_path("chain"),
    try
        {ok, S} = aion_store:open(Path, #{}),
        ok = new_run(S, <<"r">>),
        {ok, [[2, 3, 4]]} = aion_store:append(S, [#{run_id => <<"r">>, events => [ev(2), ev(3), ev(4)]}]),
        ok = aion_store:close(S),
        "" = os:cmd("/usr/bin/sqlite3 " ++ Path ++ " 'UPDATE events SET prev = NULL WHERE seq = 3'"),
        {ok, S2} = aion_store:open(Path, #{}),
        ?assertMatch({ok, [{3, _, _, _}, {4, _, _, _}]}, aion_store:history(S2, <<"r">>, 3)),
        ?assertEqual({error, {sqlite, 11, <<"broken event chain">>}}, aion_store:history(S2, <<"r">>, 1)),
        ok = aion_store:close(S2)
    after
        rm_db(Path)
    end.

close_racing_reads_test_() ->
    {timeout, 60, fun() ->
        Path = tmp_path("race"),
        try
            {ok, S} = aion_store:open(Path, #{}),
            ok = new_run(S, <<"r">>),
            {ok, _} = aion_store:append(S, [#{run_id => <<"r">>, events => [ev(N) || N <- lists:seq(2, 200)]}]),
            Parent = self(),
            Reads = [fun() -> aion_store:history(S, <<"r">>, 1) end,
                     fun() -> aion_store:list(S, #{}) end,
                     fun() -> aion_store:get_run(S, <<"r">>) end,
                     fun() -> aion_store:checkpoint(S) end,
                     fun() -> aion_store:append(S, [#{run_id => <<"r">>}]) end],
            Pids = [spawn_link(fun() -> Parent ! {self(), read_until_closed(F, Parent, 0)} end)
                    || F <- Reads, _ <- lists:seq(1, 4)],
            %% close while every reader is in its loop
            [receive {running, P} -> ok end || P <- Pids],
            ok = aion_store:close(S),
            %% every reader ran, then saw error(closed); none crashed otherwise
            [receive {P, N} -> ?assert(N > 0) end || P <- Pids],
            {ok, S2} = aion_store:open(Path, #{}),
            ?assertEqual(lists:seq(1, 200), seqs(S2, <<"r">>)),
            ok = aion_store:close(S2)
        after
            rm_db(Path)
        end
    end}.

read_until_closed(F, Parent, N) ->
    N =:= 1 andalso (Parent ! {running, self()}),
    try F() of
        ok -> read_until_closed(F, Parent, N + 1);
        {ok, _} -> read_until_closed(F, Parent, N + 1)
    catch
        error:closed when N > 0 -> N
    end.

nif_reload_keeps_open_handles_test() ->
    Path = tmp_path("reload"),
    try
        {ok, S} = aion_store:open(Path, #{}),
        ok = new_run(S, <<"r">>),
        true = code:soft_purge(aion_nif) orelse true,
        {module, aion_nif} = code:load_file(aion_nif),
        ?assertEqual({ok, [[2]]}, aion_store:append(S, [#{run_id => <<"r">>, events => [ev(2)]}])),
        _ = code:purge(aion_nif),
        ?assertEqual({ok, [[3]]}, aion_store:append(S, [#{run_id => <<"r">>, events => [ev(3)]}])),
        ?assertEqual([1, 2, 3], seqs(S, <<"r">>)),
        ok = aion_store:close(S)
    after
        rm_db(Path)
    end.

%%% ------------------------------------------------------- parked runs (schema 2)

parked(S, RunId, Seq) ->
    aion_store:append(S, [#{run_id => RunId, set => #{parked_seq => Seq}}]).

resume_ids(S) ->
    {ok, Runs} = aion_store:runs_to_resume(S),
    lists:sort([Id || #{run_id := Id} <- Runs]).

parked_seq_test() ->
    with_store(fun(S) ->
        ok = new_run(S, <<"r">>),
        ?assertMatch({ok, #{parked_seq := null}}, aion_store:get_run(S, <<"r">>)),
        ?assertEqual({ok, [[]]}, parked(S, <<"r">>, 1)),
        ?assertMatch({ok, #{parked_seq := 1, next_seq := 2}}, aion_store:get_run(S, <<"r">>)),
        %% other set keys and events leave it alone
        {ok, [[2]]} = aion_store:append(S, [#{run_id => <<"r">>, events => [ev(2)],
                                              set => #{data => <<"{}">>}}]),
        ?assertMatch({ok, #{parked_seq := 1, next_seq := 3}}, aion_store:get_run(S, <<"r">>)),
        %% in the same op as events, and visible in every run read
        {ok, [[3]]} = aion_store:append(S, [#{run_id => <<"r">>, events => [ev(3)],
                                              set => #{parked_seq => 3}}]),
        ?assertMatch({ok, #{parked_seq := 3}}, aion_store:current_run(S, <<"w-r">>)),
        ?assertMatch({ok, [#{parked_seq := 3}]}, aion_store:runs_by_status(S, [<<"running">>])),
        ?assertMatch({ok, [#{parked_seq := 3}]}, aion_store:list(S, #{})),
        ?assertEqual({ok, [[]]}, parked(S, <<"r">>, null)),
        ?assertMatch({ok, #{parked_seq := null}}, aion_store:get_run(S, <<"r">>)),
        ?assertEqual({ok, [[]]}, parked(S, <<"r">>, 1 bsl 62)),
        ?assertMatch({ok, #{parked_seq := 1 bsl 62}}, aion_store:get_run(S, <<"r">>)),
        ?assertEqual({error, {not_found, <<"nope">>}}, parked(S, <<"nope">>, 1)),
        %% closed runs follow the closed rules
        {ok, [[]]} = aion_store:append(S, [#{run_id => <<"r">>,
                                             set => #{status => <<"completed">>, closed_at => 5}}]),
        ?assertEqual({error, closed}, parked(S, <<"r">>, 3)),
        ?assertMatch({ok, #{parked_seq := 1 bsl 62}}, aion_store:get_run(S, <<"r">>)),
        ?assertEqual({ok, [[]]},
                     aion_store:append(S, [#{run_id => <<"r">>, allow_closed => true,
                                             set => #{parked_seq => null}}])),
        ?assertMatch({ok, #{parked_seq := null}}, aion_store:get_run(S, <<"r">>))
    end).

runs_to_resume_test() ->
    with_store(fun(S) ->
        ?assertEqual({ok, []}, aion_store:runs_to_resume(S)),
        Status = fun(Id, St) -> {ok, [[]]} = aion_store:append(S, [#{run_id => Id,
                                                                     set => #{status => St}}]) end,
        %% never parked: selected
        ok = new_run(S, <<"never">>),
        %% parked at the head: not selected (running and paused)
        ok = new_run(S, <<"head">>),
        {ok, [[2]]} = aion_store:append(S, [#{run_id => <<"head">>, events => [ev(2)]}]),
        {ok, [[]]} = parked(S, <<"head">>, 2),
        ok = new_run(S, <<"paused">>),
        Status(<<"paused">>, <<"paused">>),
        {ok, [[]]} = parked(S, <<"paused">>, 1),
        ok = new_run(S, <<"paused_open">>),
        Status(<<"paused_open">>, <<"paused">>),
        %% parked, then an event arrived: selected again
        ok = new_run(S, <<"moved">>),
        {ok, [[]]} = parked(S, <<"moved">>, 1),
        %% stuck: always selected, parked or not
        ok = new_run(S, <<"stuck">>),
        {ok, [[]]} = aion_store:append(S, [#{run_id => <<"stuck">>,
                                             set => #{status => <<"stuck">>, parked_seq => 1,
                                                      stuck_reason => <<"{}">>}}]),
        %% terminal: never selected, parked or not
        [begin
             ok = new_run(S, Id),
             Status(Id, St)
         end || {Id, St} <- [{<<"done">>, <<"completed">>}, {<<"failed">>, <<"failed">>},
                             {<<"can">>, <<"continued_as_new">>}]],
        {ok, [[]]} = aion_store:append(S, [#{run_id => <<"failed">>, allow_closed => true,
                                             set => #{parked_seq => 5}}]),
        ?assertEqual([<<"never">>, <<"paused_open">>, <<"stuck">>], resume_ids(S)),
        {ok, [[2]]} = aion_store:append(S, [#{run_id => <<"moved">>, events => [ev(2)]}]),
        ?assertEqual([<<"moved">>, <<"never">>, <<"paused_open">>, <<"stuck">>], resume_ids(S)),
        %% parked past the head (not a clean park) is selected too
        {ok, [[]]} = parked(S, <<"head">>, 7),
        ?assertEqual([<<"head">>, <<"moved">>, <<"never">>, <<"paused_open">>, <<"stuck">>],
                     resume_ids(S)),
        %% full run maps, ordered by started_at then run_id
        {ok, Runs} = aion_store:runs_to_resume(S),
        ?assertEqual([<<"head">>, <<"moved">>, <<"never">>, <<"paused_open">>, <<"stuck">>],
                     [Id || #{run_id := Id} <- Runs]),
        ?assertMatch([#{parked_seq := 7, next_seq := 3} | _], Runs)
    end).

runs_to_resume_after_close_test() ->
    Path = tmp_path("resume_closed"),
    try
        {ok, S} = aion_store:open(Path, #{}),
        ok = aion_store:close(S),
        ?assertError(closed, aion_store:runs_to_resume(S))
    after
        rm_db(Path)
    end.

%% The version-1 DDL (aion before parked runs), as the old c_src/store.c wrote it.
v1_ddl() ->
    "CREATE TABLE schema_version (version INTEGER NOT NULL);"
    "CREATE TABLE runs (run_id TEXT NOT NULL PRIMARY KEY, workflow_id TEXT NOT NULL,"
    " type TEXT NOT NULL, status TEXT NOT NULL, started_at INTEGER NOT NULL,"
    " closed_at INTEGER, parent TEXT, continued_from TEXT, search_attributes TEXT,"
    " stuck_reason TEXT, data TEXT, next_seq INTEGER NOT NULL DEFAULT 1,"
    " last_event INTEGER, create_seq INTEGER NOT NULL UNIQUE);"
    "CREATE INDEX runs_workflow ON runs (workflow_id, create_seq);"
    "CREATE INDEX runs_status ON runs (status, started_at, run_id);"
    "CREATE INDEX runs_started ON runs (started_at, run_id);"
    "CREATE TABLE events (id INTEGER PRIMARY KEY, run_id TEXT NOT NULL,"
    " seq INTEGER NOT NULL, type TEXT NOT NULL, recorded_at INTEGER NOT NULL,"
    " data TEXT NOT NULL, prev INTEGER);"
    "CREATE TABLE timers (run_id TEXT NOT NULL, timer_id TEXT NOT NULL,"
    " fire_at INTEGER NOT NULL, PRIMARY KEY (run_id, timer_id)) WITHOUT ROWID;"
    "CREATE INDEX timers_fire_at ON timers (fire_at);"
    "CREATE TABLE activity_tasks (run_id TEXT NOT NULL, activity_id TEXT NOT NULL,"
    " attempt INTEGER NOT NULL, task_queue TEXT NOT NULL, data TEXT NOT NULL,"
    " PRIMARY KEY (run_id, activity_id)) WITHOUT ROWID;"
    "INSERT INTO schema_version (version) VALUES (1);"
    "INSERT INTO events (id, run_id, seq, type, recorded_at, data, prev)"
    " VALUES (1, 'old', 1, 'workflow_started', 5, '{}', NULL);"
    "INSERT INTO runs (run_id, workflow_id, type, status, started_at, next_seq, last_event,"
    " create_seq) VALUES ('old', 'w-old', 'wf', 'running', 5, 2, 1, 1);".

sqlite_cli(Path, Sql) ->
    File = Path ++ ".sql",
    ok = file:write_file(File, Sql),
    try os:cmd("/usr/bin/sqlite3 " ++ Path ++ " < " ++ File)
    after file:delete(File)
    end.

migrate_v1_test() ->
    Path = tmp_path("v1"),
    Fresh = tmp_path("v2"),
    try
        "" = sqlite_cli(Path, v1_ddl()),
        {ok, S} = aion_store:open(Path, #{}),
        ?assertMatch({ok, #{run_id := <<"old">>, next_seq := 2, parked_seq := null}},
                     aion_store:get_run(S, <<"old">>)),
        ?assertEqual([<<"old">>], resume_ids(S)),
        {ok, [[2]]} = aion_store:append(S, [#{run_id => <<"old">>, events => [ev(2)],
                                              set => #{parked_seq => 2}}]),
        ?assertEqual([], resume_ids(S)),
        ?assertEqual([1, 2], seqs(S, <<"old">>)),
        ok = aion_store:close(S),
        ?assertEqual("3\n", sqlite_cli(Path, "SELECT version FROM schema_version;")),
        %% the migrated schema is the one a new database gets
        {ok, S2} = aion_store:open(Fresh, #{}),
        ok = aion_store:close(S2),
        Norm = fun(P) -> re:replace(sqlite_cli(P, ".schema"), "\\s+", "", [global, {return, list}]) end,
        ?assertEqual(Norm(Fresh), Norm(Path)),
        %% reopening a migrated database changes nothing
        {ok, S3} = aion_store:open(Path, #{}),
        ?assertMatch({ok, #{parked_seq := 2}}, aion_store:get_run(S3, <<"old">>)),
        ok = aion_store:close(S3),
        ?assertEqual("3\n", sqlite_cli(Path, "SELECT version FROM schema_version;"))
    after
        rm_db(Path),
        rm_db(Fresh)
    end.

%% A version-2 file (v1 + parked_seq, with the runs_status index) with runs of open and
%% closed statuses: after the upgrade, queries by status give what they gave, through
%% the new partial indexes, and the schema is the one a new database gets.
v2_ddl() ->
    v1_ddl() ++
        "ALTER TABLE runs ADD COLUMN parked_seq INTEGER;"
        "UPDATE schema_version SET version = 2;"
        "INSERT INTO runs (run_id, workflow_id, type, status, started_at, closed_at, next_seq,"
        " create_seq) VALUES ('done', 'w-done', 'wf', 'completed', 3, 9, 1, 2),"
        " ('bad', 'w-bad', 'wf', 'failed', 4, 8, 1, 3),"
        " ('park', 'w-park', 'wf', 'paused', 6, NULL, 1, 4);".

migrate_v2_test() ->
    Path = tmp_path("v2"),
    Fresh = tmp_path("v3"),
    try
        "" = sqlite_cli(Path, v2_ddl()),
        {ok, S} = aion_store:open(Path, #{}),
        Ids = fun({ok, Runs}) -> [Id || #{run_id := Id} <- Runs] end,
        ?assertEqual([<<"old">>, <<"park">>],
                     Ids(aion_store:runs_by_status(S, [<<"running">>, <<"paused">>]))),
        ?assertEqual([<<"done">>, <<"bad">>],
                     Ids(aion_store:list(S, #{status => [<<"completed">>, <<"failed">>]}))),
        ?assertEqual([<<"bad">>, <<"old">>],
                     Ids(aion_store:list(S, #{status => [<<"failed">>, <<"running">>]}))),
        ?assertEqual({ok, 1}, aion_store:count(S, #{status => <<"completed">>})),
        ?assertEqual({ok, 2}, aion_store:count(S, #{status => [<<"completed">>, <<"failed">>]})),
        ?assertEqual({ok, 1}, aion_store:count(S, #{status => <<"completed">>,
                                                    closed_after => 8})),
        ?assertEqual({ok, 2}, aion_store:count(S, #{status => [<<"paused">>, <<"running">>]})),
        ?assertEqual([<<"old">>, <<"park">>], resume_ids(S)),
        %% a close moves the run from the open index to the closed one
        {ok, [[2]]} = aion_store:append(S, [#{run_id => <<"old">>, events => [ev(2)],
                                              set => #{status => <<"completed">>,
                                                       closed_at => 10}}]),
        ?assertEqual({ok, 2}, aion_store:count(S, #{status => <<"completed">>})),
        ?assertEqual([<<"park">>], resume_ids(S)),
        ok = aion_store:close(S),
        ?assertEqual("3\n", sqlite_cli(Path, "SELECT version FROM schema_version;")),
        {ok, S2} = aion_store:open(Fresh, #{}),
        ok = aion_store:close(S2),
        Norm = fun(P) -> re:replace(sqlite_cli(P, ".schema"), "\\s+", "", [global, {return, list}]) end,
        ?assertEqual(Norm(Fresh), Norm(Path))
    after
        rm_db(Path),
        rm_db(Fresh)
    end.

%% The queries by status use the partial indexes (their WHERE is repeated word for
%% word): an open-status query never reads closed runs, a count of closed ones is
%% answered from runs_closed.
status_query_plans_test() ->
    Path = tmp_path("plans"),
    try
        {ok, S} = aion_store:open(Path, #{}),
        ok = aion_store:close(S),
        T = "('completed','failed','cancelled','terminated','timed_out','continued_as_new')",
        Plan = fun(Q) -> sqlite_cli(Path, "EXPLAIN QUERY PLAN " ++ Q ++ ";") end,
        ?assertMatch({match, _}, re:run(Plan("SELECT * FROM runs WHERE status IN"
                                             " ('stuck', 'running', 'paused') AND status NOT IN "
                                             ++ T ++ " ORDER BY started_at, run_id"),
                                        "USING INDEX runs_open")),
        ?assertMatch({match, _}, re:run(Plan("SELECT count(*) FROM runs WHERE status = 'failed'"
                                             " AND status IN " ++ T),
                                        "COVERING INDEX runs_closed"))
    after
        rm_db(Path)
    end.

%% A failed migration leaves the version-1 database as it was: a v1 file whose runs
%% table already has a column named parked_seq makes the ALTER fail.
migrate_v1_failure_rolls_back_test() ->
    Path = tmp_path("v1bad"),
    try
        "" = sqlite_cli(Path, v1_ddl() ++ "ALTER TABLE runs ADD COLUMN parked_seq TEXT;"),
        ?assertMatch({error, {sqlite, _, _}}, aion_store:open(Path, #{})),
        ?assertEqual("1\n", sqlite_cli(Path, "SELECT version FROM schema_version;"))
    after
        rm_db(Path)
    end.

%% page_size: a new file gets the option's page size (default 1024); an existing file
%% keeps its own; a bad value is badarg.
page_size_test() ->
    Default = tmp_path("page_default"),
    Big = tmp_path("page_big"),
    try
        {ok, S1} = aion_store:open(Default, #{}),
        ok = aion_store:close(S1),
        ?assertEqual("1024\n", sqlite_cli(Default, "PRAGMA page_size;")),
        {ok, S2} = aion_store:open(Big, #{page_size => 4096}),
        {ok, _} = aion_store:append(S2, [#{run_id => <<"r">>, events => [ev(1)],
                                           create => #{workflow_id => <<"w">>,
                                                       type => <<"t">>,
                                                       status => <<"running">>,
                                                       started_at => 1}}]),
        ok = aion_store:close(S2),
        {ok, S3} = aion_store:open(Big, #{page_size => 512}),
        ?assertMatch({ok, [_]}, aion_store:history(S3, <<"r">>, 1)),
        ok = aion_store:close(S3),
        ?assertEqual("4096\n", sqlite_cli(Big, "PRAGMA page_size;")),
        [?assertError(badarg, aion_store:open(Default, #{page_size => P}))
         || P <- [256, 1000, 131072, big]]
    after
        rm_db(Default),
        rm_db(Big)
    end.

%% The writer's WAL write buffer (c_src/store_vfs.c, synchronous=full) is per store:
%% two stores in one node append at the same time, each commit is at once visible to
%% the store's readers, and closing one leaves the other working; reopened, both hold
%% everything. With synchronous=normal (no buffer) the same holds.
two_stores_wal_buffers_test_() ->
    {timeout, 60, fun() ->
        [two_stores(Sync) || Sync <- [full, normal]]
    end}.

two_stores(Sync) ->
    PA = tmp_path("wb_a"),
    PB = tmp_path("wb_b"),
    try
        {ok, A} = aion_store:open(PA, #{synchronous => Sync}),
        {ok, B} = aion_store:open(PB, #{synchronous => Sync}),
        ok = new_run(A, <<"r">>),
        ok = new_run(B, <<"r">>),
        Parent = self(),
        Writers = [spawn_link(fun() ->
                                  [begin
                                       {ok, [[Seq]]} = aion_store:append(S, [#{run_id => <<"r">>,
                                                                               events => [ev(N)]}]),
                                       %% durable and published: a reader sees it now
                                       {ok, [{Seq, _, _, _} | _]} = aion_store:history(S, <<"r">>, Seq)
                                   end || N <- lists:seq(1, 300)],
                                  Parent ! {self(), done}
                              end) || S <- [A, B, A, B]],
        [receive {W, done} -> ok after 30000 -> error(timeout) end || W <- Writers],
        ?assertEqual(lists:seq(1, 601), seqs(A, <<"r">>)),
        ok = aion_store:close(A),
        {ok, [[602]]} = aion_store:append(B, [#{run_id => <<"r">>, events => [ev(1)]}]),
        ?assertEqual(lists:seq(1, 602), seqs(B, <<"r">>)),
        ok = aion_store:close(B),
        {ok, A2} = aion_store:open(PA, #{synchronous => Sync}),
        ?assertEqual(lists:seq(1, 601), seqs(A2, <<"r">>)),
        ok = aion_store:close(A2)
    after
        rm_db(PA),
        rm_db(PB)
    end.

%% A transaction larger than the writer's page cache (16 MB): SQLite spills pages to
%% the WAL before the commit and reads them back; with the write buffer in between
%% every event still reads back as written, in this process and after a reopen.
transaction_beyond_cache_test_() ->
    {timeout, 60, fun() ->
        Path = tmp_path("wb_spill"),
        try
            {ok, S} = aion_store:open(Path, #{}),
            ok = new_run(S, <<"r">>),
            Events = [{<<"e">>, N, binary:copy(<<(N rem 251)>>, 700 * 1024 + N)}
                      || N <- lists:seq(1, 30)],
            {ok, [Seqs]} = aion_store:append(S, [#{run_id => <<"r">>, events => Events}]),
            ?assertEqual(lists:seq(2, 31), Seqs),
            Expect = [{Seq, T, At, D} || {Seq, {T, At, D}} <- lists:zip(Seqs, Events)],
            ?assertEqual({ok, Expect}, aion_store:history(S, <<"r">>, 2)),
            ok = aion_store:close(S),
            {ok, S2} = aion_store:open(Path, #{}),
            ?assertEqual({ok, Expect}, aion_store:history(S2, <<"r">>, 2)),
            ok = aion_store:close(S2)
        after
            rm_db(Path)
        end
    end}.
