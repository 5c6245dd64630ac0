%% EUnit tests of aion_event's decoder: the NIF path (aion_event:decode_all/1 over
%% aion_json:decode_events/1) must give exactly what the reference Erlang decoder
%% (aion_event:decode_slow/1) gives, including every fallback case, and raise
%% where it raises.
-module(aion_event_tests).

-include_lib("eunit/include/eunit.hrl").

same(Rows) ->
    Ref = [aion_event:decode_slow(R) || R <- Rows],
    ?assertEqual(Ref, aion_event:decode_all(Rows)),
    ?assertEqual(Ref, [aion_event:decode(R) || R <- Rows]),
    Ref.

row(Seq, Type, Fields) ->
    {T, At, Data} = aion_event:encode_row(Type, 1700000000000 + Seq, Fields),
    {Seq, T, At, Data}.

every_type_test() ->
    Rows = [row(I, T, #{activity_id => integer_to_binary(I), input => [1, <<"x">>, #{a => 1.5}],
                        result => #{<<"k">> => [null, true, 12345678901234567890123]}})
            || {I, T} <- lists:zip(lists:seq(1, length(aion_event:types())),
                                   aion_event:types())],
    [#{seq := 1, type := workflow_started, recorded_at := 1700000000001,
       activity_id := <<"1">>, result := #{<<"k">> := [null, true, 12345678901234567890123]}}
     | _] = same(Rows).

term_fields_test() ->
    Rows = [row(1, activity_failed, #{activity_id => <<"a">>, error => {boom, [1, 2], self()},
                                      final => true}),
            row(2, workflow_failed, #{reason => {exit, normal}}),
            row(3, workflow_failed, #{error => #{<<"etf">> => 1}}),   % etf not a binary
            row(4, workflow_completed, #{result => 1})],
    [#{error := {boom, [1, 2], _}}, #{reason := {exit, normal}}, _, _] = same(Rows),
    %% Only the term fields are unwrapped; an "etf" object elsewhere stays.
    Raw = {5, <<"activity_completed">>, 0,
           <<"{\"result\":{\"etf\":\"g2QAAmhp\"},\"reason\":{\"etf\":\"g2QAAmhp\"}}">>},
    [#{result := #{<<"etf">> := <<"g2QAAmhp">>}, reason := hi}] = same([Raw]).

fallback_rows_test() ->
    New = <<"aion_event_tests_field_", (integer_to_binary(erlang:unique_integer([positive])))/binary>>,
    Rows = [{1, <<"timer_fired">>, 5, <<"{\"", New/binary, "\":1}">>},  % not an atom yet
            {2, <<"timer_fired">>, 5, <<"{\"seq\":99,\"timer_id\":\"t\"}">>},  % header key
            {3, <<"timer_fired">>, 5, <<"{\"a\":1,\"a\":2}">>},               % duplicate
            {4, <<"timer_fired">>, 5, <<"{\"ti\\u006der_id\":\"t\"}">>},      % escaped key
            {5, <<"timer_fired">>, 5, <<"{\"caf", 16#c3, 16#a9, "\":1}">>},       % non-ASCII key
            {6, <<"timer_fired">>, 5, [<<"{\"timer_id\"">>, <<":\"t\"}">>]},  % iodata
            {7, <<"timer_fired">>, 5, <<" { } ">>},
            {8, <<"timer_fired">>, 5, <<"{\"timer_id\":\"t\"}">>}],
    [E1, #{seq := 99}, #{a := 2}, #{timer_id := <<"t">>}, #{'café' := 1},
     #{timer_id := <<"t">>}, #{seq := 7}, #{seq := 8}] = same(Rows),
    ?assertEqual(1, maps:get(binary_to_existing_atom(New), E1)).

errors_raise_like_reference_test() ->
    Bad = [{1, <<"timer_fired">>, 5, <<"{\"a\":">>},               % invalid JSON
           {1, <<"timer_fired">>, 5, <<"[1]">>},                   % not an object
           {1, <<"timer_fired">>, 5, <<"{\"a\":1e999}">>},         % out of range
           {1, <<"no_such_event_type_xyz">>, 5, <<"{}">>},         % unknown type
           {1, <<"timer_fired">>, 5},                              % not a row
           not_a_row],
    [begin
         Ref = catch_class(fun() -> aion_event:decode_slow(R) end),
         ?assertMatch({error, _}, Ref),
         ?assertEqual(element(1, Ref), element(1, catch_class(fun() -> aion_event:decode(R) end))),
         ?assertMatch({error, _}, catch_class(fun() -> aion_event:decode_all([R]) end))
     end || R <- Bad].

catch_class(F) ->
    try F() of V -> {ok, V} catch C:_ -> {C, raised} end.

%% A history above the byte budget runs on a dirty CPU scheduler; same result.
large_history_test() ->
    Rows = [row(I, activity_scheduled,
                #{activity_id => integer_to_binary(I), name => <<"m:f">>,
                  input => [binary:copy(<<"x">>, 100)], options => #{retry => #{a => 1}}})
            || I <- lists:seq(1, 2000)],
    ?assert(lists:sum([byte_size(D) || {_, _, _, D} <- Rows]) > 65536),
    Evs = same(Rows),
    ?assertEqual(lists:seq(1, 2000), [S || #{seq := S} <- Evs]).

badarg_test() ->
    ?assertError(badarg, aion_json:decode_events(not_a_list)),
    ?assertEqual({ok, []}, aion_json:decode_events([])).

proper_test_() ->
    Opts = [{numtests, 100}, {to_file, user}],
    [{timeout, 300, ?_assert(proper:quickcheck(prop_aion_event:P(), Opts))}
     || P <- [prop_same_as_reference, prop_repeated_containers, prop_mutated_rows]].

%% Nested containers with equal text are built once per call and shared; texts that
%% only start alike, the same text in another place, and a container whose cached
%% text is followed by more members all decode as the reference does.
repeated_containers_test() ->
    Opts = #{<<"retry">> => #{<<"initial_interval">> => 1000, <<"max">> => [1, 2, 3]},
             <<"task_queue">> => <<"default">>},
    Opts2 = Opts#{<<"task_queue">> => <<"other">>},
    Rows = [row(I, activity_scheduled,
                #{activity_id => integer_to_binary(I),
                  options => case I rem 3 of 0 -> Opts; 1 -> Opts2; 2 -> [Opts, Opts2] end,
                  input => [#{<<"retry">> => #{<<"initial_interval">> => 1000,
                                               <<"max">> => [1, 2, 3]}}, I]})
            || I <- lists:seq(1, 30)],
    Evs = same(Rows),
    Decoded = aion_event:decode_all(Rows),
    ?assert(erts_debug:size(Decoded) < erts_debug:flat_size(Decoded)),   % shared
    ?assertEqual(Opts, maps:get(options, lists:nth(3, Evs))),
    ?assertEqual([Opts, Opts2], maps:get(options, lists:nth(2, Evs))),
    %% Duplicate keys in a nested object (the last wins), repeated.
    Dup = <<"{\"options\":{\"a\":1,\"a\":2,\"bbbbbbbbbbbbbbbb\":3}}">>,
    [#{options := #{<<"a">> := 2}}, _] = same([{1, <<"timer_fired">>, 0, Dup},
                                               {2, <<"timer_fired">>, 0, Dup}]).

%% Every JSONTestSuite input (test/data/json_test_parsing) as a row's whole data,
%% as the value of a field, and twice in one call (the second read with the first's
%% containers cached): decode_all/1 answers as the reference decoder, or raises
%% where it raises.
json_test_suite_rows_test() ->
    Dir = hd([D || D <- [filename:join([filename:dirname(?FILE), "data", "json_test_parsing"]),
                         filename:join([filename:dirname(code:which(?MODULE)), "..", "..",
                                        "..", "..", "..", "test", "data",
                                        "json_test_parsing"])],
                   filelib:is_dir(D)]),
    Files = filelib:wildcard("*.json", Dir),
    ?assertEqual(318, length(Files)),
    lists:foreach(
      fun(F) ->
              {ok, X} = file:read_file(filename:join(Dir, F)),
              Field = <<"{\"result\":", X/binary, ",\"activity_id\":\"a\"}">>,
              Rows = [{1, <<"activity_completed">>, 0, X},
                      {2, <<"activity_completed">>, 0, Field},
                      {3, <<"activity_completed">>, 0, Field}],
              [?assertEqual({F, outcome(fun() -> [aion_event:decode_slow(R) || R <- Rs] end)},
                            {F, outcome(fun() -> aion_event:decode_all(Rs) end)})
               || Rs <- [[R] || R <- Rows] ++ [Rows]]
      end, Files).

outcome(F) ->
    try {ok, F()} catch _:_ -> raised end.
