%% Engines: supervision, several engines in one node, stop, options.
-module(aion_engine_SUITE).

-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-export([all/0, init_per_suite/1, end_per_suite/1, init_per_testcase/2,
         end_per_testcase/2]).
-export([two_engines_no_cross_talk/1, stop_leaves_no_process/1,
         engine_in_user_tree/1, default_engine_from_app_env/1, engine_options/1]).
-export([init/1]).

-define(W, aion_test_workflows).

all() ->
    [two_engines_no_cross_talk, stop_leaves_no_process, engine_in_user_tree,
     default_engine_from_app_env, engine_options].

init_per_suite(Config) -> aion_ct:init_per_suite(Config).

end_per_suite(Config) -> aion_ct:end_per_suite(Config).

init_per_testcase(_TC, Config) ->
    true = register(aion_test_sink, self()),
    Config.

end_per_testcase(_TC, _Config) ->
    catch unregister(aion_test_sink),
    [aion_ct:stop_engine(E) || E <- [e1, e2, user_engine, aion_default]],
    aion_ct:flush(),
    ok.

%% supervisor callback for engine_in_user_tree
init(Specs) ->
    {ok, {#{strategy => one_for_one, intensity => 5, period => 10}, Specs}}.

%%% ===========================================================================

two_engines_no_cross_talk(Config) ->
    _ = aion_ct:start_engine(e1, aion_ct:db_path(Config, "e1.db")),
    _ = aion_ct:start_engine(e2, aion_ct:db_path(Config, "e2.db")),
    E1 = #{engine => e1},
    E2 = #{engine => e2},
    %% the same workflow ids on both engines, run concurrently
    Ids = [<<"w", (integer_to_binary(I))/binary>> || I <- lists:seq(1, 20)],
    Self = self(),
    Runners = [spawn_link(fun() ->
                                  {ok, _} = aion:start(?W, #{kind => three}, E1#{id => Id}),
                                  {ok, _} = aion:start(?W, #{kind => echo, value => Id},
                                                       E2#{id => Id}),
                                  R1 = aion:await(Id, 10000, E1),
                                  R2 = aion:await(Id, 10000, E2),
                                  Self ! {done, Id, R1, R2}
                          end) || Id <- Ids],
    Results = [receive {done, Id, R1, R2} -> {Id, R1, R2} after 20000 -> error(timeout) end
               || Id <- Ids],
    _ = Runners,
    [{ok, 113} = R1 || {_, R1, _} <- Results],
    [{ok, Id} = R2 || {Id, _, R2} <- Results],
    {ok, 20} = aion:count(E1),
    {ok, 20} = aion:count(E2),
    {ok, 20} = aion:count(E1#{type => ?W, status => completed}),
    [_, _, _, _, _, _, _, _] = aion_ct:history(<<"w1">>, E1),
    [_, _] = aion_ct:history(<<"w1">>, E2),
    %% stopping one engine leaves the other working
    ok = aion_engine:stop(e1),
    false = aion_engine:is_running(e1),
    {ok, _} = aion:start(?W, #{kind => noop}, E2#{id => <<"after">>}),
    {ok, <<"done">>} = aion:await(<<"after">>, 5000, E2),
    ?assertError({engine_not_running, e1}, aion:count(E1)).

stop_leaves_no_process(Config) ->
    Path = aion_ct:db_path(Config, "stop.db"),
    %% warm up once (first use may start long-lived OTP services)
    _ = aion_ct:start_engine(aion_default, Path),
    {ok, _} = aion:start(?W, #{kind => three}, #{id => <<"warm">>}),
    {ok, 113} = aion:await(<<"warm">>, 5000),
    ok = aion_engine:stop(aion_default),
    Before = lists:sort(processes()),
    _ = aion_ct:start_engine(aion_default, Path),
    %% leave work in every state: a held activity, a sleeping run, a finished run
    {ok, _} = aion:start(?W, #{kind => switch, gate => <<"s">>}, #{id => <<"held">>}),
    {_, 1} = aion_ct:gate_wait(<<"s">>),
    {ok, _} = aion:start(?W, #{kind => sleep, ms => 600000}, #{id => <<"sleeper">>}),
    {ok, _} = aion:start(?W, #{kind => three}, #{id => <<"done">>}),
    {ok, 113} = aion:await(<<"done">>, 5000),
    aion_ct:wait_until(fun() ->
                               lists:member(timer_started,
                                            aion_ct:types(aion_ct:history(<<"sleeper">>)))
                       end, 5000),
    {ok, #{residency := resident}} = aion:describe(<<"held">>),
    Self = self(),
    {Awaiter, AMon} = spawn_monitor(fun() -> Self ! {awaited, aion:await(<<"held">>)} end),
    #{waiters := Waiters} = aion_ctx:get(aion_default),
    aion_ct:wait_until(fun() -> ets:info(Waiters, size) =:= 1 end, 5000),
    ok = aion_engine:stop(aion_default),
    receive {awaited, Awaited} -> {error, engine_stopped} = Awaited
    after 5000 -> error({awaiter_hangs, Awaiter})
    end,
    receive {'DOWN', AMon, process, Awaiter, _} -> ok end,
    After = lists:sort(processes()),
    ?assertEqual([], [{P, erlang:process_info(P, [registered_name, initial_call,
                                                  current_function])}
                      || P <- After -- Before]),
    {error, not_found} = aion_engine:stop(aion_default),
    %% the database can be opened again at once
    {ok, S} = aion_store:open(Path, #{}),
    {ok, #{status := <<"running">>}} = aion_store:current_run(S, <<"held">>),
    ok = aion_store:close(S),
    _ = aion_ct:start_engine(aion_default, Path),
    {ok, 4} = aion:count(#{}),
    ok = aion_engine:stop(aion_default).

engine_in_user_tree(Config) ->
    Spec = aion_engine:child_spec(#{name => user_engine,
                                    db_path => aion_ct:db_path(Config, "user.db")}),
    #{id := {aion_engine, user_engine}, restart := transient, type := supervisor} = Spec,
    {ok, Sup} = supervisor:start_link(?MODULE, [Spec]),
    true = aion_engine:is_running(user_engine),
    {ok, _} = aion:start(?W, #{kind => three}, #{engine => user_engine, id => <<"u">>}),
    {ok, 113} = aion:await(<<"u">>, 5000, #{engine => user_engine}),
    ok = aion_engine:stop(user_engine),
    false = aion_engine:is_running(user_engine),
    %% transient: not restarted by the user's supervisor
    [{{aion_engine, user_engine}, undefined, supervisor, _}] = supervisor:which_children(Sup),
    unlink(Sup),
    exit(Sup, shutdown),
    ?assertError({invalid_option, synchronous},
                 aion_engine:child_spec(#{name => x, synchronous => sometimes})).

default_engine_from_app_env(Config) ->
    ok = application:stop(aion),
    Path = aion_ct:db_path(Config, "default.db"),
    ok = application:set_env(aion, db_path, Path),
    ok = application:set_env(aion, start_default_engine, true),
    try
        {ok, _} = application:ensure_all_started(aion),
        true = aion_engine:is_running(aion_default),
        #{opts := #{db_path := Path, synchronous := full, max_concurrent_activities := 1000,
                    query_timeout := 5000}} = aion_ctx:get(aion_default),
        {ok, #{workflow_id := W}} = aion:start(?W, #{kind => noop}),
        {ok, <<"done">>} = aion:await(W),
        ok = application:stop(aion),
        false = aion_engine:is_running(aion_default)
    after
        ok = application:set_env(aion, start_default_engine, false),
        ok = application:unset_env(aion, db_path),
        {ok, _} = application:ensure_all_started(aion)
    end.

engine_options(Config) ->
    {error, {invalid_option, synchronous}} =
        aion_engine:start(#{name => e1, synchronous => maybe}),
    {error, {invalid_option, max_concurrent_activities}} =
        aion_engine:start(#{name => e1, max_concurrent_activities => 0}),
    {error, {invalid_option, bogus}} = aion_engine:start(#{name => e1, bogus => 1}),
    {error, {invalid_option, page_size}} = aion_engine:start(#{name => e1, page_size => 1000}),
    {error, {invalid_option, name}} = aion_engine:start(#{name => "e1"}),
    {error, {invalid_option, options}} = aion_engine:validate(nope),
    %% an unusable database path refuses to start
    {error, _} = aion_engine:start(#{name => e1,
                                     db_path => aion_ct:db_path(Config, "no/such/dir/x.db")}),
    false = aion_engine:is_running(e1),
    Path = aion_ct:db_path(Config, "opts.db"),
    {ok, _} = aion_engine:start(#{name => e1, db_path => list_to_binary(Path),
                                  synchronous => normal, max_concurrent_activities => 4}),
    {error, {already_started, _}} = aion_engine:start(#{name => e1, db_path => Path}),
    #{opts := #{synchronous := normal, max_concurrent_activities := 4}} = aion_ctx:get(e1),
    {ok, _} = aion:start(?W, #{kind => parallel, n => 10}, #{engine => e1, id => <<"p">>}),
    {ok, [2, 4, 6, 8, 10, 12, 14, 16, 18, 20]} = aion:await(<<"p">>, 5000, #{engine => e1}).
