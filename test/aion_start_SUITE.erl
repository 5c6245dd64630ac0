%% @doc The start path of `aion:start/3' (issue 6): `workflow_started' is committed
%% by the run's process together with its first command or its result; a run that
%% waits or acts first commits it alone; a process that does not answer is taken
%% over by the caller. This suite is also the workflow module it starts.
-module(aion_start_SUITE).

-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-export([all/0, init_per_suite/1, end_per_suite/1, init_per_testcase/2,
         end_per_testcase/2]).
-export([first_command_shares_the_start_commit/1, result_before_any_command/1,
         crash_before_any_command/1, conflict_records_nothing/1,
         conflict_use_existing/1, wait_before_any_command/1,
         blocked_code_is_taken_over/1, deadline_armed_with_folded_start/1]).
%% The workflow.
-export([run/1]).

all() ->
    [first_command_shares_the_start_commit, result_before_any_command,
     crash_before_any_command, conflict_records_nothing, conflict_use_existing,
     wait_before_any_command, blocked_code_is_taken_over,
     deadline_armed_with_folded_start].

init_per_suite(Config) -> aion_ct:init_per_suite(Config).

end_per_suite(Config) -> aion_ct:end_per_suite(Config).

init_per_testcase(TC, Config) ->
    Path = aion_ct:db_path(Config, atom_to_list(TC) ++ ".db"),
    _ = aion_ct:start_engine(aion_default, Path),
    true = register(aion_start_sink, self()),
    [{db, Path} | Config].

end_per_testcase(_TC, _Config) ->
    catch unregister(aion_start_sink),
    aion_ct:stop_engine(aion_default),
    aion_ct:flush(),
    ok.

%%% ---------------------------------------------------------------------------
%%% The workflow
%%% ---------------------------------------------------------------------------

%% @doc Test workflow (see the cases).
-spec run(map()) -> term().
run(#{<<"kind">> := <<"one_activity">>}) ->
    {ok, V} = aion_workflow:execute_activity({aion_test_activities, add}, [1, 2], #{}),
    {ok, V};
run(#{<<"kind">> := <<"result">>}) ->
    {ok, 7};
run(#{<<"kind">> := <<"crash">>}) ->
    error(boom);
run(#{<<"kind">> := <<"signal_first">>}) ->
    {ok, P} = aion_workflow:receive_signal(<<"go">>),
    {ok, P};
run(#{<<"kind">> := <<"blocked">>}) ->
    %% Blocks outside aion before its first command; a replay does not block.
    case persistent_term:get({?MODULE, blocked}, false) of
        false ->
            persistent_term:put({?MODULE, blocked}, true),
            receive never -> ok end;
        true ->
            ok
    end,
    ok = aion_workflow:sleep(1),
    {ok, done};
run(#{<<"kind">> := <<"wait_forever">>}) ->
    {ok, _} = aion_workflow:receive_signal(<<"never">>),
    {ok, never}.

%%% ---------------------------------------------------------------------------
%%% Cases
%%% ---------------------------------------------------------------------------

first_command_shares_the_start_commit(_Config) ->
    {ok, #{workflow_id := Wid, run_id := RunId}} =
        aion:start(?MODULE, #{kind => one_activity}, #{}),
    {ok, 3} = aion:await(Wid, 5000),
    H = aion_ct:history(Wid),
    [workflow_started, activity_scheduled, activity_completed, workflow_completed] =
        aion_ct:types(H),
    ?assertEqual([1, 2, 3, 4], [S || #{seq := S} <- H]),
    [#{workflow_id := Wid, workflow_type := <<"aion_start_SUITE">>} | _] = H,
    {ok, #{run_id := RunId, status := completed}} = aion:describe(Wid).

result_before_any_command(_Config) ->
    {ok, #{workflow_id := Wid}} = aion:start(?MODULE, #{kind => result}, #{}),
    {ok, 7} = aion:await(Wid, 5000),
    [workflow_started, workflow_completed] = aion_ct:types(aion_ct:history(Wid)).

crash_before_any_command(_Config) ->
    {ok, #{workflow_id := Wid}} = aion:start(?MODULE, #{kind => crash}, #{}),
    {error, {failed, _}} = aion:await(Wid, 5000),
    [workflow_started, workflow_failed] = aion_ct:types(aion_ct:history(Wid)),
    {ok, #{status := failed}} = aion:describe(Wid).

conflict_records_nothing(_Config) ->
    Id = <<"start-conflict">>,
    {ok, #{run_id := R1}} = aion:start(?MODULE, #{kind => wait_forever}, #{id => Id}),
    %% Every refused kind of first step: a command, a result, a crash.
    [{error, {already_started, R1}} = aion:start(?MODULE, #{kind => K}, #{id => Id})
     || K <- [one_activity, result, crash, signal_first]],
    {ok, [#{run_id := R1}]} = aion:list(#{workflow_id => Id}),
    [workflow_started] = aion_ct:types(aion_ct:history(Id)),
    %% A closed id refuses under reject_duplicate, also when the code ends at once.
    {ok, #{workflow_id := W2, run_id := R2}} = aion:start(?MODULE, #{kind => result}, #{}),
    {ok, 7} = aion:await(W2, 5000),
    {error, {already_started, R2}} =
        aion:start(?MODULE, #{kind => result}, #{id => W2, id_reuse_policy => reject_duplicate}),
    {ok, 1} = aion:count(#{workflow_id => W2}).

conflict_use_existing(_Config) ->
    Id = <<"start-use-existing">>,
    {ok, #{run_id := R1}} = aion:start(?MODULE, #{kind => wait_forever}, #{id => Id}),
    {ok, #{workflow_id := Id, run_id := R1}} =
        aion:start(?MODULE, #{kind => one_activity}, #{id => Id, id_conflict_policy => use_existing}),
    [workflow_started] = aion_ct:types(aion_ct:history(Id)).

wait_before_any_command(_Config) ->
    %% The code waits for a signal first: the start is committed alone, so the
    %% signal (sent once start returned) finds the run.
    {ok, #{workflow_id := Wid}} = aion:start(?MODULE, #{kind => signal_first}, #{}),
    ok = aion:signal(Wid, <<"go">>, 5),
    {ok, 5} = aion:await(Wid, 5000),
    [workflow_started, signal_received, workflow_completed] =
        aion_ct:types(aion_ct:history(Wid)).

blocked_code_is_taken_over(_Config) ->
    persistent_term:erase({?MODULE, blocked}),
    T0 = erlang:monotonic_time(millisecond),
    {ok, #{workflow_id := Wid, run_id := RunId}} = aion:start(?MODULE, #{kind => blocked}, #{}),
    %% Returned only once the start was committed (by the caller, after the wait).
    ?assert(erlang:monotonic_time(millisecond) - T0 >= 1000),
    {ok, #{run_id := RunId, status := Status}} = aion:describe(Wid),
    ?assert(lists:member(Status, [running, completed])),
    {ok, <<"done">>} = aion:await(Wid, 10000),
    [workflow_started, timer_started, timer_fired, workflow_completed] =
        aion_ct:types(aion_ct:history(Wid)),
    persistent_term:erase({?MODULE, blocked}).

deadline_armed_with_folded_start(_Config) ->
    {ok, #{workflow_id := Wid}} =
        aion:start(?MODULE, #{kind => wait_forever}, #{run_timeout => 200}),
    {error, timed_out} = aion:await(Wid, 10000),
    [workflow_started, workflow_timed_out] = aion_ct:types(aion_ct:history(Wid)).
