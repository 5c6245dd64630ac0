%% @doc Test harness for helper B's processes without the full engine: a supervisor
%% (one_for_all) holding a minimal store owner (store, mailbox, ETS tables, ctx),
%% then the confirmer, the timer service, the activity runner and the executor
%% supervisor, in the engine's order. Also: a fake workflow process that records
%% every delivery, run/activity/timer helpers and history readers.
-module(aion_b_harness).
-behaviour(supervisor).

-export([start/2, stop/1, init/1, owner_start_link/3, owner_init/4,
         create_run/2, create_run/3, fake_workflow/2, schedule/4, schedule_task/2,
         start_timer/4, history/2, events/2, events/3, wait_for/3, wait_until/2,
         run_status/2, new_engine_name/0, collect/2]).

-include_lib("stdlib/include/assert.hrl").

new_engine_name() ->
    list_to_atom("aion_b_" ++ integer_to_list(erlang:unique_integer([positive]))).

%% @doc Starts the engine parts (unlinked from the caller); returns the ctx.
start(Dir, Opts) ->
    Name = maps:get(name, Opts, new_engine_name()),
    DbPath = filename:join(Dir, atom_to_list(Name) ++ ".db"),
    {ok, Sup} = supervisor:start_link(?MODULE, {Name, DbPath, Opts}),
    unlink(Sup),
    Ctx = aion_ctx:get(Name),
    Ctx#{sup_pid => Sup}.

stop(#{sup_pid := Sup}) ->
    Mon = monitor(process, Sup),
    exit(Sup, shutdown),
    receive {'DOWN', Mon, process, Sup, _} -> ok after 60000 -> error(stop_timeout) end.

init({Name, DbPath, Opts}) ->
    Children =
        [#{id => owner, start => {?MODULE, owner_start_link, [Name, DbPath, Opts]},
           shutdown => 10000},
         #{id => confirmer, start => {aion_confirmer, start_link, [Name]}},
         #{id => timers, start => {aion_timers, start_link, [Name]}, shutdown => 30000},
         #{id => runner, start => {aion_activity_runner, start_link, [Name]}},
         #{id => activity_sup, start => {aion_activity_sup, start_link, [Name]},
           type => supervisor, shutdown => infinity}],
    {ok, {#{strategy => one_for_all, intensity => 0, period => 1}, Children}}.

owner_start_link(Name, DbPath, Opts) ->
    proc_lib:start_link(?MODULE, owner_init, [self(), Name, DbPath, Opts]).

owner_init(Parent, Name, DbPath, Opts) ->
    process_flag(trap_exit, true),
    {ok, Store} = aion_store:open(DbPath, #{synchronous => normal}),
    Ctx = #{name => Name, store => Store, mailbox => aion_mailbox:new(),
            runs => ets:new(runs, [public, set]), waiters => ets:new(waiters, [public, bag]),
            opts => Opts},
    aion_ctx:put(Name, Ctx),
    proc_lib:init_ack(Parent, {ok, self()}),
    receive
        {'EXIT', Parent, _} ->
            aion_ctx:erase(Name),
            ok = aion_store:close(Store),
            exit(shutdown)
    end.

%% @doc Creates a running run; returns {RunId, WorkflowId}.
create_run(Ctx, Prefix) ->
    create_run(Ctx, Prefix, #{}).
create_run(#{store := Store}, Prefix, Extra) ->
    N = integer_to_binary(erlang:unique_integer([positive])),
    RunId = <<Prefix/binary, "-run-", N/binary>>,
    WfId = <<Prefix/binary, "-wf-", N/binary>>,
    Now = erlang:system_time(millisecond),
    Ev = aion_event:encode_row(workflow_started, Now,
                               #{workflow_type => <<"test">>, input => null,
                                 workflow_id => WfId, parent => null,
                                 continued_from => null, options => #{}}),
    Op = maps:merge(#{run_id => RunId,
                      create => #{workflow_id => WfId, type => <<"test">>,
                                  status => <<"running">>, started_at => Now},
                      events => [Ev]}, Extra),
    {ok, _} = aion_store:append(Store, [Op]),
    {RunId, WfId}.

%% @doc A fake resident workflow process for RunId: forwards every delivered event
%% to Collector as {delivered, RunId, Event}, bumping its epoch at each wait.
fake_workflow(#{runs := Runs, mailbox := Mb}, {RunId, Collector}) ->
    Parent = self(),
    Pid = spawn(fun() ->
                        true = ets:insert_new(Runs, {RunId, self()}),
                        Parent ! {registered, self()},
                        fake_loop(Mb, RunId, Collector)
                end),
    receive {registered, Pid} -> Pid end.

fake_loop(Mb, RunId, Collector) ->
    [Collector ! {delivered, RunId, aion_event:decode(E)} || {_, E} <- aion_mailbox:take_all(Mb, self())],
    _ = aion_mailbox:bump_epoch(Mb, self()),
    receive
        aion_event -> fake_loop(Mb, RunId, Collector);
        stop -> ok
    end.

%% @doc Records activity_scheduled + task row for an activity and dispatches it.
schedule(Ctx, {RunId, WfId}, Name, {Args, Opts}) ->
    {ok, Run} = aion_store:get_run(maps:get(store, Ctx), RunId),
    ActId = integer_to_binary(maps:get(next_seq, Run)),
    {ok, Task} = aion_activity_runner:new_task(
                   #{run_id => RunId, workflow_id => WfId, activity_id => ActId,
                     name => Name, args => Args, options => Opts,
                     scheduled_at => erlang:system_time(millisecond)}),
    schedule_task(Ctx, Task).

schedule_task(#{store := Store} = Ctx, #{run_id := RunId, scheduled_at := At} = Task) ->
    Ev = aion_event:encode_row(activity_scheduled, At,
                               aion_activity_runner:scheduled_fields(Task)),
    {ok, _} = aion_store:append(Store, [#{run_id => RunId, events => [Ev],
                                          tasks_put => [aion_activity_runner:task_row(Task)]}]),
    ok = aion_activity_runner:dispatch(Ctx, Task),
    maps:get(activity_id, Task).

%% @doc Records timer_started + timer row (fires after Ms); arms it when Arm.
start_timer(#{store := Store} = Ctx, RunId, TimerId, {Ms, Arm}) ->
    Now = erlang:system_time(millisecond),
    FireAt = Now + Ms,
    Ev = aion_event:encode_row(timer_started, Now, #{timer_id => TimerId, fire_at => FireAt}),
    {ok, _} = aion_store:append(Store, [#{run_id => RunId, events => [Ev],
                                          timers_put => [{TimerId, FireAt}]}]),
    case Arm of
        true -> aion_timers:arm(Ctx, RunId, TimerId, FireAt);
        false -> ok
    end,
    FireAt.

history(#{store := Store}, RunId) ->
    {ok, H} = aion_store:history(Store, RunId, 1),
    aion_event:decode_all(H).

%% @doc Decoded events of RunId of the given types.
events(Ctx, RunId) -> history(Ctx, RunId).
events(Ctx, RunId, Types) ->
    [E || #{type := T} = E <- history(Ctx, RunId), lists:member(T, Types)].

run_status(#{store := Store}, RunId) ->
    {ok, #{status := S}} = aion_store:get_run(Store, RunId),
    S.

%% @doc Polls Fun() until it returns true or a non-false value (every 10 ms, up to
%% TimeoutMs); returns that value or fails the test.
wait_until(Fun, TimeoutMs) ->
    Deadline = erlang:monotonic_time(millisecond) + TimeoutMs,
    wait_until_(Fun, Deadline).

wait_until_(Fun, Deadline) ->
    case Fun() of
        false ->
            case erlang:monotonic_time(millisecond) > Deadline of
                true -> error(wait_until_timeout);
                false -> receive after 10 -> wait_until_(Fun, Deadline) end
            end;
        Other ->
            Other
    end.

%% @doc Waits until RunId's history has an event matching Pred; returns it.
wait_for(Ctx, RunId, Pred) ->
    wait_until(fun() ->
                       case [E || E <- history(Ctx, RunId), Pred(E)] of
                           [E | _] -> E;
                           [] -> false
                       end
               end, 20000).

%% @doc Receives N messages matching {Tag, ...} (first element), in order.
collect(_Tag, 0) -> [];
collect(Tag, N) ->
    receive
        Msg when element(1, Msg) =:= Tag -> [Msg | collect(Tag, N - 1)]
    after 20000 -> error({collect_timeout, Tag, N})
    end.
