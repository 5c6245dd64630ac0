%% @private
%% @doc The `aion' application: starts `aion_sup'.
-module(aion_app).
-behaviour(application).

-export([start/2, stop/1]).

%% @doc Application callback: starts `aion_sup' (and with it the default engine).
-spec start(application:start_type(), term()) -> {ok, pid()} | {error, term()}.
start(_Type, _Args) ->
    aion_sup:start_link().

%% @doc Application callback.
-spec stop(term()) -> ok.
stop(_State) ->
    ok.
