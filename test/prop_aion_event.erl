%% PropEr property of aion_event, run by aion_event_tests:proper_test_/0: the
%% NIF decoder (aion_event:decode_all/1) gives exactly the maps of the reference
%% Erlang decoder (aion_event:decode_slow/1) for generated stored rows: event
%% fields with payload values (prop_aion_json's generator), term fields
%% (`error', `reason') and occasionally odd field names.
-module(prop_aion_event).

-define(PROPER_NO_TRANS, true).
-include_lib("proper/include/proper.hrl").

-export([prop_same_as_reference/0, prop_repeated_containers/0, prop_mutated_rows/0]).

field() ->
    frequency([{8, elements([activity_id, name, input, result, options, timer_id,
                             attempt, final, kind, task_queue, workflow_id])},
               {2, elements([error, reason])},
               {1, elements([seq, type, recorded_at, 'é', '', 'a\\b'])}]).

term_value() ->
    oneof([atom(), {foo, integer()}, binary(), [integer()], prop_aion_json:payload()]).

fields() ->
    ?LET(KVs, list({field(), oneof([prop_aion_json:payload(), term_value()])}),
         maps:from_list(KVs)).

row() ->
    ?LET({Seq, Type, At, Fields}, {pos_integer(), elements(aion_event:types()), integer(),
                                   fields()},
         case aion_event:encode(Type, Fields) of
             {ok, {T, Data}} -> {Seq, T, At, Data};
             {error, _} -> {Seq, atom_to_binary(Type), At, <<"{}">>}
         end).

prop_same_as_reference() ->
    ?FORALL(Rows, ?SIZED(S, resize(min(S, 12), list(row()))),
            begin
                Ref = [aion_event:decode_slow(R) || R <- Rows],
                Ref =:= aion_event:decode_all(Rows)
                    andalso [aion_event:decode(R) || R <- Rows] =:= Ref
            end).

%% Rows whose nested objects and arrays come from a small pool, so the same
%% container text recurs across rows and fields (the decoder builds it once per
%% call), also as a prefix of a longer text and at other depths.
container() ->
    ?LET({V, I}, {prop_aion_json:payload(), range(1, 3)},
         case I of
             1 -> #{<<"retry">> => #{<<"initial_interval">> => 1000, <<"v">> => V},
                    <<"task_queue">> => <<"default">>};
             2 -> [V, #{<<"k">> => V}, <<"a fairly long string in an array">>];
             3 -> #{<<"nested">> => [#{<<"deep">> => V}], <<"pad">> => <<"xxxxxxxxxxxxxxxx">>}
         end).

repeated_rows() ->
    ?LET(Pool, non_empty(list(container())),
         list(?LET({Seq, Fields}, {pos_integer(),
                                   list({elements([input, options, result, name]),
                                         oneof([elements(Pool), [elements(Pool)],
                                                ?LET(X, elements(Pool), #{<<"w">> => X})])})},
                   begin
                       {ok, {T, Data}} = aion_event:encode(activity_scheduled,
                                                           maps:from_list(Fields)),
                       {Seq, T, 0, Data}
                   end))).

prop_repeated_containers() ->
    ?FORALL(Rows, ?SIZED(S, resize(min(S, 20), repeated_rows())),
            [aion_event:decode_slow(R) || R <- Rows] =:= aion_event:decode_all(Rows)).

%% A clean row and a mutated copy of it in one call (so the mutated text is read
%% with the clean row's containers cached): decode_all/1 gives what the reference
%% gives, or raises when the reference raises.
mutation() ->
    {oneof([flip, insert, delete]), non_neg_integer(),
     frequency([{4, elements(binary_to_list(<<"[]{}\",:0123456789-.e tfn\\">>))},
                {1, range(0, 255)}])}.

mutate(Bin, []) -> Bin;
mutate(<<>>, [_ | Ms]) -> mutate(<<>>, Ms);
mutate(Bin, [{Op, P, B} | Ms]) ->
    I = P rem byte_size(Bin),
    <<Pre:I/binary, C, Post/binary>> = Bin,
    mutate(case Op of
               flip -> <<Pre/binary, B, Post/binary>>;
               insert -> <<Pre/binary, B, C, Post/binary>>;
               delete -> <<Pre/binary, Post/binary>>
           end, Ms).

prop_mutated_rows() ->
    ?FORALL({Rows, Ms}, {?SIZED(S, resize(min(S, 6), non_empty(repeated_rows()))),
                         non_empty(list(mutation()))},
            begin
                {Seq, T, At, Data} = lists:last(Rows),
                Bad = {Seq, T, At, mutate(Data, Ms)},
                All = Rows ++ [Bad],
                Ref = try {ok, [aion_event:decode_slow(R) || R <- All]}
                      catch _:_ -> raised
                      end,
                Got = try {ok, aion_event:decode_all(All)}
                      catch _:_ -> raised
                      end,
                ?WHENFAIL(io:format("row ~p~nref ~p~ngot ~p~n", [Bad, Ref, Got]), Ref =:= Got)
            end).
