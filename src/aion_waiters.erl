%% @private
%% @doc Await bookkeeping: who waits in `aion:await/2' for which run.
%%
%% A waiter inserts `{RunId, Pid, Ref}' into the engine's `waiters' ETS bag
%% **before** it reads the run row; whoever appends a run's terminal event calls
%% {@link notify/2} (or {@link notify/3} with the decoded terminal event) **after**
%% the commit. So a waiter either sees the terminal status in its read or gets the
%% message: no wake-up is lost.
-module(aion_waiters).

-export([register/2, unregister/3, notify/2, notify/3, result/1]).

%% @doc Registers the calling process as a waiter for `RunId'; returns the
%% reference that tags the `{aion_done, Ref, TerminalEvent | undefined}' message.
-spec register(aion_ctx:ctx(), binary()) -> reference().
register(#{waiters := T}, RunId) ->
    Ref = make_ref(),
    true = ets:insert(T, {RunId, self(), Ref}),
    Ref.

%% @doc Removes a registration and flushes a notification that raced it.
-spec unregister(aion_ctx:ctx(), binary(), reference()) -> ok.
unregister(#{waiters := T}, RunId, Ref) ->
    true = ets:delete_object(T, {RunId, self(), Ref}),
    receive {aion_done, Ref, _} -> ok
    after 0 -> ok
    end.

%% @doc Wakes every `aion:await/2' caller of `RunId' (they read the outcome from
%% the store). Called after a terminal event of the run committed.
-spec notify(aion_ctx:ctx(), binary()) -> ok.
notify(Ctx, RunId) ->
    notify(Ctx, RunId, undefined).

%% @doc Like {@link notify/2}, handing the decoded terminal event to the waiters so
%% they need not read it.
-spec notify(aion_ctx:ctx(), binary(), aion_event:event() | undefined) -> ok.
notify(#{waiters := T}, RunId, Event) ->
    lists:foreach(fun({_, Pid, Ref}) -> Pid ! {aion_done, Ref, Event} end,
                  ets:take(T, RunId)).

%% @doc The `aion:await/2' answer for a terminal event: `{ok, Result}',
%% `{error, {failed, Error}}', `{error, {cancelled, Reason}}',
%% `{error, {terminated, Reason}}', `{error, timed_out}', or
%% `{continued, NewRunId}' (the caller follows it).
-spec result(aion_event:event()) ->
          {ok, term()} | {error, term()} | {continued, binary()}.
result(#{type := workflow_completed} = E) -> {ok, maps:get(result, E, null)};
result(#{type := workflow_failed} = E) -> {error, {failed, maps:get(error, E, null)}};
result(#{type := workflow_cancelled} = E) -> {error, {cancelled, maps:get(reason, E, null)}};
result(#{type := workflow_terminated} = E) -> {error, {terminated, maps:get(reason, E, null)}};
result(#{type := workflow_timed_out}) -> {error, timed_out};
result(#{type := workflow_continued_as_new, new_run_id := New}) -> {continued, New}.
