%% EUnit tests of aion_json (c_src/json.c): RFC 8259 edge cases with exact results
%% and error offsets, encode errors with paths, atoms, floats, big integers, depth
%% limits, JSONTestSuite, 100,000 random/mutated inputs, the dirty-scheduler path
%% (large inputs and a zero budget) and the PropEr properties of prop_aion_json.
-module(aion_json_tests).

-include_lib("eunit/include/eunit.hrl").

%%% ---------------------------------------------------------------------------
%%% Helpers
%%% ---------------------------------------------------------------------------

dec(Bin) -> aion_json:decode(Bin).

enc(Term) ->
    {ok, Bin} = aion_json:encode_bin(Term),
    Bin.

err(Offset, Why) -> {error, {invalid_json, Offset, Why}}.

perr(Path, Why) -> {error, {invalid_payload, Path, Why}}.

%% N nested arrays: [[[...]]]
nested_arrays(N) ->
    iolist_to_binary([lists:duplicate(N, $[), lists:duplicate(N, $])]).

%% N nested objects: {"a":{"a":...{}}}
nested_objects(N) ->
    iolist_to_binary([lists:duplicate(N - 1, <<"{\"a\":">>), <<"{}">>,
                      lists:duplicate(N - 1, $})]).

%% N nested lists: [[[...]]]
nested_lists(1) -> [];
nested_lists(N) -> [nested_lists(N - 1)].

float_bits(F) -> <<F/float>>.

%%% ---------------------------------------------------------------------------
%%% Decoding: a table of RFC 8259 edge cases with exact expected results
%%% ---------------------------------------------------------------------------

decode_table() ->
    [%% strings and escapes
     {<<"\"\\/\"">>, {ok, <<"/">>}},
     {<<"\"\\b\\f\\n\\r\\t\\\"\\\\\"">>, {ok, <<8, 12, 10, 13, 9, 34, 92>>}},
     {<<"\"\\u0000\"">>, {ok, <<0>>}},
     {<<"\"\\u00e9\\u20AC\"">>, {ok, <<"é€"/utf8>>}},
     {<<"\"\\ud83d\\ude00\"">>, {ok, <<16#1F600/utf8>>}},
     {<<"\"\\uDBFF\\uDFFF\"">>, {ok, <<16#10FFFF/utf8>>}},
     {<<"\"\\ud83d\"">>, err(1, lone_surrogate)},
     {<<"\"\\ude00\"">>, err(1, lone_surrogate)},
     {<<"\"\\ude00\\ud83d\"">>, err(1, lone_surrogate)},
     {<<"\"ab\\ud83dx\"">>, err(3, lone_surrogate)},
     {<<"\"\\ud83d\\u0041\"">>, err(1, lone_surrogate)},
     {<<"\"\\ud83d\\n\"">>, err(1, lone_surrogate)},
     {<<"\"\\ud83d\\uZZZZ\"">>, err(7, invalid_escape)},
     {<<"\"\\x\"">>, err(1, invalid_escape)},
     {<<"\"\\U0041\"">>, err(1, invalid_escape)},
     {<<"\"\\u12\"">>, err(1, invalid_escape)},
     {<<"\"\\u12">>, err(5, unexpected_end)},
     {<<"\"\\">>, err(2, unexpected_end)},
     {<<"\"abc">>, err(4, unexpected_end)},
     {<<"\"a\nb\"">>, err(2, invalid_string)},
     {<<"\"", 0, "\"">>, err(1, invalid_string)},
     {<<"\"\t\"">>, err(1, invalid_string)},
     {<<"\"", 127, "\"">>, {ok, <<127>>}},
     {<<"'a'">>, err(0, invalid_token)},
     {<<"{'a':1}">>, err(1, invalid_token)},
     %% UTF-8
     {<<"\"", 16#F0, 16#9F, 16#98, 16#80, "\"">>, {ok, <<16#1F600/utf8>>}},
     {<<"\"", 16#F4, 16#8F, 16#BF, 16#BF, "\"">>, {ok, <<16#10FFFF/utf8>>}},
     {<<"\"", 16#EF, 16#BF, 16#BF, "\"">>, {ok, <<16#FFFF/utf8>>}},
     {<<"\"a", 16#FF, "\"">>, err(2, invalid_utf8)},
     {<<"\"", 16#80, "\"">>, err(1, invalid_utf8)},
     {<<"\"", 16#C0, 16#80, "\"">>, err(1, invalid_utf8)},            % overlong NUL
     {<<"\"", 16#C1, 16#BF, "\"">>, err(1, invalid_utf8)},            % overlong 2-byte
     {<<"\"", 16#E0, 16#80, 16#AF, "\"">>, err(1, invalid_utf8)},     % overlong 3-byte
     {<<"\"", 16#F0, 16#80, 16#80, 16#AF, "\"">>, err(1, invalid_utf8)}, % overlong 4-byte
     {<<"\"", 16#ED, 16#A0, 16#80, "\"">>, err(1, invalid_utf8)},     % U+D800 encoded
     {<<"\"", 16#ED, 16#BF, 16#BF, "\"">>, err(1, invalid_utf8)},     % U+DFFF encoded
     {<<"\"", 16#F4, 16#90, 16#80, 16#80, "\"">>, err(1, invalid_utf8)}, % U+110000
     {<<"\"", 16#F5, 16#80, 16#80, 16#80, "\"">>, err(1, invalid_utf8)},
     {<<"\"", 16#E2, 16#82, "\"">>, err(1, invalid_utf8)},            % truncated
     {<<"\"", 16#E2, 16#82>>, err(1, invalid_utf8)},                  % truncated at end
     {<<16#EF, 16#BB, 16#BF, "1">>, err(0, invalid_token)},           % BOM
     {<<"[", 16#E9, "]">>, err(1, invalid_token)},
     %% numbers
     {<<"0">>, {ok, 0}},
     {<<"-0">>, {ok, 0}},
     {<<"123456789012345678901234567890">>, {ok, 123456789012345678901234567890}},
     {<<"-123456789012345678901234567890">>, {ok, -123456789012345678901234567890}},
     {<<"9223372036854775807">>, {ok, 9223372036854775807}},
     {<<"9223372036854775808">>, {ok, 9223372036854775808}},
     {<<"-9223372036854775808">>, {ok, -9223372036854775808}},
     {<<"-9223372036854775809">>, {ok, -9223372036854775809}},
     {<<"18446744073709551615">>, {ok, 18446744073709551615}},
     {<<"18446744073709551616">>, {ok, 18446744073709551616}},
     {<<"0.1">>, {ok, 0.1}},
     {<<"-2.5">>, {ok, -2.5}},
     {<<"1e5">>, {ok, 100000.0}},
     {<<"1E-2">>, {ok, 0.01}},
     {<<"1e+2">>, {ok, 100.0}},
     {<<"0e0">>, {ok, 0.0}},
     {<<"1.7976931348623157e308">>, {ok, 1.7976931348623157e308}},
     {<<"5e-324">>, {ok, 5.0e-324}},
     {<<"1e-400">>, {ok, 0.0}},
     {<<"1e400">>, err(0, number_out_of_range)},
     {<<"[-1e400]">>, err(1, number_out_of_range)},
     {<<"1.8e308">>, err(0, number_out_of_range)},
     {<<"01">>, err(1, invalid_number)},
     {<<"[-01]">>, err(3, invalid_number)},
     {<<"-">>, err(1, unexpected_end)},
     {<<"-a">>, err(1, invalid_number)},
     {<<"1.">>, err(2, unexpected_end)},
     {<<"[1.]">>, err(3, invalid_number)},
     {<<"1.e5">>, err(2, invalid_number)},
     {<<".5">>, err(0, invalid_token)},
     {<<"+1">>, err(0, invalid_token)},
     {<<"1e">>, err(2, unexpected_end)},
     {<<"1e+">>, err(3, unexpected_end)},
     {<<"[1e]">>, err(3, invalid_number)},
     {<<"0x1">>, err(1, trailing_data)},
     {<<"NaN">>, err(0, invalid_token)},
     {<<"Infinity">>, err(0, invalid_token)},
     {<<"-Infinity">>, err(1, invalid_number)},
     %% literals
     {<<"true">>, {ok, true}},
     {<<"false">>, {ok, false}},
     {<<"null">>, {ok, null}},
     {<<"tru">>, err(3, unexpected_end)},
     {<<"nul">>, err(3, unexpected_end)},
     {<<"[nul]">>, err(4, invalid_token)},
     {<<"trUe">>, err(2, invalid_token)},
     {<<"True">>, err(0, invalid_token)},
     {<<"truex">>, err(4, trailing_data)},
     %% structure
     {<<>>, err(0, empty)},
     {<<" \t\r\n">>, err(4, empty)},
     {<<" \n1\t\r ">>, {ok, 1}},
     {<<"\f1">>, err(0, invalid_token)},
     {<<16#C2, 16#A0, "1">>, err(0, invalid_token)},  % no-break space
     {<<"[1] x">>, err(4, trailing_data)},
     {<<"1 2">>, err(2, trailing_data)},
     {<<"[1]", 0>>, err(3, trailing_data)},
     {<<"[]">>, {ok, []}},
     {<<"{}">>, {ok, #{}}},
     {<<" [ 1 , [ ] , { } ] ">>, {ok, [1, [], #{}]}},
     {<<"{\"a\":{\"b\":[true,false,null]},\"c\":\"d\"}">>,
      {ok, #{<<"a">> => #{<<"b">> => [true, false, null]}, <<"c">> => <<"d">>}}},
     {<<"{\"a\":1,\"b\":2,\"a\":3}">>, {ok, #{<<"a">> => 3, <<"b">> => 2}}},
     {<<"{\"\":0}">>, {ok, #{<<>> => 0}}},
     {<<"[">>, err(1, unexpected_end)},
     {<<"[1,">>, err(3, unexpected_end)},
     {<<"{">>, err(1, unexpected_end)},
     {<<"{\"a\"">>, err(4, unexpected_end)},
     {<<"{\"a\":">>, err(5, unexpected_end)},
     {<<"]">>, err(0, invalid_token)},
     {<<"[1}">>, err(2, invalid_token)},
     {<<"{\"a\":1]">>, err(6, invalid_token)},
     {<<"[1,]">>, err(3, invalid_token)},
     {<<"[,1]">>, err(1, invalid_token)},
     {<<"[1 2]">>, err(3, invalid_token)},
     {<<"{\"a\":1,}">>, err(7, invalid_token)},
     {<<"{\"a\"}">>, err(4, invalid_token)},
     {<<"{\"a\" 1}">>, err(5, invalid_token)},
     {<<"{\"a\":}">>, err(5, invalid_token)},
     {<<"{1:2}">>, err(1, invalid_token)},
     {<<"{\"a\":1 \"b\":2}">>, err(7, invalid_token)},
     {<<"[\"a\":1]">>, err(4, invalid_token)}].

decode_table_test_() ->
    [{lists:flatten(io_lib:format("~w", [In])),
      ?_assertEqual(Expected, dec(In))} || {In, Expected} <- decode_table()].

negative_zero_test() ->
    {ok, F} = dec(<<"-0.0">>),
    ?assertEqual(float_bits(-0.0), float_bits(F)),
    ?assertEqual({ok, <<"-0.0">>}, aion_json:encode_bin(F)).

depth_limit_test() ->
    {ok, Deep} = dec(nested_arrays(512)),
    ?assertEqual(nested_lists(511), hd(Deep)),
    ?assertEqual(err(512, too_deep), dec(nested_arrays(513))),
    ?assertEqual(err(512, too_deep), dec(nested_arrays(100000))),
    ?assertMatch({ok, _}, dec(nested_objects(512))),
    ?assertEqual(err(5 * 512, too_deep), dec(nested_objects(513))),
    %% 512 open, never closed: the input ends.
    ?assertEqual(err(512, unexpected_end),
                 dec(iolist_to_binary(lists:duplicate(512, $[)))).

int_digits_limit_test() ->
    Max = binary:copy(<<"9">>, 4300),
    ?assertEqual({ok, binary_to_integer(Max)}, dec(Max)),
    ?assertEqual({ok, -binary_to_integer(Max)}, dec(<<"-", Max/binary>>)),
    ?assertEqual(err(1, number_out_of_range), dec(<<"[1", Max/binary, "]">>)),
    %% Long fractions and exponents are not integers: no digit limit.
    ?assertEqual({ok, 1.0}, dec(<<"1.", (binary:copy(<<"0">>, 10000))/binary>>)).

duplicate_keys_large_object_test() ->
    Members = [[$", integer_to_list(I rem 40), "\":", integer_to_list(I)]
               || I <- lists:seq(0, 99)],
    {ok, M} = dec(iolist_to_binary([${, lists:join($,, Members), $}])),
    ?assertEqual(40, map_size(M)),
    ?assertEqual(99, maps:get(<<"19">>, M)),
    ?assertEqual(80, maps:get(<<"0">>, M)).

decode_iodata_test() ->
    ?assertEqual({ok, [1, 2]}, dec([<<"[1">>, ",", [$2, <<"]">>]])).

decode_badarg_test() ->
    ?assertError(badarg, aion_json:decode(foo)),
    ?assertError(badarg, aion_nif:json_decode(<<"1">>, -1)).

%%% ---------------------------------------------------------------------------
%%% Encoding
%%% ---------------------------------------------------------------------------

encode_text_test_() ->
    [?_assertEqual(Text, enc(Term)) || {Term, Text} <-
        [{1, <<"1">>},
         {-1, <<"-1">>},
         {123456789012345678901234567890, <<"123456789012345678901234567890">>},
         {-123456789012345678901234567890, <<"-123456789012345678901234567890">>},
         {-9223372036854775808, <<"-9223372036854775808">>},
         {18446744073709551616, <<"18446744073709551616">>},
         {1.0, <<"1.0">>},
         {0.1, <<"0.1">>},
         {-2.5, <<"-2.5">>},
         {0.0, <<"0.0">>},
         {1.0e300, <<"1e+300">>},
         {true, <<"true">>},
         {false, <<"false">>},
         {null, <<"null">>},
         {foo, <<"\"foo\"">>},
         {'a"b', <<"\"a\\\"b\"">>},
         {'é', <<"\"é\""/utf8>>},
         {list_to_atom([16#2603]), <<"\"☃\""/utf8>>},
         {<<>>, <<"\"\"">>},
         {<<"\"\\/\n\t\r\b\f", 0, 1, 31, 127>>,
          <<"\"\\\"\\\\/\\n\\t\\r\\b\\f\\u0000\\u0001\\u001f", 127, "\"">>},
         {<<"héllo 😀"/utf8>>, <<"\"héllo 😀\""/utf8>>},
         {[], <<"[]">>},
         {#{}, <<"{}">>},
         {[1, [2, [3]], #{}], <<"[1,[2,[3]],{}]">>},
         {#{a => 1}, <<"{\"a\":1}">>},
         {#{<<"k">> => [null]}, <<"{\"k\":[null]}">>},
         {"abc", <<"[97,98,99]">>}]].

encode_error_test_() ->
    Pid = self(),
    [?_assertEqual(Expected, aion_json:encode(Term)) || {Term, Expected} <-
        [{{1, 2}, perr([], unsupported_type)},
         {Pid, perr([], unsupported_type)},
         {make_ref(), perr([], unsupported_type)},
         {fun() -> ok end, perr([], unsupported_type)},
         {<<1:3>>, perr([], unsupported_type)},
         {#{<<"a">> => [1, {x}]}, perr([<<"a">>, 1], unsupported_type)},
         {[#{k => Pid}], perr([0, <<"k">>], unsupported_type)},
         {#{<<"x">> => [0, #{y => [1, 2, {}]}]}, perr([<<"x">>, 1, <<"y">>, 2], unsupported_type)},
         {<<255>>, perr([], invalid_utf8)},
         {#{<<"s">> => <<"ok", 16#C0, 16#80>>}, perr([<<"s">>], invalid_utf8)},
         {[<<"ok">>, <<16#ED, 16#A0, 16#80>>], perr([1], invalid_utf8)},
         {#{1 => a}, perr([], invalid_key)},
         {[#{b => #{{k} => 1}}], perr([0, <<"b">>], invalid_key)},
         {#{<<255>> => 1}, perr([], invalid_key)},
         {#{a => 1, <<"a">> => 2}, perr([], invalid_key)},
         {[1 | 2], perr([1], unsupported_type)},
         {[a, b | c], perr([2], unsupported_type)},
         {1 bsl 20000, perr([], number_out_of_range)}]].

encode_depth_limit_test() ->
    ?assertEqual(nested_arrays(512), enc(nested_lists(512))),
    {error, {invalid_payload, Path, too_deep}} = aion_json:encode(nested_lists(513)),
    ?assertEqual(lists:duplicate(512, 0), Path),
    Deep = lists:foldl(fun(_, Acc) -> #{a => Acc} end, #{}, lists:seq(1, 600)),
    {error, {invalid_payload, Path2, too_deep}} = aion_json:encode(Deep),
    ?assertEqual(lists:duplicate(512, <<"a">>), Path2).

encode_int_digits_limit_test() ->
    Max = binary_to_integer(binary:copy(<<"9">>, 4300)),
    ?assertEqual({ok, Max}, dec(enc(Max))),
    ?assertEqual({ok, -Max}, dec(enc(-Max))),
    ?assertEqual(perr([0], number_out_of_range), aion_json:encode([Max + 1])).

float_round_trip_test_() ->
    [?_assertEqual(float_bits(F), float_bits(element(2, dec(enc(F)))))
     || F <- [0.1, 1.0e300, 5.0e-324, -2.5, 1.0, 0.0, -0.0, 1/3, 2/3, 1.0e-7, 123456.789,
              1.7976931348623157e308, 2.2250738585072014e-308, 9007199254740993.0,
              1.0e15, 1.0e16, 1.0e17, 1.0e21, 100.0, 4.35, 0.30000000000000004]].

float_text_is_float_test() ->
    %% Every encoded float has a '.' or an 'e' so it decodes as a float again.
    [?assert(is_float(element(2, dec(enc(float(I)))))) || I <- lists:seq(-50, 50)].

encode_returns_iodata_test() ->
    {ok, IoData} = aion_json:encode(#{<<"a">> => [1, 2.5, <<"x">>]}),
    ?assertEqual({ok, #{<<"a">> => [1, 2.5, <<"x">>]}}, dec(iolist_to_binary(IoData))).

encode_badarg_test() ->
    ?assertError(badarg, aion_nif:json_encode(1, -1)),
    ?assertError(badarg, aion_nif:json_encode(1, foo)).

%%% ---------------------------------------------------------------------------
%%% JSONTestSuite (test/data/json_test_parsing, see test/data/README.md)
%%% ---------------------------------------------------------------------------

suite_dir() ->
    Candidates = [filename:join([filename:dirname(?FILE), "data", "json_test_parsing"]),
                  filename:join([filename:dirname(code:which(?MODULE)), "data",
                                 "json_test_parsing"]),
                  filename:join([filename:dirname(code:which(?MODULE)), "..", "..", "..",
                                 "..", "..", "test", "data", "json_test_parsing"])],
    case [D || D <- Candidates, filelib:is_dir(D)] of
        [Dir | _] -> Dir;
        [] -> error({json_test_parsing_not_found, Candidates})
    end.

json_test_suite_test_() ->
    Dir = suite_dir(),
    Files = lists:sort(filelib:wildcard("*.json", Dir)),
    [?_assertEqual(318, length(Files)) |
     [{F, ?_test(check_suite_file(F, filename:join(Dir, F)))} || F <- Files]].

check_suite_file(Name, Path) ->
    {ok, Bin} = file:read_file(Path),
    Result = dec(Bin),
    ?assert(prop_aion_json:valid_decode_result(Bin, Result)),
    case Name of
        "y_" ++ _ -> ?assertMatch({ok, _}, Result);
        "n_" ++ _ -> ?assertMatch({error, {invalid_json, _, _}}, Result);
        "i_" ++ _ -> ok
    end,
    %% The same answer on a dirty scheduler.
    ?assertEqual(Result, aion_nif:json_decode(Bin, 0)).

%%% ---------------------------------------------------------------------------
%%% Robustness: 100,000 random and mutated inputs
%%% ---------------------------------------------------------------------------

random_inputs_test_() ->
    {timeout, 300, fun random_inputs/0}.

random_inputs() ->
    Seed = {erlang:phash2(self()), erlang:unique_integer([positive]), 42},
    S0 = rand:seed_s(exsss, Seed),
    Valid = [enc(V) || V <- [#{<<"a">> => [1, 2.5, -3, true, null, <<"x\n☃"/utf8>>],
                               b => #{c => [[], #{}]}},
                             [123456789012345678901234567890, -0.0, 1.0e300, <<"\"\\">>],
                             <<"😀"/utf8>>]] ++ [<<"{\"k\":\"\\ud83d\\ude00\\u0041\"}">>],
    Alphabet = <<"[]{}\",:0123456789-+.eEtrufalsn \\u\t\n">>,
    {_, Failures} =
        lists:foldl(
          fun(N, {S, Bad}) ->
                  {Bin, S1} = case N rem 3 of
                                  0 -> random_bytes(S);
                                  1 -> random_alphabet(S, Alphabet);
                                  2 -> random_mutation(S, Valid)
                              end,
                  Ok = try prop_aion_json:valid_decode_result(Bin, dec(Bin))
                       catch C:R -> {C, R}
                       end,
                  {S1, case Ok of true -> Bad; _ -> [{Bin, Ok} | Bad] end}
          end, {S0, []}, lists:seq(1, 100000)),
    ?assertEqual({Seed, []}, {Seed, lists:sublist(Failures, 5)}).

random_bytes(S) ->
    {Len, S1} = rand:uniform_s(65, S),
    random_list(Len - 1, S1, fun(St) -> {B, St1} = rand:uniform_s(256, St), {B - 1, St1} end).

random_alphabet(S, Alphabet) ->
    {Len, S1} = rand:uniform_s(65, S),
    random_list(Len - 1, S1, fun(St) ->
                                     {I, St1} = rand:uniform_s(byte_size(Alphabet), St),
                                     {binary:at(Alphabet, I - 1), St1}
                             end).

random_list(Len, S, Gen) ->
    {Bytes, S1} = lists:foldl(fun(_, {Acc, St}) -> {B, St1} = Gen(St), {[B | Acc], St1} end,
                              {[], S}, lists:seq(1, Len)),
    {list_to_binary(Bytes), S1}.

random_mutation(S, Valid) ->
    {I, S1} = rand:uniform_s(length(Valid), S),
    {K, S2} = rand:uniform_s(4, S1),
    mutate_n(K, lists:nth(I, Valid), S2).

mutate_n(0, Bin, S) -> {Bin, S};
mutate_n(K, <<>>, S) -> mutate_n(K - 1, <<>>, S);
mutate_n(K, Bin, S) ->
    {Op, S1} = rand:uniform_s(4, S),
    {P, S2} = rand:uniform_s(byte_size(Bin), S1),
    {B, S3} = rand:uniform_s(256, S2),
    I = P - 1,
    <<Pre:I/binary, X, Post/binary>> = Bin,
    Bin1 = case Op of
               1 -> <<Pre/binary, (B - 1), Post/binary>>;       % replace
               2 -> <<Pre/binary, (B - 1), X, Post/binary>>;    % insert
               3 -> <<Pre/binary, Post/binary>>;                % delete
               4 -> Pre                                         % truncate
           end,
    mutate_n(K - 1, Bin1, S3).

%%% ---------------------------------------------------------------------------
%%% Scheduling: inputs over the budget (dirty CPU) and forced dirty paths
%%% ---------------------------------------------------------------------------

large_array_test_() ->
    {timeout, 120,
     fun() ->
             L = [#{<<"i">> => I, <<"f">> => I / 7, <<"s">> => integer_to_binary(I)}
                  || I <- lists:seq(1, 40000)],
             Bin = enc(L),
             ?assert(byte_size(Bin) > 1000000),
             ?assertEqual({ok, L}, dec(Bin)),
             ?assertEqual(Bin, enc(element(2, dec(Bin))))
     end}.

large_string_test() ->
    S = binary:copy(<<"é\"\n😀"/utf8>>, 100000),
    Bin = enc([S]),
    ?assertEqual({ok, [S]}, dec(Bin)),
    %% An invalid byte at the very end of a large string, found on the dirty path.
    Bad = <<S/binary, 255>>,
    ?assertEqual(perr([0], invalid_utf8), aion_json:encode([Bad])),
    ?assertEqual({ok, #{S => S}}, dec(enc(#{S => S}))),
    Raw = <<(binary:copy(<<"é😀ab"/utf8>>, 100000))/binary, 255>>,
    ?assertEqual(err(byte_size(Raw), invalid_utf8), dec(<<"\"", Raw/binary, "\"">>)).

large_error_offset_test() ->
    Bin = iolist_to_binary(["[", lists:join(",", lists:duplicate(100000, "1")), ",]"]),
    ?assertEqual(err(byte_size(Bin) - 1, invalid_token), dec(Bin)).

many_bignums_test() ->
    %% 15 integers of 4,000 digits: under 64 KiB of input but over the work budget.
    Big = binary_to_integer(binary:copy(<<"7">>, 4000)),
    L = [Big + I || I <- lists:seq(1, 15)],
    Bin = enc(L),
    ?assert(byte_size(Bin) < 65536),
    ?assertEqual({ok, L}, dec(Bin)).

%% Budget 0: every call goes to a dirty scheduler; budget 10: encode gives up
%% part way (with map iterators open) and starts again there.
forced_dirty_test_() ->
    Terms = [1, <<"x">>, [1, 2, 3], #{a => [#{b => lists:seq(1, 50)}], c => <<"ok">>},
             #{<<"k">> => [1, {bad}]}, nested_lists(512), nested_lists(513),
             maps:from_list([{integer_to_binary(I), [I]} || I <- lists:seq(1, 100)])],
    [?_assertEqual(aion_nif:json_encode(T, 1 bsl 40), aion_nif:json_encode(T, Budget))
     || T <- Terms, Budget <- [0, 10]] ++
    [?_assertEqual(Expected, aion_nif:json_decode(In, 0)) || {In, Expected} <- decode_table()].

concurrent_test() ->
    Parent = self(),
    Docs = [enc(#{<<"n">> => N, <<"l">> => lists:seq(1, N * 1000)}) || N <- lists:seq(1, 8)],
    Pids = [spawn_monitor(fun() ->
                                  R = [dec(D) || _ <- lists:seq(1, 20), D <- Docs],
                                  Parent ! {self(), lists:all(fun({ok, _}) -> true;
                                                                 (_) -> false
                                                              end, R)}
                          end) || _ <- lists:seq(1, 8)],
    [receive {Pid, Result} -> ?assert(Result)
     after 60000 -> error(timeout)
     end || {Pid, _Ref} <- Pids].

%%% ---------------------------------------------------------------------------
%%% PropEr (test/prop_aion_json.erl)
%%% ---------------------------------------------------------------------------

proper_test_() ->
    Opts = [{numtests, 1000}, {to_file, user}],
    [{atom_to_list(P), {timeout, 300,
                        ?_assert(proper:quickcheck(prop_aion_json:P(), Opts))}}
     || P <- [prop_round_trip, prop_error_path, prop_random_bytes, prop_mutated]].
