# aion: the two commands a newcomer needs are `make demo` and `make test`.
# Both run scripts/setup.sh first (installs missing Debian packages; idempotent).

REBAR ?= rebar3

.PHONY: all setup build cli demo demo-ci test test-elixir eunit ct check xref dialyzer test-asan bench bench-store bench-timers clean

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

check: xref dialyzer test

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

clean:
	$(REBAR) clean
	$(MAKE) -C c_src clean
