%% @doc Fan-out / fan-in: child workflows with `wait_all', racing activities with
%% `wait_any'.
%%
%% As a parent (`#{<<"items">> := [N]}'): starts one child workflow per item (the
%% same module, `#{<<"item">> := N}'), waits for all of them with `wait_all/1' (in
%% input order; the first failure by position fails the whole and cancels the rest),
%% then asks three "suppliers" for a quote at once and takes the first answer with
%% `wait_any/1' (decided by history order, identical on replay), cancelling the
%% others. Result: `{ok, #{sum => SumOfSquares, quote => #{supplier, price}}}'.
%%
%% As a child: squares its item in an activity and returns it.
-module(fan_out).
-behaviour(aion_workflow).

-export([run/1]).
%% activities
-export([square/1, quote/1]).

-define(OPTS, #{start_to_close_timeout => 5000, retry => #{maximum_attempts => 3}}).

%% @doc Parent or child, by input; see the module doc.
-spec run(map()) -> {ok, map()} | {error, term()}.
run(#{<<"item">> := N}) ->
    aion_workflow:execute_activity({?MODULE, square}, [N], ?OPTS);
run(#{<<"items">> := Items}) ->
    #{workflow_id := Me} = aion_workflow:info(),
    Children = [aion_workflow:start_child(
                  ?MODULE, #{<<"item">> => N},
                  #{id => <<Me/binary, "/item/", (integer_to_binary(I))/binary>>})
                || {I, N} <- lists:zip(lists:seq(1, length(Items)), Items)],
    case aion_workflow:wait_all(Children) of
        {ok, Squares} ->
            Quotes = [aion_workflow:start_activity({?MODULE, quote}, [S], ?OPTS)
                      || S <- [<<"north">>, <<"south">>, <<"east">>]],
            {I, {ok, Quote}} = aion_workflow:wait_any(Quotes),
            _ = [aion_workflow:cancel(F) || {J, F} <- lists:zip([1, 2, 3], Quotes), J =/= I],
            {ok, #{<<"sum">> => lists:sum(Squares), <<"quote">> => Quote}};
        {error, _} = E ->
            E
    end.

%% @doc The child's activity.
-spec square(integer()) -> {ok, integer()}.
square(N) when is_integer(N) -> {ok, N * N}.

%% @doc A supplier's quote; the price is derived from the name (deterministic).
-spec quote(binary()) -> {ok, map()}.
quote(Supplier) ->
    {ok, #{<<"supplier">> => Supplier, <<"price">> => 100 + erlang:phash2(Supplier, 50)}}.
