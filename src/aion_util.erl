%% @private
%% @doc Small helpers shared by the client API and the workflow process.
-module(aion_util).

-export([is_terminal/1, statuses/0, status_atom/1, status_binary/1, check_type/1,
         type_options/1, uuid_v4/0, format_uuid/1]).

-define(TERMINAL, [<<"completed">>, <<"failed">>, <<"cancelled">>, <<"terminated">>,
                   <<"timed_out">>, <<"continued_as_new">>]).
-define(OPEN, [<<"running">>, <<"paused">>, <<"stuck">>]).

%% @doc Whether a run status (binary as stored, or atom) is terminal.
-spec is_terminal(binary() | atom()) -> boolean().
is_terminal(S) when is_atom(S) -> is_terminal(atom_to_binary(S, utf8));
is_terminal(S) -> lists:member(S, ?TERMINAL).

%% @doc Every run status, as atoms.
-spec statuses() -> [atom()].
statuses() ->
    [binary_to_atom(S, utf8) || S <- ?OPEN ++ ?TERMINAL].

%% @doc A stored status as its API atom (only known statuses are converted).
-spec status_atom(binary()) -> atom() | binary().
status_atom(S) ->
    case lists:member(S, ?OPEN ++ ?TERMINAL) of
        true -> binary_to_atom(S, utf8);
        false -> S
    end.

%% @doc An API status (atom) as stored; `error' for an unknown status.
-spec status_binary(term()) -> {ok, binary()} | error.
status_binary(S) when is_atom(S) ->
    B = atom_to_binary(S, utf8),
    case lists:member(B, ?OPEN ++ ?TERMINAL) of
        true -> {ok, B};
        false -> error
    end;
status_binary(_) ->
    error.

%% @doc Checks that `Type' names a loadable module exporting `run/1'.
-spec check_type(term()) -> ok | {error, not_loaded | no_run_function | not_a_module}.
check_type(Type) when is_atom(Type) ->
    case code:ensure_loaded(Type) of
        {module, Type} ->
            case erlang:function_exported(Type, run, 1) of
                true -> ok;
                false -> {error, no_run_function}
            end;
        {error, _} ->
            {error, not_loaded}
    end;
check_type(_) ->
    {error, not_a_module}.

%% @doc The type's defaults from its optional `options/0' callback (`#{}' when it
%% has none or it does not return a map).
-spec type_options(module()) -> map().
type_options(Type) ->
    case erlang:function_exported(Type, options, 0) of
        true ->
            case Type:options() of
                M when is_map(M) -> M;
                _ -> #{}
            end;
        false ->
            #{}
    end.

%% @doc A random UUIDv4 as a 36-character lowercase binary.
-spec uuid_v4() -> binary().
uuid_v4() ->
    format_uuid(crypto:strong_rand_bytes(16)).

%% @doc Formats 16 bytes as a UUIDv4 (version and variant bits set).
-spec format_uuid(<<_:128>>) -> binary().
format_uuid(<<A:48, _:4, B:12, _:2, C:62>>) ->
    <<X1:4/binary, X2:2/binary, X3:2/binary, X4:2/binary, X5:6/binary>> =
        <<A:48, 4:4, B:12, 2:2, C:62>>,
    <<(hex(X1))/binary, $-, (hex(X2))/binary, $-, (hex(X3))/binary, $-,
      (hex(X4))/binary, $-, (hex(X5))/binary>>.

hex(Bin) ->
    << <<(element(N + 1, {$0, $1, $2, $3, $4, $5, $6, $7, $8, $9, $a, $b, $c, $d, $e, $f}))>>
       || <<N:4>> <= Bin >>.
