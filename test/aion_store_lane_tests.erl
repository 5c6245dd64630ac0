%% EUnit tests of the store writer's two lanes: aion_store:append/3 with
%% `#{priority => high}' (urgent lane, taken first; a normal transaction in progress
%% is cut short for it and its not-started requests go back to the front).
-module(aion_store_lane_tests).

-include_lib("eunit/include/eunit.hrl").

-import(aion_store_fixture, [with_store/1]).

%%% ------------------------------------------------------------------ fixtures

new_run(S, RunId) ->
    Op = #{run_id => RunId,
           create => #{workflow_id => <<"w-", RunId/binary>>, type => <<"wf">>,
                       status => <<"running">>, started_at => 1000},
           events => [{<<"workflow_started">>, 1000, <<"{}">>}]},
    {ok, [[1]]} = aion_store:append(S, [Op]),
    ok.

%% An event whose data names who wrote it (checked against the history).
ev(Who, K) ->
    {<<"e">>, K, iolist_to_binary(io_lib:format("{\"w\":\"~s\",\"k\":~b}", [Who, K]))}.

%% Each writer's result: the replies it expected and got, the events it sent and
%% those stored.
check_writers(Pids) ->
    lists:foreach(fun(P) ->
                          {Expected, Replies, Sent, Stored} =
                              receive {P, R} -> R after 60000 -> error(timeout) end,
                          ?assertEqual(Expected, Replies),
                          ?assertEqual(Sent, Stored)
                  end, Pids).

history(S, RunId) ->
    {ok, H} = aion_store:history(S, RunId, 1),
    H.

%% Queues an append without waiting (several in flight from one process); the
%% reply comes as {Tag, Reply}.
send(S, Ops, Prio) ->
    {aion_store_sqlite, Ref} = S,
    Tag = make_ref(),
    ok = aion_nif:store_append(Ref, Tag, Ops, Prio),
    Tag.

reply(Tag) ->
    receive {Tag, R} -> R after 60000 -> error({no_reply, Tag}) end.

%%% --------------------------------------------------------------------- tests

priority_option_test() ->
    with_store(fun(S) ->
        ok = new_run(S, <<"r">>),
        Op = fun(K) -> #{run_id => <<"r">>, events => [ev(x, K), ev(x, K + 1)]} end,
        ?assertEqual({ok, [[2, 3]]}, aion_store:append(S, [Op(2)], #{priority => high})),
        ?assertEqual({ok, [[4, 5]]}, aion_store:append(S, [Op(4)], #{})),
        ?assertEqual({ok, [[6, 7]]}, aion_store:append(S, [Op(6)], #{priority => normal})),
        %% several ops in one high-priority call: one transaction, seqs per op
        ?assertEqual({ok, [[8, 9], [10, 11]]},
                     aion_store:append(S, [Op(8), Op(10)], #{priority => high})),
        ?assertEqual(lists:seq(1, 11), [Seq || {Seq, _, _, _} <- history(S, <<"r">>)]),
        ?assertEqual(lists:seq(2, 11), [At || {_, _, At, _} <- tl(history(S, <<"r">>))]),
        %% errors of the urgent lane are those of append/2, nothing written
        ?assertEqual({error, {sequence_conflict, 5, 12}},
                     aion_store:append(S, [(Op(12))#{expected_seq => 5}], #{priority => high})),
        ?assertEqual({error, {not_found, <<"nope">>}},
                     aion_store:append(S, [Op(12), #{run_id => <<"nope">>, events => [ev(x, 1)]}],
                                       #{priority => high})),
        ?assertEqual({error, {timer_gone, <<"t">>}},
                     aion_store:append(S, [(Op(12))#{timers_take => [<<"t">>]}],
                                       #{priority => high})),
        ?assertEqual(11, length(history(S, <<"r">>))),
        %% a large request (parsed on a dirty scheduler) in the urgent lane
        Many = [ev(x, K) || K <- lists:seq(12, 611)],
        {ok, [Seqs]} = aion_store:append(S, [#{run_id => <<"r">>, events => Many}],
                                         #{priority => high}),
        ?assertEqual(lists:seq(12, 611), Seqs)
    end).

unknown_priority_is_badarg_test() ->
    with_store(fun(S) ->
        {aion_store_sqlite, Ref} = S,
        ok = new_run(S, <<"r">>),
        Op = #{run_id => <<"r">>, events => [ev(x, 2)]},
        [?assertError(badarg, aion_store:append(S, [Op], #{priority => P}))
         || P <- [bogus, urgent, low, <<"high">>, 1, undefined]],
        [?assertError(badarg, aion_store:append(S, [Op], O))
         || O <- [[{priority, high}], high, undefined]],
        [?assertError(badarg, aion_nif:store_append(Ref, make_ref(), [Op], P))
         || P <- [bogus, <<"normal">>, {high}, 0]],
        %% nothing was queued: no stray reply, nothing written
        receive {Tag, _} = Stray when is_reference(Tag) -> error({stray, Stray}) after 0 -> ok end,
        ?assertEqual(1, length(history(S, <<"r">>))),
        %% the store still works in both lanes
        ?assertEqual({ok, [[2]]}, aion_store:append(S, [Op], #{priority => high})),
        ?assertEqual({ok, [[3]]}, aion_store:append(S, [Op], #{priority => normal}))
    end).

%% 2,000 normal appends (50 processes, 40 each, all in flight at once, each to its own
%% run with expected_seq) and 400 high-priority ones (10 processes, same shape), plus
%% 5 runs written by both lanes: every append gets its reply, seqs per run are
%% contiguous from 1, each reply's seqs hold that append's events, none lost or
%% duplicated. The normal lane keeps its order across cut transactions (expected_seq
%% would conflict otherwise).
lanes_under_load_test_() ->
    {timeout, 120, fun() ->
        with_store(fun(S) ->
            Own = [{normal, <<"n", (integer_to_binary(I))/binary>>} || I <- lists:seq(1, 50)]
                ++ [{high, <<"h", (integer_to_binary(I))/binary>>} || I <- lists:seq(1, 10)],
            Mixed = [<<"m", (integer_to_binary(I))/binary>> || I <- lists:seq(1, 5)],
            [ok = new_run(S, R) || {_, R} <- Own],
            [ok = new_run(S, R) || R <- Mixed],
            Parent = self(),
            OwnPids = [spawn_link(fun() -> Parent ! {self(), own_writer(S, Prio, R, 40)} end)
                       || {Prio, R} <- Own],
            MixedPids = [spawn_link(fun() -> Parent ! {self(), mixed_writer(S, Prio, W, Mixed)} end)
                         || {Prio, W} <- [{P, {P, I}} || P <- [normal, high], I <- lists:seq(1, 5)]],
            check_writers(OwnPids),
            Written = lists:append([receive {P, R} -> R after 60000 -> error(timeout) end
                                    || P <- MixedPids]),
            %% mixed runs: every reply's seqs hold its events, together 2..N exactly
            lists:foreach(
              fun(RunId) ->
                      H = history(S, RunId),
                      Mine = [{Seq, Data} || {R, Seqs, Datas} <- Written, R =:= RunId,
                                             {Seq, Data} <- lists:zip(Seqs, Datas)],
                      ?assertEqual(lists:seq(1, length(H)), [Seq || {Seq, _, _, _} <- H]),
                      ?assertEqual(lists:sort(Mine), [{Seq, D} || {Seq, _, _, D} <- tl(H)])
              end, Mixed),
            ?assertEqual(10 * 20 * 5, length(Written))
        end)
    end}.

%% N appends of 3 events to RunId, 8 in flight at any time (a new one is queued as
%% each reply comes, so requests keep arriving while the writer applies a batch);
%% returns {ExpectedReplies, Replies, EventsSent, History}.
own_writer(S, Prio, RunId, N) ->
    Ops = [#{run_id => RunId, expected_seq => 2 + 3 * (K - 1),
             events => [ev(RunId, 3 * K + J) || J <- [0, 1, 2]]} || K <- lists:seq(1, N)],
    {First, Rest} = lists:split(8, Ops),
    Replies = window(S, Prio, queue:from_list([send(S, [Op], Prio) || Op <- First]),
                     [[Op] || Op <- Rest], []),
    Expected = [{ok, [[2 + 3 * (K - 1) + J || J <- [0, 1, 2]]]} || K <- lists:seq(1, N)],
    Events = [{Seq, T, At, D} || {Seq, {T, At, D}} <- lists:zip(lists:seq(1, 3 * N + 1),
                                                                  [{<<"workflow_started">>, 1000, <<"{}">>}
                                                                   | [E || #{events := Es} <- Ops, E <- Es]])],
    {Expected, Replies, Events, history(S, RunId)}.

window(S, Prio, InFlight, Ops, Acc) ->
    case queue:out(InFlight) of
        {empty, _} ->
            lists:reverse(Acc);
        {{value, Tag}, Q} ->
            R = reply(Tag),
            case Ops of
                [Req | More] -> window(S, Prio, queue:in(send(S, Req, Prio), Q), More, [R | Acc]);
                [] -> window(S, Prio, Q, [], [R | Acc])
            end
    end.

%% 20 rounds: one 2-event append to each of the runs (in flight together);
%% returns [{RunId, Seqs, Datas}].
mixed_writer(S, Prio, {P, I}, Runs) ->
    Who = io_lib:format("~s~b", [P, I]),
    lists:append(
      [begin
           Sent = [{R, [ev(Who, 2 * Round), ev(Who, 2 * Round + 1)]} || R <- Runs],
           Tags = [send(S, [#{run_id => R, events => Es}], Prio) || {R, Es} <- Sent],
           [begin
                {ok, [Seqs]} = reply(T),
                2 = length(Seqs),
                {R, Seqs, [D || {_, _, D} <- Es]}
            end || {T, {R, Es}} <- lists:zip(Tags, Sent)]
       end || Round <- lists:seq(1, 20)]).

%% Normal requests that fail (sequence_conflict: no savepoint; timer_gone after its
%% events were written: rolled back to its savepoint; not_found in a second op: the
%% whole request) inside batches cut short by a stream of high-priority appends:
%% each gets its own error, nothing of it is written, its neighbours commit.
failures_in_cut_batches_test_() ->
    {timeout, 120, fun() ->
        with_store(fun(S) ->
            Runs = [<<"f", (integer_to_binary(I))/binary>> || I <- lists:seq(1, 20)],
            [ok = new_run(S, R) || R <- Runs ++ [<<"urgent">>]],
            Parent = self(),
            Streamer = spawn_link(fun() -> Parent ! {self(), stream_high(S, 2)} end),
            Pids = [spawn_link(fun() -> Parent ! {self(), failing_writer(S, R, 60)} end)
                    || R <- Runs],
            check_writers(Pids),
            Streamer ! stop,
            Next = receive {Streamer, N} -> N after 60000 -> error(timeout) end,
            ?assertEqual(lists:seq(1, Next - 1),
                         [Seq || {Seq, _, _, _} <- history(S, <<"urgent">>)])
        end)
    end}.

%% Appends one event at a time to run `urgent' with high priority until told to
%% stop; returns the next seq.
stream_high(S, Next) ->
    {ok, [[Next]]} = aion_store:append(S, [#{run_id => <<"urgent">>, events => [ev(u, Next)],
                                             expected_seq => Next}], #{priority => high}),
    receive stop -> Next + 1 after 0 -> stream_high(S, Next + 1) end.

%% N normal requests to RunId (8 in flight), every 5th, 7th and 11th failing;
%% returns {ExpectedReplies, Replies, ExpectedHistory, History}.
failing_writer(S, RunId, N) ->
    Ops = [failing_op(RunId, K) || K <- lists:seq(1, N)],
    {First, Rest} = lists:split(8, Ops),
    Replies = window(S, normal, queue:from_list([send(S, Op, normal) || Op <- First]),
                     Rest, []),
    {Expected, Events, _} =
        lists:foldl(fun({K, Op}, {Acc, Evs, Next}) ->
                            case failing_reply(RunId, K, Next) of
                                ok ->
                                    [#{events := Es}] = Op,
                                    {[{ok, [[Next, Next + 1]]} | Acc], Evs ++ Es, Next + 2};
                                Error ->
                                    {[Error | Acc], Evs, Next}
                            end
                    end, {[], [], 2}, lists:zip(lists:seq(1, N), Ops)),
    Stored = [{T, At, D} || {_, T, At, D} <- tl(history(S, RunId))],
    {lists:reverse(Expected), Replies, Events, Stored}.

failing_op(RunId, K) ->
    Es = [ev(RunId, 2 * K), ev(RunId, 2 * K + 1)],
    if
        K rem 5 =:= 0 -> [#{run_id => RunId, events => Es, expected_seq => 1}];
        K rem 7 =:= 0 -> [#{run_id => RunId, events => Es, timers_take => [<<"none">>]}];
        K rem 11 =:= 0 -> [#{run_id => RunId, events => Es},
                           #{run_id => <<"ghost">>, events => [ev(RunId, 0)]}];
        true -> [#{run_id => RunId, events => Es}]
    end.

failing_reply(_RunId, K, Next) when K rem 5 =:= 0 -> {error, {sequence_conflict, 1, Next}};
failing_reply(_RunId, K, _Next) when K rem 7 =:= 0 -> {error, {timer_gone, <<"none">>}};
failing_reply(_RunId, K, _Next) when K rem 11 =:= 0 -> {error, {not_found, <<"ghost">>}};
failing_reply(_RunId, _K, _Next) -> ok.

%% A high-priority append queued behind a backlog commits ahead of it. While the
%% writer applies a large normal request A (100,000 events), a large one B (50,000
%% events) and 200 small ones are queued to the same run: after A, the writer takes
%% them as one normal transaction. The high append is queued when A's reply comes,
%% while B is applied (far longer than that hop): the transaction is cut after B and
%% the high append commits before every small one (without the urgent lane, or
%% without the cut, it would come after them). Order within the normal lane is kept.
urgent_overtakes_backlog_test_() ->
    {timeout, 60, fun() ->
        with_store(fun(S) ->
            ok = new_run(S, <<"r">>),
            Op = fun(Who, Ks) -> [#{run_id => <<"r">>, events => [ev(Who, K) || K <- Ks]}] end,
            A = send(S, Op(a, lists:seq(1, 100000)), normal),
            B = send(S, Op(b, lists:seq(1, 50000)), normal),
            Small = [send(S, Op(small, [K]), normal) || K <- lists:seq(1, 200)],
            ?assertEqual({ok, [lists:seq(2, 100001)]}, reply(A)),
            High = send(S, Op(high, [1]), high),
            {ok, [[HighSeq]]} = reply(High),
            ?assertEqual({ok, [lists:seq(100002, 150001)]}, reply(B)),
            SmallSeqs = [begin {ok, [[Seq]]} = reply(T), Seq end || T <- Small],
            ?assertEqual(lists:seq(hd(SmallSeqs), hd(SmallSeqs) + 199), SmallSeqs),
            ?assert(HighSeq < hd(SmallSeqs)),
            ?assertEqual(lists:seq(1, 150202), [Seq || {Seq, _, _, _} <- history(S, <<"r">>)])
        end)
    end}.

%% More requests queued than one transaction takes (4,096): while the writer applies
%% a large request, 5,000 small normal ones (with expected_seq) and 10 high ones are
%% queued; the writer takes the normal lane in slices, cut by the high ones, and
%% keeps its order: every reply is exact, the history contiguous.
more_than_a_batch_test_() ->
    {timeout, 60, fun() ->
        with_store(fun(S) ->
            ok = new_run(S, <<"r">>),
            ok = new_run(S, <<"u">>),
            Big = send(S, [#{run_id => <<"r">>, events => [ev(big, K) || K <- lists:seq(1, 100000)]}],
                       normal),
            Tags = lists:append(
                     [[{normal, Seq, send(S, [#{run_id => <<"r">>, events => [ev(s, Seq)],
                                                expected_seq => Seq}], normal)}
                       || Seq <- lists:seq(100002 + 500 * (J - 1), 100001 + 500 * J)]
                      ++ [{high, J + 1, send(S, [#{run_id => <<"u">>, events => [ev(u, J)],
                                                   expected_seq => J + 1}], high)}]
                      || J <- lists:seq(1, 10)]),
            ?assertEqual({ok, [lists:seq(2, 100001)]}, reply(Big)),
            [?assertEqual({Lane, {ok, [[Seq]]}}, {Lane, reply(T)}) || {Lane, Seq, T} <- Tags],
            ?assertEqual(lists:seq(1, 105001), [Seq || {Seq, _, _, _} <- history(S, <<"r">>)]),
            ?assertEqual(lists:seq(1, 11), [Seq || {Seq, _, _, _} <- history(S, <<"u">>)])
        end)
    end}.
