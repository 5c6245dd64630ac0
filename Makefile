# aion: the two commands a newcomer needs are `make demo` and `make test`.
# Both run scripts/setup.sh first (installs missing Debian packages; idempotent).

REBAR ?= rebar3

.PHONY: all setup build demo test eunit ct check xref dialyzer test-asan bench bench-store bench-timers clean

all: build

setup:
	@./scripts/setup.sh

build: setup
	$(REBAR) compile

## The main job (the durable-workflow demo).
demo: build
	./scripts/demo.sh

## Every test: EUnit, Common Test, static checks.
test: build
	$(REBAR) do eunit, ct
	$(REBAR) xref
	$(REBAR) dialyzer

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

bench-store: build
	./bench/store_bench.escript

bench-timers: build
	./bench/timers_bench.escript

clean:
	$(REBAR) clean
	$(MAKE) -C c_src clean
