%% Crash durability of the SQLite store: a separate BEAM (an OS process) appends
%% multi-event batches from many processes with synchronous=full and acknowledges each
%% committed append on stdout; after a few thousand acknowledgements the test kills it
%% with `kill -9', reopens the database and checks that every acknowledged event is
%% there, every history is gap-free from 1 and no batch is partially visible. Two
%% rounds run on the same database (the second child restarts on what the first left).
-module(aion_store_crash_SUITE).

-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-export([all/0, suite/0, kill_9_during_appends/1]).
-export([child_main/2]).

-define(WORKERS, 48).
-define(A_EVENTS, 5). % events per batch on a worker's first run
-define(B_EVENTS, 3). % events per batch on its second run (same call, second op)
-define(ACKS_BEFORE_KILL, 3000).

suite() ->
    [{timetrap, {minutes, 5}}].

all() ->
    [kill_9_during_appends].

kill_9_during_appends(Config) ->
    Db = filename:join(?config(priv_dir, Config), "crash.db"),
    Acks1 = run_and_kill(Db, 1),
    verify(Db, Acks1),
    Acks2 = run_and_kill(Db, 2),
    verify(Db, Acks1 ++ Acks2),
    ct:comment("~b + ~b acknowledged appends survived kill -9", [length(Acks1), length(Acks2)]),
    ok.

%%% ------------------------------------------------------------------ the test side

run_and_kill(Db, Round) ->
    Erl = os:find_executable("erl"),
    Paths = lists:usort([filename:dirname(code:which(M)) || M <- [aion_store, ?MODULE]]),
    Eval = lists:flatten(io_lib:format("~s:child_main(~p, ~b)", [?MODULE, Db, Round])),
    Args = ["-noshell", "-pa" | Paths] ++ ["-eval", Eval],
    Port = open_port({spawn_executable, Erl},
                     [{args, Args}, {line, 4096}, binary, exit_status, use_stdio, stderr_to_stdout]),
    OsPid = receive
                {Port, {data, {eol, <<"pid ", P/binary>>}}} -> binary_to_list(P);
                {Port, {exit_status, St}} -> ct:fail({child_exited, St})
            after 30000 -> ct:fail(child_did_not_start)
            end,
    try
        Acks = collect(Port, [], 0, ?ACKS_BEFORE_KILL),
        "" = os:cmd("kill -9 " ++ OsPid),
        %% acknowledgements already written to the pipe still count
        All = drain(Port, Acks),
        ct:pal("round ~b: ~b acknowledged appends before kill -9 of ~s", [Round, length(All), OsPid]),
        All
    after
        _ = os:cmd("kill -9 " ++ OsPid ++ " 2>/dev/null")
    end.

collect(_Port, Acks, N, Target) when N >= Target ->
    Acks;
collect(Port, Acks, N, Target) ->
    receive
        {Port, {data, {eol, <<"ack ", Rest/binary>>}}} ->
            collect(Port, [parse_ack(Rest) | Acks], N + 1, Target);
        {Port, {data, {eol, Other}}} ->
            ct:fail({unexpected_child_output, Other});
        {Port, {exit_status, St}} ->
            ct:fail({child_exited_early, St})
    after 60000 ->
        ct:fail({too_few_acks, N})
    end.

drain(Port, Acks) ->
    receive
        {Port, {data, {eol, <<"ack ", Rest/binary>>}}} -> drain(Port, [parse_ack(Rest) | Acks]);
        {Port, {data, _}} -> drain(Port, Acks);
        {Port, {exit_status, _}} -> Acks
    after 30000 ->
        ct:fail(child_did_not_die)
    end.

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
child_main(Db, Round) ->
    {ok, S} = aion_store:open(Db, #{synchronous => full}),
    io:format("pid ~s~n", [os:getpid()]),
    [spawn(fun() -> worker(S, Round, W) end) || W <- lists:seq(1, ?WORKERS)],
    receive after infinity -> ok end.

worker(S, Round, W) ->
    Prefix = io_lib:format("~b-~b", [Round, W]),
    RunA = iolist_to_binary([Prefix, "-a"]),
    RunB = iolist_to_binary([Prefix, "-b"]),
    {ok, [[1], [1]]} = aion_store:append(S, [create(RunA), create(RunB)]),
    worker_loop(S, RunA, RunB, iolist_to_binary(Prefix), 1, 2, 2).

worker_loop(S, RunA, RunB, Prefix, B, NextA, NextB) ->
    Batch = <<Prefix/binary, "-", (integer_to_binary(B))/binary>>,
    Ops = [#{run_id => RunA, expected_seq => NextA, events => events(Batch, ?A_EVENTS)},
           #{run_id => RunB, expected_seq => NextB, events => events(Batch, ?B_EVENTS)}],
    {ok, [SA, SB]} = aion_store:append(S, Ops),
    [NextA | _] = SA,
    [NextB | _] = SB,
    io:format("ack ~s ~b ~s ~b ~s~n", [RunA, NextA, RunB, NextB, Batch]),
    worker_loop(S, RunA, RunB, Prefix, B + 1, NextA + ?A_EVENTS, NextB + ?B_EVENTS).

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
