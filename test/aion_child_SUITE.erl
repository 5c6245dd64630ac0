%% Child workflows and continue-as-new (SPEC 2.2, 3.5): futures of children in
%% wait_all/await, failing children, parent close policies, nesting, a child that
%% continues as new, spawn repair after a crash between record and create, kill -9
%% of the node while a parent awaits a child, a 50-run continue-as-new chain, and
%% bad input that records nothing.
-module(aion_child_SUITE).

-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-export([all/0, suite/0, init_per_suite/1, end_per_suite/1, init_per_testcase/2,
         end_per_testcase/2]).
-export([three_children_wait_all/1, failing_child/1, close_policies/1,
         bad_inputs_record_nothing/1, continue_as_new_50/1, child_continues_as_new/1,
         nesting/1, repair_missing_child/1, kill_9_parent_awaits_child/1,
         child_outcome_kinds/1, cancel_propagates/1, engine_stop_mid_fan_out/1,
         reopened_parent_gets_outcome/1, execution_timeout_spans_chain/1]).
-export([child_main/2]).

-define(W, aion_child_test_wf).

suite() ->
    [{timetrap, {minutes, 3}}].

all() ->
    [three_children_wait_all, failing_child, close_policies, bad_inputs_record_nothing,
     continue_as_new_50, child_continues_as_new, nesting, repair_missing_child,
     kill_9_parent_awaits_child, child_outcome_kinds, cancel_propagates,
     engine_stop_mid_fan_out, reopened_parent_gets_outcome,
     execution_timeout_spans_chain].

init_per_suite(Config) -> aion_ct:init_per_suite(Config).

end_per_suite(Config) -> aion_ct:end_per_suite(Config).

init_per_testcase(TC, Config) when TC =:= repair_missing_child;
                                   TC =:= engine_stop_mid_fan_out;
                                   TC =:= kill_9_parent_awaits_child ->
    Config;
init_per_testcase(TC, Config) ->
    Path = aion_ct:db_path(Config, "child_" ++ atom_to_list(TC) ++ ".db"),
    _ = aion_ct:start_engine(aion_default, Path),
    Config.

end_per_testcase(_TC, _Config) ->
    aion_ct:stop_engine(aion_default),
    aion_ct:flush(),
    ok.

start(Input) ->
    start(Input, #{}).

start(Input, Opts) ->
    {ok, #{workflow_id := Wid}} = aion:start(?W, Input, Opts),
    Wid.

children_of(Wid) ->
    {ok, #{run_id := RunId}} = aion:describe(Wid),
    {ok, Runs} = aion:list(#{}),
    [R || #{parent := P} = R <- Runs, P =:= RunId].

%%% ===========================================================================

three_children_wait_all(_Config) ->
    Wid = start(#{kind => three_children}),
    {ok, [1, 4, 9]} = aion:await(Wid, 10000),
    H = aion_ct:history(Wid),
    Started = [E || #{type := child_workflow_started} = E <- H],
    Done = [E || #{type := child_workflow_completed} = E <- H],
    ?assertEqual(3, length(Started)),
    ?assertEqual(3, length(Done)),
    ?assertEqual(lists:sort([Id || #{child_id := Id} <- Started]),
                 lists:sort([Id || #{child_id := Id} <- Done])),
    Kids = children_of(Wid),
    ?assertEqual(3, length(Kids)),
    %% each child is a full workflow with its own history and a parent link
    lists:foreach(
      fun(#{workflow_id := K, run_id := KR}) ->
              [#{run_id := KR}] = [S || #{run_id := KR2} = S <- Started, KR2 =:= KR],
              {ok, #{status := completed}} = aion:describe(K),
              [#{type := workflow_started, parent := Wid} | _] = aion_ct:history(K)
      end, Kids),
    {ok, #{pending_children := []}} = aion:describe(Wid).

failing_child(_Config) ->
    Wid = start(#{kind => failing_child}),
    {ok, <<"saw failure">>} = aion:await(Wid, 10000),
    {error, {failed, child_boom}} = aion:await(<<"bad-kid">>, 1000),
    H = aion_ct:history(Wid),
    [#{error := child_boom, kind := <<"failed">>}] =
        [E || #{type := child_workflow_failed} = E <- H].

close_policies(_Config) ->
    Wid = start(#{kind => policies, prefix => <<"p">>}, #{id => <<"policy-parent">>}),
    Kids = [<<"p-terminate">>, <<"p-request_cancel">>, <<"p-abandon">>],
    Sleeping = fun(K) ->
                       case aion:history(K) of
                           {ok, H} -> lists:member(timer_started, aion_ct:types(H));
                           _ -> false
                       end
               end,
    aion_ct:wait_until(fun() -> lists:all(Sleeping, Kids) end, 10000),
    {ok, #{pending_children := Pending}} = aion:describe(Wid),
    ?assertEqual(3, length(Pending)),
    ok = aion:terminate(Wid, <<"stop">>),
    {error, {terminated, <<"stop">>}} = aion:await(Wid, 5000),
    %% terminate: the child is terminated
    {error, {terminated, #{parent_closed := Wid}}} = aion:await(<<"p-terminate">>, 5000),
    %% request_cancel: the child sees the cancel request and ends cancelled
    {error, {cancelled, #{parent_closed := Wid}}} = aion:await(<<"p-request_cancel">>, 5000),
    [#{reason := #{parent_closed := Wid}}] =
        [E || #{type := workflow_cancel_requested} = E
                  <- aion_ct:history(<<"p-request_cancel">>)],
    %% abandon: still running
    {error, timeout} = aion:await(<<"p-abandon">>, 300),
    {ok, #{status := running}} = aion:describe(<<"p-abandon">>),
    %% the closed parent records nothing more
    H = aion_ct:history(Wid),
    workflow_terminated = maps:get(type, lists:last(H)),
    ok = aion:terminate(<<"p-abandon">>, cleanup).

bad_inputs_record_nothing(_Config) ->
    Wid = start(#{kind => bad_inputs}),
    {ok, Errors} = aion:await(Wid, 5000),
    [<<"{error,{unknown_workflow_type,no_such_workflow_module}}">>,
     <<"{error,{invalid_payload,[<<\"bad\">>],", _/binary>>,
     <<"{error,{invalid_option,parent_close_policy}}">>,
     <<"{error,{unknown_workflow_type,no_such_workflow_module}}">>,
     <<"{error,{invalid_payload,[<<\"x\">>],", _/binary>>,
     <<"{error,{invalid_option,bogus}}">>] = Errors,
    [workflow_started, workflow_completed] = aion_ct:types(aion_ct:history(Wid)),
    {ok, 1} = aion:count(#{}).

continue_as_new_50(_Config) ->
    Wid = start(#{kind => loop, n => 0, max => 50}),
    {ok, #{<<"runs">> := 51, <<"from">> := #{<<"continued_from">> := Prev}}} =
        aion:await(Wid, 60000),
    {ok, 50} = aion:count(#{workflow_id => Wid, status => continued_as_new}),
    {ok, 1} = aion:count(#{workflow_id => Wid, status => completed}),
    {ok, 51} = aion:count(#{workflow_id => Wid}),
    {ok, Runs} = aion:list(#{workflow_id => Wid}),
    lists:foreach(fun(#{history_length := L}) -> true = L =< 4 end, Runs),
    %% describe and history follow the chain; any run's history can be read
    {ok, #{status := completed, run_id := Last, history_length := 2}} = aion:describe(Wid),
    [#{type := workflow_started, continued_from := Prev}, _] = aion_ct:history(Wid),
    [workflow_started, timer_started, timer_fired, workflow_continued_as_new] =
        aion_ct:types(aion_ct:history(Wid, #{run_id => Prev})),
    [#{new_run_id := Last}] = [E || #{type := workflow_continued_as_new} = E
                                        <- aion_ct:history(Wid, #{run_id => Prev})],
    %% the chain is one workflow id; each run links to the one before
    Froms = [F || #{run_id := R} <- Runs,
                  #{type := workflow_started, continued_from := F}
                      <- [hd(aion_ct:history(Wid, #{run_id => R}))], F =/= null],
    ?assertEqual(50, length(lists:usort(Froms))).

child_continues_as_new(_Config) ->
    Wid = start(#{kind => loop_parent, max => 3}),
    {ok, 4} = aion:await(Wid, 20000),
    {ok, 4} = aion:count(#{workflow_id => <<"looping-kid">>}),
    H = aion_ct:history(Wid),
    [_] = [E || #{type := child_workflow_started} = E <- H],
    [#{result := #{<<"runs">> := 4}}] = [E || #{type := child_workflow_completed} = E <- H],
    %% every run of the child chain links to the parent
    {ok, #{run_id := ParentRun}} = aion:describe(Wid),
    {ok, KidRuns} = aion:list(#{workflow_id => <<"looping-kid">>}),
    [ParentRun] = lists:usort([P || #{parent := P} <- KidRuns]).

nesting(_Config) ->
    Wid = start(#{kind => nest, depth => 4}, #{task_queue => <<"q-nest">>}),
    {ok, 4} = aion:await(Wid, 20000),
    {ok, 5} = aion:count(#{}),
    {ok, Runs} = aion:list(#{status => completed}),
    5 = length(Runs),
    %% every descendant inherited the task queue
    lists:foreach(fun(#{workflow_id := W}) ->
                          [#{options := #{<<"task_queue">> := <<"q-nest">>}} | _] =
                              aion_ct:history(W)
                  end, Runs).

child_outcome_kinds(_Config) ->
    %% timed out (the child's run_timeout)
    W1 = start(#{kind => timeout_child}),
    {ok, <<"run_timeout">>} = aion:await(W1, 10000),
    [#{kind := <<"timed_out">>, error := run_timeout}] =
        [E || #{type := child_workflow_failed} = E <- aion_ct:history(W1)],
    %% terminated from outside while the parent awaits it
    W2 = start(#{kind => await_hold, id => <<"held">>}),
    wait_sleeping(<<"held">>),
    ok = aion:terminate(<<"held">>, <<"enough">>),
    {ok, <<"{error,{child_terminated,<<\"enough\">>}}">>} = aion:await(W2, 10000).

%% Cancelling a parent that awaits a child cancels the child (SPEC 3.6).
cancel_propagates(_Config) ->
    W = start(#{kind => await_hold, id => <<"kid-c">>}),
    wait_sleeping(<<"kid-c">>),
    ok = aion:cancel(W, <<"stop">>),
    {error, {cancelled, <<"stop">>}} = aion:await(W, 10000),
    {error, {cancelled, cancelled_by_parent}} = aion:await(<<"kid-c">>, 10000),
    [_] = [E || #{type := workflow_cancel_requested} = E <- aion_ct:history(<<"kid-c">>)].

%% The engine stops while a parent fans out to 30 children (child tasks running):
%% after the restart on the same database every child exists once, every outcome
%% is recorded once, and the parent completes.
engine_stop_mid_fan_out(Config) ->
    Db = aion_ct:db_path(Config, "stop_mid.db"),
    {ok, _} = aion_engine:start(#{name => aion_default, db_path => Db}),
    Wid = start(#{kind => many_children, n => 30}, #{id => <<"fan">>}),
    aion_ct:wait_until(
      fun() -> length([E || #{type := child_workflow_started} = E
                                <- aion_ct:history(Wid)]) >= 5 end, 10000, 1),
    ok = aion_engine:stop(aion_default),
    %% the database is free once the stop returned
    {ok, S} = aion_store:open(Db, #{}),
    {ok, Before} = aion_store:list(S, #{}),
    {ok, #{run_id := FanRun}} = aion_store:current_run(S, <<"fan">>),
    {ok, H1} = aion_store:history(S, FanRun, 1),
    ok = aion_store:close(S),
    {ok, _} = aion_engine:start(#{name => aion_default, db_path => Db}),
    {ok, 9455} = aion:await(Wid, 30000),     % sum of squares 1..30
    H = aion_ct:history(Wid),
    ?assert(length(H) >= length(H1)),
    Started = [Id || #{type := child_workflow_started, child_id := Id} <- H],
    Done = [Id || #{type := child_workflow_completed, child_id := Id} <- H],
    ?assertEqual(30, length(Started)),
    ?assertEqual(lists:sort(Started), lists:sort(Done)),
    {ok, 31} = aion:count(#{}),
    {ok, Kids} = aion:list(#{parent => FanRun}),
    ?assertEqual(30, length(Kids)),
    ct:pal("runs before the stop: ~p", [length(Before)]).

%% A failed parent whose abandoned child still runs is reopened: the child's outcome
%% is recorded in it after the reopen.
reopened_parent_gets_outcome(_Config) ->
    W = start(#{kind => reopen_parent}),
    {error, {failed, _}} = aion:await(W, 10000),
    {ok, #{status := running}} = aion:describe(<<"r-kid">>),
    persistent_term:put({aion_child_test, flaky}, pass),
    try
        ok = aion:reopen(W),
        {ok, <<"{error,{child_cancelled,cancelled_by_parent}}">>} = aion:await(W, 10000),
        [_] = [E || #{type := child_workflow_failed} = E <- aion_ct:history(W)]
    after
        persistent_term:erase({aion_child_test, flaky})
    end.

%% execution_timeout covers the whole chain of runs (SPEC 2.1): the deadline keeps
%% its absolute time across continue-as-new.
execution_timeout_spans_chain(_Config) ->
    Wid = start(#{kind => loop, n => 0, max => 100000000}, #{execution_timeout => 300}),
    {error, timed_out} = aion:await(Wid, 20000),
    {ok, N} = aion:count(#{workflow_id => Wid}),
    ?assert(N > 1),
    {ok, 1} = aion:count(#{workflow_id => Wid, status => timed_out}),
    {ok, #{status := timed_out}} = aion:describe(Wid).

wait_sleeping(Wid) ->
    aion_ct:wait_until(fun() ->
                               case aion:history(Wid) of
                                   {ok, H} -> lists:member(timer_started, aion_ct:types(H));
                                   _ -> false
                               end
                       end, 10000).

%% The parent recorded child_workflow_started but the node died before the child
%% was created: the rebuilt parent creates it (the recorded run id), exactly once.
repair_missing_child(Config) ->
    Db = aion_ct:db_path(Config, "repair.db"),
    {ok, S} = aion_store:open(Db, #{}),
    Now = erlang:system_time(millisecond),
    Row = fun(Type, Fields) -> aion_event:encode_row(Type, Now, Fields) end,
    Start = Row(workflow_started, #{workflow_type => <<"aion_child_test_wf">>,
                                    input => #{kind => one_child}, workflow_id => <<"mom">>,
                                    parent => null, continued_from => null, options => #{}}),
    Child = Row(child_workflow_started,
                #{child_id => <<"c1">>, workflow_id => <<"kid">>, run_id => <<"kid-run">>,
                  workflow_type => <<"aion_child_test_wf">>,
                  input => #{kind => square, n => 5},
                  options => #{<<"parent_close_policy">> => <<"terminate">>}}),
    {ok, _} = aion_store:append(S, [#{run_id => <<"mom-run">>, events => [Start, Child],
                                      timers_put => [{<<"$child/c1">>, 253402300799999}],
                                      create => #{workflow_id => <<"mom">>,
                                                  type => <<"aion_child_test_wf">>,
                                                  status => <<"running">>,
                                                  started_at => Now}}]),
    ok = aion_store:close(S),
    {ok, _} = aion_engine:start(#{name => aion_default, db_path => Db}),
    {ok, 25} = aion:await(<<"mom">>, 10000),
    {ok, #{run_id := <<"kid-run">>, status := completed, parent := <<"mom-run">>}} =
        aion:describe(<<"kid">>),
    {ok, 1} = aion:count(#{workflow_id => <<"kid">>}),
    [workflow_started, child_workflow_started, child_workflow_completed, workflow_completed] =
        aion_ct:types(aion_ct:history(<<"mom">>)).

%% kill -9 while the parent awaits its child (whose activity hangs): after the
%% restart the child is not started again, its activity re-runs (attempt 2), and
%% the parent completes.
kill_9_parent_awaits_child(Config) ->
    Dir = ?config(priv_dir, Config),
    Db = filename:join(Dir, "kill9_child.db"),
    File = filename:join(Dir, "child_lines"),
    ok = aion_test_node:run_until_killed(?MODULE, child_main, [Db, File],
                                          <<"ready">>, 60000),
    ?assertEqual([<<"1 1">>], lines(File)),
    {ok, _} = aion_engine:start(#{name => aion_default, db_path => Db}),
    {ok, #{<<"child">> := 1}} = aion:await(<<"line-parent">>, 20000),
    ?assertEqual([<<"1 1">>, <<"1 2">>], lines(File)),
    {ok, 1} = aion:count(#{workflow_id => <<"line-kid">>}),
    {ok, 2} = aion:count(#{}),
    H = aion_ct:history(<<"line-parent">>),
    [_] = [E || #{type := child_workflow_started} = E <- H],
    [#{result := 1}] = [E || #{type := child_workflow_completed} = E <- H].

%%% ===========================================================================
%%% The other node

lines(File) ->
    case file:read_file(File) of
        {ok, B} -> binary:split(B, <<"\n">>, [global, trim_all]);
        {error, enoent} -> []
    end.

child_main(Db, File) ->
    try
        ok = application:load(aion),
        ok = application:set_env(aion, db_path, Db),
        ok = application:set_env(aion, start_default_engine, true),
        {ok, _} = application:ensure_all_started(aion),
        {ok, _} = aion:start(?W, #{kind => line_parent, file => list_to_binary(File)},
                             #{id => <<"line-parent">>}),
        aion_ct:wait_until(fun() -> lines(File) =:= [<<"1 1">>] end, 30000),
        io:format("ready~n"),
        receive after infinity -> ok end
    catch C:R:St ->
            io:format("node failed ~p:~p ~p~n", [C, R, St]),
            erlang:halt(3)
    end.
