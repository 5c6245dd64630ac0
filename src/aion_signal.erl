%% @private
%% @doc Client-side signals, queries and cancellation (SPEC 2.1, 3.5, 3.6): the
%% bulk of `aion:signal/3,4', `aion:signal_with_start/5', `aion:query/2,4,5' and
%% `aion:cancel/2,3'.
%%
%% Signals and cancel requests are external appends (design.md section 2): the
%% caller appends `signal_received' / `workflow_cancel_requested' to the current
%% open run (the store refuses a closed run: nothing is appended), then delivers
%% the committed event to the resident workflow process. With a `signal_id' the
%% append is conditional on the history read just before (`expected_seq'): the id
%% is looked for in the run's history and a lost race reads only what is new.
%%
%% Queries are messages to the workflow process, answered at its next yield
%% point; they append nothing. A suspended run is rebuilt by replay to answer.
-module(aion_signal).

-export([signal/5, signal_with_start/5, query/5, cancel/3, signal_row/3]).

-define(TRIES, 5).

-type signal_error() :: not_found | not_running | {invalid_payload, list(), atom()}
                      | {invalid_name, term()} | {invalid_option, atom()} | term().

%%% ===========================================================================
%%% Signals
%%% ===========================================================================

%% @doc The `signal_received' row for `Name' / `Payload' / signal id (or `null'),
%% or the error for a bad name or payload.
-spec signal_row(term(), term(), binary() | null) ->
          {ok, {binary(), integer(), binary()}} | {error, signal_error()}.
signal_row(Name, Payload, Sid) ->
    case check_name(Name) of
        {ok, N} ->
            case aion_event:encode(signal_received,
                                   #{name => N, payload => Payload, signal_id => Sid}) of
                {ok, {T, Data}} -> {ok, {T, erlang:system_time(millisecond), Data}};
                {error, {invalid_payload, [<<"payload">> | Path], Why}} ->
                    {error, {invalid_payload, Path, Why}};
                {error, _} = E -> E
            end;
        error ->
            {error, {invalid_name, Name}}
    end.

check_name(N) when is_binary(N), N =/= <<>> -> {ok, N};
check_name(N) when is_atom(N), N =/= true, N =/= false, N =/= null -> {ok, atom_to_binary(N, utf8)};
check_name(_) -> error.

%% @doc Appends `signal_received' to the current open run of `WorkflowId' and
%% delivers it; `ok' once it is durable. Opts: `signal_id' (binary): a signal
%% with an id already received by the run is a no-op. Errors: `not_found',
%% `not_running' (nothing appended), `{invalid_name, Name}',
%% `{invalid_payload, Path, Why}', `{invalid_option, signal_id}', a store error.
-spec signal(aion_ctx:ctx(), term(), term(), term(), map()) -> ok | {error, signal_error()}.
signal(Ctx, WorkflowId, Name, Payload, Opts) ->
    case signal_id(Opts) of
        {ok, Sid} ->
            case signal_row(Name, Payload, Sid) of
                {ok, Row} when is_binary(WorkflowId) -> to_current(Ctx, WorkflowId, Row, Sid, ?TRIES);
                {ok, _} -> {error, not_found};
                {error, _} = E -> E
            end;
        error ->
            {error, {invalid_option, signal_id}}
    end.

signal_id(#{signal_id := Sid}) when is_binary(Sid), Sid =/= <<>> -> {ok, Sid};
signal_id(#{signal_id := _}) -> error;
signal_id(_) -> {ok, null}.

to_current(_Ctx, _Wid, _Row, _Sid, 0) ->
    {error, not_running};
to_current(#{store := Store} = Ctx, Wid, Row, Sid, Tries) ->
    case aion_store:current_run(Store, Wid) of
        {ok, #{run_id := RunId, status := St}} ->
            case aion_util:is_terminal(St) of
                true ->
                    {error, not_running};
                false ->
                    case to_run(Ctx, RunId, Row, Sid) of
                        {error, closed} ->
                            %% Closed meanwhile (maybe continued as new): look again.
                            to_current(Ctx, Wid, Row, Sid, Tries - 1);
                        Other ->
                            Other
                    end
            end;
        {error, not_found} ->
            {error, not_found}
    end.

%% Appends the signal to an open run: `ok' | `{error, closed}' | `{error, _}'.
to_run(Ctx, RunId, Row, null) ->
    append(Ctx, #{run_id => RunId, events => [Row]});
to_run(Ctx, RunId, Row, Sid) ->
    dedup(Ctx, RunId, Row, Sid, 1).

dedup(#{store := Store} = Ctx, RunId, Row, Sid, From) ->
    {ok, Stored} = aion_store:history(Store, RunId, From),
    case lists:any(fun(E) -> has_signal_id(E, Sid) end, Stored) of
        true ->
            ok;
        false ->
            Next = case Stored of
                       [] -> From;
                       _ -> element(1, lists:last(Stored)) + 1
                   end,
            case append(Ctx, #{run_id => RunId, events => [Row], expected_seq => Next}) of
                {error, {sequence_conflict, _, _}} -> dedup(Ctx, RunId, Row, Sid, Next);
                Other -> Other
            end
    end.

has_signal_id({_, <<"signal_received">>, _, Data}, Sid) ->
    %% Cheap pre-check on the id as the encoder writes it, then decode to be sure.
    {ok, SidJson} = aion_json:encode_bin(Sid),
    case binary:match(Data, SidJson) of
        nomatch -> false;
        _ -> maps:get(signal_id, aion_event:decode({1, <<"signal_received">>, 0, Data}), null)
                 =:= Sid
    end;
has_signal_id(_, _) ->
    false.

%% One external append, then delivery to the resident process.
append(#{store := Store} = Ctx, #{run_id := RunId, events := Rows} = Op) ->
    case aion_store:append(Store, [Op]) of
        {ok, [Seqs]} ->
            aion_deliver:events(Ctx, RunId, [{Seq, T, At, iolist_to_binary(D)}
                                             || {Seq, {T, At, D}} <- lists:zip(Seqs, Rows)]);
        {error, closed} -> {error, closed};
        {error, {not_found, _}} -> {error, not_found};
        {error, _} = E -> E
    end.

%% @doc Signals the open run of workflow `id' (Opts), or starts the workflow with
%% the signal as its second event (one transaction) when no run is open. Returns
%% `{ok, #{workflow_id, run_id}}'. `Start' is `fun(Opts, ExtraRows)' starting a run
%% with extra events (`aion:start' internals). Errors: those of `aion:start/3' and
%% of {@link signal/5}.
-spec signal_with_start(aion_ctx:ctx(), term(), term(), map(),
                        fun((map(), list()) -> {ok, map()} | {error, term()})) ->
          {ok, #{workflow_id := binary(), run_id := binary()}} | {error, term()}.
signal_with_start(Ctx, Name, Payload, Opts, Start) ->
    case signal_id(Opts) of
        error ->
            {error, {invalid_option, signal_id}};
        {ok, Sid} ->
            case signal_row(Name, Payload, Sid) of
                {ok, Row} -> sws(Ctx, Row, Sid, maps:remove(signal_id, Opts), Start, ?TRIES);
                {error, _} = E -> E
            end
    end.

sws(_Ctx, _Row, _Sid, _Opts, _Start, 0) ->
    {error, busy};
sws(#{store := Store} = Ctx, Row, Sid, Opts, Start, Tries) ->
    Open = case Opts of
               #{id := Wid} when is_binary(Wid) ->
                   case aion_store:current_run(Store, Wid) of
                       {ok, #{run_id := RunId, status := St}} ->
                           case aion_util:is_terminal(St) of
                               true -> none;
                               false -> {open, Wid, RunId}
                           end;
                       {error, not_found} -> none
                   end;
               _ -> none
           end,
    case Open of
        {open, W, R} ->
            case to_run(Ctx, R, Row, Sid) of
                ok -> {ok, #{workflow_id => W, run_id => R}};
                {error, E} when E =:= closed; E =:= not_found ->
                    sws(Ctx, Row, Sid, Opts, Start, Tries - 1);
                {error, _} = Err -> Err
            end;
        none ->
            %% `use_existing' would answer with the open run without our event:
            %% an open run is signalled on the next turn instead.
            case Start(Opts#{id_conflict_policy => fail}, [Row]) of
                {ok, _} = Ok ->
                    Ok;
                {error, {already_started, _}} = E ->
                    %% Someone started it meanwhile (signal that run), or the
                    %% id reuse policy refuses a new run (no open run: the error).
                    case Opts of
                        #{id := Wid2} ->
                            case aion_store:current_run(Store, Wid2) of
                                {ok, #{status := St2}} ->
                                    case aion_util:is_terminal(St2) of
                                        false -> sws(Ctx, Row, Sid, Opts, Start, Tries - 1);
                                        true -> E
                                    end;
                                _ -> E
                            end;
                        _ -> E
                    end;
                {error, _} = E ->
                    E
            end
    end.

%%% ===========================================================================
%%% Cancel
%%% ===========================================================================

%% @doc Records `workflow_cancel_requested{reason}' (any term) on the current open
%% run and delivers it. Errors: `not_found', `not_running', a store error.
-spec cancel(aion_ctx:ctx(), term(), term()) -> ok | {error, term()}.
cancel(Ctx, Wid, Reason) when is_binary(Wid) ->
    Row = aion_event:encode_row(workflow_cancel_requested, erlang:system_time(millisecond),
                                #{reason => Reason}),
    cancel(Ctx, Wid, Row, ?TRIES);
cancel(_, _, _) ->
    {error, not_found}.

cancel(_Ctx, _Wid, _Row, 0) ->
    {error, not_running};
cancel(#{store := Store} = Ctx, Wid, Row, Tries) ->
    case aion_store:current_run(Store, Wid) of
        {ok, #{run_id := RunId, status := St}} ->
            case aion_util:is_terminal(St) of
                true ->
                    {error, not_running};
                false ->
                    case append(Ctx, #{run_id => RunId, events => [Row]}) of
                        {error, closed} -> cancel(Ctx, Wid, Row, Tries - 1);
                        Other -> Other
                    end
            end;
        {error, not_found} ->
            {error, not_found}
    end.

%%% ===========================================================================
%%% Queries
%%% ===========================================================================

%% @doc Asks the workflow process of the current run of `Wid' to run its query
%% handler `Name' with `Args'; answered at its next yield point. A suspended run
%% is started (it replays) to answer. Errors: `not_found', `not_running' (closed
%% or stuck run, or it closed while asked), `{unknown_query, Name}',
%% `{query_failed, Reason}', `query_timeout' (no answer within `Timeout' ms).
-spec query(aion_ctx:ctx(), term(), term(), term(), timeout()) -> {ok, term()} | {error, term()}.
query(Ctx, Wid, Name, Args, Timeout) when is_binary(Wid) ->
    case check_name(Name) of
        {ok, N} ->
            Deadline = case Timeout of
                           infinity -> infinity;
                           _ -> erlang:monotonic_time(millisecond) + Timeout
                       end,
            ask(Ctx, Wid, N, Args, Deadline, ?TRIES);
        error ->
            {error, {unknown_query, Name}}
    end;
query(_, _, _, _, _) ->
    {error, not_found}.

ask(_Ctx, _Wid, _N, _Args, _Deadline, 0) ->
    {error, not_running};
ask(#{store := Store} = Ctx, Wid, N, Args, Deadline, Tries) ->
    case aion_store:current_run(Store, Wid) of
        {ok, #{run_id := RunId, status := St}} ->
            case aion_util:is_terminal(St) orelse St =:= <<"stuck">> of
                true ->
                    {error, not_running};
                false ->
                    case resident(Ctx, RunId) of
                        {ok, Pid} ->
                            case ask_pid(Pid, N, Args, Deadline) of
                                down -> ask(Ctx, Wid, N, Args, Deadline, Tries - 1);
                                Reply -> Reply
                            end;
                        error ->
                            ask(Ctx, Wid, N, Args, Deadline, Tries - 1)
                    end
            end;
        {error, not_found} ->
            {error, not_found}
    end.

resident(Ctx, RunId) ->
    case aion_run:whereis(Ctx, RunId) of
        undefined ->
            case aion_run_sup:start_run(Ctx, RunId) of
                {ok, Pid} -> {ok, Pid};
                {error, {already_resident, Pid}} -> {ok, Pid};
                {error, _} -> error
            end;
        Pid ->
            {ok, Pid}
    end.

ask_pid(Pid, N, Args, Deadline) ->
    Alias = erlang:monitor(process, Pid, [{alias, demonitor}]),
    Pid ! {'$aion_query', Alias, Alias, N, Args},
    Left = case Deadline of
               infinity -> infinity;
               _ -> max(0, Deadline - erlang:monotonic_time(millisecond))
           end,
    receive
        {Alias, Reply} ->
            erlang:demonitor(Alias, [flush]),
            Reply;
        {'DOWN', Alias, process, _, _} ->
            down
    after Left ->
            erlang:demonitor(Alias, [flush]),
            {error, query_timeout}
    end.
