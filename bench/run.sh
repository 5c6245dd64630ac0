#!/bin/sh
# make bench: compiles the bench modules into _build/bench and runs the suite
# (bench/aion_bench.erl). Each scenario runs in a fresh erl node on a fresh db.
# BENCH_QUICK=1 for a smoke run; see the header of bench/aion_bench.erl.
set -e
cd "$(dirname "$0")/.."
EBIN=_build/default/lib/aion/ebin
OUT=_build/bench/ebin
mkdir -p "$OUT"
PA="-pa $EBIN -pa $OUT"
if [ "$BENCH_JSON" = etf ]; then
    # Profiling stand-in for a C codec (bench/shim_etf/aion_json.erl): not JSON.
    mkdir -p _build/bench/shim_etf
    erlc -o _build/bench/shim_etf bench/shim_etf/aion_json.erl
    PA="-pa _build/bench/shim_etf $PA"
elif [ ! -f "$EBIN/aion_json.beam" ]; then
    # The json NIF branch is not merged yet: use core-a's pure-Erlang shim.
    mkdir -p _build/bench/shim
    erlc -o _build/bench/shim bench/shim/aion_json.erl
    PA="$PA -pa _build/bench/shim"
fi
# The suite, the profiling helpers and the reproductions (bench/*.erl).
erlc +debug_info -pa "$EBIN" -o "$OUT" bench/*.erl
export AION_ROOT="$(pwd)"
exec erl -noshell -noinput +sbwt none +sbwtdcpu none +sbwtdio none $PA -run aion_bench main
