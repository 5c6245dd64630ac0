# aion: the two commands a newcomer needs are `make demo` and `make test`.
# Both run scripts/setup.sh first (installs missing Debian packages; idempotent).

REBAR ?= rebar3

.PHONY: all setup build cli demo demo-ci test test-elixir eunit ct check xref dialyzer test-asan lint-c bench bench-store bench-timers bench-parked bench-resume clean

all: build

setup:
	@./scripts/setup.sh

build: setup
	$(REBAR) compile
	$(MAKE) cli

## The operator CLI (escript): bin/aion.
cli:
	$(REBAR) escriptize
	@mkdir -p bin
	cp _build/default/bin/aion bin/aion

## The main job (the durable-workflow demo): 500 orders, kill -9 half-way.
demo: build
	./scripts/demo.sh

## The same with 100 orders (CI).
demo-ci: build
	ORDERS=100 ./scripts/demo.sh

## Every test: EUnit, Common Test, static checks.
test: build
	$(REBAR) do eunit, ct
	$(REBAR) xref
	$(REBAR) dialyzer
	$(MAKE) test-elixir

## The Elixir usage example (examples/elixir_app): Mix builds aion with the system
## rebar3 and never contacts a package registry.
MIX_ENV_VARS := MIX_ENV=test MIX_REBAR3=$(shell command -v rebar3) HEX_OFFLINE=1 MIX_HOME=$(CURDIR)/_build/mix
test-elixir: build
	cd examples/elixir_app && $(MIX_ENV_VARS) mix test --no-start

eunit: build
	$(REBAR) eunit

ct: build
	$(REBAR) ct

xref: build
	$(REBAR) xref

dialyzer: build
	$(REBAR) dialyzer

check: xref dialyzer test lint-c

## Static checks of the C core (needs Debian's cppcheck and clang-tidy).
TIDY_CHECKS := -*,bugprone-*,clang-analyzer-*,performance-*,portability-*,-bugprone-easily-swappable-parameters,-bugprone-reserved-identifier,-clang-analyzer-security.insecureAPI.DeprecatedOrUnsafeBufferHandling
lint-c:
	cppcheck --enable=warning,performance,portability --error-exitcode=1 -q -I/usr/lib/erlang/usr/include c_src/*.c
	clang-tidy -quiet --warnings-as-errors='*' --checks='$(TIDY_CHECKS)' c_src/*.c -- -std=c11 -D_POSIX_C_SOURCE=200809L -D_DEFAULT_SOURCE -I$$(erl -noshell -eval 'io:format("~ts/erts-~ts/include/", [code:root_dir(), erlang:system_info(version)])' -s init stop)

## NIF tests under AddressSanitizer + UBSan.
test-asan: build
	./scripts/test_asan.sh

## Benchmark suite (bench/RESULTS.md); BENCH_QUICK=1 for a smoke run.
bench: build
	./bench/run.sh

bench-store: build
	./bench/store_bench.escript

bench-timers: build
	./bench/timers_bench.escript

## Issue 7: a million parked workflows (PARKED_N=20000 for a smoke run).
bench-parked: build
	mkdir -p _build/bench/ebin
	erlc +debug_info -pa _build/default/lib/aion/ebin -o _build/bench/ebin bench/aion_bench_parked.erl
	erl -noshell -noinput -pa _build/default/lib/aion/ebin -pa _build/bench/ebin -run aion_bench_parked main

## aion_store:runs_to_resume/1 over 1,000,000 parked runs (PARKED=N to change).
bench-resume: build
	./bench/resume_bench.escript

clean:
	$(REBAR) clean
	$(MAKE) -C c_src clean
