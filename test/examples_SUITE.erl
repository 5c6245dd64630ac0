%% The other examples: subscription (durable timer + continue-as-new) and fan_out
%% (children + wait_all / wait_any). Each case skips until the engine exports the
%% primitives it needs (receive_signal, continue_as_new, start_child).
-module(examples_SUITE).
-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-export([all/0, init_per_suite/1, end_per_suite/1, init_per_testcase/2, end_per_testcase/2]).
-export([subscription_bills_each_period/1, subscription_cancel_signal/1, fan_out/1]).

-define(ENGINE, examples_engine).

all() -> [subscription_bills_each_period, subscription_cancel_signal, fan_out].

init_per_suite(Config) ->
    case [M || M <- [aion_json, aion_engine, aion_workflow],
               code:ensure_loaded(M) =/= {module, M}] of
        [] ->
            _ = application:load(aion),
            ok = application:set_env(aion, start_default_engine, false),
            {ok, _} = application:ensure_all_started(aion),
            ok = shop_client:ensure_started(),
            Config;
        Missing ->
            {skip, lists:flatten(io_lib:format("engine not complete in this build: ~p", [Missing]))}
    end.

end_per_suite(_Config) ->
    _ = application:stop(aion),
    ok.

needs(fan_out) -> [{aion_workflow, start_child, 3}];
needs(subscription_cancel_signal) ->
    [{aion_workflow, receive_signal, 2}, {aion_workflow, continue_as_new, 1}, {aion, signal, 4}];
needs(_) -> [{aion_workflow, receive_signal, 2}, {aion_workflow, continue_as_new, 1}].

init_per_testcase(Case, Config) ->
    case [MFA || {M, F, A} = MFA <- needs(Case), not exported(M, F, A)] of
        [] ->
            Base = filename:join(?config(priv_dir, Config), atom_to_list(Case)),
            {ok, Shop} = shop_server:start(#{db_path => Base ++ "_shop.db"}),
            {ok, _} = aion_engine:start(#{name => ?ENGINE, db_path => Base ++ "_aion.db"}),
            [{shop, Shop} | Config];
        Missing ->
            {skip, lists:flatten(io_lib:format("needs ~p (not in this build yet)", [Missing]))}
    end.

end_per_testcase(_Case, Config) ->
    _ = aion_engine:stop(?ENGINE),
    ok = shop_server:stop(?config(shop, Config)).

exported(M, F, A) ->
    _ = code:ensure_loaded(M),
    erlang:function_exported(M, F, A).

opts() -> #{engine => ?ENGINE}.

sub_input(Config, Extra) ->
    maps:merge(#{<<"customer">> => <<"c1">>,
                 <<"shop">> => list_to_binary(shop_server:url(?config(shop, Config))),
                 <<"amount">> => 990, <<"period_ms">> => 100, <<"periods">> => 3}, Extra).

%% Three periods: three runs chained by continue-as-new, each billed once.
subscription_bills_each_period(Config) ->
    {ok, #{workflow_id := Id}} = aion:start(subscription, sub_input(Config, #{}),
                                            (opts())#{id => <<"sub-1">>}),
    {ok, #{<<"periods">> := 3}} = aion:await(Id, 30000, opts()),
    {ok, #{charged := 3}} = shop_server:ledger_check(?config(shop, Config), #{}),
    {ok, Runs} = aion:list(#{type => <<"subscription">>, engine => ?ENGINE}),
    ?assertEqual(3, length(Runs)).

subscription_cancel_signal(Config) ->
    {ok, #{workflow_id := Id}} = aion:start(subscription,
                                            sub_input(Config, #{<<"period_ms">> => 60000,
                                                                <<"periods">> => 0}),
                                            (opts())#{id => <<"sub-2">>}),
    ok = aion:signal(Id, <<"cancel">>, #{}, opts()),
    {ok, #{<<"cancelled_at_period">> := 1}} = aion:await(Id, 30000, opts()).

fan_out(_Config) ->
    {ok, #{workflow_id := Id}} = aion:start(fan_out, #{<<"items">> => [1, 2, 3, 4]},
                                            (opts())#{id => <<"fan-1">>}),
    {ok, #{<<"sum">> := 30, <<"quote">> := #{<<"supplier">> := _}}} = aion:await(Id, 30000, opts()).
