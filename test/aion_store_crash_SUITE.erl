%% Crash durability of the SQLite store: a separate BEAM (an OS process) appends
%% multi-event batches from many processes with synchronous=full; each worker records
%% every acknowledged append at once in its own raw ack file (a write(2) that survives
%% the process being killed). After a few thousand acknowledgements the test kills the
%% node with `kill -9', reopens the database and checks that every acknowledged event
%% is there, every history is gap-free from 1 and no batch is partially visible.
%% Three rounds run on the same database (each child restarts on what the last left).
-module(aion_store_crash_SUITE).

-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-export([all/0, suite/0, kill_9_during_appends/1]).
-export([child_main/3]).

-define(WORKERS, 48).
-define(A_EVENTS, 5). % events per batch on a worker's first run
-define(B_EVENTS, 3). % events per batch on its second run (same call, second op)
-define(ACKS_BEFORE_KILL, 3000).

suite() ->
    [{timetrap, {minutes, 5}}].

all() ->
    [kill_9_during_appends].

kill_9_during_appends(Config) ->
    Dir = ?config(priv_dir, Config),
    Db = filename:join(Dir, "crash.db"),
    Acks = lists:foldl(fun(Round, Acc) ->
                               New = run_and_kill(Db, filename:join(Dir, "acks"), Round),
                               verify(Db, Acc ++ New),
                               Acc ++ New
                       end, [], [1, 2, 3]),
    ct:comment("~b acknowledged appends survived kill -9 (3 rounds)", [length(Acks)]),
    ok.

%%% ------------------------------------------------------------------ the test side

run_and_kill(Db, AckDir, Round) ->
    RoundDir = filename:join(AckDir, integer_to_list(Round)),
    ok = filelib:ensure_dir(filename:join(RoundDir, "x")),
    Erl = os:find_executable("erl"),
    Paths = lists:usort([filename:dirname(code:which(M)) || M <- [aion_store, ?MODULE]]),
    Eval = lists:flatten(io_lib:format("~s:child_main(~p, ~p, ~b)", [?MODULE, Db, RoundDir, Round])),
    Args = ["-noshell", "-pa" | Paths] ++ ["-eval", Eval],
    Port = open_port({spawn_executable, Erl},
                     [{args, Args}, {line, 4096}, binary, exit_status, use_stdio, stderr_to_stdout]),
    OsPid = receive
                {Port, {data, {eol, <<"pid ", P/binary>>}}} -> binary_to_list(P);
                {Port, {exit_status, St}} -> ct:fail({child_exited, St})
            after 30000 -> ct:fail(child_did_not_start)
            end,
    try
        ok = wait_for_acks(Port, RoundDir, ?ACKS_BEFORE_KILL,
                           erlang:monotonic_time(millisecond) + 60000),
        "" = os:cmd("kill -9 " ++ OsPid),
        receive
            {Port, {exit_status, _}} -> ok
        after 30000 ->
            ct:fail(child_did_not_die)
        end,
        Acks = read_acks(RoundDir),
        ct:pal("round ~b: ~b acknowledged appends before kill -9 of ~s", [Round, length(Acks), OsPid]),
        Acks
    after
        _ = os:cmd("kill -9 " ++ OsPid ++ " 2>/dev/null")
    end.

%% Polls the ack files (with a deadline) until they hold N acknowledgements.
wait_for_acks(Port, Dir, N, Deadline) ->
    receive
        {Port, {data, {eol, Line}}} -> ct:fail({unexpected_child_output, Line});
        {Port, {exit_status, St}} -> ct:fail({child_exited_early, St})
    after 20 ->
        case length(read_acks(Dir)) >= N of
            true -> ok;
            false ->
                erlang:monotonic_time(millisecond) < Deadline orelse ct:fail(too_few_acks),
                wait_for_acks(Port, Dir, N, Deadline)
        end
    end.

%% Every complete line of every ack file of a round.
read_acks(Dir) ->
    lists:append([begin
                      {ok, Bin} = file:read_file(F),
                      Lines = binary:split(Bin, <<"\n">>, [global]),
                      %% the last element is <<>> or a line cut by the kill
                      [parse_ack(L) || L <- lists:droplast(Lines)]
                  end || F <- filelib:wildcard(filename:join(Dir, "*.ack"))]).

%% "RunA FirstA RunB FirstB Batch"
parse_ack(Line) ->
    [RunA, FirstA, RunB, FirstB, Batch] = binary:split(Line, <<" ">>, [global]),
    {RunA, binary_to_integer(FirstA), RunB, binary_to_integer(FirstB), Batch}.

verify(Db, Acks) ->
    {ok, S} = aion_store:open(Db, #{}),
    try
        {ok, Runs} = aion_store:list(S, #{}),
        ?assert(length(Runs) > 0),
        %% every history gap-free from 1; every batch complete; collect batch -> runs
        Batches = lists:foldl(fun(#{run_id := Id, next_seq := Next}, Acc) ->
                                      {ok, H} = aion_store:history(S, Id, 1),
                                      ?assertEqual(lists:seq(1, Next - 1), [Q || {Q, _, _, _} <- H]),
                                      check_batches(Id, H, Acc)
                              end, #{}, Runs),
        %% a batch spans two runs (one call, two ops): both parts or neither
        maps:foreach(fun(Batch, Parts) ->
                             ?assertEqual({Batch, [?A_EVENTS, ?B_EVENTS]},
                                          {Batch, lists:sort(fun erlang:'>='/2, [N || {_, N} <- Parts])})
                     end, Batches),
        %% every acknowledged append is there, at the acknowledged seqs
        lists:foreach(fun({RunA, FirstA, RunB, FirstB, Batch}) ->
                              ?assertEqual({Batch, lists:sort([{RunA, ?A_EVENTS}, {RunB, ?B_EVENTS}])},
                                           {Batch, lists:sort(maps:get(Batch, Batches, []))}),
                              {ok, HA} = aion_store:history(S, RunA, FirstA),
                              ?assertEqual(lists:duplicate(?A_EVENTS, Batch),
                                           [batch_of(D) || {_, _, _, D} <- lists:sublist(HA, ?A_EVENTS)]),
                              {ok, HB} = aion_store:history(S, RunB, FirstB),
                              ?assertEqual(lists:duplicate(?B_EVENTS, Batch),
                                           [batch_of(D) || {_, _, _, D} <- lists:sublist(HB, ?B_EVENTS)])
                      end, Acks)
    after
        ok = aion_store:close(S)
    end.

%% Events after the workflow_started one come in runs of equal batch markers; each
%% run of a batch has the batch's full size. Returns Acc with Batch => [{RunId, N}].
check_batches(Id, [{1, <<"workflow_started">>, _, _} | Rest], Acc) ->
    Groups = group([{batch_of(D), idx_of(D)} || {_, _, _, D} <- Rest]),
    lists:foldl(fun({Batch, Idxs}, A) ->
                        N = length(Idxs),
                        ?assertEqual({Batch, lists:seq(1, N)}, {Batch, Idxs}),
                        ?assert(N =:= ?A_EVENTS orelse N =:= ?B_EVENTS),
                        ?assertNot(lists:keymember(Id, 1, maps:get(Batch, A, []))),
                        maps:update_with(Batch, fun(L) -> [{Id, N} | L] end, [{Id, N}], A)
                end, Acc, Groups).

group([]) -> [];
group([{B, I} | Rest]) ->
    {Same, Other} = lists:splitwith(fun({B2, _}) -> B2 =:= B end, Rest),
    [{B, [I | [I2 || {_, I2} <- Same]]} | group(Other)].

batch_of(Data) ->
    {match, [B]} = re:run(Data, <<"\"b\":\"([^\"]+)\"">>, [{capture, all_but_first, binary}]),
    B.

idx_of(Data) ->
    {match, [I]} = re:run(Data, <<"\"i\":([0-9]+)">>, [{capture, all_but_first, binary}]),
    binary_to_integer(I).

%%% ------------------------------------------------------------- the child node

%% Runs in the child BEAM: opens the store, starts the appenders, never returns.
child_main(Db, AckDir, Round) ->
    {ok, S} = aion_store:open(Db, #{synchronous => full}),
    io:format("pid ~s~n", [os:getpid()]),
    [spawn(fun() -> worker(S, AckDir, Round, W) end) || W <- lists:seq(1, ?WORKERS)],
    receive after infinity -> ok end.

worker(S, AckDir, Round, W) ->
    Prefix = io_lib:format("~b-~b", [Round, W]),
    RunA = iolist_to_binary([Prefix, "-a"]),
    RunB = iolist_to_binary([Prefix, "-b"]),
    %% raw: each write is a write(2) by this process, in the kernel before the next append
    {ok, Ack} = file:open(filename:join(AckDir, [Prefix, ".ack"]), [raw, binary, write]),
    {ok, [[1], [1]]} = aion_store:append(S, [create(RunA), create(RunB)]),
    worker_loop(S, Ack, RunA, RunB, iolist_to_binary(Prefix), 1, 2, 2).

worker_loop(S, Ack, RunA, RunB, Prefix, B, NextA, NextB) ->
    Batch = <<Prefix/binary, "-", (integer_to_binary(B))/binary>>,
    Ops = [#{run_id => RunA, expected_seq => NextA, events => events(Batch, ?A_EVENTS)},
           #{run_id => RunB, expected_seq => NextB, events => events(Batch, ?B_EVENTS)}],
    {ok, [SA, SB]} = aion_store:append(S, Ops),
    [NextA | _] = SA,
    [NextB | _] = SB,
    ok = file:write(Ack, io_lib:format("~s ~b ~s ~b ~s~n", [RunA, NextA, RunB, NextB, Batch])),
    worker_loop(S, Ack, RunA, RunB, Prefix, B + 1, NextA + ?A_EVENTS, NextB + ?B_EVENTS).

create(RunId) ->
    #{run_id => RunId,
      create => #{workflow_id => RunId, type => <<"crash">>, status => <<"running">>,
                  started_at => erlang:system_time(millisecond)},
      events => [{<<"workflow_started">>, erlang:system_time(millisecond), <<"{}">>}]}.

events(Batch, N) ->
    Pad = binary:copy(<<"x">>, 100),
    [{<<"e">>, erlang:system_time(millisecond),
      <<"{\"b\":\"", Batch/binary, "\",\"i\":", (integer_to_binary(I))/binary,
        ",\"n\":", (integer_to_binary(N))/binary, ",\"pad\":\"", Pad/binary, "\"}">>}
     || I <- lists:seq(1, N)].
