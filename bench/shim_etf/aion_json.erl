%% PROFILING STAND-IN, not JSON: an aion_json whose "text" is external term format
%% after the JSON mapping (atom keys and atoms -> binaries, tuples etc. rejected).
%% It approximates the cost of a C codec (one Erlang walk + term_to_binary /
%% binary_to_term), so `BENCH_JSON=etf make bench' estimates the engine's figures
%% once the json NIF lands. Databases written with it are not readable as JSON.
-module(aion_json).
-export([encode/1, encode_bin/1, decode/1]).

encode(T) -> encode_bin(T).

encode_bin(T) ->
    try {ok, term_to_binary(norm(T, []))}
    catch throw:{bad, Path, Why} -> {error, {invalid_payload, lists:reverse(Path), Why}}
    end.

decode(B) ->
    try {ok, binary_to_term(B)}
    catch error:badarg -> {error, {invalid_json, 0, syntax}}
    end.

norm(A, _) when A =:= true; A =:= false; A =:= null -> A;
norm(A, _) when is_atom(A) -> atom_to_binary(A, utf8);
norm(I, _) when is_integer(I) -> I;
norm(F, _) when is_float(F) -> F;
norm(B, _) when is_binary(B) -> B;
norm(L, P) when is_list(L) -> norm_list(L, 0, P);
norm(M, P) when is_map(M) ->
    maps:fold(fun(K, V, Acc) ->
                      KB = if is_binary(K) -> K;
                              is_atom(K) -> atom_to_binary(K, utf8);
                              true -> throw({bad, P, bad_key})
                           end,
                      Acc#{KB => norm(V, [KB | P])}
              end, #{}, M);
norm(_, P) -> throw({bad, P, unsupported_type}).

norm_list([], _, _) -> [];
norm_list([X | L], I, P) -> [norm(X, [I | P]) | norm_list(L, I + 1, P)];
norm_list(_, _, P) -> throw({bad, P, improper_list}).
