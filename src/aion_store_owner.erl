%% @private
%% @doc The first process of an engine: opens the store and the mailbox, creates
%% the `runs' and `waiters' ETS tables and publishes the engine context
%% (`aion_ctx'). It is stopped last; its `terminate/2' withdraws the context and
%% closes the store, which drains the writer, so nothing is written after the
%% engine has stopped.
-module(aion_store_owner).
-behaviour(gen_server).

-export([start_link/1]).
-export([init/1, handle_call/3, handle_cast/2, handle_info/2, terminate/2]).

%% @doc Starts the store owner of an engine (validated engine options).
-spec start_link(map()) -> {ok, pid()} | {error, term()}.
start_link(#{name := Name} = Opts) ->
    gen_server:start_link({local, aion_ctx:proc_name(Name, store_owner)}, ?MODULE, Opts, []).

%% @doc gen_server callback: opens everything; a store that cannot be opened
%% stops the engine start with `{store_open_failed, Reason}'.
-spec init(map()) -> {ok, aion_ctx:ctx()} | {stop, term()}.
init(#{name := Name, db_path := Path} = Opts) ->
    process_flag(trap_exit, true),
    StoreOpts = maps:with([synchronous, busy_timeout, checkpoint_interval, page_size], Opts),
    case aion_store:open(Path, StoreOpts) of
        {ok, Store} ->
            Ctx0 = #{name => Name, store => Store, mailbox => aion_mailbox:new(),
                    runs => ets:new(aion_runs, [set, public, {read_concurrency, true},
                                                {write_concurrency, true}]),
                    waiters => ets:new(aion_waiters, [bag, public,
                                                      {write_concurrency, true}]),
                    wids => ets:new(aion_wids, [set, public, {read_concurrency, true},
                                                {write_concurrency, true}]),
                    opts => Opts, owner => self()},
            Ctx = case Opts of
                      #{max_resident := Max} when is_integer(Max) ->
                          Ctx0#{idle => ets:new(aion_idle, [ordered_set, public,
                                                            {write_concurrency, true}])};
                      _ ->
                          Ctx0
                  end,
            ok = aion_ctx:put(Name, Ctx),
            {ok, Ctx};
        {error, Reason} ->
            {stop, {store_open_failed, Reason}}
    end.

%% @private
-spec handle_call(term(), gen_server:from(), aion_ctx:ctx()) ->
          {reply, {error, unknown_call}, aion_ctx:ctx()}.
handle_call(_Req, _From, Ctx) ->
    {reply, {error, unknown_call}, Ctx}.

%% @private
-spec handle_cast(term(), aion_ctx:ctx()) -> {noreply, aion_ctx:ctx()}.
handle_cast(_Msg, Ctx) ->
    {noreply, Ctx}.

%% @private
-spec handle_info(term(), aion_ctx:ctx()) -> {noreply, aion_ctx:ctx()}.
handle_info(_Msg, Ctx) ->
    {noreply, Ctx}.

%% @doc Withdraws the context and closes the store (drains pending writes).
-spec terminate(term(), aion_ctx:ctx()) -> ok.
terminate(_Reason, #{name := Name, store := Store}) ->
    ok = aion_ctx:erase(Name),
    aion_store:close(Store).
