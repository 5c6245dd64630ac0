#!/usr/bin/env bash
# The main job. Until the order-saga demo lands, a store smoke test.
set -euo pipefail
cd "$(dirname "$0")/.."
echo "aion: build OK; $(erl -noshell -pa _build/default/lib/aion/ebin -eval 'io:format("~p", [aion_nif:build_info()]), halt().')"
