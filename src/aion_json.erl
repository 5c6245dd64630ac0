%% @doc JSON payload codec (SPEC 1 "Payload"), over the C NIF in `c_src/json.c'.
%%
%% == Mapping ==
%% <table>
%% <tr><th>Erlang</th><th>JSON</th><th>decoded back as</th></tr>
%% <tr><td>map, binary or atom keys</td><td>object</td><td>map, binary keys</td></tr>
%% <tr><td>proper list</td><td>array</td><td>list</td></tr>
%% <tr><td>UTF-8 binary</td><td>string</td><td>binary</td></tr>
%% <tr><td>integer (any size, see limits)</td><td>number</td><td>integer</td></tr>
%% <tr><td>float</td><td>number with `.' or `e'</td><td>float</td></tr>
%% <tr><td>`true', `false', `null'</td><td>literal</td><td>same atom</td></tr>
%% <tr><td>any other atom</td><td>string</td><td>binary</td></tr>
%% </table>
%%
%% == Decoding ==
%% Full RFC 8259: one JSON text, any value at top level, only the four RFC
%% whitespace bytes, strictly valid UTF-8, escapes including `\u' surrogate pairs.
%% Objects with a duplicate key: the last one wins. A number with a fraction or
%% an exponent is a float (`1e5' decodes as `100000.0'), otherwise an integer
%% (`-0' is `0'). Errors are `{error, {invalid_json, Offset, Why}}' where Offset is
%% the byte offset of the first offending byte (the input length when the input
%% ends too early) and Why is one of:
%% <ul>
%% <li>`empty': no value at all (empty or whitespace-only input);</li>
%% <li>`unexpected_end': the input ends inside a value;</li>
%% <li>`invalid_token': a byte that cannot start or continue the structure here;</li>
%% <li>`invalid_string': a raw control character (below 0x20) inside a string;</li>
%% <li>`invalid_escape': a backslash not followed by a valid escape (Offset is the backslash);</li>
%% <li>`lone_surrogate': a `\u' surrogate without its other half (Offset is the backslash);</li>
%% <li>`invalid_utf8': a malformed UTF-8 sequence in a string (overlong, encoded
%%     surrogate, above U+10FFFF, truncated);</li>
%% <li>`invalid_number': a number that breaks the RFC grammar (`01', `1.', `-x', `1e');</li>
%% <li>`number_out_of_range': a float beyond the range of a double, or an integer
%%     of more than 4,300 digits;</li>
%% <li>`trailing_data': anything but whitespace after the value;</li>
%% <li>`too_deep': more than 512 nested arrays/objects (Offset is the bracket);</li>
%% <li>`too_large': an input of 2 GiB or more.</li>
%% </ul>
%%
%% == Encoding ==
%% Floats are written as the shortest of `%.15g', `%.16g', `%.17g' that reads back
%% as the same double, with `.0' added when needed so they decode as floats.
%% Strings escape `"', `\', and control characters (`\b \f \n \r \t' by name,
%% others as `\u00XX'); everything else is written as UTF-8. Map members are
%% written in map iteration order. Errors are
%% `{error, {invalid_payload, Path, Why}}' where Path is the list of keys (binaries)
%% and list indices (0-based) from the root to the offending value, and Why is one of:
%% <ul>
%% <li>`unsupported_type': a tuple, pid, port, reference, fun, bitstring or an
%%     improper list tail (Path ends with the tail's index);</li>
%% <li>`invalid_utf8': a binary that is not UTF-8;</li>
%% <li>`invalid_key': a map key that is not an atom or a UTF-8 binary, or a map
%%     holding both `a' and `<<"a">>' (Path is the map's path);</li>
%% <li>`too_deep': more than 512 nested lists/maps;</li>
%% <li>`number_out_of_range': an integer of more than 4,300 digits.</li>
%% </ul>
%%
%% == Scheduling ==
%% Calls whose work exceeds 64 KiB (decode: input bytes plus a bignum estimate;
%% encode: output bytes) run on a dirty CPU scheduler; smaller ones stay on the
%% calling scheduler.
-module(aion_json).

-export([encode/1, encode_bin/1, decode/1, decode_events/1]).

-export_type([payload/0, path/0]).

-type payload() :: #{binary() | atom() => payload()} | [payload()] | binary()
                 | integer() | float() | atom().
-type path() :: [binary() | non_neg_integer()].

%% Bytes of work above which a call moves to a dirty CPU scheduler.
-define(BUDGET, 65536).

-spec encode(term()) ->
          {ok, iodata()} | {error, {invalid_payload, path(), atom()}}.
%% @doc Encodes Term as JSON text (iodata; currently always one binary).
%% Errors: `{error, {invalid_payload, Path, Why}}' (see the module doc).
encode(Term) ->
    aion_nif:json_encode(Term, ?BUDGET).

-spec encode_bin(term()) ->
          {ok, binary()} | {error, {invalid_payload, path(), atom()}}.
%% @doc Encodes Term as JSON text in one binary. Errors as {@link encode/1}.
encode_bin(Term) ->
    aion_nif:json_encode(Term, ?BUDGET).

-spec decode(iodata()) ->
          {ok, payload()} | {error, {invalid_json, non_neg_integer(), atom()}}.
%% @doc Decodes one JSON text (a binary, or iodata flattened first).
%% Errors: `{error, {invalid_json, ByteOffset, Why}}' (see the module doc);
%% raises `badarg' when the argument is not iodata.
decode(Bin) when is_binary(Bin) ->
    aion_nif:json_decode(Bin, ?BUDGET);
decode(IoData) ->
    aion_nif:json_decode(iolist_to_binary(IoData), ?BUDGET).

%% @doc Decodes stored history rows `{Seq, Type, RecordedAt, Data}' (for
%% `aion_event'): `{ok, [Event]}', or `{mixed, Out}' when some rows need the Erlang
%% decoder (see `aion_nif:json_decode_events/2'). Event maps have atom field names
%% (existing atoms only) plus `seq', `type', `recorded_at'; payload values are
%% decoded as by {@link decode/1}. `badarg' for a non-list.
-spec decode_events([tuple()]) -> {ok | mixed, [map() | {map()} | tuple()]}.
decode_events(Rows) ->
    aion_nif:json_decode_events(Rows, ?BUDGET).
