%% @private
%% @doc Record, then wake: hands committed events to a resident workflow process.
%%
%% Called by every appender other than the workflow process itself (activity
%% executors, the timer service, client calls such as `aion:signal/3') after its
%% append has committed. Each event is retained in the engine's mailbox NIF under
%% `(Pid, Seq)' and the bare marker `aion_event' is sent; the confirmer then re-sends
%% the marker until the process's wake epoch moves (it looked) or it exits. A run
%% without a resident process (suspended) is handed to the residency server, which
%% starts one: it replays from the store, the new event included.
-module(aion_deliver).

-export([events/3, marker/0]).

-define(MARKER, aion_event).

%% @doc The marker atom a workflow process receives when events are retained for it.
-spec marker() -> atom().
marker() -> ?MARKER.

%% @doc Delivers committed events of `RunId' to its resident process, or asks for
%% a process when the run has none (`aion_residency:rehydrate/2'). Returns `ok'.
-spec events(aion_ctx:ctx(), binary(), [aion_event:stored()]) -> ok.
events(_Ctx, _RunId, []) ->
    ok;
events(#{runs := Runs, mailbox := Mb} = Ctx, RunId, Events) ->
    case ets:lookup(Runs, RunId) of
        [{_, Pid}] when is_pid(Pid) ->
            Epoch = aion_mailbox:epoch(Mb, Pid),
            case retain_all(Mb, Pid, Events) of
                ok when is_integer(Epoch) -> aion_confirmer:watch(Ctx, Pid, Epoch, ?MARKER);
                _ -> ok
            end;
        _ ->
            aion_residency:rehydrate(Ctx, RunId)
    end.

retain_all(_Mb, _Pid, []) ->
    ok;
retain_all(Mb, Pid, [{Seq, _, _, _} = E | Rest]) ->
    case aion_mailbox:retain(Mb, Pid, Seq, E, ?MARKER) of
        ok -> retain_all(Mb, Pid, Rest);
        {error, exited} -> exited
    end.
