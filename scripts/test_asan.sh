#!/usr/bin/env bash
# NIF-level EUnit tests under AddressSanitizer + UndefinedBehaviorSanitizer
# (`make test-asan`).
#
#   1. builds priv/aion_nif_asan.so (make -C c_src asan: -fsanitize=address,undefined);
#   2. compiles the test modules (rebar3 as test compile);
#   3. runs every test/aion_*_tests.erl that exists (discovered by glob) in one `erl`
#      that preloads the ASan runtime and loads the sanitized library through
#      AION_NIF;
#   4. fails if any test fails, the VM dies (a sanitizer aborts it), or any
#      sanitizer report was written.
#
# Notes
# - beam.smp itself is not instrumented, so the ASan runtime must come first in
#   the process: LD_PRELOAD. libubsan is a dependency of the sanitized library and
#   is loaded with it.
# - `+Mea min` turns off the BEAM's own memory allocators so enif_alloc and term
#   heaps go through malloc, where ASan can see overflows and use-after-free;
#   without it most NIF memory lives inside ERTS carriers that ASan cannot check.
# - detect_leaks=0: the BEAM does not free everything at exit (allocator
#   carriers, static tables, threads), so LeakSanitizer would report the VM's own
#   memory on every run. Leaks in our code are found by the tests that measure
#   what a mailbox/store releases, and by valgrind when needed.
# - Reports go to files under _build/asan/ (log_path), so they are captured even
#   when the VM's stderr is lost; any such file fails the run.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)
REBAR=${REBAR:-rebar3}
LOGDIR="$ROOT/_build/asan"
EBIN="$ROOT/_build/test/lib/aion/ebin"
TESTBEAMS="$ROOT/_build/test/lib/aion/test"

make -C c_src asan
"$REBAR" as test compile

LIBASAN=$(gcc -print-file-name=libasan.so)
if [ ! -e "$LIBASAN" ]; then
    echo "test_asan: libasan.so not found (gcc -print-file-name=libasan.so gave '$LIBASAN')" >&2
    exit 1
fi
LIBASAN=$(readlink -f "$LIBASAN")

# Test modules: every test/aion_*_tests.erl present now, if it was compiled.
mods=()
for src in test/aion_*_tests.erl; do
    [ -e "$src" ] || continue
    m=$(basename "$src" .erl)
    if [ -e "$TESTBEAMS/$m.beam" ] || [ -e "$EBIN/$m.beam" ]; then
        mods+=("$m")
    else
        echo "test_asan: skipping $m (not compiled)" >&2
    fi
done
if [ "${#mods[@]}" -eq 0 ]; then
    echo "test_asan: no test/aion_*_tests.erl modules found" >&2
    exit 1
fi
modlist=$(IFS=,; echo "${mods[*]}")
echo "test_asan: running ${mods[*]} against priv/aion_nif_asan.so"

rm -rf "$LOGDIR"
mkdir -p "$LOGDIR"

# The eval checks that the sanitized library is the one mapped into the VM, runs
# EUnit and halts with its verdict.
EVAL="
{module, aion_nif} = code:ensure_loaded(aion_nif),
{ok, Maps} = file:read_file(\"/proc/self/maps\"),
case binary:match(Maps, <<\"aion_nif_asan.so\">>) of
    nomatch -> io:format(standard_error, \"test_asan: aion_nif_asan.so is not loaded~n\", []),
               halt(3);
    _ -> ok
end,
Verdict = eunit:test([$modlist], [verbose]),
halt(case Verdict of ok -> 0; _ -> 1 end)."

# Output goes to the terminal and to erl.log. ASan honours log_path; UBSan
# reports (from the runtime loaded with the library) still go to stderr, so the
# log is scanned for sanitizer signatures as well.
set +e
env LD_PRELOAD="$LIBASAN" \
    AION_NIF="$ROOT/priv/aion_nif_asan" \
    ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:halt_on_error=1:log_path=$LOGDIR/asan" \
    UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:log_path=$LOGDIR/ubsan" \
    erl +Mea min -noshell -noinput -pa "$EBIN" -pa "$TESTBEAMS" -eval "$EVAL" 2>&1 \
    | tee "$LOGDIR/erl.log"
status=${PIPESTATUS[0]}
set -e

reports=$(find "$LOGDIR" -type f -name 'asan.*' -o -type f -name 'ubsan.*' | sort)
if [ -n "$reports" ] ||
   grep -qE 'runtime error:|ERROR: AddressSanitizer|SUMMARY: (Address|UndefinedBehavior)Sanitizer' \
        "$LOGDIR/erl.log"; then
    echo "test_asan: sanitizer reports written:" >&2
    for r in $reports; do
        echo "==== $r" >&2
        cat "$r" >&2
    done
    grep -nE 'runtime error:|Sanitizer' "$LOGDIR/erl.log" >&2 || true
    exit 1
fi
if [ "$status" -ne 0 ]; then
    echo "test_asan: FAILED (erl exit status $status)" >&2
    exit "$status"
fi
echo "test_asan: OK (${#mods[@]} module(s), no sanitizer reports)"
