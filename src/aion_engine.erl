%% @doc Engines: an engine is one database plus the processes that run its
%% workflows (SPEC 2.4, 5.2). The `aion' application starts `aion_default' from its
%% environment; more engines go into the user's supervision tree with
%% {@link child_spec/1} (or under aion's own supervisor with {@link start/1}). Two
%% engines share no state; every client call takes `#{engine => Name}'.
%%
%% Options (defaults in brackets):
%% <ul>
%% <li>`name' (atom) [`aion_default']: the engine's name.</li>
%% <li>`db_path' (file name) [`"aion.db"']: the SQLite database (created if missing).</li>
%% <li>`synchronous' (`full' | `normal') [`full']: SQLite durability; `full' fsyncs
%%     every commit (group commit shares one fsync between many appends).</li>
%% <li>`max_concurrent_activities' (pos_integer) [1000]: attempts running at once on
%%     this node; more are queued.</li>
%% <li>`query_timeout' (ms) [5000]: default time a query waits for its answer.</li>
%% <li>`idle_evict_after' (ms | `infinity') [`infinity']: a workflow process blocked
%%     this long without an arrival is evicted: its run becomes suspended (no
%%     process) and is rebuilt by replay at its next arrival (timer, signal,
%%     activity or child outcome, cancel, query).</li>
%% <li>`max_resident' (pos_integer | `infinity') [`infinity']: when more runs are
%%     resident, the longest-idle blocked ones are evicted (busy runs never are, so
%%     the bound is soft).</li>
%% <li>`max_rehydrations' (pos_integer) [64]: suspended runs replaying at once;
%%     further arrivals for suspended runs queue.</li>
%% <li>`busy_timeout' (ms) [50], `checkpoint_interval' (ms), `page_size' (bytes, a
%%     power of two from 512 to 65536) [1024; used only when the database file is
%%     created]: passed to the store.</li>
%% <li>`timer_horizon' (ms) [60000], `timer_rescan_interval' (ms) [10000],
%%     `timer_scan_limit' (pos_integer) [50000]: tunables of the timer service.</li>
%% <li>`confirm_initial_backoff', `confirm_max_backoff' (ms) [10, 1000]: how the
%%     confirmer re-sends unobserved wake markers.</li>
%% </ul>
-module(aion_engine).

-export([child_spec/1, start_link/1, start/1, stop/1, validate/1, defaults/0,
         is_running/1]).

-define(DEFAULT, aion_default).

%% @doc Default engine options.
-spec defaults() -> map().
defaults() ->
    #{name => ?DEFAULT, db_path => "aion.db", synchronous => full,
      max_concurrent_activities => 1000, query_timeout => 5000,
      idle_evict_after => infinity, max_resident => infinity, max_rehydrations => 64}.

%% @doc A child spec that runs an engine in the caller's supervision tree
%% (`restart => transient', so {@link stop/1} stops it for good). Raises
%% `error({invalid_option, Key})' for a bad option.
-spec child_spec(map()) -> supervisor:child_spec().
child_spec(Opts) ->
    case validate(Opts) of
        {ok, #{name := Name} = V} ->
            #{id => {aion_engine, Name}, start => {?MODULE, start_link, [V]},
              restart => transient, shutdown => infinity, type => supervisor};
        {error, Reason} ->
            error(Reason)
    end.

%% @doc Starts an engine linked to the caller. Returns `{ok, Pid}' (the engine's
%% supervisor), `{error, {invalid_option, Key}}', `{error, {already_started, Pid}}'
%% (an engine of that name runs), or `{error, {shutdown, {failed_to_start_child,
%% store_owner, {store_open_failed, Reason}}}}' when the database cannot be opened.
-spec start_link(map()) -> {ok, pid()} | {error, term()}.
start_link(Opts) ->
    case validate(Opts) of
        {ok, V} -> aion_engine_sup:start_link(V);
        {error, _} = E -> E
    end.

%% @doc Starts an engine under aion's own supervisor (the `aion' application must
%% be running). Errors as {@link start_link/1}.
-spec start(map()) -> {ok, pid()} | {error, term()}.
start(Opts) ->
    case validate(Opts) of
        {ok, V} ->
            case supervisor:start_child(aion_sup, child_spec(V)) of
                {error, {already_started, _}} = E ->
                    E;
                {error, already_present} ->
                    _ = supervisor:delete_child(aion_sup, {aion_engine, maps:get(name, V)}),
                    supervisor:start_child(aion_sup, child_spec(V));
                Other ->
                    Other
            end;
        {error, _} = E ->
            E
    end.

%% @doc Stops engine `Name' and waits until every one of its processes has exited
%% and its store is closed: after `ok' nothing of the engine runs or writes and
%% the database can be opened again. Returns `{error, not_found}' when no such
%% engine runs.
-spec stop(atom()) -> ok | {error, not_found}.
stop(Name) when is_atom(Name) ->
    Id = {aion_engine, Name},
    case whereis(aion_sup) =/= undefined
        andalso lists:keymember(Id, 1, supervisor:which_children(aion_sup)) of
        true ->
            _ = supervisor:terminate_child(aion_sup, Id),
            _ = supervisor:delete_child(aion_sup, Id),
            ok;
        false ->
            case whereis(aion_ctx:proc_name(Name, sup)) of
                undefined ->
                    {error, not_found};
                Pid ->
                    try proc_lib:stop(Pid, shutdown, infinity)
                    catch exit:noproc -> ok
                    end
            end
    end.

%% @doc Whether engine `Name' is running (its context is published).
-spec is_running(atom()) -> boolean().
is_running(Name) ->
    aion_ctx:find(Name) =/= error.

%% @doc Validates engine options and fills in the defaults.
%% Returns `{ok, Options}' or `{error, {invalid_option, Key}}'.
-spec validate(map()) -> {ok, map()} | {error, {invalid_option, term()}}.
validate(Opts) when is_map(Opts) ->
    V = maps:merge(defaults(), Opts),
    case [K || {K, Val} <- maps:to_list(V), not valid(K, Val)] of
        [] -> {ok, V#{db_path => normalise_path(maps:get(db_path, V))}};
        [K | _] -> {error, {invalid_option, K}}
    end;
validate(_) ->
    {error, {invalid_option, options}}.

valid(name, N) -> is_atom(N) andalso N =/= undefined;
valid(db_path, P) -> is_binary(P) orelse (is_list(P) andalso io_lib:char_list(P));
valid(synchronous, S) -> S =:= full orelse S =:= normal;
valid(max_concurrent_activities, N) -> is_integer(N) andalso N > 0;
valid(query_timeout, T) -> is_integer(T) andalso T > 0;
valid(idle_evict_after, T) -> T =:= infinity orelse (is_integer(T) andalso T > 0);
valid(max_resident, N) -> N =:= infinity orelse (is_integer(N) andalso N > 0);
valid(max_rehydrations, N) -> is_integer(N) andalso N > 0;
valid(busy_timeout, T) -> is_integer(T) andalso T >= 0;
valid(checkpoint_interval, T) -> is_integer(T) andalso T > 0;
valid(page_size, P) -> is_integer(P) andalso P >= 512 andalso P =< 65536 andalso P band (P - 1) =:= 0;
valid(timer_horizon, T) -> is_integer(T) andalso T > 0;
valid(timer_rescan_interval, T) -> is_integer(T) andalso T > 0;
valid(timer_scan_limit, T) -> is_integer(T) andalso T > 0;
valid(confirm_initial_backoff, T) -> is_integer(T) andalso T > 0;
valid(confirm_max_backoff, T) -> is_integer(T) andalso T > 0;
valid(_, _) -> false.

normalise_path(P) when is_binary(P) -> unicode:characters_to_list(P);
normalise_path(P) -> P.
