%% Helpers shared by the core Common Test suites.
-module(aion_ct).

-export([start_app/0, init_per_suite/1, end_per_suite/1, start_engine/2, start_engine/3, stop_engine/1, db_path/2,
         wait_until/2, wait_until/3, types/1, history/1, history/2, gate_wait/1,
         gate_wait/2, release/2, flush/0]).

%% Starts the aion application without its default engine.
start_app() ->
    _ = application:load(aion),
    ok = application:set_env(aion, start_default_engine, false),
    {ok, _} = application:ensure_all_started(aion),
    ok.

%% The suites' init_per_suite/1: the application without its default engine.
init_per_suite(Config) ->
    ok = start_app(),
    Config.

%% The suites' end_per_suite/1: stops the application.
end_per_suite(_Config) ->
    _ = application:stop(aion),
    ok.

db_path(Config, Name) ->
    filename:join(proplists:get_value(priv_dir, Config), Name).

start_engine(Name, Path) ->
    start_engine(Name, Path, #{}).

start_engine(Name, Path, Extra) ->
    {ok, Pid} = aion_engine:start(Extra#{name => Name, db_path => Path}),
    Pid.

stop_engine(Name) ->
    _ = aion_engine:stop(Name),
    ok.

%% Polls Fun() until it returns true (or a non-false value), at most TimeoutMs.
wait_until(Fun, TimeoutMs) ->
    wait_until(Fun, TimeoutMs, 5).

wait_until(Fun, TimeoutMs, StepMs) ->
    Deadline = erlang:monotonic_time(millisecond) + TimeoutMs,
    poll(Fun, Deadline, StepMs).

poll(Fun, Deadline, Step) ->
    case Fun() of
        false ->
            case erlang:monotonic_time(millisecond) > Deadline of
                true -> error(wait_until_timeout);
                false ->
                    receive after Step -> ok end,
                    poll(Fun, Deadline, Step)
            end;
        Value ->
            Value
    end.

history(Wid) ->
    history(Wid, #{}).

history(Wid, Opts) ->
    {ok, H} = aion:history(Wid, Opts),
    H.

types(Events) ->
    [T || #{type := T} <- Events].

%% Waits for a gate activity of `Name' to report; returns {Pid, Attempt}.
gate_wait(Name) ->
    gate_wait(Name, 10000).

gate_wait(Name, Timeout) ->
    receive {gate, Name, Pid, Attempt} -> {Pid, Attempt}
    after Timeout -> error({gate_timeout, Name})
    end.

release(Pid, Reply) ->
    Pid ! {release, Reply},
    ok.

flush() ->
    receive _ -> flush() after 0 -> ok end.
