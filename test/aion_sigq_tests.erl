%% EUnit tests of the replay core's signal index and look-ahead (aion_replay parts
%% used by aion_sigq).
-module(aion_sigq_tests).

-include_lib("eunit/include/eunit.hrl").

ev(Seq, Type, Fields) ->
    Fields#{seq => Seq, type => Type, recorded_at => Seq * 100}.

started() -> ev(1, workflow_started, #{workflow_type => <<"t">>, input => null}).
sig(Seq, Name, P) -> ev(Seq, signal_received, #{name => Name, payload => P, signal_id => null}).
tstart(Seq, Id) -> ev(Seq, timer_started, #{timer_id => Id, fire_at => 0}).
fired(Seq, Id) -> ev(Seq, timer_fired, #{timer_id => Id}).
patch(Seq, Id) -> ev(Seq, marker_recorded, #{kind => <<"patch">>, id => Id, value => true}).
cancel(Seq) -> ev(Seq, workflow_cancel_requested, #{reason => why}).

hist(Evs) -> aion_replay:add_all(Evs, aion_replay:new()).

kth_signal_per_name_test() ->
    R = hist([started(), sig(2, <<"a">>, 1), sig(3, <<"b">>, x), sig(4, <<"a">>, 2)]),
    ?assertMatch({ok, #{seq := 2, payload := 1}}, aion_replay:signal(<<"a">>, 1, R)),
    ?assertMatch({ok, #{seq := 4, payload := 2}}, aion_replay:signal(<<"a">>, 2, R)),
    ?assertMatch({ok, #{seq := 3}}, aion_replay:signal(<<"b">>, 1, R)),
    ?assertEqual(none, aion_replay:signal(<<"a">>, 3, R)),
    ?assertEqual(none, aion_replay:signal(<<"c">>, 1, R)).

%% A signal beyond a gap is not indexed until the prefix reaches it.
signal_needs_contiguous_prefix_test() ->
    R = hist([started(), sig(3, <<"a">>, 1)]),
    ?assertEqual(none, aion_replay:signal(<<"a">>, 1, R)),
    ?assertEqual(pending, aion_replay:resolve([{signal, <<"a">>, 1}], true, R)),
    R1 = aion_replay:add(sig(2, <<"b">>, 0), R),
    ?assertMatch({ok, 1, #{seq := 3}, _}, aion_replay:resolve([{signal, <<"a">>, 1}], true, R1)).

signal_vs_timer_lowest_seq_test() ->
    Base = [started(), tstart(2, <<"t1">>)],
    RSig = hist(Base ++ [sig(3, <<"a">>, 1), fired(4, <<"t1">>)]),
    RTim = hist(Base ++ [fired(3, <<"t1">>), sig(4, <<"a">>, 1)]),
    Keys = [{signal, <<"a">>, 1}, {timer, <<"t1">>}],
    {ok, 1, _, R1} = aion_replay:resolve(Keys, true, RSig),
    ?assertEqual(3, aion_replay:watermark(R1)),
    {ok, 2, _, R2} = aion_replay:resolve(Keys, true, RTim),
    ?assertEqual(3, aion_replay:watermark(R2)),
    %% the signal stays for the next receive
    ?assertMatch({ok, #{seq := 4}}, aion_replay:signal(<<"a">>, 1, R2)).

cancel_before_signal_test() ->
    R = hist([started(), cancel(2), sig(3, <<"a">>, 1)]),
    ?assertMatch({ok, cancel, #{seq := 2}, _},
                 aion_replay:resolve([{signal, <<"a">>, 1}], true, R)),
    ?assertMatch({ok, 1, #{seq := 3}, _},
                 aion_replay:resolve([{signal, <<"a">>, 1}], false, R)).

next_command_test() ->
    R = hist([started(), patch(2, <<"p">>), tstart(3, <<"t1">>)]),
    ?assertEqual(#{command => patch, id => <<"p">>}, aion_replay:next_command(R)),
    {recorded, _, R1} = aion_replay:command(#{command => patch, id => <<"p">>}, R),
    ?assertEqual(#{command => timer}, aion_replay:next_command(R1)),
    {recorded, _, R2} = aion_replay:command(#{command => timer}, R1),
    ?assertEqual(none, aion_replay:next_command(R2)).

%% Whatever order the events of a history become known in (deliveries, gap fills),
%% once the prefix is complete the k-th signal of each name and a race between a
%% signal and a timer resolve the same way.
delivery_order_does_not_matter_test() ->
    rand:seed(exsss, {1, 2, 3}),
    lists:foreach(fun(_) -> one_history() end, lists:seq(1, 200)).

one_history() ->
    N = 2 + rand:uniform(20),
    Evs = [case rand:uniform(3) of
               1 -> sig(S, <<"a">>, S);
               2 -> sig(S, <<"b">>, S);
               3 -> fired(S, <<"t1">>)
           end || S <- lists:seq(3, N)],
    Full = [started(), tstart(2, <<"t1">>) | Evs],
    Ref = hist(Full),
    Shuffled = [E || {_, E} <- lists:sort([{rand:uniform(), E} || E <- Full])],
    Other = hist(Shuffled),
    Keys = [{signal, <<"a">>, 2}, {timer, <<"t1">>}],
    ?assertEqual(strip(aion_replay:resolve(Keys, true, Ref)),
                 strip(aion_replay:resolve(Keys, true, Other))),
    [?assertEqual(aion_replay:signal(Name, K, Ref), aion_replay:signal(Name, K, Other))
     || Name <- [<<"a">>, <<"b">>], K <- lists:seq(1, 5)].

strip({ok, Which, Ev, R}) -> {Which, Ev, aion_replay:watermark(R)};
strip(pending) -> pending.
