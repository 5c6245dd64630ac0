%% @doc The operator CLI behind `bin/aion' (an escript built by `make').
%%
%% ```
%% aion list [--status S] [--type T] [--limit N] [--db PATH]
%% aion describe ID [--db PATH]
%% aion history ID [--json] [--run RUN_ID] [--db PATH]
%% aion signal ID NAME [PAYLOAD_JSON] --node NODE [--cookie C]
%% aion cancel ID [REASON] --node NODE [--cookie C]
%% aion terminate ID [REASON] --node NODE [--cookie C]
%% '''
%% `list', `describe' and `history' read the database file (default `aion.db')
%% through `aion_store' and work while an engine holds it (WAL readers see committed
%% state). `signal', `cancel' and `terminate' call the `aion' API on a running node
%% over Erlang distribution.
%%
%% Exit status: 0 on success, 1 on an error (missing database file, unknown workflow
%% id, node unreachable, an error returned by the node), 2 on a usage mistake.
-module(aion_cli).

-export([main/1, run/1, format_timeline/1]).

-define(USAGE,
        "usage: aion COMMAND [ARGS] [OPTIONS]\n"
        "  aion list [--status S] [--type T] [--limit N] [--db PATH]\n"
        "  aion describe ID [--db PATH]\n"
        "  aion history ID [--json] [--run RUN_ID] [--db PATH]\n"
        "  aion signal ID NAME [PAYLOAD_JSON] --node NODE [--cookie COOKIE]\n"
        "  aion cancel ID [REASON] --node NODE [--cookie COOKIE]\n"
        "  aion terminate ID [REASON] --node NODE [--cookie COOKIE]\n"
        "options: --db PATH (default aion.db), --node NAME@HOST, --cookie COOKIE,\n"
        "         --timeout MS (remote calls, default 15000)\n").

-define(STATUSES, ["running", "paused", "stuck", "completed", "failed", "cancelled",
                   "terminated", "timed_out", "continued_as_new"]).

%% @doc Escript entry: runs the command, prints its output and halts with its exit
%% status (0 ok, 1 error, 2 usage).
-spec main([string()]) -> no_return().
main(Args) ->
    %% the CLI reports its own errors; OTP's reports (e.g. distribution failing to
    %% start without epmd) would only repeat them noisily
    ok = logger:set_primary_config(level, none),
    ok = locate_nif(),
    {Code, Out} = run(Args),
    case Code of
        0 -> io:put_chars(Out);
        _ -> io:put_chars(standard_error, Out)
    end,
    erlang:halt(Code).

%% @doc Runs one command without halting: `{ExitStatus, Output}'. Output goes to
%% standard output for status 0 and to standard error otherwise.
-spec run([string()]) -> {0 | 1 | 2, iodata()}.
run(Args) ->
    try
        {Cmd, Pos, Opts} = parse(Args),
        command(Cmd, Pos, Opts)
    of
        {ok, Out} -> {0, Out};
        {error, Msg} -> {1, ["aion: ", Msg, "\n"]}
    catch
        throw:{usage, Msg} -> {2, ["aion: ", Msg, "\n", ?USAGE]}
    end.

%%% ===========================================================================
%%% Argument parsing
%%% ===========================================================================

-define(VALUE_OPTS, ["--db", "--status", "--type", "--limit", "--node", "--cookie",
                     "--run", "--timeout"]).
-define(FLAG_OPTS, ["--json"]).

parse([]) -> throw({usage, "no command given"});
parse(["help" | _]) -> throw({usage, "help"});
parse(["--help" | _]) -> throw({usage, "help"});
parse([Cmd | Rest]) ->
    {Pos, Opts} = parse_opts(Rest, [], #{}),
    {Cmd, Pos, Opts}.

parse_opts([], Pos, Opts) -> {lists:reverse(Pos), Opts};
parse_opts(["--" ++ _ = O | Rest], Pos, Opts) ->
    case {lists:member(O, ?VALUE_OPTS), lists:member(O, ?FLAG_OPTS), Rest} of
        {true, _, [V | Rest1]} -> parse_opts(Rest1, Pos, Opts#{O => V});
        {true, _, []} -> throw({usage, O ++ " needs a value"});
        {_, true, _} -> parse_opts(Rest, Pos, Opts#{O => true});
        _ -> throw({usage, "unknown option " ++ O})
    end;
parse_opts([A | Rest], Pos, Opts) ->
    parse_opts(Rest, [A | Pos], Opts).

allow(Opts, Allowed) ->
    case [O || O <- maps:keys(Opts), not lists:member(O, Allowed)] of
        [] -> ok;
        [O | _] -> throw({usage, O ++ " does not apply to this command"})
    end.

int_opt(Opts, O, Default) ->
    case maps:find(O, Opts) of
        error -> Default;
        {ok, V} ->
            try list_to_integer(V) of
                N when N > 0 -> N;
                _ -> throw({usage, O ++ " must be a positive integer"})
            catch error:badarg -> throw({usage, O ++ " must be a positive integer"})
            end
    end.

%%% ===========================================================================
%%% Commands
%%% ===========================================================================

command("list", [], Opts) ->
    allow(Opts, ["--db", "--status", "--type", "--limit"]),
    Filter0 = #{limit => int_opt(Opts, "--limit", 100)},
    Filter1 = case maps:find("--status", Opts) of
                  {ok, S} ->
                      lists:member(S, ?STATUSES) orelse
                          throw({usage, "unknown status " ++ S ++ " (one of " ++
                                     lists:join(", ", ?STATUSES) ++ ")"}),
                      Filter0#{status => list_to_binary(S)};
                  error -> Filter0
              end,
    Filter = case maps:find("--type", Opts) of
                 {ok, T} -> Filter1#{type => unicode:characters_to_binary(T)};
                 error -> Filter1
             end,
    with_store(Opts, fun(Store) ->
                             {ok, Runs} = aion_store:list(Store, Filter),
                             {ok, format_runs(Runs)}
                     end);
command("list", _, _) -> throw({usage, "list takes no arguments"});
command("describe", [Id], Opts) ->
    allow(Opts, ["--db"]),
    with_store(Opts, fun(Store) -> describe(Store, bin(Id)) end);
command("describe", _, _) -> throw({usage, "describe takes one workflow id"});
command("history", [Id], Opts) ->
    allow(Opts, ["--db", "--json", "--run"]),
    with_store(Opts, fun(Store) -> history(Store, bin(Id), Opts) end);
command("history", _, _) -> throw({usage, "history takes one workflow id"});
command("signal", [Id, Name | MaybePayload], Opts) when length(MaybePayload) =< 1 ->
    allow(Opts, ["--node", "--cookie", "--timeout"]),
    Payload = case MaybePayload of
                  [] -> null;
                  [Json] ->
                      case aion_json:decode(unicode:characters_to_binary(Json)) of
                          {ok, P} -> P;
                          {error, _} -> throw({usage, "the payload is not valid JSON: " ++ Json})
                      end
              end,
    remote(Opts, signal, [bin(Id), bin(Name), Payload]);
command("signal", _, _) -> throw({usage, "signal takes a workflow id, a signal name and an optional JSON payload"});
command(Cmd, [Id | MaybeReason], Opts) when (Cmd =:= "cancel" orelse Cmd =:= "terminate"),
                                             length(MaybeReason) =< 1 ->
    allow(Opts, ["--node", "--cookie", "--timeout"]),
    Reason = case MaybeReason of
                 [] -> <<"operator">>;
                 [R] -> bin(R)
             end,
    remote(Opts, list_to_atom(Cmd), [bin(Id), Reason]);
command(Cmd, _, _) when Cmd =:= "cancel"; Cmd =:= "terminate" ->
    throw({usage, Cmd ++ " takes a workflow id and an optional reason"});
command(Cmd, _, _) ->
    throw({usage, "unknown command " ++ Cmd}).

%%% ---------------------------------------------------------------------------
%%% Reading the database
%%% ---------------------------------------------------------------------------

%% The store's open creates a missing file and writes the schema into a file without
%% one: check both first (read-only), so the CLI never writes. On an aion database the
%% store's open only reads (the schema exists; checkpoints run only after commits) and
%% does not disturb an engine holding the file: WAL readers see committed state.
with_store(Opts, Fun) ->
    Path = maps:get("--db", Opts, "aion.db"),
    case is_aion_db(Path) of
        {error, _} = E ->
            E;
        ok ->
            case aion_store:open(Path, #{synchronous => normal}) of
                {ok, Store} ->
                    try Fun(Store)
                    after aion_store:close(Store)
                    end;
                {error, Reason} ->
                    {error, io_lib:format("cannot open ~ts: ~0p", [Path, Reason])}
            end
    end.

is_aion_db(Path) ->
    case filelib:is_regular(Path) of
        false ->
            {error, ["database file not found: ", Path]};
        true ->
            case aion_sql:open(Path, #{mode => read_only}) of
                {ok, Db} ->
                    R = aion_sql:query(Db, <<"SELECT count(*) FROM sqlite_master"
                                             " WHERE type = 'table' AND name = 'schema_version'">>),
                    ok = aion_sql:close(Db),
                    case R of
                        {ok, [{1}]} -> ok;
                        {ok, [{0}]} -> {error, ["not an aion database: ", Path]};
                        {error, {sqlite, _, Msg}} ->
                            {error, ["cannot read ", Path, ": ", Msg]}
                    end;
                {error, {sqlite, _, Msg}} ->
                    {error, ["cannot open ", Path, ": ", Msg]}
            end
    end.

describe(Store, Id) ->
    case aion_store:current_run(Store, Id) of
        {error, not_found} ->
            {error, ["unknown workflow id: ", Id]};
        {ok, #{run_id := RunId} = Run} ->
            {ok, Tasks} = aion_store:activity_tasks(Store, RunId),
            {ok, Timers} = aion_store:due_timers(Store, 1 bsl 62, 1000000),
            MyTimers = [{T, At} || {R, T, At} <- Timers, R =:= RunId],
            Fields = [{"workflow_id", maps:get(workflow_id, Run)},
                      {"run_id", RunId},
                      {"type", maps:get(type, Run)},
                      {"status", maps:get(status, Run)},
                      {"started_at", time(maps:get(started_at, Run))},
                      {"closed_at", time(maps:get(closed_at, Run))},
                      {"history_length", maps:get(next_seq, Run) - 1},
                      {"parent", maps:get(parent, Run)},
                      {"continued_from", maps:get(continued_from, Run)},
                      {"search_attributes", maps:get(search_attributes, Run)},
                      {"stuck_reason", maps:get(stuck_reason, Run)},
                      {"pending_activities",
                       joined([[A, " (attempt ", integer_to_list(N), ", queue ", Q, ")"]
                               || {_, A, N, Q, _} <- Tasks])},
                      {"pending_timers", joined([[T, " at ", time(At)] || {T, At} <- MyTimers])}],
            {ok, [io_lib:format("~-20s ~ts~n", [K, show(V)]) || {K, V} <- Fields]}
    end.

history(Store, Id, Opts) ->
    RunId = case maps:find("--run", Opts) of
                {ok, R} -> {ok, bin(R)};
                error ->
                    case aion_store:current_run(Store, Id) of
                        {ok, #{run_id := R}} -> {ok, R};
                        {error, not_found} -> error
                    end
            end,
    case RunId of
        error ->
            {error, ["unknown workflow id: ", Id]};
        {ok, Run} ->
            case aion_store:history(Store, Run, 1) of
                {ok, []} ->
                    {error, ["no history for workflow ", Id, " run ", Run]};
                {ok, Rows} ->
                    case maps:is_key("--json", Opts) of
                        true -> {ok, [json_history(Rows), "\n"]};
                        false -> {ok, format_timeline(Rows)}
                    end
            end
    end.

%% The stored events as a JSON array; each event's data is the stored JSON as is.
json_history(Rows) ->
    ["[", lists:join(",\n ", [["{\"seq\":", integer_to_list(Seq), ",\"type\":\"", Type,
                               "\",\"recorded_at\":", integer_to_list(At), ",\"data\":", Data, "}"]
                              || {Seq, Type, At, Data} <- Rows]), "]"].

%% @doc A stored history as a readable timeline: one line per event with its seq,
%% the time since the first event, the event type and its key fields.
-spec format_timeline([aion_event:stored()]) -> iodata().
format_timeline([]) ->
    [];
format_timeline([{_, _, T0, _} | _] = Rows) ->
    %% without the JSON codec (a partial build) the stored JSON is shown as is
    Decode = code:ensure_loaded(aion_json) =:= {module, aion_json},
    [io_lib:format("history from ~ts~n~5s  ~10s  ~-26s ~s~n", [time(T0), "seq", "+time", "event", "details"])
     | [timeline_line(Row, T0, Decode) || Row <- Rows]].

timeline_line({Seq, Type, At, Data}, T0, Decode) ->
    Fields = case Decode of
                 true ->
                     try aion_event:decode({Seq, Type, At, Data}) of
                         Ev -> maps:without([seq, type, recorded_at], Ev)
                     catch _:_ -> #{data => Data}
                     end;
                 false ->
                     #{data => Data}
             end,
    Details = lists:join(" ", [[atom_to_list(K), "=", short(V)]
                               || {K, V} <- lists:sort(maps:to_list(Fields)), V =/= null]),
    io_lib:format("~5b  ~10s  ~-26ts ~ts~n", [Seq, rel(At - T0), Type, truncate(Details, 110)]).

short(V) -> truncate(show(V), 50).

show(null) -> "-";
show(B) when is_binary(B) ->
    case io_lib:printable_unicode_list(unicode:characters_to_list(B)) of
        true -> B;
        false -> io_lib:format("~0p", [B])
    end;
show(I) when is_integer(I) -> integer_to_list(I);
show([]) -> "-";
show(L) when is_list(L) ->
    case io_lib:char_list(L) of
        true -> L;
        false -> json_or_term(L)
    end;
show(V) ->
    json_or_term(V).

joined([]) -> null;
joined(Items) -> iolist_to_binary(lists:join(", ", Items)).

json_or_term(V) ->
    case aion_json:encode_bin(V) of
        {ok, J} -> J;
        {error, _} -> io_lib:format("~0p", [V])
    end.

truncate(IoData, Max) ->
    S = unicode:characters_to_list(iolist_to_binary(io_lib:format("~ts", [IoData]))),
    case length(S) > Max of
        true -> lists:sublist(S, Max - 3) ++ "...";
        false -> S
    end.

rel(Ms) when Ms < 10000 -> io_lib:format("+~bms", [Ms]);
rel(Ms) -> io_lib:format("+~.1fs", [Ms / 1000]).

time(null) -> null;
time(Ms) when is_integer(Ms) ->
    calendar:system_time_to_rfc3339(Ms, [{unit, millisecond}, {offset, "Z"}]).

format_runs([]) ->
    "no workflows\n";
format_runs(Runs) ->
    Head = io_lib:format("~-36s ~-36s ~-20s ~-16s ~-24s ~s~n",
                         ["WORKFLOW_ID", "RUN_ID", "TYPE", "STATUS", "STARTED", "CLOSED"]),
    [Head | [io_lib:format("~-36ts ~-36ts ~-20ts ~-16ts ~-24ts ~ts~n",
                           [W, R, T, S, show(time(St)), show(time(C))])
             || #{workflow_id := W, run_id := R, type := T, status := S, started_at := St,
                  closed_at := C} <- Runs]].

%%% ---------------------------------------------------------------------------
%%% Talking to a running node
%%% ---------------------------------------------------------------------------

remote(Opts, Fun, Args) ->
    NodeS = case maps:find("--node", Opts) of
                {ok, N} -> N;
                error -> throw({usage, "--node is required for this command"})
            end,
    case string:split(NodeS, "@") of
        [_, Host] when Host =/= "" -> ok;
        _ -> throw({usage, "--node must be NAME@HOST"})
    end,
    Node = list_to_atom(NodeS),
    Timeout = int_opt(Opts, "--timeout", 15000),
    case start_distribution(NodeS) of
        ok ->
            case maps:find("--cookie", Opts) of
                {ok, C} -> true = erlang:set_cookie(Node, list_to_atom(C));
                error -> ok
            end,
            case net_adm:ping(Node) of
                pang ->
                    {error, ["node unreachable: ", NodeS,
                             " (is it running, and is the cookie right?)"]};
                pong ->
                    case rpc:call(Node, aion, Fun, Args, Timeout) of
                        ok -> {ok, [atom_to_list(Fun), " ", hd(Args), ": ok\n"]};
                        {error, not_found} -> {error, ["unknown workflow id: ", hd(Args)]};
                        {error, R} -> {error, io_lib:format("~s ~ts: ~0p", [Fun, hd(Args), R])};
                        {badrpc, R} -> {error, io_lib:format("~s ~ts failed on ~s: ~0p",
                                                             [Fun, hd(Args), NodeS, R])};
                        Other -> {error, io_lib:format("unexpected reply: ~0p", [Other])}
                    end
            end;
        {error, Why} ->
            {error, ["node unreachable: ", NodeS, " (", Why, ")"]}
    end.

start_distribution(Target) ->
    case node() of
        nonode@nohost ->
            [_, Host] = string:split(Target, "@"),
            Mode = case lists:member($., Host) of
                       true -> longnames;
                       false -> shortnames
                   end,
            Name = list_to_atom("aion_cli_" ++ os:getpid()),
            case net_kernel:start([Name, Mode]) of
                {ok, _} -> ok;
                {error, _} -> {error, "cannot start distribution; is epmd running?"}
            end;
        _ ->
            ok
    end.

%%% ---------------------------------------------------------------------------

bin(S) -> unicode:characters_to_binary(S).

%% In an escript the library's priv directory is not on disk next to the beams:
%% point the NIF loader at the repository's build (bin/../priv) unless AION_NIF is set.
locate_nif() ->
    case os:getenv("AION_NIF") of
        V when V =:= false; V =:= "" ->
            Bin = filename:dirname(filename:absname(escript:script_name())),
            Cands = [filename:join([Bin, "..", "priv", "aion_nif"]),
                     filename:join([Bin, "..", "_build", "default", "lib", "aion", "priv",
                                    "aion_nif"]),
                     filename:join([Bin, "..", "lib", "aion", "priv", "aion_nif"])],
            case [C || C <- Cands, filelib:is_regular(C ++ ".so")] of
                [Found | _] -> true = os:putenv("AION_NIF", Found), ok;
                [] -> ok
            end;
        _ ->
            ok
    end.
