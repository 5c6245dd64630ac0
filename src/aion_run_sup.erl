%% @private
%% @doc The engine's workflow supervisor (simple_one_for_one): one temporary
%% `aion_run' child per resident run. Shutdown kills them (the history is the
%% truth; a replay rebuilds them).
-module(aion_run_sup).
-behaviour(supervisor).

-export([start_link/1, init/1, start_run/2, start_run/3, start_new/3, start_fresh/3]).

%% @doc Starts the supervisor of engine `Name'.
-spec start_link(atom()) -> {ok, pid()} | {error, term()}.
start_link(Name) ->
    supervisor:start_link({local, aion_ctx:proc_name(Name, run_sup)}, ?MODULE, Name).

%% @doc Supervisor callback.
-spec init(atom()) -> {ok, {supervisor:sup_flags(), [supervisor:child_spec()]}}.
init(Name) ->
    {ok, {#{strategy => simple_one_for_one, intensity => 10, period => 10},
          [#{id => aion_run, start => {aion_run, start_link, [Name]},
             restart => temporary, shutdown => brutal_kill}]}}.

%% @doc Starts a workflow process for an existing open run: it registers, loads
%% the history, replays and continues. Returns `{ok, Pid}', or
%% `{error, {already_resident, Pid}}' when the run already has a process (other
%% errors come from the supervisor). A run found closed or missing makes the
%% process exit at once.
-spec start_run(aion_ctx:ctx(), binary()) -> {ok, pid()} | {error, term()}.
start_run(#{name := Name}, RunId) when is_binary(RunId) ->
    supervisor:start_child(aion_ctx:proc_name(Name, run_sup), [RunId, recover]).

%% @doc Like {@link start_run/2}, for a suspended run brought back by the
%% residency server `Notify' (told when the replay is done).
-spec start_run(aion_ctx:ctx(), binary(), pid()) -> {ok, pid()} | {error, term()}.
start_run(#{name := Name}, RunId, Notify) when is_binary(RunId), is_pid(Notify) ->
    supervisor:start_child(aion_ctx:proc_name(Name, run_sup), [RunId, {rehydrate, Notify}]).

%% @doc Starts the process of a run about to be created by the caller, which then
%% sends `{aion_go, Ref, StoredStartEvent}' after its commit, or
%% `{aion_abort, Ref}'.
-spec start_new(aion_ctx:ctx(), binary(), reference()) -> {ok, pid()} | {error, term()}.
start_new(#{name := Name}, RunId, Ref) ->
    supervisor:start_child(aion_ctx:proc_name(Name, run_sup), [RunId, {new, self(), Ref}]).

%% @doc Starts the process of a fresh top-level run that commits its own start
%% (`{fresh, Start}', see `aion_run:start_link/3'); the caller is answered
%% `{aion_started, Ref, ok | {error, Reason}}'. Errors as {@link start_new/3}.
-spec start_fresh(aion_ctx:ctx(), binary(), aion_run:fresh_start()) ->
          {ok, pid()} | {error, term()}.
start_fresh(#{name := Name}, RunId, Start) ->
    supervisor:start_child(aion_ctx:proc_name(Name, run_sup), [RunId, {fresh, Start}]).
