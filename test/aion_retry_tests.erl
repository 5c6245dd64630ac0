-module(aion_retry_tests).
-include_lib("eunit/include/eunit.hrl").

defaults_test() ->
    {ok, O} = aion_retry:validate(#{}),
    ?assertEqual(aion_retry:defaults(), O),
    #{retry := R} = O,
    ?assertEqual(#{initial_interval => 1000, backoff_coefficient => 2.0,
                   maximum_interval => 100000, maximum_attempts => 0,
                   non_retryable_errors => []}, R),
    ?assertEqual(<<"default">>, maps:get(task_queue, O)),
    ?assertEqual(infinity, maps:get(start_to_close_timeout, O)).

maximum_interval_follows_initial_test() ->
    {ok, #{retry := R}} = aion_retry:validate(#{retry => #{initial_interval => 50}}),
    ?assertEqual(5000, maps:get(maximum_interval, R)),
    ?assertEqual(2.0, maps:get(backoff_coefficient, R)).

validate_values_test() ->
    {ok, O} = aion_retry:validate(#{task_queue => <<"q">>, start_to_close_timeout => 5000,
                                    heartbeat_timeout => 100,
                                    schedule_to_close_timeout => infinity,
                                    retry => #{maximum_attempts => 5, backoff_coefficient => 3,
                                               non_retryable_errors => [bad_card, <<"x">>]}}),
    ?assertMatch(#{task_queue := <<"q">>, start_to_close_timeout := 5000,
                   heartbeat_timeout := 100, schedule_to_close_timeout := infinity,
                   retry := #{maximum_attempts := 5, backoff_coefficient := 3.0,
                              non_retryable_errors := [<<"bad_card">>, <<"x">>]}}, O).

invalid_options_test_() ->
    Bad = [{#{start_to_close_timeout => 0}, {bad_value, start_to_close_timeout, 0}},
           {#{start_to_close_timeout => -5}, {bad_value, start_to_close_timeout, -5}},
           {#{heartbeat_timeout => 1.5}, {bad_value, heartbeat_timeout, 1.5}},
           {#{task_queue => 7}, {bad_value, task_queue, 7}},
           {#{bogus => 1}, {unknown_option, bogus}},
           {#{retry => #{initial_interval => 0}}, {bad_value, initial_interval, 0}},
           {#{retry => #{backoff_coefficient => 0.5}}, {bad_value, backoff_coefficient, 0.5}},
           {#{retry => #{maximum_attempts => -1}}, {bad_value, maximum_attempts, -1}},
           {#{retry => #{initial_interval => 100, maximum_interval => 10}},
            {bad_value, maximum_interval, 10}},
           {#{retry => #{non_retryable_errors => [{a, b}]}},
            {bad_value, non_retryable_errors, {a, b}}},
           {#{retry => #{nope => 1}}, {unknown_option, nope}},
           {#{retry => 5}, {bad_value, retry, 5}}],
    [?_assertEqual({error, {invalid_options, D}}, aion_retry:validate(O)) || {O, D} <- Bad]
        ++ [?_assertEqual({error, {invalid_options, not_a_map}}, aion_retry:validate([]))].

json_round_trip_test() ->
    {ok, O} = aion_retry:validate(#{start_to_close_timeout => 10,
                                    retry => #{non_retryable_errors => [boom]}}),
    J = aion_retry:to_json(O),
    ?assertEqual(null, maps:get(schedule_to_close_timeout, J)),
    {ok, Bin} = aion_json:encode_bin(J),
    {ok, Decoded} = aion_json:decode(Bin),
    ?assertEqual({ok, O}, aion_retry:validate(Decoded)).

backoff_formula_test() ->
    {ok, #{retry := R}} = aion_retry:validate(#{}),
    ?assertEqual([1000, 2000, 4000, 8000, 16000, 32000, 64000, 100000, 100000],
                 [aion_retry:backoff(R, A) || A <- lists:seq(1, 9)]),
    %% Huge attempt numbers stay at the maximum instead of overflowing.
    ?assertEqual(100000, aion_retry:backoff(R, 100000)),
    {ok, #{retry := R2}} = aion_retry:validate(#{retry => #{initial_interval => 10,
                                                            backoff_coefficient => 1.5,
                                                            maximum_interval => 30}}),
    ?assertEqual([10, 15, 23, 30, 30], [aion_retry:backoff(R2, A) || A <- lists:seq(1, 5)]),
    {ok, #{retry := R3}} = aion_retry:validate(#{retry => #{backoff_coefficient => 1}}),
    ?assertEqual([1000, 1000, 1000], [aion_retry:backoff(R3, A) || A <- [1, 2, 50]]),
    %% After a reopen the policy counts from the first attempt of the reopen.
    ?assertEqual(aion_retry:backoff(R, 1), aion_retry:backoff(R, 7, 7)),
    ?assertEqual(aion_retry:backoff(R, 2), aion_retry:backoff(R, 8, 7)).

attempts_test() ->
    {ok, #{retry := Unlimited}} = aion_retry:validate(#{}),
    ?assertNot(aion_retry:attempts_exhausted(Unlimited, 1000000)),
    {ok, #{retry := Three}} = aion_retry:validate(#{retry => #{maximum_attempts => 3}}),
    ?assertEqual([false, false, true, true],
                 [aion_retry:attempts_exhausted(Three, A) || A <- [1, 2, 3, 4]]),
    ?assertNot(aion_retry:attempts_exhausted(Three, 6, 5)),
    ?assert(aion_retry:attempts_exhausted(Three, 7, 5)),
    {ok, #{retry := One}} = aion_retry:validate(#{retry => #{maximum_attempts => 1}}),
    ?assert(aion_retry:attempts_exhausted(One, 1)).

classify_test() ->
    {ok, #{retry := R}} = aion_retry:validate(
                            #{retry => #{non_retryable_errors => [bad_card, <<"fatal">>]}}),
    ?assertEqual({ok, 1}, aion_retry:classify(R, {returned, {ok, 1}})),
    ?assertEqual({ok, <<"x">>}, aion_retry:classify(R, {returned, <<"x">>})),
    ?assertEqual({ok, ok}, aion_retry:classify(R, {returned, ok})),
    ?assertEqual({ok, {a, b}}, aion_retry:classify(R, {returned, {a, b}})),
    ?assertEqual({retryable, timeout}, aion_retry:classify(R, {returned, {error, timeout}})),
    ?assertEqual({final, bad_card}, aion_retry:classify(R, {returned, {error, bad_card}})),
    ?assertEqual({final, {bad_card, 42}},
                 aion_retry:classify(R, {returned, {error, {bad_card, 42}}})),
    ?assertEqual({final, fatal}, aion_retry:classify(R, {returned, {error, fatal}})),
    ?assertEqual({final, <<"fatal">>}, aion_retry:classify(R, {returned, {error, <<"fatal">>}})),
    ?assertEqual({final, anything},
                 aion_retry:classify(R, {returned, {error, {non_retryable, anything}}})),
    ?assertEqual({retryable, {exception, error, badarith}},
                 aion_retry:classify(R, {raised, error, badarith})),
    ?assertEqual({final, {exception, throw, bad_card}},
                 aion_retry:classify(R, {raised, throw, bad_card})).

error_name_test() ->
    ?assertEqual(<<"a">>, aion_retry:error_name(a)),
    ?assertEqual(<<"a">>, aion_retry:error_name({a, 1, 2})),
    ?assertEqual(<<"b">>, aion_retry:error_name({<<"b">>})),
    ?assertEqual(undefined, aion_retry:error_name({1, 2})),
    ?assertEqual(undefined, aion_retry:error_name({})),
    ?assertEqual(undefined, aion_retry:error_name(12)),
    ?assertNot(aion_retry:matches(a, [])),
    ?assertNot(aion_retry:matches(12, [<<"12">>])).
