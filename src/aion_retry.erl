%% @doc Activity options and retry policy: defaults, validation, the backoff formula
%% and retryability. Pure: no processes, no store.
%%
%% Normalised activity options (what {@link validate/1} returns):
%% ```
%% #{task_queue := binary(),                             % default <<"default">>
%%   start_to_close_timeout := pos_integer() | infinity,  % ms, one attempt
%%   schedule_to_close_timeout := pos_integer() | infinity, % ms, all attempts
%%   heartbeat_timeout := pos_integer() | infinity,       % ms, gap between heartbeats
%%   retry := #{initial_interval := pos_integer(),        % ms, default 1000
%%              backoff_coefficient := float(),           % >= 1.0, default 2.0
%%              maximum_interval := pos_integer(),        % ms, default 100 x initial
%%              maximum_attempts := non_neg_integer(),    % 0 = unlimited (default)
%%              non_retryable_errors := [binary()]}}      % default []
%% '''
%% The defaults are Temporal's. `non_retryable_errors' lists error names (atoms or
%% binaries; kept as binaries so they survive the JSON history): a failure reason
%% `R' matches a name `N' when `R' is the atom or binary `N', or a tuple whose first
%% element is that atom or binary (`{bad_card, Detail}' matches `bad_card').
-module(aion_retry).

-export([defaults/0, retry_defaults/0, validate/1, to_json/1,
         backoff/2, backoff/3, attempts_exhausted/2, attempts_exhausted/3,
         classify/2, error_name/1, matches/2]).

-export_type([options/0, retry/0, outcome/0]).

-type retry() :: #{initial_interval := pos_integer(),
                   backoff_coefficient := float(),
                   maximum_interval := pos_integer(),
                   maximum_attempts := non_neg_integer(),
                   non_retryable_errors := [binary()]}.
-type options() :: #{task_queue := binary(),
                     start_to_close_timeout := timeout_ms(),
                     schedule_to_close_timeout := timeout_ms(),
                     heartbeat_timeout := timeout_ms(),
                     retry := retry()}.
-type timeout_ms() :: pos_integer() | infinity.
%% What an attempt produced, as the executor classifies it.
-type outcome() :: {ok, term()}
                 | {retryable, Error :: term()}
                 | {final, Error :: term()}.

-define(DEFAULT_QUEUE, <<"default">>).
-define(DEFAULT_INITIAL, 1000).
-define(DEFAULT_COEFF, 2.0).
-define(MAX_FACTOR, 100).

%% @doc The default activity options (SPEC 2.2): queue `<<"default">>', no timeouts,
%% Temporal's retry policy.
-spec defaults() -> options().
defaults() ->
    #{task_queue => ?DEFAULT_QUEUE,
      start_to_close_timeout => infinity,
      schedule_to_close_timeout => infinity,
      heartbeat_timeout => infinity,
      retry => retry_defaults()}.

%% @doc Temporal's default retry policy: initial 1000 ms, coefficient 2.0, maximum
%% 100 x initial, unlimited attempts, no non-retryable errors.
-spec retry_defaults() -> retry().
retry_defaults() ->
    #{initial_interval => ?DEFAULT_INITIAL,
      backoff_coefficient => ?DEFAULT_COEFF,
      maximum_interval => ?MAX_FACTOR * ?DEFAULT_INITIAL,
      maximum_attempts => 0,
      non_retryable_errors => []}.

%% @doc Validates activity options and fills in the defaults.
%%
%% Accepts the options map of `aion_workflow:start_activity/3' (atom keys) and its
%% JSON form as stored in history and task rows (binary keys, `null' for "no
%% timeout"). Timeouts are milliseconds (`pos_integer()'), `infinity', `null' or
%% `undefined' (both meaning none). `maximum_interval' defaults to 100 times the
%% given `initial_interval'.
%% Errors: `{error, {invalid_options, Detail}}' where Detail is
%% `{unknown_option, Key}', `{bad_value, Key, Value}' or `not_a_map'.
-spec validate(term()) -> {ok, options()} | {error, {invalid_options, term()}}.
validate(Opts) when is_map(Opts) ->
    try
        Norm = maps:fold(fun(K, V, Acc) -> put_option(key(K), V, Acc) end,
                         #{}, Opts),
        Retry = maps:get(retry, Norm, #{}),
        Merged = maps:merge(maps:remove(retry, defaults()), maps:remove(retry, Norm)),
        {ok, Merged#{retry => fill_retry(Retry)}}
    catch
        throw:{invalid, Detail} -> {error, {invalid_options, Detail}}
    end;
validate(_) ->
    {error, {invalid_options, not_a_map}}.

key(K) when is_atom(K) -> K;
key(K) when is_binary(K) ->
    try binary_to_existing_atom(K, utf8)
    catch error:badarg -> throw({invalid, {unknown_option, K}})
    end;
key(K) -> throw({invalid, {unknown_option, K}}).

put_option(task_queue, V, Acc) when is_binary(V), V =/= <<>> -> Acc#{task_queue => V};
put_option(task_queue, V, Acc) when is_atom(V), V =/= undefined, V =/= null ->
    Acc#{task_queue => atom_to_binary(V, utf8)};
put_option(K, V, Acc) when K =:= start_to_close_timeout; K =:= schedule_to_close_timeout;
                           K =:= heartbeat_timeout ->
    Acc#{K => timeout_value(K, V)};
put_option(retry, V, Acc) when is_map(V) ->
    Acc#{retry => maps:fold(fun(K, RV, RAcc) -> put_retry(key(K), RV, RAcc) end, #{}, V)};
put_option(retry, V, Acc) when V =:= null; V =:= undefined -> Acc;
put_option(K, V, _) when K =:= task_queue; K =:= retry -> throw({invalid, {bad_value, K, V}});
put_option(K, _, _) -> throw({invalid, {unknown_option, K}}).

timeout_value(_, V) when is_integer(V), V > 0 -> V;
timeout_value(_, V) when V =:= infinity; V =:= null; V =:= undefined; V =:= <<"infinity">> ->
    infinity;
timeout_value(K, V) -> throw({invalid, {bad_value, K, V}}).

put_retry(initial_interval = K, V, Acc) when is_integer(V), V > 0 -> Acc#{K => V};
put_retry(maximum_interval = K, V, Acc) when is_integer(V), V > 0 -> Acc#{K => V};
put_retry(backoff_coefficient = K, V, Acc) when is_number(V), V >= 1 -> Acc#{K => float(V)};
put_retry(maximum_attempts = K, V, Acc) when is_integer(V), V >= 0 -> Acc#{K => V};
put_retry(non_retryable_errors = K, V, Acc) when is_list(V) ->
    Acc#{K => [error_name_of_option(K, E) || E <- V]};
put_retry(K, V, _) when K =:= initial_interval; K =:= maximum_interval;
                        K =:= backoff_coefficient; K =:= maximum_attempts;
                        K =:= non_retryable_errors ->
    throw({invalid, {bad_value, K, V}});
put_retry(K, _, _) -> throw({invalid, {unknown_option, K}}).

error_name_of_option(_, E) when is_binary(E), E =/= <<>> -> E;
error_name_of_option(_, E) when is_atom(E) -> atom_to_binary(E, utf8);
error_name_of_option(K, E) -> throw({invalid, {bad_value, K, E}}).

fill_retry(R) ->
    Initial = maps:get(initial_interval, R, ?DEFAULT_INITIAL),
    Max = maps:get(maximum_interval, R, ?MAX_FACTOR * Initial),
    case Max < Initial of
        true -> throw({invalid, {bad_value, maximum_interval, Max}});
        false -> ok
    end,
    #{initial_interval => Initial,
      backoff_coefficient => maps:get(backoff_coefficient, R, ?DEFAULT_COEFF),
      maximum_interval => Max,
      maximum_attempts => maps:get(maximum_attempts, R, 0),
      non_retryable_errors => maps:get(non_retryable_errors, R, [])}.

%% @doc The JSON payload form of normalised options (for history and task rows):
%% atom keys, `null' for "no timeout". {@link validate/1} reads it back.
-spec to_json(options()) -> map().
to_json(Opts) ->
    maps:map(fun(_, infinity) -> null;
                (_, V) -> V
             end, Opts).

%% @doc The backoff before the attempt after failed attempt `Attempt' (1-based):
%% `min(initial * coeff^(Attempt-1), maximum)' milliseconds, rounded.
-spec backoff(retry(), pos_integer()) -> non_neg_integer().
backoff(#{initial_interval := I, backoff_coefficient := C, maximum_interval := M}, A)
  when is_integer(A), A >= 1 ->
    %% Compare logarithms first: I * C^(A-1) overflows a float for large A.
    case C =< 1.0 orelse math:log(I) + (A - 1) * math:log(C) < math:log(M) of
        true -> min(M, round(I * math:pow(C, A - 1)));
        false -> M
    end.

%% @doc {@link backoff/2} for attempt numbers counted from `FirstAttempt' (after a
%% reopen attempts continue their numbering, but the policy starts over).
-spec backoff(retry(), pos_integer(), pos_integer()) -> non_neg_integer().
backoff(Retry, Attempt, FirstAttempt) ->
    backoff(Retry, Attempt - FirstAttempt + 1).

%% @doc True when no attempt may follow failed attempt `Attempt' (1-based).
-spec attempts_exhausted(retry(), pos_integer()) -> boolean().
attempts_exhausted(#{maximum_attempts := 0}, _) -> false;
attempts_exhausted(#{maximum_attempts := Max}, A) -> A >= Max.

%% @doc {@link attempts_exhausted/2} counting from `FirstAttempt'.
-spec attempts_exhausted(retry(), pos_integer(), pos_integer()) -> boolean().
attempts_exhausted(Retry, Attempt, FirstAttempt) ->
    attempts_exhausted(Retry, Attempt - FirstAttempt + 1).

%% @doc Classifies what an attempt returned (`{returned, Value}') or raised
%% (`{raised, Class, Reason}'):
%% `{ok, V}' and any other value `V' are success; `{error, {non_retryable, R}}' is a
%% final failure `R'; `{error, R}' is retryable unless `R' matches
%% `non_retryable_errors' (then final); an exception is the retryable failure
%% `{exception, Class, Reason}' (final when `Reason' matches `non_retryable_errors').
-spec classify(retry(), {returned, term()} | {raised, atom(), term()}) -> outcome().
classify(_, {returned, {ok, V}}) -> {ok, V};
classify(_, {returned, {error, {non_retryable, R}}}) -> {final, R};
classify(#{non_retryable_errors := NR}, {returned, {error, R}}) ->
    case matches(R, NR) of
        true -> {final, R};
        false -> {retryable, R}
    end;
classify(_, {returned, V}) -> {ok, V};
classify(#{non_retryable_errors := NR}, {raised, Class, Reason}) ->
    E = {exception, Class, Reason},
    case matches(Reason, NR) of
        true -> {final, E};
        false -> {retryable, E}
    end.

%% @doc The name of an error reason: the atom or binary itself, or the first element
%% of a tuple when that is an atom or binary; `undefined' otherwise.
-spec error_name(term()) -> binary() | undefined.
error_name(R) when is_atom(R) -> atom_to_binary(R, utf8);
error_name(R) when is_binary(R) -> R;
error_name(R) when is_tuple(R), tuple_size(R) > 0 ->
    case element(1, R) of
        A when is_atom(A) -> atom_to_binary(A, utf8);
        B when is_binary(B) -> B;
        _ -> undefined
    end;
error_name(_) -> undefined.

%% @doc True when the name of `Reason' is in `Names' (see {@link error_name/1}).
-spec matches(term(), [binary()]) -> boolean().
matches(_, []) -> false;
matches(Reason, Names) ->
    case error_name(Reason) of
        undefined -> false;
        N -> lists:member(N, Names)
    end.
