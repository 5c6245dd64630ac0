%% EUnit tests of aion_mailbox (c_src/mailbox.c): markers, exactly-once takes,
%% retain order, replacement, process exit, epochs, tombstones, isolation,
%% concurrency, bad arguments, large payloads, garbage collection and reload.
-module(aion_mailbox_tests).

-include_lib("eunit/include/eunit.hrl").

-define(DEADLINE_MS, 10000).

%%% ---------------------------------------------------------------------------
%%% Helpers
%%% ---------------------------------------------------------------------------

%% A process that waits for `stop' (or a kill) and forwards nothing.
idle() ->
    spawn(fun() -> receive stop -> ok end end).

%% Kills Pid and waits (monitor) until it is gone.
kill_and_wait(Pid) ->
    Ref = monitor(process, Pid),
    exit(Pid, kill),
    receive {'DOWN', Ref, process, Pid, _} -> ok
    after ?DEADLINE_MS -> error({still_alive, Pid})
    end.

%% Polls Fun until it returns true; fails after the deadline. The mailbox's
%% monitor callback runs asynchronously to the exit, so tests observing its
%% effects poll (with a deadline) instead of sleeping.
wait_until(Fun) ->
    wait_until(Fun, erlang:monotonic_time(millisecond) + ?DEADLINE_MS).

wait_until(Fun, Deadline) ->
    case Fun() of
        true ->
            ok;
        false ->
            case erlang:monotonic_time(millisecond) > Deadline of
                true -> error(deadline_passed);
                false -> receive after 1 -> wait_until(Fun, Deadline) end
            end
    end.

flush_markers(Marker) ->
    receive Marker -> flush_markers(Marker) after 0 -> ok end.

%%% ---------------------------------------------------------------------------
%%% Delivery and retention
%%% ---------------------------------------------------------------------------

marker_to_self_test() ->
    M = aion_mailbox:new(),
    ok = aion_mailbox:retain(M, self(), {activity, 1}, #{<<"r">> => 1}, aion_activity_result),
    receive aion_activity_result -> ok after ?DEADLINE_MS -> error(no_marker) end,
    ?assertEqual({ok, #{<<"r">> => 1}}, aion_mailbox:take(M, self(), {activity, 1})).

marker_to_other_process_test() ->
    M = aion_mailbox:new(),
    Parent = self(),
    P = spawn(fun() ->
                      receive aion_signal ->
                              Parent ! {taken, self(), aion_mailbox:take(M, self(), sig)}
                      end
              end),
    ok = aion_mailbox:retain(M, P, sig, <<"payload">>, aion_signal),
    receive {taken, P, R} -> ?assertEqual({ok, <<"payload">>}, R)
    after ?DEADLINE_MS -> error(no_marker)
    end,
    ?assertEqual(0, aion_mailbox:count(M)).

every_retain_sends_its_marker_test() ->
    M = aion_mailbox:new(),
    [ok = aion_mailbox:retain(M, self(), I, I, Marker)
     || {I, Marker} <- [{1, aion_timer}, {2, aion_child}, {3, aion_event}]],
    [receive Marker -> ok after ?DEADLINE_MS -> error({no_marker, Marker}) end
     || Marker <- [aion_timer, aion_child, aion_event]],
    ?assertEqual([{1, 1}, {2, 2}, {3, 3}], aion_mailbox:take_all(M, self())).

take_is_exactly_once_test() ->
    M = aion_mailbox:new(),
    ok = aion_mailbox:retain(M, self(), c, v, aion_event),
    ?assertEqual(1, aion_mailbox:count(M)),
    ?assertEqual({ok, v}, aion_mailbox:take(M, self(), c)),
    ?assertEqual(none, aion_mailbox:take(M, self(), c)),
    ?assertEqual([], aion_mailbox:take_all(M, self())),
    ?assertEqual(0, aion_mailbox:count(M)),
    flush_markers(aion_event).

take_unknown_test() ->
    M = aion_mailbox:new(),
    ?assertEqual(none, aion_mailbox:take(M, self(), nothing)),
    ?assertEqual([], aion_mailbox:take_all(M, self())),
    ?assertEqual(0, aion_mailbox:epoch(M, self())).

concurrent_takers_get_one_copy_test() ->
    M = aion_mailbox:new(),
    Owner = idle(),
    ok = aion_mailbox:retain(M, Owner, only, the_one, aion_event),
    Parent = self(),
    Takers = [spawn(fun() ->
                            receive go -> Parent ! {took, self(), aion_mailbox:take(M, Owner, only)} end
                    end) || _ <- lists:seq(1, 50)],
    [T ! go || T <- Takers],
    Results = [receive {took, T, R} -> R after ?DEADLINE_MS -> error(timeout) end || T <- Takers],
    ?assertEqual([{ok, the_one}], [R || {ok, _} = R <- Results]),
    ?assertEqual(49, length([none || none <- Results])),
    Owner ! stop.

take_all_in_retain_order_test() ->
    M = aion_mailbox:new(),
    Corrs = [{seq, N} || N <- lists:seq(1, 50)],
    [ok = aion_mailbox:retain(M, self(), C, {payload, C}, aion_event) || C <- Corrs],
    ?assertEqual(50, aion_mailbox:count(M)),
    ?assertEqual([{C, {payload, C}} || C <- Corrs], aion_mailbox:take_all(M, self())),
    ?assertEqual([], aion_mailbox:take_all(M, self())),
    ?assertEqual(0, aion_mailbox:count(M)),
    flush_markers(aion_event).

take_from_the_middle_keeps_order_test() ->
    M = aion_mailbox:new(),
    [ok = aion_mailbox:retain(M, self(), N, N * 10, aion_event) || N <- lists:seq(1, 5)],
    ?assertEqual({ok, 30}, aion_mailbox:take(M, self(), 3)),
    ?assertEqual({ok, 50}, aion_mailbox:take(M, self(), 5)),
    ok = aion_mailbox:retain(M, self(), 6, 60, aion_event),
    ?assertEqual([{1, 10}, {2, 20}, {4, 40}, {6, 60}], aion_mailbox:take_all(M, self())),
    flush_markers(aion_event).

replace_entry_test() ->
    M = aion_mailbox:new(),
    ok = aion_mailbox:retain(M, self(), a, 1, aion_event),
    ok = aion_mailbox:retain(M, self(), b, 2, aion_event),
    ok = aion_mailbox:retain(M, self(), a, 3, aion_event),
    ?assertEqual(2, aion_mailbox:count(M)),
    %% The replacement is the newest arrival.
    ?assertEqual([{b, 2}, {a, 3}], aion_mailbox:take_all(M, self())),
    ?assertEqual(0, aion_mailbox:count(M)),
    flush_markers(aion_event).

correlation_matches_exactly_test() ->
    M = aion_mailbox:new(),
    ok = aion_mailbox:retain(M, self(), 1, int, aion_event),
    ok = aion_mailbox:retain(M, self(), 1.0, float, aion_event),
    Key = {activity, <<"42">>, [#{k => v}]},
    ok = aion_mailbox:retain(M, self(), Key, tuple, aion_event),
    ?assertEqual(3, aion_mailbox:count(M)),
    ?assertEqual(none, aion_mailbox:take(M, self(), {activity, <<"42">>, []})),
    ?assertEqual({ok, float}, aion_mailbox:take(M, self(), 1.0)),
    ?assertEqual({ok, int}, aion_mailbox:take(M, self(), 1)),
    ?assertEqual({ok, tuple}, aion_mailbox:take(M, self(), {activity, <<"42">>, [#{k => v}]})),
    flush_markers(aion_event).

%%% ---------------------------------------------------------------------------
%%% Process exit, epochs, tombstones
%%% ---------------------------------------------------------------------------

retain_to_dead_pid_test() ->
    M = aion_mailbox:new(),
    P = idle(),
    kill_and_wait(P),
    ?assertEqual({error, exited}, aion_mailbox:retain(M, P, c, v, aion_event)),
    ?assertEqual(0, aion_mailbox:count(M)),
    ?assertEqual(exited, aion_mailbox:epoch(M, P)),
    ?assertEqual(none, aion_mailbox:take(M, P, c)),
    %% Stamped: a second attempt is refused as well.
    ?assertEqual({error, exited}, aion_mailbox:retain(M, P, c, v, aion_event)).

death_drops_entries_test() ->
    M = aion_mailbox:new(),
    P = idle(),
    [ok = aion_mailbox:retain(M, P, I, binary:copy(<<"x">>, 1000), aion_event)
     || I <- lists:seq(1, 3)],
    ok = aion_mailbox:retain(M, self(), mine, kept, aion_event),
    ?assertEqual(4, aion_mailbox:count(M)),
    ?assertEqual(1, aion_mailbox:bump_epoch(M, P)),
    kill_and_wait(P),
    ok = wait_until(fun() -> aion_mailbox:count(M) =:= 1 end),
    ?assertEqual(exited, aion_mailbox:epoch(M, P)),
    ?assertEqual([], aion_mailbox:take_all(M, P)),
    ?assertEqual({error, exited}, aion_mailbox:retain(M, P, 9, v, aion_event)),
    ?assertEqual({ok, kept}, aion_mailbox:take(M, self(), mine)),
    flush_markers(aion_event).

bump_epoch_test() ->
    M = aion_mailbox:new(),
    ?assertEqual(0, aion_mailbox:epoch(M, self())),
    ?assertEqual(1, aion_mailbox:bump_epoch(M, self())),
    ?assertEqual(2, aion_mailbox:bump_epoch(M, self())),
    ?assertEqual(3, aion_mailbox:bump_epoch(M, self())),
    ?assertEqual(3, aion_mailbox:epoch(M, self())),
    %% Retaining does not move the epoch; only the process looking does.
    ok = aion_mailbox:retain(M, self(), c, v, aion_event),
    ?assertEqual(3, aion_mailbox:epoch(M, self())),
    _ = aion_mailbox:take_all(M, self()),
    flush_markers(aion_event).

epoch_reads_exited_after_death_test() ->
    M = aion_mailbox:new(),
    Parent = self(),
    P = spawn(fun() ->
                      E = aion_mailbox:bump_epoch(M, self()),
                      Parent ! {bumped, self(), E},
                      receive stop -> ok end
              end),
    receive {bumped, P, 1} -> ok after ?DEADLINE_MS -> error(no_bump) end,
    ?assertEqual(1, aion_mailbox:epoch(M, P)),
    P ! stop,
    ok = wait_until(fun() -> aion_mailbox:epoch(M, P) =:= exited end).

bump_epoch_of_dead_pid_raises_test() ->
    M = aion_mailbox:new(),
    P = idle(),
    kill_and_wait(P),
    ?assertError(exited, aion_mailbox:bump_epoch(M, P)),
    ?assertEqual(exited, aion_mailbox:epoch(M, P)).

forget_test() ->
    M = aion_mailbox:new(),
    P = idle(),
    ok = aion_mailbox:retain(M, P, a, 1, aion_event),
    ok = aion_mailbox:retain(M, P, b, 2, aion_event),
    ?assertEqual(1, aion_mailbox:bump_epoch(M, P)),
    ?assertEqual(ok, aion_mailbox:forget(M, P)),
    ?assertEqual(0, aion_mailbox:count(M)),
    ?assertEqual(0, aion_mailbox:epoch(M, P)),
    ?assertEqual(none, aion_mailbox:take(M, P, a)),
    %% Seen again after forget: a fresh record with a fresh monitor.
    ok = aion_mailbox:retain(M, P, c, 3, aion_event),
    ?assertEqual(1, aion_mailbox:count(M)),
    kill_and_wait(P),
    ok = wait_until(fun() -> aion_mailbox:epoch(M, P) =:= exited end),
    ?assertEqual(0, aion_mailbox:count(M)),
    %% forget drops a tombstone; forgetting an unknown pid is fine.
    ?assertEqual(ok, aion_mailbox:forget(M, P)),
    ?assertEqual(0, aion_mailbox:epoch(M, P)),
    ?assertEqual(ok, aion_mailbox:forget(M, P)).

forget_then_death_leaves_nothing_test() ->
    M = aion_mailbox:new(),
    P = idle(),
    ok = aion_mailbox:retain(M, P, a, 1, aion_event),
    ok = aion_mailbox:forget(M, P),
    kill_and_wait(P),
    %% The monitor was removed: no tombstone appears. Prove the mailbox saw
    %% later deaths before checking P.
    Q = idle(),
    1 = aion_mailbox:bump_epoch(M, Q),
    kill_and_wait(Q),
    ok = wait_until(fun() -> aion_mailbox:epoch(M, Q) =:= exited end),
    ?assertEqual(0, aion_mailbox:epoch(M, P)).

tombstones_are_capped_test() ->
    M = aion_mailbox:new(#{max_tombstones => 3}),
    Pids = [idle() || _ <- lists:seq(1, 5)],
    [1 = aion_mailbox:bump_epoch(M, P) || P <- Pids],
    lists:foreach(fun(P) ->
                          kill_and_wait(P),
                          ok = wait_until(fun() -> aion_mailbox:epoch(M, P) =:= exited end)
                  end, Pids),
    %% The two oldest tombstones were dropped.
    ?assertEqual([0, 0, exited, exited, exited], [aion_mailbox:epoch(M, P) || P <- Pids]),
    %% A dropped tombstone's pid is still refused (it is dead) and stamped again.
    [P1 | _] = Pids,
    ?assertEqual({error, exited}, aion_mailbox:retain(M, P1, c, v, aion_event)),
    ?assertEqual(exited, aion_mailbox:epoch(M, P1)),
    ?assertEqual(0, aion_mailbox:epoch(M, lists:nth(3, Pids))).

zero_tombstones_test() ->
    M = aion_mailbox:new(#{max_tombstones => 0}),
    P = idle(),
    ok = aion_mailbox:retain(M, P, c, v, aion_event),
    kill_and_wait(P),
    ok = wait_until(fun() -> aion_mailbox:count(M) =:= 0 end),
    ?assertEqual(0, aion_mailbox:epoch(M, P)),
    ?assertEqual({error, exited}, aion_mailbox:retain(M, P, c, v, aion_event)),
    ?assertEqual(0, aion_mailbox:epoch(M, P)).

many_short_lived_processes_test_() ->
    {timeout, 120, fun many_short_lived_processes/0}.

%% 20,000 processes come and go: the pid table grows (incremental rehash) and
%% keeps finding every pid, and tombstones stay at the cap.
many_short_lived_processes() ->
    M = aion_mailbox:new(#{max_tombstones => 1000}),
    Pids = [begin
                P = idle(),
                ok = aion_mailbox:retain(M, P, x, y, aion_event),
                P
            end || _ <- lists:seq(1, 20000)],
    ?assertEqual(20000, aion_mailbox:count(M)),
    ?assertEqual([], [P || P <- Pids, aion_mailbox:epoch(M, P) =/= 0]),
    ?assertEqual([], [P || P <- Pids, aion_mailbox:take(M, P, x) =/= {ok, y}]),
    ?assertEqual(0, aion_mailbox:count(M)),
    [exit(P, kill) || P <- Pids],
    ok = wait_until(fun() ->
                            length([P || P <- Pids, aion_mailbox:epoch(M, P) =:= exited])
                                =:= 1000
                    end),
    ?assertEqual(0, aion_mailbox:count(M)).

%%% ---------------------------------------------------------------------------
%%% Isolation and concurrency
%%% ---------------------------------------------------------------------------

two_mailboxes_are_isolated_test() ->
    M1 = aion_mailbox:new(),
    M2 = aion_mailbox:new(),
    ok = aion_mailbox:retain(M1, self(), same, one, aion_event),
    ok = aion_mailbox:retain(M2, self(), same, two, aion_event),
    ok = aion_mailbox:retain(M2, self(), other, three, aion_event),
    ?assertEqual(1, aion_mailbox:count(M1)),
    ?assertEqual(2, aion_mailbox:count(M2)),
    ?assertEqual({ok, one}, aion_mailbox:take(M1, self(), same)),
    ?assertEqual(none, aion_mailbox:take(M1, self(), same)),
    ?assertEqual(2, aion_mailbox:count(M2)),
    ?assertEqual(1, aion_mailbox:bump_epoch(M1, self())),
    ?assertEqual(2, aion_mailbox:bump_epoch(M1, self())),
    ?assertEqual(0, aion_mailbox:epoch(M2, self())),
    ok = aion_mailbox:forget(M1, self()),
    ?assertEqual([{same, two}, {other, three}], aion_mailbox:take_all(M2, self())),
    flush_markers(aion_event).

many_processes_concurrently_test_() ->
    {timeout, 300, fun many_processes_concurrently/0}.

many_processes_concurrently() ->
    NProcs = 1000,
    NEntries = 100,
    M = aion_mailbox:new(),
    Parent = self(),
    Indexed = [{I, spawn_link(fun() -> receiver(M, Parent, I, NEntries, #{}, 1) end)}
               || I <- lists:seq(1, NProcs)],
    %% One producer per receiver; producers and receivers all run at once.
    [spawn_link(fun() ->
                        [ok = aion_mailbox:retain(M, R, {I, J}, {payload, I, J}, aion_event)
                         || J <- lists:seq(1, NEntries)]
                end) || {I, R} <- Indexed],
    lists:foreach(
      fun({I, R}) ->
              receive
                  {done, R, Got} ->
                      Want = maps:from_list([{{I, J}, {payload, I, J}}
                                             || J <- lists:seq(1, NEntries)]),
                      ?assertEqual(Want, Got)
              after 120000 -> error({receiver_stuck, I})
              end
      end, Indexed),
    ?assertEqual(0, aion_mailbox:count(M)).

%% Drains its entries on every marker, alternating take_all/2 with take/3 of the
%% lowest correlation not yet seen, and bumps its epoch before each wait.
receiver(_M, Parent, _I, N, Got, _Turn) when map_size(Got) =:= N ->
    Parent ! {done, self(), Got};
receiver(M, Parent, I, N, Got, Turn) ->
    _ = aion_mailbox:bump_epoch(M, self()),
    receive aion_event -> ok end,
    Got1 = case Turn rem 2 of
               0 ->
                   maps:merge(Got, maps:from_list(aion_mailbox:take_all(M, self())));
               1 ->
                   J = lowest_missing(Got, I, 1),
                   case aion_mailbox:take(M, self(), {I, J}) of
                       {ok, V} -> Got#{{I, J} => V};
                       none -> Got
                   end
           end,
    receiver(M, Parent, I, N, Got1, Turn + 1).

lowest_missing(Got, I, J) ->
    case maps:is_key({I, J}, Got) of
        true -> lowest_missing(Got, I, J + 1);
        false -> J
    end.

%% Processes die while producers retain to them and other processes forget them:
%% every retain answers ok or {error, exited}, and once the dust settles nothing
%% is retained and every pid still known reads exited.
retain_racing_exit_test_() ->
    {timeout, 120, fun retain_racing_exit/0}.

retain_racing_exit() ->
    M = aion_mailbox:new(),
    Parent = self(),
    Targets = [idle() || _ <- lists:seq(1, 200)],
    Producers =
        [spawn_link(fun() ->
                            Rs = [aion_mailbox:retain(M, T, N, {N, T}, aion_event)
                                  || N <- lists:seq(1, 200)],
                            [] = [R || R <- Rs, R =/= ok, R =/= {error, exited}],
                            _ = aion_mailbox:bump_epoch(M, self()),
                            Parent ! {produced, self()}
                    end) || T <- Targets],
    Forgetters = [T || {T, I} <- lists:zip(Targets, lists:seq(1, 200)), I rem 10 =:= 0],
    [exit(T, kill) || T <- Targets],
    [ok = aion_mailbox:forget(M, T) || T <- Forgetters],
    [receive {produced, P} -> ok after 60000 -> error(producer_stuck) end || P <- Producers],
    ok = wait_until(fun() -> aion_mailbox:count(M) =:= 0 end),
    %% Targets not forgotten end with tombstones; a forgotten one has either none
    %% or a fresh one (a producer retained to it after it was forgotten).
    ok = wait_until(fun() ->
                            lists:all(fun(T) -> aion_mailbox:epoch(M, T) =:= exited end,
                                      Targets -- Forgetters)
                    end),
    ?assertEqual([], [T || T <- Forgetters,
                           not lists:member(aion_mailbox:epoch(M, T), [0, exited])]).

%%% ---------------------------------------------------------------------------
%%% Bad arguments and large payloads
%%% ---------------------------------------------------------------------------

%% A pid on another node (NEW_PID_EXT): the mailbox only takes local pids.
remote_pid() ->
    Node = <<"aion@remote">>,
    binary_to_term(<<131, 88, 100, (byte_size(Node)):16, Node/binary,
                     0, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0, 1>>).

bad_arguments_test() ->
    M = aion_mailbox:new(),
    Me = self(),
    Remote = remote_pid(),
    ?assert(is_pid(Remote)),
    ?assertNotEqual(node(), node(Remote)),
    ?assertError(badarg, aion_mailbox:retain(make_ref(), Me, c, p, aion_event)),
    ?assertError(badarg, aion_mailbox:retain(not_a_mailbox, Me, c, p, aion_event)),
    ?assertError(badarg, aion_mailbox:retain(M, not_a_pid, c, p, aion_event)),
    ?assertError(badarg, aion_mailbox:retain(M, Remote, c, p, aion_event)),
    ?assertError(badarg, aion_mailbox:retain(M, Me, c, p, "aion_event")),
    ?assertError(badarg, aion_mailbox:retain(M, Me, c, p, {aion_event})),
    ?assertError(badarg, aion_mailbox:take(M, 42, c)),
    ?assertError(badarg, aion_mailbox:take(<<>>, Me, c)),
    ?assertError(badarg, aion_mailbox:take_all(M, Remote)),
    ?assertError(badarg, aion_mailbox:take_all(make_ref(), Me)),
    ?assertError(badarg, aion_mailbox:bump_epoch(M, [])),
    ?assertError(badarg, aion_mailbox:epoch(M, Remote)),
    ?assertError(badarg, aion_mailbox:epoch(#{}, Me)),
    ?assertError(badarg, aion_mailbox:count(self())),
    ?assertError(badarg, aion_mailbox:forget(M, 1)),
    ?assertError(badarg, aion_mailbox:new(#{max_tombstones => -1})),
    ?assertError(badarg, aion_mailbox:new(#{max_tombstones => infinity})),
    ?assertError(badarg, aion_mailbox:new(#{bogus => 1})),
    ?assertError(badarg, aion_mailbox:new([])),
    ?assertError(badarg, aion_nif:mailbox_new(-1)),
    ?assertError(badarg, aion_nif:mailbox_new(1 bsl 64)),
    %% Nothing was retained or stamped by the failed calls.
    ?assertEqual(0, aion_mailbox:count(M)),
    ?assertEqual(0, aion_mailbox:epoch(M, Me)).

large_payloads_test_() ->
    {timeout, 60, fun large_payloads/0}.

large_payloads() ->
    M = aion_mailbox:new(),
    Big = binary:copy(<<"0123456789abcdef">>, 65536),            % 1 MiB
    1048576 = byte_size(Big),
    <<_:7/binary, Sub:1000/binary, _/binary>> = Big,             % sub-binary
    Deep = lists:foldl(fun(I, Acc) -> {I, [Acc]} end, leaf, lists:seq(1, 100000)),
    Wide = maps:from_list([{integer_to_binary(I), [I, float(I), <<"v">>]}
                           || I <- lists:seq(1, 20000)]),
    LongList = lists:seq(1, 200000),
    DeepKey = lists:foldl(fun(I, Acc) -> [I | [Acc]] end, [], lists:seq(1, 2000)),
    Items = [{big, Big}, {sub, Sub}, {deep, Deep}, {wide, Wide}, {long, LongList},
             {DeepKey, {Big, Deep}}, {bignum, 1 bsl 300}],
    [ok = aion_mailbox:retain(M, self(), K, V, aion_event) || {K, V} <- Items],
    ?assertEqual(length(Items), aion_mailbox:count(M)),
    ?assertEqual({ok, Big}, aion_mailbox:take(M, self(), big)),
    %% Rebuild the deep key so lookup compares a separate (equal) term.
    DeepKey2 = lists:foldl(fun(I, Acc) -> [I | [Acc]] end, [], lists:seq(1, 2000)),
    {ok, {Big2, Deep2}} = aion_mailbox:take(M, self(), DeepKey2),
    ?assert(Big2 =:= Big),
    ?assert(Deep2 =:= Deep),
    Rest = aion_mailbox:take_all(M, self()),
    ?assert(Rest =:= [{sub, Sub}, {deep, Deep}, {wide, Wide}, {long, LongList},
                      {bignum, 1 bsl 300}]),
    ?assertEqual(0, aion_mailbox:count(M)),
    flush_markers(aion_event).

%%% ---------------------------------------------------------------------------
%%% Resource lifetime
%%% ---------------------------------------------------------------------------

%% A mailbox that becomes garbage while it holds entries for live, monitored
%% processes is destroyed cleanly: the runtime drops its process monitors, the
%% destructor frees its entries (the 8 MiB payload it alone referenced goes away),
%% and the later deaths of those processes do not reach freed memory (see the ASan
%% run, scripts/test_asan.sh).
gc_with_live_entries_test_() ->
    {timeout, 60, fun gc_with_live_entries/0}.

gc_with_live_entries() ->
    Holders = [idle() || _ <- lists:seq(1, 10)],
    Before = binary_memory(),
    {Pid, Ref} =
        spawn_monitor(fun() ->
                              M = aion_mailbox:new(#{max_tombstones => 2}),
                              Payload = binary:copy(<<"x">>, 8 bsl 20),
                              [ok = aion_mailbox:retain(M, H, {I, N}, {N, Payload}, aion_event)
                               || {I, H} <- lists:zip(lists:seq(1, 10), Holders),
                                  N <- lists:seq(1, 5)],
                              [_ = aion_mailbox:bump_epoch(M, H) || H <- Holders],
                              ok = aion_mailbox:retain(M, self(), me, Payload, aion_event),
                              %% Tombstones exist at destruction time as well.
                              [H1, H2, H3 | _] = Holders,
                              [kill_and_wait(H) || H <- [H1, H2, H3]],
                              ok = wait_until(fun() -> aion_mailbox:count(M) =:= 36 end)
                      end),
    receive {'DOWN', Ref, process, Pid, normal} -> ok
    after ?DEADLINE_MS -> error(owner_failed)
    end,
    Live = lists:nthtail(3, Holders),
    ok = wait_until(fun() ->
                            [erlang:garbage_collect(P) || P <- processes()],
                            lists:all(fun(H) -> monitored_by(H) =:= [] end, Live)
                    end),
    case Before of
        notsup ->
            ok; % allocators off (ASan run): no memory accounting
        _ ->
            ok = wait_until(fun() -> binary_memory() < Before + (4 bsl 20) end)
    end,
    [kill_and_wait(H) || H <- Holders].

monitored_by(Pid) ->
    {monitored_by, L} = erlang:process_info(Pid, monitored_by),
    L.

%% erlang:memory/1 is not supported when the VM runs with its allocators off
%% (`+Mea min', as in the ASan run).
binary_memory() ->
    try erlang:memory(binary)
    catch error:notsup -> notsup
    end.

%% Reloading the NIF library ("upgrade = load again"): mailboxes made before the
%% reload keep working, including their monitors' down callbacks.
reload_keeps_mailboxes_test() ->
    M = aion_mailbox:new(),
    P = idle(),
    ok = aion_mailbox:retain(M, P, k, v, aion_event),
    _ = code:purge(aion_nif),
    {module, aion_nif} = code:load_file(aion_nif),
    _ = code:purge(aion_nif),
    ?assertEqual(1, aion_mailbox:count(M)),
    ok = aion_mailbox:retain(M, P, k2, v2, aion_event),
    ?assertEqual({ok, v}, aion_mailbox:take(M, P, k)),
    M2 = aion_mailbox:new(),
    ok = aion_mailbox:retain(M2, P, k, other, aion_event),
    kill_and_wait(P),
    ok = wait_until(fun() -> aion_mailbox:count(M) + aion_mailbox:count(M2) =:= 0 end),
    ?assertEqual(exited, aion_mailbox:epoch(M, P)),
    ?assertEqual(exited, aion_mailbox:epoch(M2, P)).

%% release/2: an idle process gives its record back unless something is retained.
release_test() ->
    M = aion_mailbox:new(),
    Self = self(),
    ?assertEqual(ok, aion_mailbox:release(M, Self)),          % no record: ok
    2 = (fun() -> aion_mailbox:bump_epoch(M, Self), aion_mailbox:bump_epoch(M, Self) end)(),
    ?assertEqual(ok, aion_mailbox:release(M, Self)),
    ?assertEqual(0, aion_mailbox:epoch(M, Self)),             % the record is gone
    ?assertEqual(1, aion_mailbox:bump_epoch(M, Self)),        % a new one starts again
    ok = aion_mailbox:retain(M, Self, c1, p1, rel_marker),
    ?assertEqual(busy, aion_mailbox:release(M, Self)),        % entries retained: kept
    ?assertEqual(1, aion_mailbox:epoch(M, Self)),
    ?assertEqual({ok, p1}, aion_mailbox:take(M, Self, c1)),
    receive rel_marker -> ok after 1000 -> error(no_marker) end,
    ?assertEqual(ok, aion_mailbox:release(M, Self)),
    %% A retain after a release makes a record and sends the marker.
    ok = aion_mailbox:retain(M, Self, c2, p2, rel_marker),
    receive rel_marker -> ok after 1000 -> error(no_marker) end,
    ?assertEqual(0, aion_mailbox:epoch(M, Self)),
    ?assertEqual([{c2, p2}], aion_mailbox:take_all(M, Self)),
    ?assertEqual(0, aion_mailbox:count(M)).

%% A released record has no monitor left: the process's exit leaves no tombstone
%% (epoch 0, not exited), and a tombstone is not released.
release_then_exit_test() ->
    M = aion_mailbox:new(),
    {P, Ref} = spawn_monitor(fun() -> receive go -> ok end end),
    1 = aion_mailbox:bump_epoch(M, P),
    ?assertEqual(ok, aion_mailbox:release(M, P)),
    P ! go,
    receive {'DOWN', Ref, process, P, _} -> ok end,
    ?assertEqual(0, aion_mailbox:epoch(M, P)),
    {Q, QRef} = spawn_monitor(fun() -> receive go -> ok end end),
    1 = aion_mailbox:bump_epoch(M, Q),
    Q ! go,
    receive {'DOWN', QRef, process, Q, _} -> ok end,
    ok = wait_until(fun() -> aion_mailbox:epoch(M, Q) =:= exited end),
    ?assertEqual(ok, aion_mailbox:release(M, Q)),
    ?assertEqual(exited, aion_mailbox:epoch(M, Q)),
    ?assertError(badarg, aion_mailbox:release(M, not_a_pid)).
