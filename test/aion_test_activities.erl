%% Activities used by the core-a suites.
-module(aion_test_activities).
-export([echo/1, add/2]).

echo(X) -> {ok, X}.
add(A, B) -> {ok, A + B}.
