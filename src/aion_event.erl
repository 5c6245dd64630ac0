%% @private
%% @doc History event codec: between the event maps of SPEC section 4 and the rows
%% of the `events' table.
%%
%% A stored event is `{Seq, Type, RecordedAt, Data}' where `Type' is the snake_case
%% type as a binary and `Data' a JSON object of the event's fields. Fields that carry
%% arbitrary Erlang terms (`error', `reason') are stored as `{"etf": Base64}' of the
%% external term format so atoms, tuples and the like survive a restart unchanged;
%% every other field is a JSON payload. Decoding yields
%% `#{seq, type, recorded_at, Field => Value}' with atom field names and payload
%% values in their decoded form (binary map keys), exactly what the workflow sees live
%% and on replay.
-module(aion_event).

-export([encode/2, encode_row/3, decode/1, decode_all/1, decode_slow/1, types/0,
         term_to_json/1, json_to_term/1]).

-export_type([stored/0, event/0, type/0]).

-type stored() :: {Seq :: pos_integer(), Type :: binary(), RecordedAt :: integer(),
                   Data :: binary()}.
-type event() :: #{seq := pos_integer(), type := type(), recorded_at := integer(),
                   atom() => term()}.
-type type() :: workflow_started | workflow_completed | workflow_failed
              | workflow_cancel_requested | workflow_cancelled | workflow_terminated
              | workflow_timed_out | workflow_continued_as_new | workflow_paused
              | workflow_resumed | workflow_reopened | search_attributes_upserted
              | marker_recorded | activity_scheduled | activity_started
              | activity_completed | activity_failed | activity_cancelled
              | timer_started | timer_fired | timer_cancelled | signal_received
              | signal_sent | child_workflow_started | child_workflow_completed
              | child_workflow_failed.

-define(TERM_FIELDS, [error, reason]).

%% @doc Every event type of SPEC section 4.
-spec types() -> [type()].
types() ->
    [workflow_started, workflow_completed, workflow_failed, workflow_cancel_requested,
     workflow_cancelled, workflow_terminated, workflow_timed_out,
     workflow_continued_as_new, workflow_paused, workflow_resumed, workflow_reopened,
     search_attributes_upserted, marker_recorded, activity_scheduled, activity_started,
     activity_completed, activity_failed, activity_cancelled, timer_started, timer_fired,
     timer_cancelled, signal_received, signal_sent, child_workflow_started,
     child_workflow_completed, child_workflow_failed].

%% @doc Encodes an event's fields for the store: `{TypeBinary, JsonData}'.
%% Errors: `{error, {invalid_payload, Path, Why}}' when a payload field is not JSON
%% (Path starts with the field name).
-spec encode(type(), #{atom() => term()}) ->
          {ok, {binary(), binary()}} | {error, {invalid_payload, list(), atom()}}.
encode(Type, Fields) when is_atom(Type), is_map(Fields) ->
    Wrapped = maps:map(fun(K, V) ->
                               case lists:member(K, ?TERM_FIELDS) of
                                   true -> term_to_json(V);
                                   false -> V
                               end
                       end, Fields),
    case aion_json:encode_bin(Wrapped) of
        {ok, Json} -> {ok, {atom_to_binary(Type), Json}};
        {error, _} = E -> E
    end.

%% @doc Encodes an event into the `{Type, RecordedAt, Data}' form of an append op.
%% Raises `error({invalid_payload, Path, Why})' on a non-JSON payload: callers
%% validate user payloads before they reach here.
-spec encode_row(type(), integer(), #{atom() => term()}) -> {binary(), integer(), binary()}.
encode_row(Type, RecordedAt, Fields) ->
    case encode(Type, Fields) of
        {ok, {T, Data}} -> {T, RecordedAt, Data};
        {error, Reason} -> error(Reason)
    end.

%% @doc Decodes a stored event into its SPEC 4 map.
-spec decode(stored()) -> event().
decode(Stored) ->
    [Event] = decode_all([Stored]),
    Event.

%% @doc Decodes a list of stored events. The JSON NIF builds the maps directly
%% (field names as existing atoms); rows it leaves alone (a field name that is not
%% an atom yet, ...) go through {@link decode_slow/1}, with the same result.
-spec decode_all([stored()]) -> [event()].
decode_all(Stored) ->
    case aion_json:decode_events(Stored) of
        {ok, Events} -> Events;
        {mixed, Out} -> [finish(E) || E <- Out]
    end.

finish(#{} = Event) -> Event;
finish({Event}) -> unwrap(reason, unwrap(error, Event));
finish(Row) -> decode_slow(Row).

unwrap(Key, Event) ->
    case Event of
        #{Key := V} -> Event#{Key := json_to_term(V)};
        _ -> Event
    end.

%% @doc The reference decoder, in Erlang: JSON decode, then every field name to an
%% atom (created if new) and term fields unwrapped. {@link decode_all/1} gives the
%% same result (the tests check it) and uses this for the rows the NIF leaves alone.
%% Raises on a row that is not a stored event (bad JSON, unknown type).
-spec decode_slow(stored()) -> event().
decode_slow({Seq, Type, RecordedAt, Data}) ->
    {ok, Fields} = aion_json:decode(Data),
    maps:fold(fun(K, V, Acc) ->
                      Key = binary_to_atom(K, utf8),
                      Value = case lists:member(Key, ?TERM_FIELDS) of
                                  true -> json_to_term(V);
                                  false -> V
                              end,
                      Acc#{Key => Value}
              end,
              #{seq => Seq, type => binary_to_existing_atom(Type, utf8),
                recorded_at => RecordedAt},
              Fields).

%% @doc Wraps any term as `#{<<"etf">> => Base64}' for storage inside JSON.
-spec term_to_json(term()) -> #{binary() => binary()}.
term_to_json(Term) ->
    #{<<"etf">> => base64:encode(term_to_binary(Term))}.

%% @doc Unwraps a value stored by {@link term_to_json/1}; other values pass through.
-spec json_to_term(term()) -> term().
json_to_term(#{<<"etf">> := B64}) when is_binary(B64) ->
    binary_to_term(base64:decode(B64));
json_to_term(Other) ->
    Other.
