%% @private
%% @doc Workflow-side signals, deadlines, patches and search attributes: the bulk
%% of `aion_workflow:receive_signal/1,2', `send_signal/3', `with_timeout/2',
%% `patched/1', `deprecate_patch/1' and `upsert_search_attributes/1'.
%%
%% Determinism (design.md section 3): the k-th receive of a name consumes the k-th
%% `signal_received' of that name. The non-blocking "is it already there?" check
%% sees only signals with seq =&lt; W; otherwise the receive blocks (with a durable
%% timer for the timeout form) and resolves by the lowest seq between the signal
%% and the timer, so a live run and its replay decide the same way.
%%
%% Per-run state of this module lives in the `sigq' map of the run state:
%% `consumed => #{Name => K}', `deadlines => [TimerId]' (innermost first),
%% `patches => #{ChangeId => boolean()}'.
-module(aion_sigq).

-include("aion_run.hrl").

-export([deadlines/1, expired/2, push_deadline/1, pop_deadline/1,
         receive_signal/2, send_signal/3, patched/1, deprecate_patch/1,
         upsert_search_attributes/1, name/1]).

-define(DEADLINE(Id), {'$aion_deadline', Id}).

%%% ===========================================================================
%%% with_timeout deadlines
%%% ===========================================================================

%% @doc The timer futures of the enclosing `with_timeout/2' calls: every blocking
%% wait also waits on them.
-spec deadlines(#wf{}) -> [aion_replay:future_key()].
deadlines(#wf{sigq = #{deadlines := Ds}}) -> [{timer, Id} || Id <- Ds];
deadlines(_) -> [].

%% @doc A deadline timer resolved a blocking wait: unwinds to its `with_timeout/2'.
-spec expired(aion_event:event(), #wf{}) -> no_return().
expired(#{timer_id := Id}, _S) ->
    throw(?DEADLINE(Id)).

%% @doc Enters the scope of deadline timer `Id'.
-spec push_deadline(binary()) -> ok.
push_deadline(Id) ->
    #wf{sigq = Q} = S = aion_run:st(),
    aion_run:put_st(S#wf{sigq = Q#{deadlines => [Id | maps:get(deadlines, Q, [])]}}).

%% @doc Leaves the scope of deadline timer `Id' (tolerates a stopped run).
-spec pop_deadline(binary()) -> ok.
pop_deadline(Id) ->
    case get(?AION_RUN_KEY) of
        #wf{sigq = Q} = S ->
            aion_run:put_st(S#wf{sigq = Q#{deadlines => lists:delete(Id, maps:get(deadlines, Q, []))}});
        _ ->
            ok
    end.

%%% ===========================================================================
%%% Signals
%%% ===========================================================================

%% @doc A signal name as a binary (atoms are converted); raises `error(badarg)'.
-spec name(term()) -> binary().
name(N) when is_binary(N), N =/= <<>> -> N;
name(N) when is_atom(N) -> atom_to_binary(N, utf8);
name(_) -> error(badarg).

%% @doc `receive_signal(Name, Timeout)' with `Timeout' a non-negative integer (ms)
%% or `infinity'.
-spec receive_signal(binary(), timeout()) ->
          {ok, term()} | {error, timeout} | {error, {cancelled, term()}}.
receive_signal(Name, Timeout) ->
    S = aion_run:yield(aion_run:st_cmd()),
    K = consumed(Name, S) + 1,
    R = S#wf.replay,
    Known = case aion_replay:signal(Name, K, R) of
                {ok, #{seq := Seq} = Found} -> Seq =< aion_replay:watermark(R) andalso Found;
                none -> false
            end,
    Cancel = case S#wf.non_cancellable of
                 0 -> aion_replay:cancel_requested(R);
                 _ -> false
             end,
    if
        Known =/= false ->
            consume(Name, K, Known, S);
        Timeout =:= 0 ->
            {error, timeout};
        Cancel =/= false ->
            %% A visible cancel request: return at once, record no timer.
            {true, Req} = Cancel,
            {error, {cancelled, maps:get(reason, Req, null)}};
        Timeout =:= infinity ->
            case aion_run:block([{signal, Name, K}], S) of
                {1, Ev, S1} -> consume(Name, K, Ev, S1);
                {cancel, Ev, _} -> {error, {cancelled, maps:get(reason, Ev, null)}}
            end;
        true ->
            T = aion_workflow:start_timer(Timeout),
            TKey = aion_workflow:future_key(T),
            Blocked = try aion_run:block([{signal, Name, K}, TKey], aion_run:st())
                      catch throw:?DEADLINE(_) = D ->
                              %% an enclosing with_timeout expired: drop our timer
                              ok = aion_workflow:cancel(T),
                              throw(D)
                      end,
            case Blocked of
                {1, Ev, S1} ->
                    Res = consume(Name, K, Ev, S1),
                    ok = aion_workflow:cancel(T),
                    Res;
                {2, _, _} ->
                    {error, timeout};
                {cancel, Ev, _} ->
                    ok = aion_workflow:cancel(T),
                    {error, {cancelled, maps:get(reason, Ev, null)}}
            end
    end.

consumed(Name, #wf{sigq = Q}) ->
    maps:get(Name, maps:get(consumed, Q, #{}), 0).

consume(Name, K, Ev, #wf{sigq = Q} = S) ->
    C = maps:get(consumed, Q, #{}),
    aion_run:put_st(S#wf{sigq = Q#{consumed => C#{Name => K}}}),
    {ok, maps:get(payload, Ev, null)}.

%% @doc Sends a signal to another workflow, exactly once: live, the signal is
%% appended to the target with a signal id derived from this run and the command
%% ordinal (a re-send after a crash is deduplicated), then `signal_sent{target,
%% name, signal_id, outcome}' is recorded; a replay returns the recorded outcome
%% without sending.
-spec send_signal(binary(), binary(), term()) -> ok | {error, not_found | not_running}.
send_signal(Target, Name, Payload) ->
    S = aion_run:st_cmd(),
    case aion_json:encode_bin(Payload) of
        {ok, _} -> ok;
        {error, Bad} -> error(Bad)
    end,
    Cmd = #{command => signal_sent, target => Target, name => Name},
    case aion_replay:command(Cmd, S#wf.replay) of
        {recorded, Ev, R1} ->
            aion_run:put_st(S#wf{replay = R1}),
            outcome(maps:get(outcome, Ev, <<"ok">>));
        {live, R1} ->
            Sid = <<(S#wf.run_id)/binary, "/", (integer_to_binary(aion_replay:position(R1)))/binary>>,
            Res = case aion_signal:signal(S#wf.ctx, Target, Name, Payload, #{signal_id => Sid}) of
                      ok -> ok;
                      {error, E} when E =:= not_found; E =:= not_running -> {error, E};
                      {error, Other} -> error({send_signal_failed, Other})
                  end,
            Out = case Res of
                      ok -> <<"ok">>;
                      {error, E2} -> atom_to_binary(E2, utf8)
                  end,
            Row = aion_event:encode_row(signal_sent, aion_run:now_ms(),
                                        #{target => Target, name => Name, signal_id => Sid,
                                          outcome => Out}),
            {ok, _, _} = aion_run:append(#{events => [Row]}, S#wf{replay = R1}),
            Res;
        {nondeterminism, D} ->
            aion_run:stuck(D, S)
    end.

outcome(<<"ok">>) -> ok;
outcome(<<"not_found">>) -> {error, not_found};
outcome(<<"not_running">>) -> {error, not_running}.

%%% ===========================================================================
%%% Versioning
%%% ===========================================================================

%% @doc See `aion_workflow:patched/1'.
-spec patched(binary()) -> boolean().
patched(Id) ->
    #wf{sigq = Q, replay = R} = S = aion_run:st_cmd(),
    Patches = maps:get(patches, Q, #{}),
    case Patches of
        #{Id := V} ->
            V;
        _ ->
            Cmd = #{command => patch, id => Id},
            Remember = fun(V, S1) ->
                               #wf{sigq = Q1} = S1,
                               aion_run:put_st(S1#wf{sigq = Q1#{patches => Patches#{Id => V}}}),
                               V
                       end,
            case aion_replay:next_command(R) of
                Cmd ->
                    {recorded, _, R1} = aion_replay:command(Cmd, R),
                    Remember(true, S#wf{replay = R1});
                none ->
                    {live, R1} = aion_replay:command(Cmd, R),
                    Row = aion_event:encode_row(marker_recorded, aion_run:now_ms(),
                                                #{kind => <<"patch">>, id => Id, value => true}),
                    {ok, _, S1} = aion_run:append(#{events => [Row]}, S#wf{replay = R1}),
                    Remember(true, S1);
                _Other ->
                    %% A history recorded before the change: the old branch.
                    Remember(false, S)
            end
    end.

%% @doc See `aion_workflow:deprecate_patch/1'.
-spec deprecate_patch(binary()) -> ok.
deprecate_patch(Id) ->
    #wf{replay = R} = S = aion_run:st_cmd(),
    Cmd = #{command => patch, id => Id},
    case aion_replay:next_command(R) of
        Cmd ->
            {recorded, _, R1} = aion_replay:command(Cmd, R),
            aion_run:put_st(S#wf{replay = R1});
        _ ->
            ok
    end.

%%% ===========================================================================
%%% Search attributes
%%% ===========================================================================

%% @doc See `aion_workflow:upsert_search_attributes/1'.
-spec upsert_search_attributes(map()) -> ok.
upsert_search_attributes(Attrs) when is_map(Attrs) ->
    %% The merge reads the run's row: a pending start is committed first.
    S = aion_run:ensure_started(aion_run:st_cmd()),
    Decoded = case aion_json:encode_bin(Attrs) of
                  {ok, Json} -> {ok, D} = aion_json:decode(Json), D;
                  {error, Bad} -> error(Bad)
              end,
    case aion_replay:command(#{command => search_attributes}, S#wf.replay) of
        {recorded, _, R1} ->
            aion_run:put_st(S#wf{replay = R1});
        {live, R1} ->
            #wf{ctx = #{store := Store}, run_id = RunId} = S,
            Current = case aion_store:get_run(Store, RunId) of
                          {ok, #{search_attributes := Cur}} when is_binary(Cur) ->
                              case aion_json:decode(Cur) of
                                  {ok, M} when is_map(M) -> M;
                                  _ -> #{}
                              end;
                          _ -> #{}
                      end,
            {ok, Merged} = aion_json:encode_bin(maps:merge(Current, Decoded)),
            Row = aion_event:encode_row(search_attributes_upserted, aion_run:now_ms(),
                                        #{attributes => Decoded}),
            {ok, _, _} = aion_run:append(#{events => [Row],
                                           set => #{search_attributes => Merged}},
                                         S#wf{replay = R1}),
            ok;
        {nondeterminism, D2} ->
            aion_run:stuck(D2, S)
    end;
upsert_search_attributes(_) ->
    error(badarg).
