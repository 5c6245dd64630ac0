%% A BEAM node run as an OS process for crash tests: start it on a function of a
%% test module (or as a `peer' running the demo engine), read the lines it prints,
%% kill it with `kill -9'. Shared by the crash suites.
-module(aion_test_node).

-export([start/3, wait_line/3, kill9/2, run_until_killed/5, engine_peer/1, kill9_peer/2]).

%% Starts `erl' running `Mod:Fun(Args...)' with the code paths of `Mods' (and
%% aion's). The child prints its OS pid first. Returns `{Port, OsPid}'.
start(Mod, Fun, Args) ->
    Erl = os:find_executable("erl"),
    Paths = lists:usort([filename:dirname(code:which(M)) || M <- [aion, Mod, ?MODULE]]),
    ArgText = lists:join(", ", [io_lib:format("~p", [A]) || A <- Args]),
    Eval = lists:flatten(io_lib:format("io:format(\"pid ~~s~~n\", [os:getpid()]), ~s:~s(~s)",
                                       [Mod, Fun, ArgText])),
    Port = open_port({spawn_executable, Erl},
                     [{args, ["-noshell", "+S", "2", "-pa" | Paths] ++ ["-eval", Eval]},
                      {line, 4096}, binary, exit_status, use_stdio, stderr_to_stdout]),
    receive
        {Port, {data, {eol, <<"pid ", P/binary>>}}} -> {Port, binary_to_list(P)};
        {Port, {exit_status, St}} -> error({child_exited, St})
    after 30000 -> error(child_did_not_start)
    end.

%% Starts a node on `Mod:Fun(Args...)', waits (at most `Timeout' ms) until it prints
%% `Line', then kills it with `kill -9' and waits until it is gone (killed in any
%% case, also when the wait fails).
run_until_killed(Mod, Fun, Args, Line, Timeout) ->
    {Port, OsPid} = start(Mod, Fun, Args),
    try
        wait_line(Port, Line, Timeout),
        kill9(Port, OsPid)
    after
        _ = os:cmd("kill -9 " ++ OsPid ++ " 2>/dev/null")
    end.

%% Waits for the child to print `Line' (other lines are logged).
wait_line(Port, Line, Timeout) ->
    receive
        {Port, {data, {eol, Line}}} ->
            ok;
        {Port, {data, {eol, Other}}} ->
            ct:pal("child: ~s", [Other]),
            wait_line(Port, Line, Timeout);
        {Port, {exit_status, St}} ->
            error({child_exited_early, St})
    after Timeout ->
            error({child_did_not_print, Line})
    end.

%% Kills the child with SIGKILL and waits until the port reports its exit.
kill9(Port, OsPid) ->
    _ = os:cmd("kill -9 " ++ OsPid),
    wait_exit(Port).

wait_exit(Port) ->
    receive
        {Port, {exit_status, _}} -> ok;
        {Port, _} -> wait_exit(Port)
    after 30000 -> error(child_did_not_die)
    end.

%% A peer node (`peer', standard_io connection) running the demo's engine on `Db'
%% (`aion_demo:engine_main/1'). Returns `{Peer, OsPid}'.
engine_peer(Db) ->
    {ok, Peer, _} = peer:start(#{connection => standard_io,
                                 args => ["-pa" | code:get_path()]}),
    ok = peer:call(Peer, aion_demo, engine_main, [Db], 30000),
    OsPid = peer:call(Peer, os, getpid, []),
    {Peer, OsPid}.

%% Kills a peer node's OS process with SIGKILL and waits until the peer is down.
kill9_peer(Peer, OsPid) ->
    Ref = erlang:monitor(process, Peer),
    _ = os:cmd("kill -9 " ++ OsPid),
    receive {'DOWN', Ref, process, Peer, _} -> ok
    after 30000 -> error(peer_survived_kill)
    end.
