%% @doc HTTP client of the demo shop (`shop_server'), over OTP `httpc'.
%%
%% Uses its own httpc profile (`shop_client') so hanging requests never queue other
%% callers behind them. Parameters and answers are form-encoded.
-module(shop_client).

-export([call/4, get/3, ensure_started/0]).

-define(PROFILE, shop_client).

%% @doc Starts `inets' and the client's httpc profile if needed (idempotent).
-spec ensure_started() -> ok.
ensure_started() ->
    {ok, _} = application:ensure_all_started(inets),
    case inets:start(httpc, [{profile, ?PROFILE}]) of
        {ok, _} -> ok;
        {error, {already_started, _}} -> ok
    end,
    ok = httpc:set_options([{max_sessions, 1000}, {max_keep_alive_length, 0},
                            {keep_alive_timeout, 0}], ?PROFILE).

%% @doc `POST BaseUrl/Op' with form parameters; `TimeoutMs' bounds the whole request.
%% Returns `{ok, HttpStatus, Answer}' (the answer's fields as a map of binaries) or
%% `{error, Reason}' (`timeout', connection errors).
-spec call(string(), atom() | string(),
           [{atom() | binary() | string(), atom() | binary() | string() | integer()}],
           pos_integer()) -> {ok, pos_integer(), #{binary() => binary()}} | {error, term()}.
call(BaseUrl, Op, Params, TimeoutMs) ->
    ok = ensure_started(),
    Body = uri_string:compose_query([{str(K), str(V)} || {K, V} <- Params]),
    Url = BaseUrl ++ "/" ++ str(Op),
    Req = {Url, [], "application/x-www-form-urlencoded", Body},
    answer(httpc:request(post, Req, [{timeout, TimeoutMs}, {connect_timeout, TimeoutMs}],
                         [{body_format, binary}], ?PROFILE)).

%% @doc `GET BaseUrl/Path?Query'; as `call/4'.
-spec get(string(), string(), pos_integer()) ->
          {ok, pos_integer(), #{binary() => binary()}} | {error, term()}.
get(BaseUrl, PathAndQuery, TimeoutMs) ->
    ok = ensure_started(),
    answer(httpc:request(get, {BaseUrl ++ PathAndQuery, []},
                         [{timeout, TimeoutMs}, {connect_timeout, TimeoutMs}],
                         [{body_format, binary}], ?PROFILE)).

answer({ok, {{_, Code, _}, _Headers, Body}}) ->
    Fields = case uri_string:dissect_query(Body) of
                 L when is_list(L) -> maps:from_list([{K, V} || {K, V} <- L, is_binary(V)]);
                 _ -> #{}
             end,
    {ok, Code, Fields};
answer({error, _} = E) ->
    E.

str(A) when is_atom(A) -> atom_to_list(A);
str(I) when is_integer(I) -> integer_to_list(I);
str(B) when is_binary(B) -> unicode:characters_to_list(B);
str(L) when is_list(L) -> L.
