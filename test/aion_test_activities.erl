%% Activities used by the core suites.
-module(aion_test_activities).
-export([echo/1, echo2/1, add/2, fail/1, hang/0, gate/1, report/2, line/3]).

echo(X) -> {ok, X}.

echo2(X) -> {ok, X}.

add(A, B) -> {ok, A + B}.

fail(Why) -> {error, {non_retryable, Why}}.

hang() -> receive after infinity -> ok end.

%% Tells the process registered as `aion_test_sink' that it waits, then waits
%% for `{release, Reply}'.
gate(Name) ->
    #{attempt := Attempt} = aion_activity:info(),
    aion_test_sink ! {gate, Name, self(), Attempt},
    receive {release, Reply} -> {ok, Reply} end.

report(Tag, Value) ->
    aion_test_sink ! {report, Tag, Value},
    {ok, Tag}.

%% Appends "N A" (activity number, attempt) to File. With Hang = N, the first
%% attempt hangs after writing its line (a kill -9 happens meanwhile).
line(File, N, Hang) ->
    #{attempt := Attempt} = aion_activity:info(),
    ok = file:write_file(File, io_lib:format("~b ~b~n", [N, Attempt]), [append]),
    case N =:= Hang andalso Attempt =:= 1 of
        true -> receive after infinity -> ok end;
        false -> {ok, N}
    end.
