%% @doc Wake confirmation for marker deliveries (SPEC 5.3, design.md section 2).
%%
%% After an event is retained for a workflow process and its marker sent
%% (`aion_deliver'), the deliverer calls {@link watch/4} with the process's wake
%% epoch as it read it before the delivery. The confirmer re-sends the marker with
%% exponential backoff (`confirm_initial_backoff', default 10 ms, doubling up to
%% `confirm_max_backoff', default 1000 ms) until the process's epoch moves from that
%% value (it entered a blocking wait after the delivery, so it drained its retained
%% events first) or it exits (the mailbox NIF reports `exited'). "Moves" is "differs":
%% a long-idle process releases its mailbox record (`aion_mailbox:release/2') and the
%% next one starts again at 0; the marker `retain' sent is what wakes it, the
%% confirmer only repeats it. A surplus marker is harmless: the process finds nothing
%% retained and waits again.
%%
%% Cost per delivery: one message to this server and one map update; the pending
%% entries are checked only when one is due (a timer is armed only while the set is
%% non-empty). Deliveries to the same process share one entry.
-module(aion_confirmer).
-behaviour(gen_server).

-export([start_link/1, watch/4, pending/1]).
-export([init/1, handle_call/3, handle_cast/2, handle_info/2]).

-define(INITIAL, 10).
-define(MAX, 1000).

%% @doc Starts the confirmer of engine `Engine' (registered as
%% `aion_ctx:proc_name(Engine, confirmer)'). Engine options read:
%% `confirm_initial_backoff', `confirm_max_backoff' (ms).
-spec start_link(atom()) -> {ok, pid()} | {error, term()}.
start_link(Engine) ->
    gen_server:start_link({local, aion_ctx:proc_name(Engine, confirmer)}, ?MODULE, Engine, []).

%% @doc Watches a delivery: `Marker' was sent to `Pid' after events were retained
%% for it while its wake epoch was `Epoch'. Returns at once.
-spec watch(aion_ctx:ctx(), pid(), non_neg_integer(), atom()) -> ok.
watch(#{name := Name}, Pid, Epoch, Marker) when is_pid(Pid), is_integer(Epoch), is_atom(Marker) ->
    gen_server:cast(aion_ctx:proc_name(Name, confirmer), {watch, Pid, Epoch, Marker}).

%% @doc The number of processes with an unconfirmed delivery (diagnostic).
-spec pending(aion_ctx:ctx()) -> non_neg_integer().
pending(#{name := Name}) ->
    gen_server:call(aion_ctx:proc_name(Name, confirmer), pending, infinity).

-type state() :: map().

%%% ===========================================================================
%%% gen_server
%%% ===========================================================================

%% State:
%%   entries  #{Pid => #{epoch, markers, backoff, due}}
%%   queue    gb_set of {Due, Pid} (one per entry)
%%   timer    undefined | {TRef, Due}
%% @private
-spec init(atom()) -> {ok, state()}.
init(Engine) ->
    #{mailbox := Mb} = Ctx = aion_ctx:get(Engine),
    Opts = maps:get(opts, Ctx, #{}),
    Initial = max(1, maps:get(confirm_initial_backoff, Opts, ?INITIAL)),
    {ok, #{mailbox => Mb, initial => Initial,
           max => max(Initial, maps:get(confirm_max_backoff, Opts, ?MAX)),
           entries => #{}, queue => gb_sets:new(), timer => undefined}}.

%% @private
-spec handle_call(term(), gen_server:from(), state()) -> {reply, term(), state()}.
handle_call(pending, _From, #{entries := E} = S) ->
    {reply, map_size(E), S};
handle_call(_Req, _From, S) ->
    {reply, {error, unknown_call}, S}.

%% @private
-spec handle_cast(term(), state()) -> {noreply, state()}.
handle_cast({watch, Pid, Epoch, Marker}, #{entries := E, queue := Q, initial := I} = S) ->
    Due = now_ms() + I,
    S1 = case E of
             #{Pid := #{epoch := E0, markers := Ms, due := D0} = Entry} ->
                 %% Confirmed only once the epoch moves from the highest watched value.
                 D = min(D0, Due),
                 S#{entries => E#{Pid => Entry#{epoch => max(E0, Epoch),
                                                markers => add_marker(Marker, Ms),
                                                backoff => I, due => D}},
                    queue => gb_sets:add({D, Pid}, gb_sets:delete({D0, Pid}, Q))};
             _ ->
                 S#{entries => E#{Pid => #{epoch => Epoch, markers => [Marker],
                                           backoff => I, due => Due}},
                    queue => gb_sets:add({Due, Pid}, Q)}
         end,
    {noreply, arm(S1)};
handle_cast(_Msg, S) ->
    {noreply, S}.

%% @private
-spec handle_info(term(), state()) -> {noreply, state()}.
handle_info(tick, S) ->
    {noreply, arm(check(now_ms(), S#{timer => undefined}))};
handle_info(_Msg, S) ->
    {noreply, S}.

add_marker(M, Ms) ->
    case lists:member(M, Ms) of
        true -> Ms;
        false -> [M | Ms]
    end.

%% Settles every due entry: confirmed or exited ones are dropped, the others get
%% their markers again and a doubled backoff.
check(Now, #{queue := Q, entries := E, mailbox := Mb, max := Max} = S) ->
    case gb_sets:is_empty(Q) of
        true ->
            S;
        false ->
            case gb_sets:smallest(Q) of
                {Due, Pid} when Due =< Now ->
                    Q1 = gb_sets:delete({Due, Pid}, Q),
                    #{Pid := #{epoch := Epoch, markers := Ms, backoff := B} = Entry} = E,
                    case confirmed(Mb, Pid, Epoch) of
                        true ->
                            check(Now, S#{queue => Q1, entries => maps:remove(Pid, E)});
                        false ->
                            _ = [Pid ! M || M <- Ms],
                            B1 = min(Max, 2 * B),
                            D1 = Now + B1,
                            check(Now, S#{queue => gb_sets:add({D1, Pid}, Q1),
                                          entries => E#{Pid => Entry#{backoff => B1,
                                                                      due => D1}}})
                    end;
                _ ->
                    S
            end
    end.

%% The target looked (its epoch moved: bumped past the delivery, or its record was
%% released and made again, aion_mailbox:release/2) or is gone. A local pid
%% the mailbox never saw reads epoch 0 even when dead, hence the liveness check.
confirmed(Mb, Pid, Epoch) ->
    case aion_mailbox:epoch(Mb, Pid) of
        exited -> true;
        Cur when Cur =/= Epoch -> true;   % moved (a released record restarts at 0)
        _ -> node(Pid) =:= node() andalso not is_process_alive(Pid)
    end.

%% Keeps one timer armed for the earliest due entry, none when nothing is pending.
arm(#{queue := Q, timer := T} = S) ->
    case gb_sets:is_empty(Q) of
        true ->
            cancel(T),
            S#{timer => undefined};
        false ->
            {Due, _} = gb_sets:smallest(Q),
            case T of
                {_, TDue} when TDue =< Due ->
                    S;
                _ ->
                    cancel(T),
                    Delay = max(0, Due - now_ms()),
                    S#{timer => {erlang:send_after(Delay, self(), tick), Due}}
            end
    end.

cancel(undefined) -> ok;
cancel({TRef, _}) -> _ = erlang:cancel_timer(TRef), ok.

now_ms() -> erlang:monotonic_time(millisecond).
