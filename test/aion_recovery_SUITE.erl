%% Crash recovery: a separate BEAM node (an OS process started with `erl') runs
%% workflows on a database and is killed with `kill -9' in the middle; the test
%% node then opens the same database and the engine's recovery resumes every open
%% run (SPEC 3.2-3.4).
%%
%% - A workflow with 5 activities, each appending a line to a file, is killed while
%%   its 3rd activity runs (so the 2nd's completion is recorded): after the restart
%%   activities 1-2 do not run again, the 3rd runs again with attempt 2, and the
%%   workflow completes.
%% - A workflow sleeping across the kill wakes after the restart, at its time.
%% - A workflow whose timer fell due while the node was down fires at start.
-module(aion_recovery_SUITE).

-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-export([all/0, suite/0, init_per_suite/1, end_per_suite/1]).
-export([kill_9_and_recover/1, unloadable_type_is_skipped/1]).
-export([child_main/2]).

-define(W, aion_test_workflows).
-define(LONG_SLEEP, 6000).
-define(SHORT_SLEEP, 1500).

suite() ->
    [{timetrap, {minutes, 3}}].

all() ->
    [kill_9_and_recover, unloadable_type_is_skipped].

init_per_suite(Config) -> aion_ct:init_per_suite(Config).

end_per_suite(Config) -> aion_ct:end_per_suite(Config).

%%% ===========================================================================

kill_9_and_recover(Config) ->
    Dir = ?config(priv_dir, Config),
    Db = filename:join(Dir, "kill9.db"),
    ok = aion_test_node:run_until_killed(?MODULE, child_main, [Db, Dir],
                                          <<"ready">>, 60000),
    Lines = file(Dir, "lines"),
    ?assertEqual([<<"1 1">>, <<"2 1">>, <<"3 1">>], Lines),
    %% the short timer falls due while no node runs
    {ok, S} = aion_store:open(Db, #{}),
    {ok, #{run_id := ShortRun}} = aion_store:current_run(S, <<"short">>),
    {ok, ShortHist} = aion_store:history(S, ShortRun, 1),
    [workflow_started, activity_scheduled, activity_completed, timer_started] =
        [T || #{type := T} <- aion_event:decode_all(ShortHist)],
    [#{fire_at := ShortFireAt}] = [E || #{type := timer_started} = E
                                            <- aion_event:decode_all(ShortHist)],
    {ok, #{run_id := LinesRun}} = aion_store:current_run(S, <<"lines">>),
    {ok, LinesHist} = aion_store:history(S, LinesRun, 1),
    %% the 3rd activity was scheduled, not finished
    [workflow_started, activity_scheduled, activity_completed, activity_scheduled,
     activity_completed, activity_scheduled] =
        [T || #{type := T} <- aion_event:decode_all(LinesHist)],
    ok = aion_store:close(S),
    wait_until_wall(ShortFireAt + 20),

    %% restart on the same database, in this node
    Restart = erlang:system_time(millisecond),
    {ok, _} = aion_engine:start(#{name => aion_default, db_path => Db}),
    try
        {ok, [1, 2, 3, 4, 5]} = aion:await(<<"lines">>, 20000),
        ?assertEqual([<<"1 1">>, <<"2 1">>, <<"3 1">>, <<"3 2">>, <<"4 1">>, <<"5 1">>],
                     file(Dir, "lines")),
        H = aion_ct:history(<<"lines">>),
        [#{attempt := 2, result := 3}] =
            [E || #{type := activity_completed, activity_id := <<"3">>} = E <- H],
        {ok, <<"woke">>} = aion:await(<<"short">>, 20000),
        [#{recorded_at := ShortFired}] =
            [E || #{type := timer_fired} = E <- aion_ct:history(<<"short">>)],
        true = ShortFired >= Restart,
        {ok, <<"woke">>} = aion:await(<<"long">>, 20000),
        HL = aion_ct:history(<<"long">>),
        [#{fire_at := LongFireAt}] = [E || #{type := timer_started} = E <- HL],
        [#{recorded_at := LongFired}] = [E || #{type := timer_fired} = E <- HL],
        true = LongFireAt > Restart,   % it was still in the future at the restart
        true = LongFired >= LongFireAt,
        %% markers ran once each
        ?assertEqual([<<"0 1">>], file(Dir, "short")),
        ?assertEqual([<<"0 1">>], file(Dir, "long")),
        {ok, 3} = aion:count(#{status => completed})
    after
        ok = aion_engine:stop(aion_default)
    end.

%% A run whose workflow module cannot be loaded is reported and skipped; the other
%% open runs are resumed.
unloadable_type_is_skipped(Config) ->
    Db = filename:join(?config(priv_dir, Config), "unloadable.db"),
    {ok, S} = aion_store:open(Db, #{}),
    Now = erlang:system_time(millisecond),
    {ok, {T, Data}} = aion_event:encode(workflow_started,
                                        #{workflow_type => <<"no_such_workflow_module">>,
                                          input => null, workflow_id => <<"ghost">>,
                                          parent => null, continued_from => null,
                                          options => #{}}),
    {ok, _} = aion_store:append(S, [#{run_id => <<"ghost-run">>, events => [{T, Now, Data}],
                                      create => #{workflow_id => <<"ghost">>,
                                                  type => <<"no_such_workflow_module">>,
                                                  status => <<"running">>,
                                                  started_at => Now}}]),
    {ok, {T2, Data2}} = aion_event:encode(workflow_started,
                                          #{workflow_type => <<"aion_test_workflows">>,
                                            input => #{<<"kind">> => <<"three">>},
                                            workflow_id => <<"real">>, parent => null,
                                            continued_from => null, options => #{}}),
    {ok, _} = aion_store:append(S, [#{run_id => <<"real-run">>,
                                      events => [{T2, Now, Data2}],
                                      create => #{workflow_id => <<"real">>,
                                                  type => <<"aion_test_workflows">>,
                                                  status => <<"running">>,
                                                  started_at => Now}}]),
    ok = aion_store:close(S),
    {ok, _} = aion_engine:start(#{name => aion_default, db_path => Db}),
    try
        {ok, 113} = aion:await(<<"real">>, 10000),
        {ok, #{status := running, residency := suspended}} = aion:describe(<<"ghost">>)
    after
        ok = aion_engine:stop(aion_default)
    end.

%%% ===========================================================================
%%% The test side

file(Dir, Name) ->
    case file:read_file(filename:join(Dir, Name)) of
        {ok, B} -> binary:split(B, <<"\n">>, [global, trim_all]);
        {error, enoent} -> []
    end.

%% Lets wall-clock time pass (a precondition of the test, not a synchronisation).
wait_until_wall(At) ->
    case At - erlang:system_time(millisecond) of
        Left when Left > 0 -> receive after Left -> ok end;
        _ -> ok
    end.

%%% ===========================================================================
%%% The child node

child_main(Db, Dir) ->
    try
        ok = application:load(aion),
        ok = application:set_env(aion, db_path, Db),
        ok = application:set_env(aion, start_default_engine, true),
        {ok, _} = application:ensure_all_started(aion),
        F = fun(Name) -> list_to_binary(filename:join(Dir, Name)) end,
        {ok, _} = aion:start(?W, #{kind => lines, file => F("lines"), n => 5, hang => 3},
                             #{id => <<"lines">>}),
        {ok, _} = aion:start(?W, #{kind => marked_sleep, file => F("long"), ms => ?LONG_SLEEP},
                             #{id => <<"long">>}),
        {ok, _} = aion:start(?W, #{kind => marked_sleep, file => F("short"),
                                   ms => ?SHORT_SLEEP},
                             #{id => <<"short">>}),
        aion_ct:wait_until(
          fun() ->
                  Sleeping = fun(W) -> lists:member(timer_started,
                                                    aion_ct:types(aion_ct:history(W)))
                             end,
                  file(Dir, "lines") =:= [<<"1 1">>, <<"2 1">>, <<"3 1">>]
                      andalso Sleeping(<<"long">>) andalso Sleeping(<<"short">>)
          end, 30000),
        io:format("ready~n"),
        receive after infinity -> ok end
    catch C:R:St ->
            io:format("child failed ~p:~p ~p~n", [C, R, St]),
            erlang:halt(3)
    end.
