%% @doc A worker serving named activities on a task queue (SPEC 2.3).
%%
%% ```
%% {ok, W} = aion_worker:start_link(#{task_queue => <<"payments">>,
%%                                    activities => #{<<"charge">> => {payments, charge}},
%%                                    max_concurrency => 10}).
%% '''
%% A workflow calling `aion_workflow:execute_activity(<<"charge">>, Args,
%% #{task_queue => <<"payments">>})' has each attempt run by one of the workers of
%% that queue, on any node of the Erlang cluster that runs the `aion' application
%% (workers are found through the `pg' scope `aion_pg'). The attempt runs in a
%% process on the worker's node linked to the engine-side attempt process, so a
%% timeout or cancel on the engine kills it, and a lost node fails the attempt
%% (retryably). At most `max_concurrency' (default 100) attempts run per worker;
%% more wait in the worker's queue. While no worker serves the queue, the attempt
%% waits (its `start_to_close_timeout' runs). An activity name the chosen worker
%% does not serve fails the attempt with the retryable error
%% `{unknown_activity, Name}'. The activity sees the same `aion_activity' API as an
%% `{M, F}' activity.
-module(aion_worker).
-behaviour(gen_server).

-export([start_link/1, stop/1, execute/3, scope/0]).
-export([init/1, handle_call/3, handle_cast/2, handle_info/2, terminate/2]).

-define(SCOPE, aion_pg).
-define(DEFAULT_MAX, 100).

%% @doc Starts a worker linked to the caller. Options: `task_queue' (binary,
%% required), `activities' (map of binary name => `{Module, Function}', required),
%% `max_concurrency' (pos_integer, default 100). Errors: `{error, {invalid_option,
%% Key}}'; `{error, no_scope}' when the `aion' application is not running on this
%% node.
-spec start_link(#{task_queue := binary(), activities := #{binary() => {module(), atom()}},
                   max_concurrency => pos_integer()}) -> {ok, pid()} | {error, term()}.
start_link(Opts) ->
    case validate(Opts) of
        ok ->
            case whereis(?SCOPE) of
                undefined -> {error, no_scope};
                _ -> gen_server:start_link(?MODULE, Opts, [])
            end;
        {error, _} = E ->
            E
    end.

%% @doc Stops a worker (attempts running on it are killed and fail retryably).
-spec stop(pid()) -> ok.
stop(Worker) ->
    gen_server:stop(Worker).

%% @doc The `pg' scope workers join (started by the `aion' application).
-spec scope() -> atom().
scope() -> ?SCOPE.

validate(#{task_queue := Q, activities := Acts} = Opts) when is_binary(Q), is_map(Acts) ->
    case maps:get(max_concurrency, Opts, ?DEFAULT_MAX) of
        N when is_integer(N), N > 0 ->
            case [K || {K, V} <- maps:to_list(Acts),
                       not (is_binary(K) andalso is_tuple(V) andalso tuple_size(V) =:= 2
                            andalso is_atom(element(1, V)) andalso is_atom(element(2, V)))] of
                [] -> ok;
                _ -> {error, {invalid_option, activities}}
            end;
        _ ->
            {error, {invalid_option, max_concurrency}}
    end;
validate(#{task_queue := Q}) when not is_binary(Q) -> {error, {invalid_option, task_queue}};
validate(_) -> {error, {invalid_option, activities}}.

%% @private
%% @doc Runs one attempt of the named activity `Name' on a worker of `Queue' (called
%% in the engine's attempt process, whose `aion_activity' context it forwards).
%% Returns what the activity returned; re-raises what it raised.
-spec execute(binary(), binary(), [term()]) -> term().
execute(Queue, Name, Args) ->
    Group = {?MODULE, Queue},
    {Ref, Members} = pg:monitor(?SCOPE, Group),
    Worker = pick(Ref, Group, Members),
    pg:demonitor(?SCOPE, Ref),
    flush_pg(Ref),
    Info = get(aion_activity),
    Tag = make_ref(),
    case gen_server:call(Worker, {run, Name, Args, Info, self(), Tag}, infinity) of
        {started, _ActPid} ->
            receive
                {Tag, {returned, V}} -> V;
                {Tag, {raised, C, R, St}} -> erlang:raise(C, R, St)
            end;
        {error, Reason} ->
            {error, Reason}
    end.

pick(_Ref, _Group, [_ | _] = Members) ->
    lists:nth(rand:uniform(length(Members)), Members);
pick(Ref, Group, []) ->
    receive
        {Ref, join, Group, Pids} -> pick(Ref, Group, Pids)
    end.

flush_pg(Ref) ->
    receive {Ref, _, _, _} -> flush_pg(Ref) after 0 -> ok end.

-type state() :: map().

%%% ===========================================================================
%%% gen_server
%%% ===========================================================================

%% @private
-spec init(map()) -> {ok, state()}.
init(#{task_queue := Q, activities := Acts} = Opts) ->
    process_flag(trap_exit, true),
    ok = pg:join(?SCOPE, {?MODULE, Q}, self()),
    {ok, #{acts => Acts, max => maps:get(max_concurrency, Opts, ?DEFAULT_MAX),
           running => #{}, queue => queue:new()}}.

%% @private
-spec handle_call(term(), gen_server:from(), state()) ->
          {reply, term(), state()} | {noreply, state()}.
handle_call({run, Name, Args, Info, Caller, Tag}, From, #{acts := Acts} = S) ->
    case Acts of
        #{Name := MF} ->
            {noreply, fill(S#{queue => queue:in({From, MF, Args, Info, Caller, Tag},
                                               maps:get(queue, S))})};
        _ ->
            {reply, {error, {unknown_activity, Name}}, S}
    end;
handle_call(_Req, _From, S) ->
    {reply, {error, unknown_call}, S}.

%% @private
-spec handle_cast(term(), state()) -> {noreply, state()}.
handle_cast(_Msg, S) ->
    {noreply, S}.

%% @private
-spec handle_info(term(), state()) -> {noreply, state()}.
handle_info({'DOWN', _, process, Pid, _}, #{running := R} = S) ->
    {noreply, fill(S#{running => maps:remove(Pid, R)})};
handle_info(_Msg, S) ->
    {noreply, S}.

%% @private
-spec terminate(term(), state()) -> ok.
terminate(_Reason, #{running := R}) ->
    [exit(Pid, kill) || Pid <- maps:keys(R)],
    ok.

fill(#{max := Max, running := R} = S) when map_size(R) >= Max ->
    S;
fill(#{queue := Q, running := R} = S) ->
    case queue:out(Q) of
        {empty, _} ->
            S;
        {{value, {From, {M, F}, Args, Info, Caller, Tag}}, Q1} ->
            Executor = maps:get(executor, Info, undefined),
            Pid = spawn(fun() -> run(Caller, Tag, Executor, Info, M, F, Args) end),
            _ = monitor(process, Pid),
            gen_server:reply(From, {started, Pid}),
            fill(S#{queue => Q1, running => R#{Pid => true}})
    end.

run(Caller, Tag, Executor, Info, M, F, Args) ->
    %% Linked to the engine-side attempt: if it is killed (timeout, cancel) or its
    %% node goes away, this attempt dies too.
    link(Caller),
    ok = aion_activity:init_attempt(Executor, maps:remove(executor, Info)),
    Result = try
                 {returned, apply(M, F, Args)}
             catch
                 Class:Reason:Stack -> {raised, Class, Reason, Stack}
             end,
    Caller ! {Tag, Result},
    unlink(Caller).
