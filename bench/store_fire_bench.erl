%% @doc The store's share of a timer storm, without the workflows: what the writer
%% thread pays per fire when N runs each get their timer fired (an urgent append:
%% `timer_fired' event plus the timer row taken) and then close (a normal append:
%% `workflow_completed' event, rows cleared, status set), in random run order, from
%% 256 concurrent processes (bench/RESULTS.md, "Timers (issue 6, fifth pass)").
%%
%% `main([N])': creates N runs with one timer each (1,000 per append; prints the
%% time and the writer's CPU per run), then runs the
%% fires and closes and prints the rate, the CPU time per fire of the store's threads
%% (from `/proc/self/task'), bytes written per fire and the fire appends' latency.
%% Run (after `BENCH_ONLY=none ./bench/run.sh', which compiles it):
%% ```
%% erl -noshell -pa _build/default/lib/aion/ebin -pa _build/bench/ebin \
%%     -run store_fire_bench main 100000
%% '''
-module(store_fire_bench).

-export([main/1]).

-define(CLIENTS, 256).

%% @doc Runs the bench with N runs (a string, from `-run'); halts the node.
-spec main([string()]) -> no_return().
main([NStr]) ->
    N = list_to_integer(NStr),
    Dir = filename:join(os:getenv("TMPDIR", "/tmp"),
                        "aion_store_fire_" ++ os:getpid()),
    ok = filelib:ensure_dir(filename:join(Dir, "x")),
    Path = filename:join(Dir, "fire.db"),
    {ok, S} = aion_store:open(Path, #{synchronous => full}),
    Ids = [iolist_to_binary(aion_util:uuid_v4()) || _ <- lists:seq(1, N)],
    C0 = threads(),
    CStart = erlang:monotonic_time(microsecond),
    create(S, Ids),
    CUs = erlang:monotonic_time(microsecond) - CStart,
    C1 = threads(),
    io:format("~b runs created in ~.2f s (1,000 per append); writer CPU per run ~.1f us~n",
              [N, CUs / 1.0e6, (maps:get("writ", C1, 0) - maps:get("writ", C0, 0)) * 10000 / N]),
    Shuffled = [Id || {_, Id} <- lists:sort([{rand:uniform(), Id} || Id <- Ids])],
    Parts = deal(Shuffled, ?CLIENTS),
    T0 = threads(),
    W0 = aion_bench:wchar(),
    Start = erlang:monotonic_time(microsecond),
    Parent = self(),
    Pids = [spawn_link(fun() -> Parent ! {self(), fire_all(S, Part, [])} end) || Part <- Parts],
    Lat = lists:sort(lists:append([receive {P, L} -> L end || P <- Pids])),
    Us = erlang:monotonic_time(microsecond) - Start,
    W1 = aion_bench:wchar(),
    T1 = threads(),
    Cpu = [{K, (V - maps:get(K, T0, 0)) * 10000 / N} || {K, V} <- lists:sort(maps:to_list(T1))],
    io:format("~b fires + closes in ~.2f s (~b fires/s); per fire: ~b bytes written; "
              "CPU us by thread: ~ts~n",
              [N, Us / 1.0e6, round(N * 1.0e6 / Us), (W1 - W0) div N,
               [io_lib:format("~s ~.1f, ", [K, V]) || {K, V} <- Cpu]]),
    io:format("fire append latency p50 ~.2f ms, p99 ~.2f ms, max ~.2f ms~n",
              [aion_bench:pct(Lat, 0.5) / 1000, aion_bench:pct(Lat, 0.99) / 1000, lists:last(Lat) / 1000]),
    ok = aion_store:close(S),
    _ = file:del_dir_r(Dir),
    halt(0).

create(S, Ids) when length(Ids) > 1000 ->
    {Now, Rest} = lists:split(1000, Ids),
    create(S, Now),
    create(S, Rest);
create(S, Ids) ->
    Ops = [#{run_id => Id,
             create => #{workflow_id => <<"w-", Id/binary>>, type => <<"sleeper">>,
                         status => <<"running">>, started_at => 1},
             events => [{<<"workflow_started">>, 1, <<"{\"input\":{}}">>},
                        {<<"timer_started">>, 1, <<"{\"timer_id\":\"1\",\"ms\":5000}">>}],
             timers_put => [{<<"1">>, 5001}]} || Id <- Ids],
    {ok, _} = aion_store:append(S, Ops),
    ok.

fire_all(_S, [], Lat) ->
    Lat;
fire_all(S, [Id | Rest], Lat) ->
    T = erlang:monotonic_time(microsecond),
    {ok, _} = aion_store:append(S, [#{run_id => Id,
                                      events => [{<<"timer_fired">>, 2, <<"{\"timer_id\":\"1\"}">>}],
                                      timers_take => [<<"1">>]}], #{priority => high}),
    L = erlang:monotonic_time(microsecond) - T,
    {ok, _} = aion_store:append(S, [#{run_id => Id,
                                      events => [{<<"workflow_completed">>, 3,
                                                  <<"{\"result\":\"fired\"}">>}],
                                      clear_rows => true,
                                      set => #{status => <<"completed">>, closed_at => 3}}]),
    fire_all(S, Rest, [L | Lat]).

deal(L, K) ->
    deal(L, K, lists:duplicate(K, [])).

deal([], _K, Acc) -> Acc;
deal(L, K, Acc) ->
    {Now, Rest} = lists:split(min(K, length(L)), L),
    deal(Rest, K, zip_in(Now, Acc)).

zip_in([], Acc) -> Acc;
zip_in([X | Xs], [A | As]) -> [[X | A] | zip_in(Xs, As)].

%% CPU ticks (1/100 s) of the store's threads, by thread name; the rest as one.
threads() ->
    aion_bench:thread_ticks(fun(<<"aion_store_", K/binary>>) -> binary_to_list(K);
                               (_) -> "other"
                            end).
