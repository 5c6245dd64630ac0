%% @private
%% @doc Top supervisor of the `aion' application (one_for_one). Each engine is an
%% `aion_engine_sup' child (one_for_all): the default engine `aion_default' from
%% the application environment (unless `start_default_engine' is false), more at
%% run time with `aion_engine:start/1'.
-module(aion_sup).
-behaviour(supervisor).

-export([start_link/0, init/1, default_engine_options/0]).

-define(ENV_KEYS, [db_path, synchronous, max_concurrent_activities, query_timeout,
                   idle_evict_after, max_resident, max_rehydrations, busy_timeout,
                   checkpoint_interval, page_size, timer_horizon, timer_rescan_interval,
                   timer_scan_limit, confirm_initial_backoff, confirm_max_backoff]).

%% @doc Starts the top supervisor.
-spec start_link() -> {ok, pid()} | {error, term()}.
start_link() ->
    supervisor:start_link({local, ?MODULE}, ?MODULE, []).

%% @doc Supervisor callback.
-spec init([]) -> {ok, {supervisor:sup_flags(), [supervisor:child_spec()]}}.
init([]) ->
    %% The pg scope through which task-queue workers (aion_worker) are found.
    Pg = #{id => aion_pg, start => {pg, start_link, [aion_worker:scope()]}},
    Children = case application:get_env(aion, start_default_engine, true) of
                   true -> [Pg, aion_engine:child_spec(default_engine_options())];
                   false -> [Pg]
               end,
    {ok, {#{strategy => one_for_one, intensity => 10, period => 10}, Children}}.

%% @doc The default engine's options, from the `aion' application environment.
-spec default_engine_options() -> map().
default_engine_options() ->
    lists:foldl(fun(K, Acc) ->
                        case application:get_env(aion, K) of
                            {ok, V} -> Acc#{K => V};
                            undefined -> Acc
                        end
                end, #{name => aion_default}, ?ENV_KEYS).
