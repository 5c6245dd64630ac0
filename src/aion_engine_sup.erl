%% @private
%% @doc One engine's supervisor (one_for_all): the store owner, the confirmer, the
%% residency server (before anything that commits arrivals, so no rehydration
%% request is lost; it holds them until recovery says the workflow supervisor
%% runs), the timer service, the activity runner and its executor supervisor, the child-task
%% supervisor, the workflow supervisor and the recovery worker, started in that
%% order and stopped in reverse (design.md section 1). The store owner stops last
%% and closes the store, so no write lands after the engine stopped.
-module(aion_engine_sup).
-behaviour(supervisor).

-export([start_link/1, init/1]).

%% @doc Starts an engine from validated options (see `aion_engine').
-spec start_link(map()) -> {ok, pid()} | {error, term()}.
start_link(#{name := Name} = Opts) ->
    supervisor:start_link({local, aion_ctx:proc_name(Name, sup)}, ?MODULE, Opts).

%% @doc Supervisor callback.
-spec init(map()) -> {ok, {supervisor:sup_flags(), [supervisor:child_spec()]}}.
init(#{name := Name} = Opts) ->
    Worker = fun(Id, M, Args, Shutdown) ->
                     #{id => Id, start => {M, start_link, Args}, restart => permanent,
                       shutdown => Shutdown, type => worker}
             end,
    Sup = fun(Id, M) ->
                  #{id => Id, start => {M, start_link, [Name]}, restart => permanent,
                    shutdown => infinity, type => supervisor}
          end,
    Children = [Worker(store_owner, aion_store_owner, [Opts], 60000),
                Worker(confirmer, aion_confirmer, [Name], 5000),
                Worker(residency, aion_residency, [Name], 5000),
                Worker(timers, aion_timers, [Name], 10000),
                Worker(activity_runner, aion_activity_runner, [Name], 10000),
                Sup(activity_sup, aion_activity_sup),
                Sup(child_tasks, aion_child_tasks),
                Sup(run_sup, aion_run_sup),
                Worker(recovery, aion_recovery, [Name], 5000)],
    {ok, {#{strategy => one_for_all, intensity => 3, period => 10}, Children}}.
