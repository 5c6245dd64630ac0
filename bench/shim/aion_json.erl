%% Benchmark-only copy of core-a's TEMPORARY pure-Erlang aion_json shim (untracked in
%% /work/wt/core-a/test/aion_json.erl). bench/run.sh compiles it ONLY when the real
%% aion_json (json branch NIF) is absent from the aion ebin; figures taken with it say so.
%% TEMPORARY pure-Erlang shim of aion_json for core-b testing until the json branch lands.
-module(aion_json).
-export([encode/1, encode_bin/1, decode/1]).

encode(T) -> encode_bin(T).
encode_bin(T) ->
    try {ok, iolist_to_binary(enc(T, []))}
    catch throw:{bad, Path, Why} -> {error, {invalid_payload, lists:reverse(Path), Why}}
    end.

enc(true, _) -> <<"true">>;
enc(false, _) -> <<"false">>;
enc(null, _) -> <<"null">>;
enc(A, P) when is_atom(A) -> enc(atom_to_binary(A, utf8), P);
enc(I, _) when is_integer(I) -> integer_to_binary(I);
enc(F, _) when is_float(F) -> float_to_binary(F, [short]);
enc(B, P) when is_binary(B) ->
    case unicode:characters_to_binary(B) of
        B -> [$", esc(B), $"];
        _ -> throw({bad, P, invalid_utf8})
    end;
enc(L, P) when is_list(L) ->
    {Items, _} = lists:mapfoldl(fun(X, I) -> {enc(X, [I | P]), I + 1} end, 0, L),
    [$[, lists:join($,, Items), $]];
enc(M, P) when is_map(M) ->
    Items = [begin
                 KB = if is_binary(K) -> K; is_atom(K) -> atom_to_binary(K, utf8);
                         true -> throw({bad, P, bad_key}) end,
                 [enc(KB, P), $:, enc(V, [KB | P])]
             end || {K, V} <- lists:sort(maps:to_list(M))],
    [${, lists:join($,, Items), $}];
enc(_, P) -> throw({bad, P, unsupported_type}).

esc(B) -> << <<(esc1(C))/binary>> || <<C/utf8>> <= B >>.
esc1($") -> <<"\\\"">>;
esc1($\\) -> <<"\\\\">>;
esc1(C) when C < 32 -> list_to_binary(io_lib:format("\\u~4.16.0b", [C]));
esc1(C) -> <<C/utf8>>.

decode(Bin) ->
    try
        {V, Rest} = val(ws(Bin)),
        <<>> = ws(Rest),
        {ok, V}
    catch _:_ -> {error, {invalid_json, 0, syntax}}
    end.

ws(<<C, R/binary>>) when C =:= $\s; C =:= $\n; C =:= $\t; C =:= $\r -> ws(R);
ws(B) -> B.
val(<<"true", R/binary>>) -> {true, R};
val(<<"false", R/binary>>) -> {false, R};
val(<<"null", R/binary>>) -> {null, R};
val(<<$", R/binary>>) -> str(R, <<>>);
val(<<$[, R/binary>>) -> arr(ws(R), []);
val(<<${, R/binary>>) -> obj(ws(R), #{});
val(B) -> num(B).
str(<<$", R/binary>>, Acc) -> {Acc, R};
str(<<$\\, $u, H:4/binary, R/binary>>, Acc) -> C = binary_to_integer(H, 16), str(R, <<Acc/binary, C/utf8>>);
str(<<$\\, C, R/binary>>, Acc) ->
    D = case C of $n -> $\n; $t -> $\t; $r -> $\r; $b -> $\b; $f -> $\f; _ -> C end,
    str(R, <<Acc/binary, D>>);
str(<<C, R/binary>>, Acc) -> str(R, <<Acc/binary, C>>).
arr(<<$], R/binary>>, []) -> {[], R};
arr(B, Acc) ->
    {V, R} = val(ws(B)),
    case ws(R) of
        <<$,, R2/binary>> -> arr(ws(R2), [V | Acc]);
        <<$], R2/binary>> -> {lists:reverse([V | Acc]), R2}
    end.
obj(<<$}, R/binary>>, M) when map_size(M) =:= 0 -> {M, R};
obj(<<$", B/binary>>, M) ->
    {K, R} = str(B, <<>>),
    <<$:, R1/binary>> = ws(R),
    {V, R2} = val(ws(R1)),
    case ws(R2) of
        <<$,, R3/binary>> -> obj(ws(R3), M#{K => V});
        <<$}, R3/binary>> -> {M#{K => V}, R3}
    end.
num(B) ->
    {N, R} = numchars(B, <<>>),
    V = case binary:match(N, [<<".">>, <<"e">>, <<"E">>]) of
            nomatch -> binary_to_integer(N);
            _ -> binary_to_float(N)
        end,
    {V, R}.
numchars(<<C, R/binary>>, Acc) when (C >= $0 andalso C =< $9); C =:= $-; C =:= $+; C =:= $.; C =:= $e; C =:= $E ->
    numchars(R, <<Acc/binary, C>>);
numchars(R, Acc) -> {Acc, R}.
