#!/usr/bin/env bash
# The main job: `make demo` (500 orders) / `make demo-ci` (ORDERS=100).
# Starts the shop service and an engine node on a fresh database, runs the orders,
# kills the engine with kill -9 about half-way, restarts it on the same database,
# waits for every order and prints the report (see examples/aion_demo.erl).
# Exit status non-zero if any check fails.
set -euo pipefail
cd "$(dirname "$0")/.."

ORDERS="${ORDERS:-500}"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/aion-demo.XXXXXX")"
LIB=_build/default/lib/aion
PATHS=("$PWD/$LIB/ebin" "$PWD/$LIB/examples" "$PWD/$LIB/examples/shop")

# Distribution needs epmd; erl starts it when missing, this makes it explicit.
epmd -daemon >/dev/null 2>&1 || true

echo "aion demo: $ORDERS orders, work directory $WORK"
status=0
timeout 170 erl -sname "aion_demo_driver_$$" -setcookie "aion_demo_$$_$RANDOM" -noshell \
    -pa "${PATHS[@]}" \
    -eval "aion_demo:main([\"$ORDERS\", \"$WORK\", \"${PATHS[0]}\", \"${PATHS[1]}\", \"${PATHS[2]}\"])" \
  || status=$?

if [ "$status" -ne 0 ]; then
  echo "aion demo: FAILED (status $status); engine log: $WORK/engine.log"
  exit "$status"
fi
rm -rf "$WORK"
