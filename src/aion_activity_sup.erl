%% @private
%% @doc Supervisor of an engine's activity executors (`simple_one_for_one',
%% temporary children: a crashed executor is not restarted; its task row stays and
%% the next engine start dispatches the activity again). On engine stop every
%% executor kills its running attempt before it exits.
-module(aion_activity_sup).
-behaviour(supervisor).

-export([start_link/1, start_executor/2, start_executor/3]).
-export([init/1]).

%% @doc Starts the executor supervisor of engine `Engine' (registered as
%% `aion_ctx:proc_name(Engine, activity_sup)').
-spec start_link(atom()) -> {ok, pid()} | {error, term()}.
start_link(Engine) ->
    supervisor:start_link({local, aion_ctx:proc_name(Engine, activity_sup)}, ?MODULE, []).

%% @doc Starts an executor for `Task' (called by the runner).
-spec start_executor(aion_ctx:ctx(), aion_activity_runner:task()) ->
          {ok, pid()} | {error, term()}.
start_executor(Ctx, Task) ->
    start_executor(Ctx, Task, undefined).

%% @doc Starts an executor for `Task'; with `Runner' = the runner's pid it holds
%% the slot of its first attempt (see `aion_activity_executor:start_link/3').
-spec start_executor(aion_ctx:ctx(), aion_activity_runner:task(), pid() | undefined) ->
          {ok, pid()} | {error, term()}.
start_executor(#{name := Engine} = Ctx, Task, Runner) ->
    case supervisor:start_child(aion_ctx:proc_name(Engine, activity_sup), [Ctx, Task, Runner]) of
        {ok, Pid} when is_pid(Pid) -> {ok, Pid};
        {ok, Pid, _} when is_pid(Pid) -> {ok, Pid};
        {error, _} = E -> E;
        _ -> {error, ignored}
    end.

%% @private
-spec init([]) -> {ok, {supervisor:sup_flags(), [supervisor:child_spec()]}}.
init([]) ->
    {ok, {#{strategy => simple_one_for_one, intensity => 0, period => 1},
          [#{id => aion_activity_executor,
             start => {aion_activity_executor, start_link, []},
             restart => temporary,
             shutdown => 10000,
             type => worker,
             modules => [aion_activity_executor]}]}}.
