%% @private
%% @doc The engine context: what every part of one engine needs to reach the others.
%%
%% Published in `persistent_term' by `aion_store_owner' when an engine starts and
%% erased when it stops (a `persistent_term' update is costly, but happens only then).
%% Two engines have two contexts and share nothing.
-module(aion_ctx).

-export([get/1, find/1, put/2, erase/1, proc_name/2]).

-export_type([ctx/0, role/0]).

-type ctx() :: #{name := atom(),
                 store := aion_store:store(),
                 mailbox := aion_mailbox:mailbox(),
                 runs := ets:tid(),
                 waiters := ets:tid(),
                 opts := map(),
                 owner => pid(),    % the store owner (its exit = the engine stopped)
                 wids => ets:tid(),  % workflow_id -> run_id of resident runs (a hint)
                 idle => ets:tid()}. % blocked processes by time blocked (max_resident)
-type role() :: sup | store_owner | confirmer | residency | timers | runner
              | activity_sup | child_tasks | run_sup | recovery.

%% @doc The context of a running engine; raises `error({engine_not_running, Name})'.
-spec get(atom()) -> ctx().
get(Name) ->
    case persistent_term:get({?MODULE, Name}, undefined) of
        undefined -> error({engine_not_running, Name});
        Ctx -> Ctx
    end.

%% @doc The context of an engine, or `error' when it is not running.
-spec find(atom()) -> {ok, ctx()} | error.
find(Name) ->
    case persistent_term:get({?MODULE, Name}, undefined) of
        undefined -> error;
        Ctx -> {ok, Ctx}
    end.

%% @doc Publishes an engine's context (called by the store owner at start).
-spec put(atom(), ctx()) -> ok.
put(Name, Ctx) ->
    persistent_term:put({?MODULE, Name}, Ctx).

%% @doc Withdraws an engine's context (called by the store owner at stop).
-spec erase(atom()) -> ok.
erase(Name) ->
    _ = persistent_term:erase({?MODULE, Name}),
    ok.

%% @doc The registered name of one of an engine's processes, e.g.
%% `proc_name(aion_default, timers)' is `aion_default_timers'.
-spec proc_name(atom(), role()) -> atom().
proc_name(Name, Role) ->
    list_to_atom(atom_to_list(Name) ++ "_" ++ atom_to_list(Role)).
