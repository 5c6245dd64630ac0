%% PropEr properties of the replay core (aion_replay), run from
%% aion_replay_tests so that `rebar3 eunit' runs them.
%%
%% A small interpreter plays workflow programs against aion_replay the way the
%% workflow process does: live (commands appended to a simulated store, arrivals
%% appended by a random "world" at random moments, partial and out-of-order
%% delivery, gap fill before resolving) and on replay (the whole history known,
%% every command must be recorded). Properties:
%%
%% - prop_live_replays: a history produced by a live run replays to the same
%%   commands, the same outcomes and the same now() values.
%% - prop_mutation_detected: any single mutation of a program's command sequence
%%   (rename, change of kind, deletion, insertion) is reported as nondeterminism at
%%   the seq of the first recorded command that no longer matches (or goes live when
%%   the mutation only appends).
-module(prop_aion_replay).

-include_lib("proper/include/proper.hrl").

-export([prop_live_replays/0, prop_mutation_detected/0, prop_add_all_as_add/0]).

%% Debian's PropEr 1.2 calls erlang:get_stacktrace/0 (gone in OTP 23+) when a
%% property raises: report exceptions ourselves and fail the case instead.
-define(SAFE(Body),
        try Body
        catch C__:R__:St__ ->
                io:format(user, "property raised ~p:~p~n~p~n", [C__, R__, St__]),
                false
        end).

%%% ===========================================================================
%%% Generators
%%% ===========================================================================

name() -> elements([<<"a">>, <<"b">>, <<"c">>]).

simple_step() ->
    frequency([{4, {act, name()}}, {2, timer}, {1, side}]).

step() ->
    frequency([{6, simple_step()},
               {2, {par, non_empty(list(oneof([{act, name()}, timer])))}},
               {2, {all, non_empty(list(name()))}}]).

program() -> list(step()).

%%% ===========================================================================
%%% Properties
%%% ===========================================================================

prop_live_replays() ->
    ?FORALL({Prog, Seed}, {program(), {pos_integer(), pos_integer(), pos_integer()}},
            ?SAFE(begin
                rand:seed(exsss, Seed),
                {LiveLog, Store} = run_live(Prog),
                R0 = aion_replay:add_all(store_events(Store), aion_replay:new()),
                case run_replay(Prog, R0) of
                    {ok, ReplayLog, R1} ->
                        ?WHENFAIL(io:format("live ~p~nreplay ~p~n", [LiveLog, ReplayLog]),
                                  LiveLog =:= ReplayLog
                                  andalso aion_replay:finish(R1) =:= ok);
                    Other ->
                        ?WHENFAIL(io:format("replay failed: ~p~nhistory ~p~n",
                                            [Other, store_events(Store)]),
                                  false)
                end
            end)).

%% add_all/2 (bulk path for an in-order continuation of the prefix) builds exactly
%% the state adding the events one by one builds: for live histories with extra
%% cancel requests, signals and reopens mixed in, split at a random point, the
%% second part in order or shuffled, with or without repeats.
prop_add_all_as_add() ->
    ?FORALL({Prog, Seed}, {program(), {pos_integer(), pos_integer(), pos_integer()}},
            ?SAFE(begin
                rand:seed(exsss, Seed),
                {_, Store} = run_live(Prog),
                Hist = extra_events(store_events(Store)),
                Cut = rand:uniform(length(Hist) + 1) - 1,
                {A, B0} = lists:split(Cut, Hist),
                B = case rand:uniform(3) of
                        1 -> B0;
                        2 -> [E || {_, E} <- lists:sort([{rand:uniform(), E} || E <- B0])];
                        3 -> B0 ++ lists:sublist(Hist, rand:uniform(length(Hist)))
                    end,
                RA = aion_replay:add_all(A, aion_replay:new()),
                %% A shuffle may put commands out of order: both must raise alike.
                Ref = result_of(fun() -> lists:foldl(fun aion_replay:add/2, RA, B) end),
                ?WHENFAIL(io:format("history ~p~ncut ~p~n", [Hist, Cut]),
                          aion_replay:canonical(RA) =:=
                              aion_replay:canonical(
                                lists:foldl(fun aion_replay:add/2, aion_replay:new(), A))
                          andalso canonical(result_of(fun() -> aion_replay:add_all(B, RA) end))
                                  =:= canonical(Ref))
            end)).

result_of(F) ->
    try {ok, F()} catch error:Reason -> {error, Reason} end.

canonical({ok, R}) -> {ok, aion_replay:canonical(R)};
canonical(Error) -> Error.

%% Inserts cancel requests, signals and reopens at random places (seqs renumbered).
extra_events(Hist) ->
    Extra = fun(I) ->
                    case rand:uniform(12) of
                        1 -> [#{type => workflow_cancel_requested, recorded_at => I}];
                        2 -> [#{type => signal_received, name => name(I), recorded_at => I}];
                        3 -> [#{type => workflow_reopened, activities => [<<"a">>, <<"b">>],
                                recorded_at => I}];
                        _ -> []
                    end
            end,
    [H | T] = Hist,
    All = [H | lists:append([Extra(I) ++ [E] || {I, E} <- lists:zip(lists:seq(1, length(T)), T)])],
    [E#{seq => S} || {S, E} <- lists:zip(lists:seq(1, length(All)), All)].

name(I) -> lists:nth(I rem 3 + 1, [<<"a">>, <<"b">>, <<"c">>]).

prop_mutation_detected() ->
    ?FORALL({Prog, Mut, Seed},
            {non_empty(list(simple_step())), {oneof([rename, rekind, delete, insert]),
                                              pos_integer(), simple_step()},
             {pos_integer(), pos_integer(), pos_integer()}},
            ?SAFE(begin
                rand:seed(exsss, Seed),
                {_, Store} = run_live(Prog),
                Hist = store_events(Store),
                Mutated = mutate(Prog, Mut),
                Recorded = [{aion_replay:describe_event(E), S}
                            || #{seq := S} = E <- Hist, aion_replay:command_kind(E) =/= false],
                Expected = expected(Recorded, [desc(St) || St <- Mutated]),
                R0 = aion_replay:add_all(Hist, aion_replay:new()),
                Got = case run_replay(Mutated, R0) of
                          {ok, _, R1} ->
                              case aion_replay:finish(R1) of
                                  ok -> ok;
                                  {nondeterminism, #{seq := S}} -> {nondeterminism, S}
                              end;
                          {nondeterminism, #{seq := S}} -> {nondeterminism, S};
                          live -> live
                      end,
                ?WHENFAIL(io:format("prog ~p~nmutated ~p~nexpected ~p got ~p~n",
                                    [Prog, Mutated, Expected, Got]),
                          Got =:= Expected)
            end)).

mutate(Prog, {Op, I0, New}) ->
    I = (I0 - 1) rem length(Prog) + 1,
    {Before, [Old | After]} = lists:split(I - 1, Prog),
    case Op of
        rename ->
            Before ++ [case Old of
                           {act, N} -> {act, other_name(N)};
                           timer -> {act, <<"a">>};
                           side -> timer
                       end | After];
        rekind ->
            Before ++ [case Old of
                           {act, _} -> timer;
                           timer -> side;
                           side -> {act, <<"b">>}
                       end | After];
        delete ->
            Before ++ After;
        insert ->
            Before ++ [New, Old | After]
    end.

other_name(<<"a">>) -> <<"b">>;
other_name(_) -> <<"a">>.

desc({act, N}) -> #{command => activity, name => N};
desc(timer) -> #{command => timer};
desc(side) -> #{command => side_effect}.

expected([], []) -> ok;
expected([], [_ | _]) -> live;
expected([{_, S} | _], []) -> {nondeterminism, S};
expected([{D, _} | C], [D | M]) -> expected(C, M);
expected([{_, S} | _], [_ | _]) -> {nondeterminism, S}.

%%% ===========================================================================
%%% The simulated store and world
%%% ===========================================================================
%%
%% Store: #{events => #{Seq => Event}, next => Seq, clock => Ms,
%%          pending => #{Key => Fields}}   (arrivals the world will append)

new_store() ->
    #{events => #{}, next => 1, clock => 1000, pending => #{}}.

store_events(#{events := E}) ->
    [V || {_, V} <- lists:keysort(1, maps:to_list(E))].

store_append(Type, Fields, #{events := E, next := N, clock := C} = St) ->
    Now = C + rand:uniform(50),
    Ev = Fields#{seq => N, type => Type, recorded_at => Now},
    {Ev, St#{events => E#{N => Ev}, next => N + 1, clock => Now}}.

%% The world appends a random subset of its pending arrivals (possibly with a
%% non-final failure first).
world(St = #{pending := P}) ->
    lists:foldl(fun(Key, Acc) ->
                        case rand:uniform(3) of
                            1 -> world_append(Key, Acc);
                            _ -> Acc
                        end
                end, St, lists:sort(maps:keys(P))).

world_append(Key, #{pending := P} = St) ->
    {Type, Fields} = maps:get(Key, P),
    St1 = case {Type, rand:uniform(4)} of
              {activity_completed, 1} ->
                  {_, S} = store_append(activity_failed,
                                        #{activity_id => element(2, Key), attempt => 1,
                                          error => retry_me, final => false}, St),
                  S;
              _ ->
                  St
          end,
    {_, St2} = store_append(Type, Fields, St1),
    St2#{pending => maps:remove(Key, P)}.

%% Delivery: the process learns a random subset of the events it does not know.
deliver(R, St) ->
    lists:foldl(fun(#{seq := S} = E, Acc) ->
                        case aion_replay:has_event(S, Acc) orelse rand:uniform(2) =:= 1 of
                            true -> Acc;
                            false -> aion_replay:add(E, Acc)
                        end
                end, R, store_events(St)).

%% Gap fill: everything from the first missing seq.
fill(R, St) ->
    case aion_replay:gap(R) of
        none -> R;
        {gap, From} ->
            lists:foldl(fun(#{seq := S} = E, Acc) when S >= From ->
                                case aion_replay:has_event(S, Acc) of
                                    true -> Acc;
                                    false -> aion_replay:add(E, Acc)
                                end;
                           (_, Acc) -> Acc
                        end, R, store_events(St))
    end.

%%% ===========================================================================
%%% Interpreter
%%% ===========================================================================
%%
%% Env: {live, Store} | replay. Process state P: #{r, act, timer, side, log}.

run_live(Prog) ->
    {_, St0} = store_append(workflow_started, #{workflow_type => <<"t">>, input => null},
                            new_store()),
    R0 = aion_replay:add(maps:get(1, maps:get(events, St0)), aion_replay:new()),
    P0 = #{r => R0, act => 0, timer => 0, side => 0, log => []},
    {#{log := Log}, {live, St}} = steps(Prog, P0, {live, St0}),
    {lists:reverse(Log), St}.

run_replay(Prog, R0) ->
    P0 = #{r => R0, act => 0, timer => 0, side => 0, log => []},
    try steps(Prog, P0, replay) of
        {#{log := Log, r := R}, replay} -> {ok, lists:reverse(Log), R}
    catch
        throw:{nondeterminism, D} -> {nondeterminism, D};
        throw:live -> live
    end.

steps(Prog, P, Env) ->
    lists:foldl(fun(Step, {Pa, Ea}) -> step(Step, Pa, Ea) end, {P, Env}, Prog).

step({act, Name}, P, Env) ->
    {F, P1, Env1} = start_activity(Name, P, Env),
    {{1, Out}, P2, Env2} = await([F], P1, Env1),
    {log({act, Out}, P2), Env2};
step(timer, P, Env) ->
    {F, P1, Env1} = start_timer(P, Env),
    {{1, Out}, P2, Env2} = await([F], P1, Env1),
    {log({timer, Out}, P2), Env2};
step(side, P = #{side := N, r := R}, Env) ->
    case command(#{command => side_effect}, R, Env) of
        {recorded, #{value := V}, R1} ->
            {log({side, V}, P#{r := R1, side := N + 1}), Env};
        {live, R1, {live, St}} ->
            V = rand:uniform(1000),
            {Ev, St1} = store_append(marker_recorded, #{kind => <<"side_effect">>,
                                                        id => N + 1, value => V}, world(St)),
            R2 = own(Ev, R1),
            {log({side, V}, P#{r := R2, side := N + 1}), {live, St1}}
    end;
step({par, Items}, P, Env) ->
    {Fs, P1, Env1} = start_all(Items, P, Env),
    {{Pos, Out}, P2, Env2} = await(Fs, P1, Env1),
    Others = [F || {I, F} <- lists:zip(lists:seq(1, length(Fs)), Fs), I =/= Pos],
    {P3, Env3} = lists:foldl(fun(F, {Pa, Ea}) -> cancel(F, Pa, Ea) end, {P2, Env2}, Others),
    {Outs, P4, Env4} = lists:foldl(fun(F, {Acc, Pa, Ea}) ->
                                           {{_, O}, Pb, Eb} = await([F], Pa, Ea),
                                           {[O | Acc], Pb, Eb}
                                   end, {[], P3, Env3}, Others),
    {log({par, Pos, Out, lists:reverse(Outs)}, P4), Env4};
step({all, Names}, P, Env) ->
    {Fs, P1, Env1} = start_all([{act, N} || N <- Names], P, Env),
    {Out, P2, Env2} = wait_all(lists:zip(lists:seq(1, length(Fs)), Fs), #{}, P1, Env1),
    {log({all, Out}, P2), Env2}.

log(Entry, P = #{log := L, r := R}) ->
    P#{log := [{Entry, aion_replay:now(R)} | L]}.

start_all(Items, P, Env) ->
    lists:foldl(fun(Item, {Acc, Pa, Ea}) ->
                        {F, Pb, Eb} = case Item of
                                          {act, N} -> start_activity(N, Pa, Ea);
                                          timer -> start_timer(Pa, Ea)
                                      end,
                        {Acc ++ [F], Pb, Eb}
                end, {[], P, Env}, Items).

wait_all([], Done, P, Env) ->
    {{ok, [maps:get(I, Done) || I <- lists:sort(maps:keys(Done))]}, P, Env};
wait_all(Pending, Done, P, Env) ->
    {{Pos, Out}, P1, Env1} = await([F || {_, F} <- Pending], P, Env),
    {I, _} = lists:nth(Pos, Pending),
    Rest = [X || {J, _} = X <- Pending, J =/= I],
    case Out of
        {ok, V} -> wait_all(Rest, Done#{I => V}, P1, Env1);
        Err ->
            {P2, Env2} = lists:foldl(fun({_, F}, {Pa, Ea}) -> cancel(F, Pa, Ea) end,
                                     {P1, Env1}, Rest),
            {Err, P2, Env2}
    end.

command(Cmd, R, Env) ->
    case aion_replay:command(Cmd, R) of
        {recorded, Ev, R1} -> {recorded, Ev, R1};
        {live, R1} when Env =:= replay -> _ = R1, throw(live);
        {live, R1} -> {live, R1, Env};
        {nondeterminism, D} -> throw({nondeterminism, D})
    end.

own(#{seq := S} = Ev, R) ->
    aion_replay:own(S, aion_replay:add(Ev, R)).

start_activity(Name, P = #{act := N, r := R}, Env) ->
    case command(#{command => activity, name => Name}, R, Env) of
        {recorded, #{activity_id := Id}, R1} ->
            {{activity, Id}, P#{r := R1, act := N + 1}, Env};
        {live, R1, {live, St}} ->
            Id = integer_to_binary(N + 1),
            {Ev, St1} = store_append(activity_scheduled, #{activity_id => Id, name => Name},
                                     world(St)),
            Arrival = case rand:uniform(4) of
                          1 -> {activity_failed, #{activity_id => Id, attempt => 2,
                                                   error => boom, final => true}};
                          _ -> {activity_completed, #{activity_id => Id, attempt => 1,
                                                      result => rand:uniform(1000)}}
                      end,
            Pend = maps:get(pending, St1),
            {{activity, Id}, P#{r := own(Ev, R1), act := N + 1},
             {live, St1#{pending => Pend#{{activity, Id} => Arrival}}}}
    end.

start_timer(P = #{timer := N, r := R}, Env) ->
    case command(#{command => timer}, R, Env) of
        {recorded, #{timer_id := Id}, R1} ->
            {{timer, Id}, P#{r := R1, timer := N + 1}, Env};
        {live, R1, {live, St}} ->
            Id = <<"t", (integer_to_binary(N + 1))/binary>>,
            {Ev, St1} = store_append(timer_started, #{timer_id => Id, fire_at => 0}, world(St)),
            Pend = maps:get(pending, St1),
            {{timer, Id}, P#{r := own(Ev, R1), timer := N + 1},
             {live, St1#{pending => Pend#{{timer, Id} => {timer_fired, #{timer_id => Id}}}}}}
    end.

%% Cancel: a settled future (in the prefix) is left alone; live, an arrival
%% committed but not known wins the race (the store guard); else the cancel is
%% recorded.
cancel(Key, P = #{r := R}, Env) ->
    case aion_replay:outcome(Key, R) of
        {ok, #{type := T, seq := S}} when T =:= activity_cancelled; T =:= timer_cancelled ->
            {P#{r := aion_replay:own(S, R)}, Env};
        {ok, _} ->
            {P, Env};
        none when Env =:= replay ->
            throw(live);
        none ->
            {live, St} = Env,
            St0 = world(St),
            Committed = [E || E <- store_events(St0), aion_replay:future_key(E) =:= Key],
            case Committed of
                [_ | _] ->
                    {P, {live, St0}};
                [] ->
                    {Type, Fields} = case Key of
                                         {activity, Id} -> {activity_cancelled,
                                                            #{activity_id => Id}};
                                         {timer, Id} -> {timer_cancelled, #{timer_id => Id}}
                                     end,
                    {Ev, St1} = store_append(Type, Fields, St0),
                    {P#{r := own(Ev, R)},
                     {live, St1#{pending => maps:remove(Key, maps:get(pending, St1))}}}
            end
    end.

%% A blocking wait, as aion_run:block/2 does it: take deliveries, fill gaps, then
%% resolve by the lowest seq; if nothing resolves, the world must move.
await(Keys, P = #{r := R}, replay) ->
    case aion_replay:resolve(Keys, true, R) of
        {ok, Pos, Ev, R1} -> {result(Keys, Pos, Ev), P#{r := R1}, replay};
        pending -> throw(live)
    end;
await(Keys, P = #{r := R}, {live, St}) ->
    R1 = fill(deliver(R, St), St),
    case aion_replay:resolve(Keys, true, R1) of
        {ok, Pos, Ev, R2} ->
            {result(Keys, Pos, Ev), P#{r := R2}, {live, St}};
        pending ->
            St0 = world(St),
            Pend = maps:get(pending, St0),
            Awaited = [K || K <- Keys, maps:is_key(K, Pend)],
            St1 = case Awaited of
                      [] -> St0;   % an arrival is committed, delivery will come
                      _ -> world_append(lists:nth(rand:uniform(length(Awaited)), Awaited),
                                        St0)
                  end,
            await(Keys, P#{r := R1}, {live, St1})
    end.

result(_Keys, Pos, Ev) -> {Pos, outcome(Ev)}.

outcome(#{type := activity_completed, result := V}) -> {ok, V};
outcome(#{type := activity_failed, error := E}) -> {error, E};
outcome(#{type := activity_cancelled}) -> {error, cancelled};
outcome(#{type := timer_fired}) -> ok;
outcome(#{type := timer_cancelled}) -> {error, cancelled}.
