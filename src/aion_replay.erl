%% @private
%% @doc The replay core: pure functions over a run's history (no processes, no I/O).
%%
%% A workflow process keeps one `replay()' value. It holds every event of the run
%% the process knows (its own appends, deliveries, gap fills, the initial load),
%% indexed by seq, and answers the questions the workflow primitives ask:
%%
%% <ul>
%% <li>{@link command/2}: the code issues its next command (schedule an activity,
%%     start a timer, record a side effect, ...). Commands are matched strictly
%%     and positionally (SPEC 3.2): the n-th command the code issues must be the
%%     n-th command event of the history, of the same kind and with the same key
%%     (activity name, ...). Answers `{recorded, Event}' (replay: return the
%%     recorded outcome), `{live, R}' (nothing recorded: record it now) or
%%     `{nondeterminism, #{expected, got, seq}}'.</li>
%% <li>{@link resolve/3}: a blocking primitive waits for futures. It resolves by the
%%     lowest-seq event of the contiguous known prefix that settles one of them
%%     (or, when cancellable, a cancel request); the knowledge watermark W then
%%     moves to that seq. `pending' means "recorded but pending": wait for more
%%     history.</li>
%% <li>Non-blocking observations ({@link cancel_requested/1}, {@link now/1}) see
%%     arrivals with seq =&lt; W and the run's own commands only, so they come out
%%     the same live and on replay (design.md section 3).</li>
%% </ul>
%%
%% Command events are only ever appended by the workflow process itself, so they
%% are indexed in seq order as they are added; arrivals (completions, fired timers,
%% cancel requests, reopens) are indexed when the contiguous prefix reaches them.
-module(aion_replay).

-export([new/0, add/2, add_all/2, known/1, max_seq/1, gap/1, event/2, has_event/2,
         command/2, own/2, resolve/3, outcome/2, watermark/1, now/1,
         cancel_requested/1, finish/1, outstanding/1, commands/1, position/1,
         describe_event/1, command_kind/1, future_key/1, reopens/1, canonical/1]).
%% Signals, patches (aion_sigq).
-export([signal/3, next_command/1]).

%% Children (aion_child).
-export([child_started/2, open_children/1]).

-export_type([replay/0, command/0, future_key/0, nondeterminism/0]).

-type event() :: aion_event:event().
-type seq() :: pos_integer().
-type future_key() :: {activity, binary()} | {timer, binary()} | {child, binary()}
                    | {signal, binary(), pos_integer()}.   % the K-th signal of a name
-type command() :: #{command := activity | timer | side_effect | patch | child
                               | signal_sent | search_attributes | workflow_return,
                     atom() => term()}.
-type nondeterminism() :: #{expected := command(), got := command(), seq := seq()}.

-record(replay, {
          %% Events 1..tuple_size(base) (a history load, add_all/2 on a new
          %% replay) are in base, every other one in events; likewise commands
          %% 1..tuple_size(cbase) in cbase, the others in cmds.
          base = {} :: tuple(),
          cbase = {} :: tuple(),
          events = #{} :: #{seq() => event()},
          known = 0 :: non_neg_integer(),       % contiguous prefix 1..known
          max = 0 :: non_neg_integer(),         % highest known seq
          cmds = #{} :: #{pos_integer() => event()}, % n-th command event
          ncmds = 0 :: non_neg_integer(),
          last_cmd = 0 :: non_neg_integer(),    % seq of the last indexed command
          pos = 0 :: non_neg_integer(),         % commands consumed by the code
          outcomes = #{} :: #{future_key() => event()}, % lowest-seq settling event (prefix)
          cancel_reqs = [] :: [seq()],          % workflow_cancel_requested, ascending
          w = 1 :: seq(),                       % knowledge watermark
          own = 1 :: seq(),                     % highest seq of own commands consumed
          reopens = 0 :: non_neg_integer(),
          sigs = #{} :: #{{binary(), pos_integer()} => seq()}, % K-th signal_received of a name
          sigc = #{} :: #{binary() => non_neg_integer()}      % signals per name (prefix)
         }).

-opaque replay() :: #replay{}.

%%% ===========================================================================
%%% Building the history
%%% ===========================================================================

%% @doc An empty history. The first event added must eventually be seq 1
%% (`workflow_started'); W and the own-command mark start at seq 1.
-spec new() -> replay().
new() ->
    #replay{}.

%% @doc Adds one decoded event. An event whose seq is already known is ignored
%% (deliveries may repeat what the process appended or loaded).
-spec add(event(), replay()) -> replay().
add(#{seq := Seq} = Ev, #replay{events = Evs} = R) ->
    case has_event(Seq, R) of
        true ->
            R;
        false ->
            R1 = index_command(Ev, R#replay{events = Evs#{Seq => Ev},
                                            max = max(Seq, R#replay.max)}),
            advance(R1)
    end.

%% @doc Adds several decoded events (any order). Same result as adding them one by
%% one with {@link add/2} (the same answers to every question; equal under
%% {@link canonical/1}); a run of events that continues the contiguous prefix in
%% seq order takes a bulk path that builds the indexes at once, and into a new
%% replay (a history load) keeps those events and commands in tuples.
-spec add_all([event()], replay()) -> replay().
add_all(Evs, #replay{known = 0, max = 0, ncmds = 0, base = {}} = R) ->
    load(Evs, R);
add_all(Evs, #replay{known = K, max = K, ncmds = N, last_cmd = L} = R) ->
    bulk(Evs, K, N, L, R, [], [], [], []);
add_all(Evs, R) ->
    lists:foldl(fun add/2, R, Evs).

%% Events Seq = K + 1, K + 2, ... while nothing is known above K: each is new and
%% joins the prefix at once, so the indexes only grow. Es: {Seq, Event}, Cs:
%% {N, Event} commands, Os: {FutureKey, Event}, Cx: cancel requests; all newest first.
%% Reopens and signals (rare, and indexed with state) end the bulk run.
%% With Mode = tuples (a load: R is new, K = 0) Es and Cs hold just the events
%% and the result is {Rest, R1} or R1 (nothing left).
bulk(Evs, K, N, L, R, Es, Cs, Os, Cx) ->
    bulk(Evs, K, N, L, R, Es, Cs, Os, Cx, maps).

bulk([#{seq := Seq, type := T} = Ev | Rest], K, N, L, R, Es, Cs, Os, Cx, Mode)
  when Seq =:= K + 1, T =/= workflow_reopened, T =/= signal_received ->
    Es1 = case Mode of
              maps -> [{Seq, Ev} | Es];
              tuples -> [Ev | Es]
          end,
    case command_kind(Ev) of
        false when T =:= workflow_cancel_requested ->
            bulk(Rest, Seq, N, L, R, Es1, Cs, Os, [Seq | Cx], Mode);
        false ->
            case future_key(Ev) of
                false -> bulk(Rest, Seq, N, L, R, Es1, Cs, Os, Cx, Mode);
                Key -> bulk(Rest, Seq, N, L, R, Es1, Cs, [{Key, Ev} | Os], Cx, Mode)
            end;
        _ ->
            Cs1 = case Mode of
                      maps -> [{N + 1, Ev} | Cs];
                      tuples -> [Ev | Cs]
                  end,
            bulk(Rest, Seq, N + 1, Seq, R, Es1, Cs1, Os, Cx, Mode)
    end;
bulk(Rest, _K, _N, _L, R, [], _, _, _, maps) ->
    lists:foldl(fun add/2, R, Rest);
bulk(Rest, K, N, L, R, Es, Cs, Os, Cx, tuples) ->
    R1 = R#replay{base = list_to_tuple(lists:reverse(Es)), known = K, max = K,
                  cbase = list_to_tuple(lists:reverse(Cs)), ncmds = N, last_cmd = L,
                  outcomes = maps:from_list(Os), cancel_reqs = lists:reverse(Cx)},
    case Rest of
        [] -> R1;
        _ -> {Rest, R1}
    end;
bulk(Rest, K, N, L, #replay{events = E0, cmds = C0, outcomes = O0, cancel_reqs = CR0} = R,
     Es, Cs, Os, Cx, maps) ->
    %% maps:from_list keeps the last of equal keys: Os is newest first, so the
    %% lowest seq settles a future; an outcome known before the run wins.
    R1 = R#replay{events = maps:merge(E0, maps:from_list(Es)), known = K, max = K,
                  cmds = maps:merge(C0, maps:from_list(Cs)), ncmds = N, last_cmd = L,
                  outcomes = maps:merge(maps:from_list(Os), O0),
                  cancel_reqs = CR0 ++ lists:reverse(Cx)},
    lists:foldl(fun add/2, R1, Rest).

%% A load into a new replay: the bulk run from seq 1 goes into tuples (no map to
%% build, and a lookup is one element/2).
load(Evs, R) ->
    case bulk(Evs, 0, 0, 0, R, [], [], [], [], tuples) of
        {Rest, R1} -> lists:foldl(fun add/2, R1, Rest);
        R1 -> R1
    end.

%% @doc The state with its tuple-held prefix moved into the maps: two states that
%% hold the same history and answer every question alike are then `=:=' however
%% they were built (for tests).
-spec canonical(replay()) -> replay().
canonical(#replay{base = B, cbase = CB, events = E, cmds = C} = R) ->
    R#replay{base = {}, cbase = {},
             events = maps:merge(maps:from_list(lists:zip(lists:seq(1, tuple_size(B)),
                                                          tuple_to_list(B))), E),
             cmds = maps:merge(maps:from_list(lists:zip(lists:seq(1, tuple_size(CB)),
                                                        tuple_to_list(CB))), C)}.

%% @doc The end of the contiguous known prefix (every seq 1..K is known).
-spec known(replay()) -> non_neg_integer().
known(#replay{known = K}) -> K.

%% @doc The highest known seq.
-spec max_seq(replay()) -> non_neg_integer().
max_seq(#replay{max = M}) -> M.

%% @doc `{gap, FromSeq}' when an event above the contiguous prefix is known (the
%% missing ones start at FromSeq and must be read from the store), else `none'.
-spec gap(replay()) -> none | {gap, seq()}.
gap(#replay{known = K, max = M}) when M > K -> {gap, K + 1};
gap(_) -> none.

%% @doc The known event with this seq; raises `error({unknown_seq, Seq})'.
-spec event(seq(), replay()) -> event().
event(Seq, #replay{base = B}) when is_integer(Seq), Seq >= 1, Seq =< tuple_size(B) ->
    element(Seq, B);
event(Seq, #replay{events = Evs}) ->
    case Evs of
        #{Seq := Ev} -> Ev;
        _ -> error({unknown_seq, Seq})
    end.

%% @doc Whether an event with this seq is known.
-spec has_event(seq(), replay()) -> boolean().
has_event(Seq, #replay{base = B}) when is_integer(Seq), Seq >= 1, Seq =< tuple_size(B) ->
    true;
has_event(Seq, #replay{events = Evs}) ->
    maps:is_key(Seq, Evs).

%% The n-th command event (1 =< N =< ncmds).
cmd(N, #replay{cbase = CB}) when N =< tuple_size(CB) -> element(N, CB);
cmd(N, #replay{cmds = C}) -> maps:get(N, C).

%% Every command event.
all_cmds(#replay{cbase = CB, cmds = C}) ->
    tuple_to_list(CB) ++ maps:values(C).

%% Command events are indexed as they are added. Only the workflow process
%% appends them, so they arrive in seq order (initial load, then own appends).
index_command(#{seq := Seq} = Ev, #replay{ncmds = N, cmds = C, last_cmd = L} = R) ->
    case command_kind(Ev) of
        false ->
            R;
        _ when Seq < L ->
            error({command_out_of_order, Seq, L});
        _ ->
            R#replay{cmds = C#{N + 1 => Ev}, ncmds = N + 1, last_cmd = Seq}
    end.

%% Moves the contiguous prefix forward, indexing the arrivals it reaches.
advance(#replay{known = K, events = Evs} = R) ->
    Next = K + 1,
    case Evs of
        #{Next := Ev} -> advance(index_arrival(Ev, R#replay{known = Next}));
        _ -> R
    end.

index_arrival(#{type := workflow_cancel_requested, seq := Seq}, R) ->
    R#replay{cancel_reqs = R#replay.cancel_reqs ++ [Seq]};
index_arrival(#{type := workflow_reopened} = Ev, #replay{outcomes = O} = R) ->
    Ids = maps:get(activities, Ev, []),
    O1 = lists:foldl(
           fun(Id, Acc) ->
                   Key = {activity, Id},
                   case Acc of
                       #{Key := #{type := activity_failed}} ->
                           maps:remove(Key, Acc);
                       _ ->
                           Acc
                   end
           end, O, if is_list(Ids) -> Ids; true -> [] end),
    R#replay{outcomes = O1, reopens = R#replay.reopens + 1};
index_arrival(#{type := signal_received, name := Name, seq := Seq},
              #replay{sigs = Sigs, sigc = SC} = R) ->
    K = maps:get(Name, SC, 0) + 1,
    R#replay{sigs = Sigs#{{Name, K} => Seq}, sigc = SC#{Name => K}};
index_arrival(Ev, #replay{outcomes = O} = R) ->
    case future_key(Ev) of
        false -> R;
        Key when is_map_key(Key, O) -> R;
        Key -> R#replay{outcomes = O#{Key => Ev}}
    end.

%% @doc The future an event settles, or `false' (a non-final activity failure
%% settles nothing).
-spec future_key(event()) -> future_key() | false.
future_key(#{type := activity_completed, activity_id := Id}) -> {activity, Id};
future_key(#{type := activity_failed, activity_id := Id} = Ev) ->
    case maps:get(final, Ev, true) of
        true -> {activity, Id};
        _ -> false
    end;
future_key(#{type := activity_cancelled, activity_id := Id}) -> {activity, Id};
future_key(#{type := timer_fired, timer_id := Id}) -> {timer, Id};
future_key(#{type := timer_cancelled, timer_id := Id}) -> {timer, Id};
future_key(#{type := child_workflow_completed, child_id := Id}) -> {child, Id};
future_key(#{type := child_workflow_failed, child_id := Id}) -> {child, Id};
future_key(_) -> false.

%%% ===========================================================================
%%% Commands
%%% ===========================================================================

%% @doc The command kind an event records, or `false' for arrivals and run events.
-spec command_kind(event()) -> atom() | false.
command_kind(#{type := activity_scheduled}) -> activity;
command_kind(#{type := timer_started}) -> timer;
command_kind(#{type := marker_recorded}) -> marker;
command_kind(#{type := child_workflow_started}) -> child;
command_kind(#{type := signal_sent}) -> signal_sent;
command_kind(#{type := search_attributes_upserted}) -> search_attributes;
command_kind(_) -> false.

%% @doc The command descriptor a recorded command event matches: the code's
%% command must equal it exactly.
-spec describe_event(event()) -> command().
describe_event(#{type := activity_scheduled} = Ev) ->
    #{command => activity, name => maps:get(name, Ev, null)};
describe_event(#{type := timer_started}) ->
    #{command => timer};
describe_event(#{type := marker_recorded} = Ev) ->
    case maps:get(kind, Ev, null) of
        <<"side_effect">> -> #{command => side_effect};
        <<"patch">> -> #{command => patch, id => maps:get(id, Ev, null)};
        Other -> #{command => marker, kind => Other}
    end;
describe_event(#{type := child_workflow_started} = Ev) ->
    #{command => child, workflow_type => maps:get(workflow_type, Ev, null)};
describe_event(#{type := signal_sent} = Ev) ->
    #{command => signal_sent, target => maps:get(target, Ev, null),
      name => maps:get(name, Ev, null)};
describe_event(#{type := search_attributes_upserted}) ->
    #{command => search_attributes}.

%% @doc The code issues its next command. `{recorded, Event, R}': the history holds
%% it (replay; the own-command mark moves to its seq). `{live, R}': nothing is
%% recorded at this position; the caller appends the command and then calls
%% {@link add/2} and {@link own/2} with the appended event. `{nondeterminism, D}':
%% the history holds a different command here.
-spec command(command(), replay()) ->
          {recorded, event(), replay()} | {live, replay()} | {nondeterminism, nondeterminism()}.
command(Cmd, #replay{pos = P, ncmds = N} = R) ->
    Next = P + 1,
    case Next =< N of
        true ->
            #{seq := Seq} = Ev = cmd(Next, R),
            case matches(Cmd, Ev) of
                true ->
                    {recorded, Ev, R#replay{pos = Next, own = max(R#replay.own, Seq)}};
                false ->
                    {nondeterminism, #{expected => describe_event(Ev), got => Cmd, seq => Seq}}
            end;
        false ->
            {live, R#replay{pos = Next}}
    end.

%% describe_event(Ev) =:= Cmd, without building the descriptor for the common
%% commands.
matches(#{command := activity, name := Name} = Cmd, #{type := activity_scheduled} = Ev)
  when map_size(Cmd) =:= 2 ->
    case Ev of
        #{name := N} -> N =:= Name;
        _ -> Name =:= null
    end;
matches(#{command := timer} = Cmd, #{type := timer_started}) when map_size(Cmd) =:= 1 ->
    true;
matches(Cmd, Ev) ->
    describe_event(Ev) =:= Cmd.

%% @doc Marks an event the run recorded itself (a live command or a cancel) as
%% consumed: `now/0' moves to it.
-spec own(seq(), replay()) -> replay().
own(Seq, #replay{own = O} = R) ->
    R#replay{own = max(O, Seq)}.

%% @doc The code returned: every recorded command must have been issued.
-spec finish(replay()) -> ok | {nondeterminism, nondeterminism()}.
finish(#replay{pos = P, ncmds = N}) when P >= N ->
    ok;
finish(#replay{pos = P} = R) ->
    #{seq := Seq} = Ev = cmd(P + 1, R),
    {nondeterminism, #{expected => describe_event(Ev),
                       got => #{command => workflow_return}, seq => Seq}}.

%% @doc Number of command events known and number consumed by the code.
-spec commands(replay()) -> non_neg_integer().
commands(#replay{ncmds = N}) -> N.

%% @doc Number of commands the code has issued so far.
-spec position(replay()) -> non_neg_integer().
position(#replay{pos = P}) -> P.

%% @doc Number of `workflow_reopened' events in the known prefix.
-spec reopens(replay()) -> non_neg_integer().
reopens(#replay{reopens = N}) -> N.

%%% ===========================================================================
%%% Futures and observations
%%% ===========================================================================

%% @doc Resolves a blocking wait on `Keys' (positions 1..length(Keys)): the
%% lowest-seq event of the contiguous prefix that settles one of them or, when
%% `Cancellable', a workflow cancel request. W moves to that seq.
%% `pending': nothing in the prefix resolves the wait yet.
-spec resolve([future_key()], boolean(), replay()) ->
          {ok, pos_integer() | cancel, event(), replay()} | pending.
resolve(Keys, Cancellable, #replay{cancel_reqs = CR} = R) ->
    Best0 = case {Cancellable, CR} of
                {true, [C | _]} -> {C, cancel, undefined};
                _ -> none
            end,
    case best(Keys, 1, Best0, R) of
        none ->
            pending;
        {Seq, Which, Ev0} ->
            Ev = case Ev0 of
                     undefined -> event(Seq, R);
                     _ -> Ev0
                 end,
            {ok, Which, Ev, R#replay{w = max(R#replay.w, Seq)}}
    end.

%% The lowest-seq settled key (the first of equal ones): {Seq, Position, Event}.
best([], _I, Best, _R) ->
    Best;
best([Key | Keys], I, Best, R) ->
    case settled(Key, R) of
        {ok, S, Ev} when Best =:= none; S < element(1, Best) -> best(Keys, I + 1, {S, I, Ev}, R);
        _ -> best(Keys, I + 1, Best, R)
    end.

settled({signal, Name, K}, #replay{sigs = Sigs} = R) ->
    case Sigs of
        #{{Name, K} := S} -> {ok, S, event(S, R)};
        _ -> none
    end;
settled(Key, #replay{outcomes = O}) ->
    case O of
        #{Key := #{seq := S} = Ev} -> {ok, S, Ev};
        _ -> none
    end.

%% @doc The `K'-th `signal_received' of `Name' in the contiguous prefix, if any
%% (at any seq: callers compare its seq with {@link watermark/1} for non-blocking
%% observations).
-spec signal(binary(), pos_integer(), replay()) -> {ok, event()} | none.
signal(Name, K, #replay{sigs = Sigs} = R) ->
    case Sigs of
        #{{Name, K} := S} -> {ok, event(S, R)};
        _ -> none
    end.

%% @doc The descriptor of the next recorded command the code has not consumed yet,
%% or `none' (the code is live from here). Used by `patched/1' to look ahead
%% without a nondeterminism error.
-spec next_command(replay()) -> command() | none.
next_command(#replay{pos = P, ncmds = N} = R) when P < N ->
    describe_event(cmd(P + 1, R));
next_command(_) ->
    none.

%% @doc The settling event of a future if the contiguous prefix holds one (at any
%% seq, not only =&lt; W): used to skip a cancel that can no longer matter.
-spec outcome(future_key(), replay()) -> {ok, event()} | none.
outcome(Key, #replay{outcomes = O}) ->
    case O of
        #{Key := Ev} -> {ok, Ev};
        _ -> none
    end.

%% @doc The knowledge watermark W.
-spec watermark(replay()) -> seq().
watermark(#replay{w = W}) -> W.

%% @doc Deterministic time (SPEC 3.3): `recorded_at' of the highest-seq event
%% among the arrivals with seq =&lt; W and the run's own commands so far.
-spec now(replay()) -> integer().
now(#replay{w = W, own = O} = R) ->
    maps:get(recorded_at, event(max(W, O), R)).

%% @doc The first workflow cancel request with seq =&lt; W, if any.
-spec cancel_requested(replay()) -> false | {true, event()}.
cancel_requested(#replay{cancel_reqs = [S | _], w = W} = R) when S =< W ->
    {true, event(S, R)};
cancel_requested(_) ->
    false.

%% @doc Activity ids and timer ids recorded as started with no settling event in
%% the contiguous prefix (what may still be outstanding when the run closes).
-spec outstanding(replay()) -> {[binary()], [binary()]}.
outstanding(#replay{outcomes = O} = R) ->
    lists:foldl(
      fun(Ev, {As, Ts} = Acc) ->
              case Ev of
                  #{type := activity_scheduled, activity_id := Id}
                    when not is_map_key({activity, Id}, O) -> {[Id | As], Ts};
                  #{type := timer_started, timer_id := Id}
                    when not is_map_key({timer, Id}, O) -> {As, [Id | Ts]};
                  _ -> Acc
              end
      end, {[], []}, all_cmds(R)).

%%% ===========================================================================
%%% Children (aion_child)
%%% ===========================================================================

%% @doc The `child_workflow_started' event of child `ChildId', if recorded.
-spec child_started(binary(), replay()) -> {ok, event()} | none.
child_started(ChildId, R) ->
    case [E || E = #{type := child_workflow_started, child_id := Id} <- all_cmds(R),
               Id =:= ChildId] of
        [E | _] -> {ok, E};
        [] -> none
    end.

%% @doc The `child_workflow_started' events with no settling event in the
%% contiguous prefix (children that may still be running).
-spec open_children(replay()) -> [event()].
open_children(#replay{outcomes = O} = R) ->
    [E || E = #{type := child_workflow_started, child_id := Id} <- all_cmds(R),
          not is_map_key({child, Id}, O)].
