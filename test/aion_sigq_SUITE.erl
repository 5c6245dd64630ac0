%% Signals, queries, cancellation, with_timeout, patches and search attributes
%% (SPEC 2.1, 2.2, 3.5, 3.6) through the client API and real workflow processes.
-module(aion_sigq_SUITE).

-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-export([all/0, init_per_suite/1, end_per_suite/1, init_per_testcase/2,
         end_per_testcase/2]).
-export([approval_signal/1, approval_timeout/1, signal_buffered_before_receive/1,
         three_signals_in_order/1, signal_refused_when_closed/1, signal_dedup/1,
         bad_input_records_nothing/1, signal_with_start/1, send_signal_between/1,
         query_sleeping_and_activity/1, query_after_replay/1, queries_append_nothing/1,
         query_races_completion/1, query_suspended_run/1, query_timeout/1,
         saga_cancel_during_signal_wait/1, saga_cancel_during_activity/1,
         cancel_errors/1, deadline_first/1, signal_first/1, deadline_races_replay/1,
         nested_deadlines/1, patch_old_history_replays/1, search_attributes/1,
         signals_survive_kill9/1]).

-define(W, aion_sigq_wf).
-define(DAY, 86400000).

all() ->
    [approval_signal, approval_timeout, signal_buffered_before_receive,
     three_signals_in_order, signal_refused_when_closed, signal_dedup,
     bad_input_records_nothing, signal_with_start, send_signal_between,
     query_sleeping_and_activity, query_after_replay, queries_append_nothing,
     query_races_completion, query_suspended_run, query_timeout,
     saga_cancel_during_signal_wait, saga_cancel_during_activity, cancel_errors,
     deadline_first, signal_first, deadline_races_replay, nested_deadlines,
     patch_old_history_replays, search_attributes, signals_survive_kill9].

init_per_suite(Config) -> aion_ct:init_per_suite(Config).

end_per_suite(Config) -> aion_ct:end_per_suite(Config).

init_per_testcase(TC, Config) ->
    Path = aion_ct:db_path(Config, "sigq_" ++ atom_to_list(TC) ++ ".db"),
    _ = aion_ct:start_engine(aion_default, Path),
    true = register(aion_test_sink, self()),
    [{db, Path} | Config].

end_per_testcase(_TC, _Config) ->
    catch unregister(aion_test_sink),
    persistent_term:erase({aion_test, patch}),
    aion_ct:stop_engine(aion_default),
    aion_ct:flush(),
    ok.

start(Input) ->
    start(Input, #{}).

start(Input, Opts) ->
    {ok, #{workflow_id := Wid}} = aion:start(?W, Input, Opts),
    Wid.

restart(Config) ->
    ok = aion_engine:stop(aion_default),
    _ = aion_ct:start_engine(aion_default, ?config(db, Config)),
    ok.

types(Wid) -> aion_ct:types(aion_ct:history(Wid)).

raw(Wid) ->
    #{store := Store} = aion_ctx:get(aion_default),
    {ok, #{run_id := RunId}} = aion:describe(Wid),
    {ok, Rows} = aion_store:history(Store, RunId, 1),
    Rows.

%% Waits until the workflow's history holds an event of type T (it reached a point).
wait_event(Wid, T) ->
    aion_ct:wait_until(fun() -> lists:member(T, types(Wid)) end, 5000).

wait_stage(Wid, Stage) ->
    true = aion_ct:wait_until(fun() -> aion:query(Wid, <<"stage">>) =:= {ok, Stage} end, 5000),
    ok.

%%% ===========================================================================
%%% Signals
%%% ===========================================================================

%% A workflow waiting on a signal with a 1-day timeout receives it; the timeout
%% timer is cancelled.
approval_signal(_Config) ->
    Wid = start(#{kind => approval, timeout => ?DAY}),
    wait_event(Wid, timer_started),
    ok = aion:signal(Wid, <<"approve">>, #{<<"ok">> => true}),
    {ok, #{<<"ok">> := true}} = aion:await(Wid, 5000),
    [workflow_started, timer_started, signal_received, timer_cancelled, workflow_completed] =
        types(Wid),
    [_, #{fire_at := FireAt, recorded_at := At}, #{name := <<"approve">>, signal_id := null,
                                                   payload := #{<<"ok">> := true}} | _] =
        aion_ct:history(Wid),
    ?assertEqual(At + ?DAY, FireAt),
    {ok, #{pending_timers := []}} = aion:describe(Wid).

approval_timeout(_Config) ->
    Wid = start(#{kind => approval, timeout => 100}),
    {ok, <<"timeout">>} = aion:await(Wid, 5000),
    [workflow_started, timer_started, timer_fired, workflow_completed] = types(Wid).

%% A signal sent before the receive is buffered in history and consumed without a
%% timer (it is known when the receive looks).
signal_buffered_before_receive(_Config) ->
    Wid = start(#{kind => buffered}),
    ok = aion:signal(Wid, <<"x">>, <<"early">>),
    ok = aion:signal(Wid, go, 1),
    {ok, [<<"ok">>, <<"early">>]} = aion:await(Wid, 5000),
    [workflow_started, signal_received, signal_received, workflow_completed] = types(Wid).

three_signals_in_order(_Config) ->
    Wid = start(#{kind => fifo, n => 3}),
    ok = aion:signal(Wid, <<"n">>, 1),
    ok = aion:signal(Wid, <<"other">>, <<"o">>),
    ok = aion:signal(Wid, <<"n">>, 2),
    ok = aion:signal(Wid, <<"n">>, 3),
    ok = aion:signal(Wid, <<"n">>, 4),
    ok = aion:signal(Wid, <<"go">>, null),
    {ok, [[1, 2, 3], <<"o">>]} = aion:await(Wid, 5000).

%% A completed run refuses signals: nothing is appended.
signal_refused_when_closed(_Config) ->
    Wid = start(#{kind => approval, timeout => ?DAY}),
    ok = aion:signal(Wid, <<"approve">>, 1),
    {ok, 1} = aion:await(Wid, 5000),
    Before = raw(Wid),
    {error, not_running} = aion:signal(Wid, <<"approve">>, 2),
    {error, not_running} = aion:signal(Wid, <<"approve">>, 2, #{signal_id => <<"s">>}),
    {error, not_running} = aion:cancel(Wid, why),
    ?assertEqual(Before, raw(Wid)),
    {error, not_found} = aion:signal(<<"nope">>, <<"approve">>, 1),
    {error, not_found} = aion:cancel(<<"nope">>, why).

signal_dedup(_Config) ->
    Wid = start(#{kind => fifo, n => 2}),
    ok = aion:signal(Wid, <<"n">>, 1, #{signal_id => <<"a">>}),
    ok = aion:signal(Wid, <<"n">>, 1, #{signal_id => <<"a">>}),
    ok = aion:signal(Wid, <<"other">>, 0, #{signal_id => <<"b">>}),
    ok = aion:signal(Wid, <<"n">>, 2, #{signal_id => <<"c">>}),
    ok = aion:signal(Wid, <<"n">>, 2, #{signal_id => <<"c">>}),
    ok = aion:signal(Wid, <<"go">>, null),
    {ok, [[1, 2], 0]} = aion:await(Wid, 5000),
    Sigs = [E || #{type := signal_received} = E <- aion_ct:history(Wid)],
    [<<"a">>, <<"b">>, <<"c">>, null] = [S || #{signal_id := S} <- Sigs],
    %% concurrent senders of one id: exactly one event
    W2 = start(#{kind => fifo, n => 1}),
    Self = self(),
    Pids = [spawn_link(fun() -> Self ! {sent, self(), aion:signal(W2, <<"n">>, 7,
                                                                 #{signal_id => <<"same">>})}
                       end) || _ <- lists:seq(1, 8)],
    [receive {sent, P, R} -> ok = R end || P <- Pids],
    ok = aion:signal(W2, <<"other">>, 0),
    ok = aion:signal(W2, <<"go">>, null),
    {ok, [[7], 0]} = aion:await(W2, 5000),
    1 = length([E || #{type := signal_received, name := <<"n">>} = E <- aion_ct:history(W2)]).

%% Every bad input gets its documented error and records nothing.
bad_input_records_nothing(_Config) ->
    Wid = start(#{kind => approval, timeout => ?DAY}),
    wait_event(Wid, timer_started),
    Before = raw(Wid),
    {error, {invalid_payload, [], _}} = aion:signal(Wid, <<"approve">>, {1, 2}),
    {error, {invalid_payload, [<<"a">>], _}} = aion:signal(Wid, <<"approve">>, #{a => self()}),
    {error, {invalid_payload, _, _}} = aion:signal(Wid, <<"approve">>, <<255>>),
    {error, {invalid_name, 42}} = aion:signal(Wid, 42, 1),
    {error, {invalid_name, <<>>}} = aion:signal(Wid, <<>>, 1),
    {error, {invalid_option, signal_id}} = aion:signal(Wid, <<"approve">>, 1, #{signal_id => 5}),
    {error, {invalid_payload, [], _}} =
        aion:signal_with_start(?W, #{kind => approval, timeout => ?DAY}, <<"approve">>,
                               self(), #{id => Wid}),
    {error, {invalid_search, {tags, like, <<"a">>}}} =
        aion:list(#{search => [{tags, like, <<"a">>}]}),
    {error, {invalid_search, bogus}} = aion:count(#{search => [bogus]}),
    {error, {unknown_query, <<"nope">>}} = aion:query(Wid, <<"nope">>),
    {error, {unknown_query, 42}} = aion:query(Wid, 42),
    ?assertEqual(Before, raw(Wid)),
    {ok, 1} = aion:count(#{}),
    ok = aion:signal(Wid, <<"approve">>, 1),
    {ok, 1} = aion:await(Wid, 5000),
    %% workflow side: misuse raises before anything is recorded
    W2 = start(#{kind => bad_calls}),
    {ok, [<<"invalid_payload">>, <<"badarg">>, <<"invalid_payload">>, <<"badarg">>,
          <<"badarg">>, <<"badarg">>, <<"badarg">>, <<"badarg">>]} = aion:await(W2, 5000),
    [workflow_started, workflow_completed] = types(W2).

%% Starts when no run is open (start + signal in one transaction), signals the
%% open run otherwise.
signal_with_start(_Config) ->
    In = #{kind => fifo, n => 2},
    {ok, #{workflow_id := <<"sws">>, run_id := R1}} =
        aion:signal_with_start(?W, In, <<"n">>, 1, #{id => <<"sws">>}),
    [#{seq := 1, type := workflow_started}, #{seq := 2, type := signal_received, payload := 1}
     | _] = aion_ct:history(<<"sws">>),
    {ok, #{run_id := R1}} = aion:signal_with_start(?W, In, <<"n">>, 2, #{id => <<"sws">>}),
    {ok, #{run_id := R1}} = aion:signal_with_start(?W, In, <<"other">>, 3, #{id => <<"sws">>}),
    ok = aion:signal(<<"sws">>, <<"go">>, null),
    {ok, [[1, 2], 3]} = aion:await(<<"sws">>, 5000),
    %% closed: a new run
    {ok, #{run_id := R2}} = aion:signal_with_start(?W, In, <<"go">>, 0, #{id => <<"sws">>}),
    true = R2 =/= R1,
    {ok, 2} = aion:count(#{workflow_id => <<"sws">>}),
    %% the id reuse policy still applies
    Done = start(#{kind => approval, timeout => ?DAY}, #{id => <<"rd">>}),
    ok = aion:signal(Done, <<"approve">>, 1),
    {ok, 1} = aion:await(Done, 5000),
    {error, {already_started, _}} =
        aion:signal_with_start(?W, #{kind => approval, timeout => ?DAY}, <<"approve">>, 0,
                               #{id => <<"rd">>, id_reuse_policy => reject_duplicate}),
    {ok, 1} = aion:count(#{workflow_id => <<"rd">>}).

%% send_signal/3 between workflows: the outcome is recorded and not resent on
%% replay.
send_signal_between(Config) ->
    Target = start(#{kind => approval, timeout => ?DAY}),
    Sender = start(#{kind => sender, target => Target}),
    receive {sent, Sender} -> ok after 5000 -> error(not_sent) end,
    {ok, #{<<"from">> := <<"sender">>}} = aion:await(Target, 5000),
    [#{type := signal_sent, target := Target, name := <<"approve">>, outcome := <<"ok">>},
     #{type := signal_sent, target := <<"no-such-workflow">>, outcome := <<"not_found">>}] =
        [E || #{type := signal_sent} = E <- aion_ct:history(Sender)],
    restart(Config),
    receive {sent, Sender} -> ok after 5000 -> error(not_replayed) end,
    ok = aion:signal(Sender, <<"end">>, null),
    {ok, [<<"ok">>, [<<"error">>, <<"not_found">>]]} = aion:await(Sender, 5000),
    1 = length([E || #{type := signal_received} = E <- aion_ct:history(Target)]).

%%% ===========================================================================
%%% Queries
%%% ===========================================================================

query_sleeping_and_activity(_Config) ->
    Wid = start(#{kind => queries, ms => 600000, gate => <<"q">>}),
    wait_event(Wid, timer_started),
    {ok, <<"sleeping">>} = aion:query(Wid, <<"stage">>),
    {ok, #{<<"a">> := [1]}} = aion:query(Wid, <<"echo">>, #{<<"a">> => [1]}, 1000),
    {error, {query_failed, boom}} = aion:query(Wid, <<"boom">>),
    {error, {query_failed, query_handler_must_not_record}} = aion:query(Wid, <<"record">>),
    {error, {query_failed, query_handler_must_not_record}} = aion:query(Wid, <<"signal">>),
    {error, {unknown_query, <<"nope">>}} = aion:query(Wid, nope),
    %% the workflow is unharmed
    {ok, <<"sleeping">>} = aion:query(Wid, <<"stage">>),
    {error, not_found} = aion:query(<<"nope">>, <<"stage">>),
    %% a second workflow that is in an activity
    W2 = start(#{kind => queries, ms => 1, gate => <<"g">>}),
    {Pid, 1} = aion_ct:gate_wait(<<"g">>),
    {ok, <<"in_activity">>} = aion:query(W2, <<"stage">>),
    aion_ct:release(Pid, <<"done">>),
    {ok, <<"done">>} = aion:await(W2, 5000),
    {error, not_running} = aion:query(W2, <<"stage">>),
    [workflow_started, timer_started] = types(Wid).

%% A run rebuilt by replay answers with the state at the end of its history.
query_after_replay(Config) ->
    Wid = start(#{kind => replayed, gate => <<"r">>}),
    {_, 1} = aion_ct:gate_wait(<<"r">>),
    {ok, [<<"after">>, <<"one">>]} = aion:query(Wid, <<"stage">>),
    restart(Config),
    {ok, [<<"after">>, <<"one">>]} = aion:query(Wid, <<"stage">>),
    {Pid, 2} = aion_ct:gate_wait(<<"r">>),
    aion_ct:release(Pid, <<"two">>),
    {ok, [<<"one">>, <<"two">>]} = aion:await(Wid, 5000).

%% Queries append nothing: the stored history of a workflow is byte for byte the
%% same with and without queries, and so is a whole run's shape.
queries_append_nothing(_Config) ->
    Wid = start(#{kind => queries, ms => 600000, gate => <<"n">>}),
    wait_event(Wid, timer_started),
    Before = raw(Wid),
    {ok, #{history_length := Len}} = aion:describe(Wid),
    _ = [{ok, _} = aion:query(Wid, <<"echo">>, I, 1000) || I <- lists:seq(1, 200)],
    _ = [{error, _} = aion:query(Wid, <<"boom">>) || _ <- lists:seq(1, 20)],
    _ = [{error, _} = aion:query(Wid, <<"record">>) || _ <- lists:seq(1, 20)],
    ?assertEqual(Before, raw(Wid)),
    {ok, #{history_length := Len}} = aion:describe(Wid),
    %% two runs of the same code, one queried all along: the same events
    Strip = fun(Rows) -> [{T, D} || {_, T, _, D} <- Rows] end,
    W1 = start(#{kind => fifo, n => 2}, #{id => <<"plain">>}),
    W2 = start(#{kind => fifo, n => 2}, #{id => <<"queried">>}),
    Self = self(),
    Querier = spawn_link(fun() -> query_loop(W2, Self) end),
    [begin
         ok = aion:signal(W, <<"n">>, 1),
         ok = aion:signal(W, <<"other">>, 2),
         ok = aion:signal(W, <<"n">>, 3),
         ok = aion:signal(W, <<"go">>, 4)
     end || W <- [W1, W2]],
    {ok, R} = aion:await(W1, 5000),
    {ok, R} = aion:await(W2, 5000),
    Querier ! stop,
    receive {queried, N} -> ct:log("~b queries during the run", [N]) end,
    {ok, H1} = aion:history(W1),
    {ok, H2} = aion:history(W2),
    ?assertEqual(length(H1), length(H2)),
    #{store := Store} = aion_ctx:get(aion_default),
    Rows = fun(W) ->
                   {ok, #{run_id := RunId}} = aion:describe(W),
                   {ok, Rs} = aion_store:history(Store, RunId, 2),
                   Strip(Rs)
           end,
    ?assertEqual(Rows(W1), Rows(W2)).

query_loop(Wid, Parent) ->
    query_loop(Wid, Parent, 0).

query_loop(Wid, Parent, N) ->
    receive stop -> Parent ! {queried, N}
    after 0 ->
            _ = aion:query(Wid, <<"stage">>, [], 1000),
            query_loop(Wid, Parent, N + 1)
    end.

%% A query racing the completion of the run never hangs: it gets an answer or
%% not_running.
query_races_completion(_Config) ->
    Self = self(),
    Wids = [start(#{kind => quick}) || _ <- lists:seq(1, 20)],
    Pids = [spawn_link(fun() ->
                               Rs = [aion:query(W, <<"stage">>, [], 3000)
                                     || _ <- lists:seq(1, 10)],
                               Self ! {answers, self(), Rs}
                       end) || W <- Wids],
    All = lists:append([receive {answers, P, Rs} -> Rs after 20000 -> error(hang) end
                        || P <- Pids]),
    [] = [R || R <- All, R =/= {ok, <<"quick">>}, R =/= {error, not_running},
               R =/= {error, {unknown_query, <<"stage">>}}],
    ct:log("answers: ~p", [lists:usort(All)]),
    [{ok, <<"done">>} = aion:await(W, 5000) || W <- Wids].

%% A run without a process (here: its process killed) is rebuilt to answer.
query_suspended_run(_Config) ->
    Wid = start(#{kind => queries, ms => 600000, gate => <<"s">>}),
    wait_event(Wid, timer_started),
    Ctx = aion_ctx:get(aion_default),
    {ok, #{run_id := RunId}} = aion:describe(Wid),
    ok = aion_run:kill(Ctx, RunId),
    {ok, #{residency := suspended}} = aion:describe(Wid),
    {ok, <<"sleeping">>} = aion:query(Wid, <<"stage">>),
    {ok, #{residency := resident}} = aion:describe(Wid),
    [workflow_started, timer_started] = types(Wid).

%% A workflow busy in plain code (no yield point) does not answer in time; the
%% late answer is dropped, later queries work.
query_timeout(_Config) ->
    Wid = start(#{kind => busy, ms => 1000}),
    {ok, <<"busy">>} = aion:query(Wid, <<"stage">>),
    ok = aion:signal(Wid, <<"go">>, null),
    receive {busy, _} -> ok after 5000 -> error(not_busy) end,
    {error, query_timeout} = aion:query(Wid, <<"stage">>, [], 100),
    {error, {invalid_option, timeout}} = aion:query(Wid, <<"stage">>, [], -1),
    {ok, <<"busy">>} = aion:query(Wid, <<"stage">>, [], 5000),
    receive {R, _} = Stray when is_reference(R) -> error({stray, Stray}) after 0 -> ok end,
    ok = aion:signal(Wid, <<"end">>, null),
    {ok, <<"done">>} = aion:await(Wid, 5000).

%%% ===========================================================================
%%% Cancellation
%%% ===========================================================================

%% Cancelled while waiting for a signal: compensation runs inside non_cancellable/1,
%% then the run ends cancelled.
saga_cancel_during_signal_wait(_Config) ->
    Wid = start(#{kind => saga, wait => signal}),
    ok = wait_stage(Wid, <<"waiting">>),
    ok = aion:cancel(Wid, <<"customer">>),
    {error, {cancelled, <<"customer">>}} = aion:await(Wid, 5000),
    {ok, #{status := cancelled}} = aion:describe(Wid),
    H = aion_ct:history(Wid),
    [workflow_started, activity_scheduled, activity_completed, timer_started,
     workflow_cancel_requested, timer_cancelled,
     activity_scheduled, activity_completed, timer_started, timer_fired,
     activity_scheduled, activity_completed,
     %% the sleep after the compensation returns at once (its timer is cancelled)
     timer_started, timer_cancelled, workflow_cancelled] = aion_ct:types(H),
    [<<"reserve">>, <<"refund">>, <<"release">>] =
        [I || #{type := activity_scheduled, input := [I]} <- H],
    {error, not_running} = aion:cancel(Wid, again).

%% Cancelled while an activity runs: the attempt is cancelled (killed), then
%% compensation.
saga_cancel_during_activity(_Config) ->
    Wid = start(#{kind => saga, wait => activity, gate => <<"c">>}),
    {Pid, 1} = aion_ct:gate_wait(<<"c">>),
    Ref = erlang:monitor(process, Pid),
    ok = aion:cancel(Wid, {operator, 7}),
    receive {'DOWN', Ref, process, Pid, _} -> ok after 5000 -> error(attempt_not_killed) end,
    {error, {cancelled, {operator, 7}}} = aion:await(Wid, 5000),
    H = aion_ct:history(Wid),
    [#{activity_id := <<"2">>}] = [E || #{type := activity_cancelled} = E <- H],
    [#{type := workflow_cancelled, reason := {operator, 7}}] =
        [E || #{type := workflow_cancelled} = E <- H],
    [<<"reserve">>, <<"c">>, <<"refund">>, <<"release">>] =
        [I || #{type := activity_scheduled, input := [I]} <- H].

cancel_errors(_Config) ->
    {error, not_found} = aion:cancel(<<"nope">>, x),
    Wid = start(#{kind => approval, timeout => ?DAY}),
    ok = aion:signal(Wid, <<"approve">>, 1),
    {ok, 1} = aion:await(Wid, 5000),
    {error, not_running} = aion:cancel(Wid, x).

%%% ===========================================================================
%%% with_timeout
%%% ===========================================================================

decided(Wid) ->
    receive {decided, Wid, Out} -> Out after 5000 -> error({undecided, Wid}) end.

deadline_first(Config) ->
    Wid = start(#{kind => deadline, ms => 50}),
    [<<"timeout">>] = decided(Wid),
    %% a signal after the deadline is buffered, not taken by the aborted receive
    ok = aion:signal(Wid, <<"s">>, late),
    restart(Config),
    [<<"timeout">>] = decided(Wid),
    ok = aion:signal(Wid, <<"end">>, null),
    {ok, [<<"timeout">>]} = aion:await(Wid, 5000).

signal_first(Config) ->
    Wid = start(#{kind => deadline, ms => 600000}),
    wait_event(Wid, timer_started),
    ok = aion:signal(Wid, <<"s">>, 1),
    [<<"signal">>, 1] = decided(Wid),
    restart(Config),
    [<<"signal">>, 1] = decided(Wid),
    ok = aion:signal(Wid, <<"end">>, null),
    {ok, [<<"signal">>, 1]} = aion:await(Wid, 5000),
    [workflow_started, timer_started, signal_received, timer_cancelled | _] = types(Wid).

%% Signals racing deadlines: whatever the live run decided is what history order
%% says, and a replay decides the same.
deadline_races_replay(Config) ->
    Wids = [start(#{kind => deadline, ms => Ms}) || Ms <- lists:seq(0, 45, 3)],
    _ = [ok = aion:signal(W, <<"s">>, I) || {I, W} <- lists:zip(lists:seq(1, length(Wids)), Wids)],
    Live = [decided(W) || W <- Wids],
    ct:log("live decisions: ~p", [Live]),
    _ = [begin
             H = aion_ct:history(W),
             [#{seq := Fired}] = [E || #{type := timer_fired, timer_id := <<"t1">>} = E <- H]
                 ++ [#{seq => infinity} || not lists:any(fun(#{type := T}) -> T =:= timer_fired end, H)],
             [#{seq := Sig}] = [E || #{type := signal_received, name := <<"s">>} = E <- H],
             case D of
                 [<<"timeout">>] -> true = Fired < Sig;
                 [<<"signal">>, _] -> true = Sig < Fired
             end
         end || {W, D} <- lists:zip(Wids, Live)],
    restart(Config),
    Replayed = [decided(W) || W <- Wids],
    ?assertEqual(Live, Replayed),
    _ = [ok = aion:signal(W, <<"end">>, null) || W <- Wids],
    [{ok, D} = aion:await(W, 5000) || {W, D} <- lists:zip(Wids, Live)].

nested_deadlines(_Config) ->
    Wid = start(#{kind => nested_deadline}),
    {ok, [[<<"error">>, <<"timeout">>], [<<"ok">>, <<"fine">>], [<<"error">>, <<"timeout">>]]} =
        aion:await(Wid, 5000),
    H = aion_ct:history(Wid),
    %% timers: t1 outer deadline (fired), t2 inner deadline, t3 sleep, t4 quick
    %% deadline (cancelled), t5 its sleep (fired), t6 the receive's deadline (fired),
    %% t7 the receive's own timeout (cancelled when the deadline won)
    [<<"t1">>, <<"t5">>, <<"t6">>] = [I || #{type := timer_fired, timer_id := I} <- H],
    [<<"t4">>, <<"t7">>] = [I || #{type := timer_cancelled, timer_id := I} <- H].

%%% ===========================================================================
%%% Versioning
%%% ===========================================================================

%% A history recorded before a patched/1 change replays down the old branch
%% without nondeterminism; a new run records the marker and takes the new branch;
%% after deprecate_patch/1 the new run's history still replays.
patch_old_history_replays(Config) ->
    Old = start(#{kind => patch, gate => <<"old">>}),
    {_, 1} = aion_ct:gate_wait(<<"old">>),
    ok = aion_engine:stop(aion_default),
    persistent_term:put({aion_test, patch}, new),
    _ = aion_ct:start_engine(aion_default, ?config(db, Config)),
    {P1, 2} = aion_ct:gate_wait(<<"old">>),
    {ok, #{status := running}} = aion:describe(Old),
    aion_ct:release(P1, <<"x">>),
    {ok, [<<"old">>, <<"x">>]} = aion:await(Old, 5000),
    [] = [E || #{type := marker_recorded} = E <- aion_ct:history(Old)],
    New = start(#{kind => patch, gate => <<"new">>}),
    {_, 1} = aion_ct:gate_wait(<<"new">>),
    [#{kind := <<"patch">>, id := <<"use-echo2">>}] =
        [E || #{type := marker_recorded} = E <- aion_ct:history(New)],
    ok = aion_engine:stop(aion_default),
    persistent_term:put({aion_test, patch}, deprecated),
    _ = aion_ct:start_engine(aion_default, ?config(db, Config)),
    {P2, 2} = aion_ct:gate_wait(<<"new">>),
    {ok, #{status := running}} = aion:describe(New),
    aion_ct:release(P2, <<"y">>),
    {ok, [<<"new">>, <<"y">>]} = aion:await(New, 5000),
    %% a fresh run under the deprecated code records no marker
    Fresh = start(#{kind => patch, gate => <<"fresh">>}),
    {P3, 1} = aion_ct:gate_wait(<<"fresh">>),
    aion_ct:release(P3, <<"z">>),
    {ok, [<<"new">>, <<"z">>]} = aion:await(Fresh, 5000),
    [] = [E || #{type := marker_recorded} = E <- aion_ct:history(Fresh)].

%%% ===========================================================================
%%% Search attributes
%%% ===========================================================================

search_attributes(_Config) ->
    A = start(#{kind => search, attrs => #{tags => [<<"red">>, <<"big">>], score => 5}},
              #{search_attributes => #{region => <<"eu">>}}),
    B = start(#{kind => search, attrs => #{tags => [<<"blue">>], score => 9}}),
    C = start(#{kind => search, attrs => #{tags => [], score => 1}}),
    aion_ct:wait_until(
      fun() -> {ok, 3} =:= aion:count(#{search => [{stage, '=', <<"upserted">>}]}) end, 5000),
    Ids = fun(Search) ->
                  {ok, Runs} = aion:list(#{search => Search}),
                  lists:sort([W || #{workflow_id := W} <- Runs])
          end,
    ?assertEqual([A], Ids([{tags, contains, <<"red">>}])),
    ?assertEqual([A], Ids([{tags, contains, red}, {region, '=', <<"eu">>}])),
    ?assertEqual(lists:sort([A, B]), Ids([{score, '>', 2}])),
    ?assertEqual([C], Ids([{score, '<', 2}])),
    ?assertEqual([B], Ids([{score, '=', 9}])),
    ?assertEqual([], Ids([{tags, contains, <<"green">>}])),
    ?assertEqual([], Ids([{missing, '=', 1}])),
    {ok, #{search_attributes := #{<<"region">> := <<"eu">>, <<"score">> := 5,
                                  <<"tags">> := [<<"red">>, <<"big">>]}}} = aion:describe(A),
    [#{attributes := #{<<"score">> := 5}}, #{attributes := #{<<"stage">> := <<"upserted">>}}] =
        [E || #{type := search_attributes_upserted} = E <- aion_ct:history(A)],
    {error, {invalid_search, {score, '~', 1}}} = aion:list(#{search => [{score, '~', 1}]}),
    _ = [ok = aion:signal(W, <<"end">>, null) || W <- [A, B, C]],
    [{ok, <<"done">>} = aion:await(W, 5000) || W <- [A, B, C]].

%%% ===========================================================================
%%% kill -9
%%% ===========================================================================

%% Signals acknowledged by aion:signal/3 survive a kill -9 of the engine's OS
%% process: after the restart the workflow consumes each of them exactly once, and
%% a signal_id repeated after the restart is still deduplicated.
signals_survive_kill9(Config) ->
    Db = aion_ct:db_path(Config, "sigq_kill9_peer.db"),
    {Peer1, OsPid1} = engine_peer(Db),
    {ok, _} = peer:call(Peer1, aion, start, [?W, #{kind => fifo, n => 3}, #{id => <<"k9">>}]),
    ok = peer:call(Peer1, aion, signal, [<<"k9">>, <<"n">>, 1, #{signal_id => <<"one">>}]),
    ok = peer:call(Peer1, aion, signal, [<<"k9">>, <<"other">>, <<"o">>]),
    ok = peer:call(Peer1, aion, signal, [<<"k9">>, <<"n">>, 2]),
    ok = kill9(Peer1, OsPid1),
    {Peer2, _} = engine_peer(Db),
    ok = peer:call(Peer2, aion, signal, [<<"k9">>, <<"n">>, 1, #{signal_id => <<"one">>}]),
    ok = peer:call(Peer2, aion, signal, [<<"k9">>, <<"n">>, 3]),
    ok = peer:call(Peer2, aion, signal, [<<"k9">>, <<"go">>, null]),
    {ok, [[1, 2, 3], <<"o">>]} = peer:call(Peer2, aion, await, [<<"k9">>, 10000], 20000),
    {ok, H} = peer:call(Peer2, aion, history, [<<"k9">>]),
    ok = peer:stop(Peer2),
    [1, 2, 3] = [P || #{type := signal_received, name := <<"n">>, payload := P} <- H].

engine_peer(Db) -> aion_test_node:engine_peer(Db).

kill9(Peer, OsPid) -> aion_test_node:kill9_peer(Peer, OsPid).
