%% PropEr properties of aion_json, run by aion_json_tests:proper_test_/0:
%%   - decode(encode(X)) == normalise(X) for generated payloads (nested maps with
%%     binary/atom keys, lists, Unicode binaries, big integers, floats, atoms);
%%   - a single unsupported value injected anywhere is reported with its path;
%%   - random bytes and mutated valid JSON never crash the decoder: the result is
%%     {ok, _} (which re-encodes to the same value) or a documented invalid_json.
-module(prop_aion_json).

-define(PROPER_NO_TRANS, true).
-include_lib("proper/include/proper.hrl").

-export([prop_round_trip/0, prop_error_path/0, prop_random_bytes/0,
         prop_mutated/0, normalise/1, valid_decode_result/2, payload/0]).

%%% ---------------------------------------------------------------------------
%%% Generators
%%% ---------------------------------------------------------------------------

code_point() ->
    frequency([{6, range($\s, $~)},
               {1, range(0, 31)},
               {1, range(16#80, 16#7FF)},
               {1, range(16#800, 16#D7FF)},
               {1, range(16#E000, 16#FFFD)},
               {1, range(16#10000, 16#10FFFF)}]).

unicode_bin() ->
    ?LET(Cps, list(code_point()), unicode:characters_to_binary(Cps)).

big_int() ->
    ?LET({I, E}, {integer(), range(0, 60)}, I * pow10(E) + I).

pow10(0) -> 1;
pow10(N) -> 10 * pow10(N - 1).

some_atom() ->
    elements([true, false, null, ok, foo, 'with space', 'quote"', 'é', list_to_atom([16#2603])]).

scalar() ->
    oneof([integer(), big_int(), float(), unicode_bin(), some_atom()]).

key() ->
    oneof([unicode_bin(), elements([a, b, c, key, 'é', list_to_atom([16#1F600])])]).

payload() ->
    ?SIZED(Size, payload(min(Size, 24))).

payload(0) ->
    scalar();
payload(Size) ->
    frequency([{3, scalar()},
               {1, ?LAZY(list(payload(Size div 3)))},
               {1, ?LAZY(?LET(KVs, list({key(), payload(Size div 3)}), object(KVs)))}]).

%% A map without both `a' and `<<"a">>' (the encoder rejects that as one name).
object(KVs) ->
    M = maps:from_list(KVs),
    maps:filter(fun(K, _) when is_atom(K) -> not maps:is_key(atom_to_binary(K, utf8), M);
                   (_, _) -> true
                end, M).

%%% ---------------------------------------------------------------------------
%%% Properties
%%% ---------------------------------------------------------------------------

%% What decode(encode(X)) gives: binary keys, atoms other than true/false/null
%% as binaries.
normalise(M) when is_map(M) ->
    maps:from_list([{key_bin(K), normalise(V)} || {K, V} <- maps:to_list(M)]);
normalise(L) when is_list(L) -> [normalise(X) || X <- L];
normalise(A) when is_atom(A), A =/= true, A =/= false, A =/= null -> atom_to_binary(A, utf8);
normalise(X) -> X.

key_bin(K) when is_atom(K) -> atom_to_binary(K, utf8);
key_bin(K) -> K.

prop_round_trip() ->
    ?FORALL(X, payload(),
            begin
                {ok, Bin} = aion_json:encode_bin(X),
                {ok, Io} = aion_json:encode(X),
                Bin =:= iolist_to_binary(Io) andalso
                    aion_json:decode(Bin) =:= {ok, normalise(X)}
            end).

%% Replaces one value (chosen by Choices) with Bad; returns {Term, Path}.
inject(_X, Bad, []) ->
    {Bad, []};
inject(L, Bad, [C | Cs]) when is_list(L), L =/= [] ->
    I = C rem length(L),
    {Sub, Path} = inject(lists:nth(I + 1, L), Bad, Cs),
    {lists:sublist(L, I) ++ [Sub | lists:nthtail(I + 1, L)], [I | Path]};
inject(M, Bad, [C | Cs]) when is_map(M), map_size(M) > 0 ->
    K = lists:nth(C rem map_size(M) + 1, lists:sort(maps:keys(M))),
    {Sub, Path} = inject(maps:get(K, M), Bad, Cs),
    {M#{K := Sub}, [key_bin(K) | Path]};
inject(_X, Bad, _) ->
    {Bad, []}.

prop_error_path() ->
    ?FORALL({X, Choices, Bad},
            {payload(), list(non_neg_integer()), elements([{tuple}, self(), make_ref()])},
            begin
                {Term, Path} = inject(X, Bad, Choices),
                aion_json:encode(Term) =:= {error, {invalid_payload, Path, unsupported_type}}
            end).

prop_random_bytes() ->
    ?FORALL(Bin, oneof([binary(), json_ish()]),
            valid_decode_result(Bin, aion_json:decode(Bin))).

%% Bytes drawn mostly from JSON's own alphabet, so the decoder gets past offset 0.
json_ish() ->
    ?LET(Bytes, list(frequency([{4, elements(binary_to_list(<<"[]{}\",:0123456789-+.eEtrufalsn \\u\t\n">>))},
                                {1, range(0, 255)}])),
         list_to_binary(Bytes)).

mutation() ->
    oneof([{flip, non_neg_integer(), range(0, 255)},
           {insert, non_neg_integer(), range(0, 255)},
           {delete, non_neg_integer()},
           {truncate, non_neg_integer()}]).

mutate(Bin, []) -> Bin;
mutate(<<>>, [_ | Ms]) -> mutate(<<>>, Ms);
mutate(Bin, [M | Ms]) -> mutate(mutate1(Bin, M), Ms).

mutate1(Bin, {flip, P, B}) ->
    I = P rem byte_size(Bin),
    <<Pre:I/binary, _, Post/binary>> = Bin,
    <<Pre/binary, B, Post/binary>>;
mutate1(Bin, {insert, P, B}) ->
    I = P rem (byte_size(Bin) + 1),
    <<Pre:I/binary, Post/binary>> = Bin,
    <<Pre/binary, B, Post/binary>>;
mutate1(Bin, {delete, P}) ->
    I = P rem byte_size(Bin),
    <<Pre:I/binary, _, Post/binary>> = Bin,
    <<Pre/binary, Post/binary>>;
mutate1(Bin, {truncate, P}) ->
    binary:part(Bin, 0, P rem byte_size(Bin)).

prop_mutated() ->
    ?FORALL({X, Ms}, {payload(), non_empty(list(mutation()))},
            begin
                {ok, Bin} = aion_json:encode_bin(X),
                Mutated = mutate(Bin, Ms),
                valid_decode_result(Mutated, aion_json:decode(Mutated))
            end).

%% {ok, V} that re-encodes to itself, or a documented invalid_json error with an
%% offset inside the input.
valid_decode_result(_Bin, {ok, V}) ->
    {ok, Text} = aion_json:encode_bin(V),
    aion_json:decode(Text) =:= {ok, V};
valid_decode_result(Bin, {error, {invalid_json, Offset, Why}}) ->
    is_integer(Offset) andalso Offset >= 0 andalso Offset =< byte_size(Bin) andalso
        lists:member(Why, [empty, unexpected_end, invalid_token, invalid_string,
                           invalid_escape, lone_surrogate, invalid_utf8, invalid_number,
                           number_out_of_range, trailing_data, too_deep]);
valid_decode_result(_Bin, _Other) ->
    false.
