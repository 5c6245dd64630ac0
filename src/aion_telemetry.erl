%% @private
%% @doc Telemetry events of aion, emitted only when the optional `telemetry'
%% application is loaded (`[aion, workflow, start | stop | evicted]',
%% `[aion, activity, start | stop]'); otherwise a no-op.
-module(aion_telemetry).

-export([execute/3]).

%% @doc Emits `Event' through `telemetry:execute/3' if telemetry is loaded; never
%% fails (a handler crash or a stopped telemetry application is ignored).
-spec execute([atom(), ...], map(), map()) -> ok.
execute(Event, Measurements, Metadata) ->
    case erlang:module_loaded(telemetry) of
        true ->
            %% telemetry is optional: called through a variable so that neither
            %% xref nor dialyzer needs it.
            Mod = telemetry,
            try Mod:execute(Event, Measurements, Metadata)
            catch _:_ -> ok
            end,
            ok;
        false ->
            ok
    end.
