%% @private
%% @doc The engine's child-task supervisor (simple_one_for_one, temporary
%% children): short-lived helper processes that must stop with the engine
%% (child-workflow watchers, spawn repair). Each task is a fun run in a
%% `proc_lib' process linked to this supervisor.
-module(aion_child_tasks).
-behaviour(supervisor).

-export([start_link/1, init/1, start_task/2, run_task/1]).

%% @doc Starts the supervisor of engine `Name'.
-spec start_link(atom()) -> {ok, pid()} | {error, term()}.
start_link(Name) ->
    supervisor:start_link({local, aion_ctx:proc_name(Name, child_tasks)}, ?MODULE, []).

%% @doc Supervisor callback.
-spec init([]) -> {ok, {supervisor:sup_flags(), [supervisor:child_spec()]}}.
init([]) ->
    {ok, {#{strategy => simple_one_for_one, intensity => 10, period => 10},
          [#{id => task, start => {?MODULE, run_task, []}, restart => temporary,
             shutdown => 5000}]}}.

%% @doc Runs `Fun()' as a supervised task of engine `Name'.
-spec start_task(atom(), fun(() -> term())) -> {ok, pid()} | {error, term()}.
start_task(Name, Fun) when is_function(Fun, 0) ->
    supervisor:start_child(aion_ctx:proc_name(Name, child_tasks), [Fun]).

%% @doc Child start function.
-spec run_task(fun(() -> term())) -> {ok, pid()}.
run_task(Fun) ->
    {ok, proc_lib:spawn_link(Fun)}.
