%% @doc The API an activity function uses while it runs (SPEC 2.3).
%%
%% Each attempt runs in its own process, started by the activity's executor; the
%% process dictionary of that process holds the attempt's context under the key
%% `aion_activity'. Outside an attempt every function here raises
%% `error(not_in_activity)'.
%%
%% An activity function returns `{ok, V}' or `V' (success), `{error, Reason}'
%% (retryable failure unless `Reason' matches `non_retryable_errors'),
%% `{error, {non_retryable, Reason}}' (final failure); an exception is the retryable
%% failure `{exception, Class, Reason}'. Activities run at least once: an attempt
%% that timed out or was cancelled is killed.
-module(aion_activity).

-export([heartbeat/1, info/0, is_cancelled/0]).
%% Used by the executor to set up an attempt process.
-export([init_attempt/2]).

-export_type([info/0]).

-define(KEY, aion_activity).

-type info() :: #{workflow_id := binary(),
                  run_id := binary(),
                  activity_id := binary(),
                  attempt := pos_integer(),
                  heartbeat_details := term(),
                  deadline := integer() | infinity}.

%% @doc Records a heartbeat: resets the `heartbeat_timeout' of the current attempt
%% and keeps `Details' (a JSON payload) as the activity's last heartbeat details,
%% which {@link info/0} returns in this and every later attempt (they are also
%% written with the task row at each retry, so they survive a restart).
%% Returns `ok'. Raises `error({invalid_payload, Path, Why})' when `Details' is not a
%% JSON payload and `error(not_in_activity)' outside an activity.
-spec heartbeat(term()) -> ok.
heartbeat(Details) ->
    #{executor := Exec, ref := Ref} = Ctx = context(),
    case aion_json:encode(Details) of
        {ok, _} -> ok;
        {error, Reason} -> error(Reason)
    end,
    Exec ! {aion_heartbeat, Ref, Details},
    put(?KEY, Ctx#{heartbeat_details => Details}),
    ok.

%% @doc The current attempt: `#{workflow_id, run_id, activity_id, attempt,
%% heartbeat_details, deadline}'. `heartbeat_details' is the last value given to
%% {@link heartbeat/1} by this or an earlier attempt (`null' when none);
%% `deadline' is the time (ms since the Unix epoch) by which this attempt is killed
%% by its start-to-close or schedule-to-close timeout, or `infinity'.
%% Raises `error(not_in_activity)' outside an activity.
-spec info() -> info().
info() ->
    maps:with([workflow_id, run_id, activity_id, attempt, heartbeat_details, deadline],
              context()).

%% @doc True when the activity no longer wants this attempt's result: it was
%% cancelled, its run closed, or the engine is stopping (the attempt is about to be
%% killed). A long-running activity may poll it between steps to stop early.
%% Raises `error(not_in_activity)' outside an activity.
-spec is_cancelled() -> boolean().
is_cancelled() ->
    #{executor := Exec} = context(),
    case node(Exec) =:= node() of
        true -> not is_process_alive(Exec);
        false ->
            %% A task-queue worker on another node: ask the engine's node.
            case rpc:call(node(Exec), erlang, is_process_alive, [Exec]) of
                true -> false;
                _ -> true
            end
    end.

%% @private
%% @doc Installs the attempt context in the calling (attempt) process.
-spec init_attempt(pid(), map()) -> ok.
init_attempt(Executor, Info) ->
    put(?KEY, Info#{executor => Executor}),
    ok.

context() ->
    case get(?KEY) of
        #{} = Ctx -> Ctx;
        _ -> error(not_in_activity)
    end.
