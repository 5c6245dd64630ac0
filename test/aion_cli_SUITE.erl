%% Tests of the operator CLI (aion_cli, bin/aion): every command on a real database,
%% reads while another OS process writes the file, and every error case with its exit
%% status. The remote commands (signal, cancel, terminate) need a node running an
%% engine with those APIs: their cases skip until `aion' exports them.
-module(aion_cli_SUITE).
-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-export([all/0, init_per_suite/1, end_per_suite/1]).
-export([usage_errors/1, missing_db/1, not_an_aion_db/1, list/1, describe/1, history/1,
         history_json/1, unknown_id/1, escript_exit_status/1, reads_while_writer_runs/1,
         node_unreachable/1, remote_commands/1]).
%% run inside the writer peer
-export([start_writer/1, writer_count/0]).
%% the workflow the remote commands act on
-export([run/1]).

all() ->
    [usage_errors, missing_db, not_an_aion_db, list, describe, history, history_json,
     unknown_id, escript_exit_status, reads_while_writer_runs, node_unreachable,
     remote_commands].

init_per_suite(Config) ->
    Dir = ?config(priv_dir, Config),
    Db = filename:join(Dir, "cli.db"),
    {ok, Store} = aion_store:open(Db, #{}),
    T0 = 1700000000000,
    ok = create(Store, <<"r-1">>, <<"order-1">>, <<"order_saga">>, T0),
    ok = create(Store, <<"r-2">>, <<"order-2">>, <<"order_saga">>, T0 + 10),
    ok = create(Store, <<"r-3">>, <<"sub-1">>, <<"subscription">>, T0 + 20),
    {ok, _} = aion_store:append(
                Store, [#{run_id => <<"r-1">>,
                          events => [{<<"activity_scheduled">>, T0 + 5,
                                      <<"{\"activity_id\":\"1\",\"name\":\"shop:reserve\","
                                        "\"input\":[],\"task_queue\":\"default\",\"options\":{}}">>},
                                     {<<"activity_completed">>, T0 + 1500,
                                      <<"{\"activity_id\":\"1\",\"attempt\":2,\"result\":\"r\"}">>},
                                     {<<"workflow_completed">>, T0 + 1600,
                                      <<"{\"result\":{\"ok\":true}}">>}],
                          set => #{status => <<"completed">>, closed_at => T0 + 1600}},
                        #{run_id => <<"r-2">>,
                          events => [{<<"activity_scheduled">>, T0 + 15,
                                      <<"{\"activity_id\":\"1\",\"name\":\"shop:charge\","
                                        "\"input\":[],\"task_queue\":\"default\",\"options\":{}}">>}],
                          tasks_put => [{<<"1">>, 3, <<"default">>, <<"{}">>}],
                          timers_put => [{<<"t1">>, T0 + 60000}]}]),
    ok = aion_store:close(Store),
    Escript = make_escript(Dir),
    [{db, Db}, {escript, Escript} | Config].

end_per_suite(_Config) ->
    ok.

create(Store, RunId, WfId, Type, At) ->
    {ok, _} = aion_store:append(
                Store, [#{run_id => RunId,
                          create => #{workflow_id => WfId, type => Type,
                                      status => <<"running">>, started_at => At},
                          events => [{<<"workflow_started">>, At,
                                      <<"{\"workflow_type\":\"", Type/binary, "\",\"input\":{}}">>}]}]),
    ok.

%% An escript holding this build's beams, as `make cli' builds bin/aion.
make_escript(Dir) ->
    Ebin = filename:dirname(code:which(aion_cli)),
    Files = [{filename:join("aion/ebin", F), element(2, {ok, _} = file:read_file(filename:join(Ebin, F)))}
             || F <- filelib:wildcard("*.{beam,app}", Ebin)],
    Path = filename:join(Dir, "aion"),
    ok = escript:create(Path, [shebang, {emu_args, "-escript main aion_cli -noinput"},
                               {archive, Files, []}]),
    ok = file:change_mode(Path, 8#755),
    Path.

nif_path() ->
    filename:join(code:priv_dir(aion), "aion_nif").

%% Runs the escript; {ExitStatus, Output (stdout and stderr)}.
escript(Config, Args) ->
    Port = open_port({spawn_executable, ?config(escript, Config)},
                     [{args, Args}, exit_status, stderr_to_stdout, binary,
                      {env, [{"AION_NIF", nif_path()}]}]),
    collect(Port, []).

collect(Port, Acc) ->
    receive
        {Port, {data, D}} -> collect(Port, [Acc, D]);
        {Port, {exit_status, S}} -> {S, iolist_to_binary(Acc)}
    after 60000 -> error(escript_timeout)
    end.

cli(Args) ->
    {Code, Out} = aion_cli:run(Args),
    {Code, iolist_to_binary(Out)}.

db(Config) -> ["--db", ?config(db, Config)].

contains(Bin, Part) ->
    binary:match(Bin, iolist_to_binary(Part)) =/= nomatch.

%%% ===========================================================================

usage_errors(Config) ->
    Cases = [[], ["frobnicate"], ["list", "--bogus"], ["list", "--limit"],
             ["list", "--limit", "zero"], ["list", "--status", "sleeping"], ["list", "extra"],
             ["describe"], ["describe", "a", "b"], ["history"], ["history", "x", "--node", "n@h"],
             ["signal", "x"], ["cancel"], ["terminate", "a", "b", "c"], ["cancel", "x"],
             ["cancel", "x", "--node", "nohost"], ["signal", "x", "go", "{bad json", "--node", "n@h"],
             ["help"]],
    lists:foreach(fun(Args) ->
                          {Code, Out} = cli(Args ++ db(Config)),
                          ct:log("~p -> ~s", [Args, Out]),
                          ?assertEqual({2, Args}, {Code, Args}),
                          ?assert(contains(Out, "usage: aion"))
                  end, Cases).

missing_db(_Config) ->
    [begin
         {1, Out} = cli(Args ++ ["--db", "/nonexistent/dir/x.db"]),
         ?assert(contains(Out, "database file not found: /nonexistent/dir/x.db"))
     end || Args <- [["list"], ["describe", "a"], ["history", "a"]]],
    ?assertNot(filelib:is_file("/nonexistent/dir/x.db")).

not_an_aion_db(Config) ->
    Other = filename:join(?config(priv_dir, Config), "other.db"),
    {ok, Db} = aion_sql:open(Other),
    ok = aion_sql:exec(Db, "CREATE TABLE t(a)"),
    ok = aion_sql:close(Db),
    {1, Out} = cli(["list", "--db", Other]),
    ?assert(contains(Out, "not an aion database")),
    %% and the CLI wrote nothing into it
    {ok, Db2} = aion_sql:open(Other, #{mode => read_only}),
    {ok, [{1}]} = aion_sql:query(Db2, "SELECT count(*) FROM sqlite_master WHERE type = 'table'"),
    ok = aion_sql:close(Db2),
    Garbage = filename:join(?config(priv_dir, Config), "garbage.db"),
    ok = file:write_file(Garbage, binary:copy(<<"not sqlite">>, 500)),
    {1, Out2} = cli(["list", "--db", Garbage]),
    ?assert(contains(Out2, "cannot")).

list(Config) ->
    {0, All} = cli(["list" | db(Config)]),
    ct:log("~s", [All]),
    [?assert(contains(All, W)) || W <- ["order-1", "order-2", "sub-1", "WORKFLOW_ID"]],
    {0, Done} = cli(["list", "--status", "completed" | db(Config)]),
    ?assert(contains(Done, "order-1")),
    ?assertNot(contains(Done, "order-2")),
    {0, Subs} = cli(["list", "--type", "subscription" | db(Config)]),
    ?assert(contains(Subs, "sub-1")),
    ?assertNot(contains(Subs, "order-1")),
    {0, One} = cli(["list", "--limit", "1" | db(Config)]),
    ?assertEqual(2, length(binary:split(One, <<"\n">>, [global, trim]))),
    {0, None} = cli(["list", "--status", "failed" | db(Config)]),
    ?assert(contains(None, "no workflows")).

describe(Config) ->
    {0, Out} = cli(["describe", "order-2" | db(Config)]),
    ct:log("~s", [Out]),
    [?assert(contains(Out, P)) || P <- ["r-2", "order_saga", "running", "history_length       2",
                                        "1 (attempt 3, queue default)", "t1 at 2023-11-14"]],
    {0, Done} = cli(["describe", "order-1" | db(Config)]),
    ?assert(contains(Done, "completed")),
    ?assert(contains(Done, "closed_at            2023-11-14T22:13:21.600Z")).

history(Config) ->
    {0, Out} = cli(["history", "order-1" | db(Config)]),
    ct:log("~s", [Out]),
    Lines = binary:split(Out, <<"\n">>, [global, trim]),
    ?assertEqual(2 + 4, length(Lines)),
    [?assert(contains(Out, P)) || P <- ["workflow_started", "activity_scheduled",
                                        "activity_completed", "workflow_completed",
                                        "+1500ms", "+1600ms"]],
    %% an explicit run id
    {0, Out2} = cli(["history", "order-2", "--run", "r-2" | db(Config)]),
    ?assert(contains(Out2, "activity_scheduled")).

history_json(Config) ->
    {0, Out} = cli(["history", "order-1", "--json" | db(Config)]),
    ct:log("~s", [Out]),
    ?assertMatch(<<"[{\"seq\":1,\"type\":\"workflow_started\",\"recorded_at\":1700000000000,", _/binary>>, Out),
    ?assert(contains(Out, "{\"seq\":4,\"type\":\"workflow_completed\",\"recorded_at\":1700000001600,"
                          "\"data\":{\"result\":{\"ok\":true}}}]")).

unknown_id(Config) ->
    {1, Out} = cli(["describe", "nope" | db(Config)]),
    ?assert(contains(Out, "unknown workflow id: nope")),
    {1, Out2} = cli(["history", "nope" | db(Config)]),
    ?assert(contains(Out2, "unknown workflow id: nope")),
    {1, Out3} = cli(["history", "order-1", "--run", "r-404" | db(Config)]),
    ?assert(contains(Out3, "no history")).

%% The real escript: exit statuses 0, 1, 2 and output.
escript_exit_status(Config) ->
    {0, Out} = escript(Config, ["list" | db(Config)]),
    ?assert(contains(Out, "order-1")),
    {0, H} = escript(Config, ["history", "order-1" | db(Config)]),
    ?assert(contains(H, "workflow_completed")),
    {1, E1} = escript(Config, ["describe", "nope" | db(Config)]),
    ?assert(contains(E1, "unknown workflow id")),
    {1, E2} = escript(Config, ["list", "--db", "/nonexistent.db"]),
    ?assert(contains(E2, "database file not found")),
    {2, E3} = escript(Config, ["list", "--what"]),
    ?assert(contains(E3, "usage")).

%% Another OS process holds the database and keeps appending (as an engine does):
%% the CLI reads committed state, never blocks it, never fails.
reads_while_writer_runs(Config) ->
    Db = filename:join(?config(priv_dir, Config), "busy.db"),
    %% a separate OS process, reached over its standard I/O (this node need not be
    %% distributed)
    {ok, Peer, _} = peer:start_link(#{connection => standard_io,
                                   args => ["-pa" | code:get_path()]}),
    try
        ok = peer:call(Peer, ?MODULE, start_writer, [Db], 30000),
        ok = wait_for_events(Db, 50, erlang:monotonic_time(millisecond) + 30000),
        Lengths = [begin
                       {0, Out} = escript(Config, ["describe", "busy" | ["--db", Db]]),
                       {match, [L]} = re:run(Out, "history_length +([0-9]+)",
                                             [{capture, all_but_first, binary}]),
                       {0, _} = escript(Config, ["history", "busy", "--db", Db]),
                       {0, _} = escript(Config, ["list", "--db", Db]),
                       binary_to_integer(L)
                   end || _ <- lists:seq(1, 5)],
        ct:log("history lengths seen: ~p", [Lengths]),
        ?assertEqual(Lengths, lists:sort(Lengths)),
        %% the writer was never disturbed
        {ok, N} = peer:call(Peer, ?MODULE, writer_count, [], 30000),
        ?assert(N > lists:last(Lengths) - 1)
    after
        peer:stop(Peer)
    end.

start_writer(Db) ->
    Parent = self(),
    Pid = spawn(fun() ->
                        {ok, S} = aion_store:open(Db, #{}),
                        {ok, _} = aion_store:append(
                                    S, [#{run_id => <<"busy-run">>,
                                          create => #{workflow_id => <<"busy">>, type => <<"t">>,
                                                      status => <<"running">>,
                                                      started_at => erlang:system_time(millisecond)},
                                          events => [{<<"workflow_started">>, 1, <<"{}">>}]}]),
                        Parent ! started,
                        writer_loop(S, 1)
                end),
    register(cli_test_writer, Pid),
    receive started -> ok after 10000 -> error(writer_start) end.

writer_loop(S, N) ->
    receive
        {count, From} -> From ! {count, N}, writer_loop(S, N)
    after 2 -> %% an engine's pace, not a synchronisation: about 400 appends a second
            {ok, _} = aion_store:append(
                        S, [#{run_id => <<"busy-run">>,
                              events => [{<<"marker_recorded">>, erlang:system_time(millisecond),
                                          <<"{\"kind\":\"tick\",\"id\":\"", (integer_to_binary(N))/binary,
                                            "\",\"value\":null}">>}]}]),
            writer_loop(S, N + 1)
    end.

writer_count() ->
    cli_test_writer ! {count, self()},
    receive {count, N} -> {ok, N} after 10000 -> error(no_count) end.

wait_for_events(Db, N, Deadline) ->
    Have = case aion_sql:open(Db, #{mode => read_only}) of
               {ok, H} ->
                   R = aion_sql:query(H, "SELECT count(*) FROM events"),
                   ok = aion_sql:close(H),
                   case R of {ok, [{C}]} -> C; _ -> 0 end;
               {error, _} -> 0
           end,
    case Have >= N of
        true -> ok;
        false ->
            erlang:monotonic_time(millisecond) < Deadline orelse error(writer_too_slow),
            receive after 20 -> wait_for_events(Db, N, Deadline) end
    end.

node_unreachable(Config) ->
    {ok, Host} = inet:gethostname(),
    {1, Out} = escript(Config, ["cancel", "x", "--node", "nobody_here@" ++ Host,
                                "--cookie", "c"]),
    ?assert(contains(Out, "node unreachable: nobody_here@" ++ Host)).

%% signal / cancel / terminate against an OS process running an engine: terminate
%% works now; signal and cancel are checked once `aion' exports them (SPEC 2.1), and
%% until then must fail cleanly with exit status 1.
remote_commands(Config) ->
    case [M || M <- [aion_json, aion_engine], code:ensure_loaded(M) =/= {module, M}] of
        [] -> remote_commands1(Config);
        Missing -> {skip, lists:flatten(io_lib:format("engine not complete: ~p", [Missing]))}
    end.

remote_commands1(Config) ->
    Dir = ?config(priv_dir, Config),
    Db = filename:join(Dir, "remote.db"),
    {ok, Host} = inet:gethostname(),
    Name = "aion_cli_target_" ++ os:getpid(),
    Node = Name ++ "@" ++ Host,
    Cookie = "cli_test_cookie",
    Eval = "aion_demo:engine_main(\"" ++ Db ++ "\"), "
           "[{ok, _} = aion:start(aion_cli_SUITE, #{}, #{id => Id}) || Id <- [<<\"w1\">>, <<\"w2\">>, <<\"w3\">>]].",
    Port = open_port({spawn_executable, os:find_executable("erl")},
                     [{args, ["-sname", Name, "-setcookie", Cookie, "-noshell",
                              "-pa" | code:get_path()] ++ ["-eval", Eval]},
                      exit_status, stderr_to_stdout, binary]),
    {os_pid, OsPid} = erlang:port_info(Port, os_pid),
    try
        ok = wait_runs(Db, 3, erlang:monotonic_time(millisecond) + 30000),
        Remote = ["--node", Node, "--cookie", Cookie],
        {0, T} = escript(Config, ["terminate", "w1", "operator test" | Remote]),
        ?assert(contains(T, "terminate w1: ok")),
        {0, D} = cli(["describe", "w1", "--db", Db]),
        ?assert(contains(D, "terminated")),
        {1, U} = escript(Config, ["terminate", "nope" | Remote]),
        ct:log("~s", [U]),
        ?assert(contains(U, "nope")),
        {1, C} = escript(Config, ["terminate", "w2", "--node", Node, "--cookie", "wrong"]),
        ?assert(contains(C, "node unreachable")),
        case exported(aion, signal, 3) of
            true ->
                {0, _} = escript(Config, ["signal", "w2", "poke", "{\"n\":1}" | Remote]),
                {0, H} = cli(["history", "w2", "--db", Db]),
                ?assert(contains(H, "signal_received"));
            false ->
                {1, S} = escript(Config, ["signal", "w2", "poke", "{\"n\":1}" | Remote]),
                ?assert(contains(S, "signal w2"))
        end,
        case exported(aion, cancel, 2) of
            true ->
                {0, _} = escript(Config, ["cancel", "w3", "bye" | Remote]),
                {0, H3} = cli(["history", "w3", "--db", Db]),
                ?assert(contains(H3, "workflow_cancel_requested"));
            false ->
                {1, X} = escript(Config, ["cancel", "w3" | Remote]),
                ?assert(contains(X, "cancel w3"))
        end
    after
        _ = os:cmd("kill -9 " ++ integer_to_list(OsPid)),
        receive {Port, {exit_status, _}} -> ok after 30000 -> ok end
    end.

exported(M, F, A) ->
    _ = code:ensure_loaded(M),
    erlang:function_exported(M, F, A).

%% The workflow the remote test runs: sleeps (durably) for ten minutes.
run(#{}) ->
    aion_workflow:sleep(600000).

wait_runs(Db, N, Deadline) ->
    Have = case aion_sql:open(Db, #{mode => read_only}) of
               {ok, H} ->
                   R = aion_sql:query(H, "SELECT count(*) FROM runs WHERE status = 'running'"),
                   ok = aion_sql:close(H),
                   case R of {ok, [{C}]} -> C; _ -> 0 end;
               {error, _} -> 0
           end,
    case Have >= N of
        true -> ok;
        false ->
            erlang:monotonic_time(millisecond) < Deadline orelse error(target_not_ready),
            receive after 50 -> wait_runs(Db, N, Deadline) end
    end.
