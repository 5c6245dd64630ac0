%% @private
%% @doc Marker delivery, two-phase completion retention and wake epochs (over
%% `c_src/mailbox.c').
%%
%% When an arrival for a workflow process (an activity result, a signal, a fired
%% timer, a child outcome, any history event appended by someone other than the
%% process itself) has been made durable, the appender calls {@link retain/5}: the
%% payload is copied into the mailbox under `{Pid, Correlation}' and the bare atom
%% `Marker' is sent to `Pid'. Markers are pure wakes; the woken process takes what
%% is retained ({@link take/3}, {@link take_all/2}), exactly once.
%%
%% Each blocking entry of a workflow process calls {@link bump_epoch/2}. A
%% confirmer reads {@link epoch/2} before a delivery and re-sends the marker until
%% the epoch moves (the process looked at its mailbox) or reads `exited'. A
%% process idle for long gives its record back ({@link release/2}); its epoch then
%% reads 0 until its next blocking entry, so "moves" means "differs".
%%
%% The mailbox monitors every pid it has seen. When a process exits, its entries
%% are dropped and its epoch reads `exited' (a tombstone). Tombstones are capped per
%% mailbox (`max_tombstones', default 65,536; the oldest is dropped first, after
%% which that pid's epoch reads 0 again), so a confirmer must also stop when the
%% process is no longer alive. {@link forget/2} drops a pid's record at once.
%%
%% One mailbox per engine: two mailboxes share nothing. Every call is short and
%% runs on a normal scheduler (the payload is copied in and out of the mailbox
%% outside its lock). Pids must be local; anything of the wrong type raises
%% `badarg'.
-module(aion_mailbox).

-export([new/0, new/1, retain/5, take/3, take_all/2, bump_epoch/2, epoch/2,
         count/1, forget/2, release/2]).

-export_type([mailbox/0, options/0]).

-opaque mailbox() :: reference().
%% A mailbox resource (garbage collected when no longer referenced).
-type options() :: #{max_tombstones => non_neg_integer()}.
%% `max_tombstones': how many exit tombstones are kept (default 65,536).

-define(DEFAULT_MAX_TOMBSTONES, 65536).

%% @doc A new, empty mailbox with default options (see {@link new/1}).
-spec new() -> mailbox().
new() ->
    new(#{}).

%% @doc A new, empty mailbox. `max_tombstones' (default 65,536) caps the number of
%% exited pids whose epoch keeps reading `exited'. Raises `badarg' for bad options
%% and `enomem' when memory is exhausted.
-spec new(options()) -> mailbox().
new(Opts) when is_map(Opts) ->
    Max = maps:get(max_tombstones, Opts, ?DEFAULT_MAX_TOMBSTONES),
    case maps:keys(maps:remove(max_tombstones, Opts)) of
        [] when is_integer(Max), Max >= 0 -> aion_nif:mailbox_new(Max);
        _ -> error(badarg, [Opts])
    end;
new(Opts) ->
    error(badarg, [Opts]).

%% @doc Retains a copy of `Payload' for `Pid' under `Correlation' and sends the atom
%% `Marker' to `Pid'. An entry already retained under the same `{Pid, Correlation}'
%% (compared with `=:=') is replaced, and the replacement counts as the newest in
%% retain order. Returns `{error, exited}', retaining nothing, when `Pid' is dead or
%% its exit was already recorded. `Pid' must be a local pid and `Marker' an atom,
%% otherwise `badarg'.
-spec retain(mailbox(), pid(), term(), term(), atom()) -> ok | {error, exited}.
retain(Mailbox, Pid, Correlation, Payload, Marker) ->
    aion_nif:mailbox_retain(Mailbox, Pid, Correlation, Payload, Marker).

%% @doc Removes and returns the payload retained for `Pid' under `Correlation'
%% (compared with `=:='), or `none'. A retained payload is returned exactly once.
-spec take(mailbox(), pid(), term()) -> {ok, term()} | none.
take(Mailbox, Pid, Correlation) ->
    aion_nif:mailbox_take(Mailbox, Pid, Correlation).

%% @doc Removes and returns every entry retained for `Pid' as `{Correlation, Payload}'
%% pairs, oldest first (retain order).
-spec take_all(mailbox(), pid()) -> [{term(), term()}].
take_all(Mailbox, Pid) ->
    aion_nif:mailbox_take_all(Mailbox, Pid).

%% @doc Increments and returns the wake epoch of `Pid' (the first bump returns 1).
%% Called by a workflow process (`Pid' = `self()') each time it enters a blocking
%% wait. Raises `exited' when `Pid' is not alive (misuse: only a live process bumps
%% its own epoch).
-spec bump_epoch(mailbox(), pid()) -> pos_integer().
bump_epoch(Mailbox, Pid) ->
    aion_nif:mailbox_bump_epoch(Mailbox, Pid).

%% @doc The wake epoch of `Pid': 0 for a pid the mailbox has not seen (or whose
%% tombstone was dropped), `exited' once its exit was recorded.
-spec epoch(mailbox(), pid()) -> non_neg_integer() | exited.
epoch(Mailbox, Pid) ->
    aion_nif:mailbox_epoch(Mailbox, Pid).

%% @doc The number of retained entries over all pids (diagnostic).
-spec count(mailbox()) -> non_neg_integer().
count(Mailbox) ->
    aion_nif:mailbox_count(Mailbox).

%% @doc Drops the entries, the monitor and any tombstone of `Pid'; afterwards its
%% epoch reads 0. Always `ok'.
-spec forget(mailbox(), pid()) -> ok.
forget(Mailbox, Pid) ->
    aion_nif:mailbox_forget(Mailbox, Pid).

%% @doc Drops the record of `Pid' (its epoch and its monitor, about 300 bytes) if
%% nothing is retained for it: `ok' (also when there is no record, or a tombstone);
%% `busy' when entries are retained (nothing changes: their marker is on its way).
%% Afterwards the epoch reads 0; the next {@link retain/5} or {@link bump_epoch/2}
%% makes a new record. Used by a workflow process that has been blocked for a while
%% (`aion_run'), so a sleeping workflow does not pay for a record it does not use.
-spec release(mailbox(), pid()) -> ok | busy.
release(Mailbox, Pid) ->
    aion_nif:mailbox_release(Mailbox, Pid).
