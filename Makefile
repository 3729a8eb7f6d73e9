# The entry points a person types. `make dev` runs the local stack; `make test` runs every test.
# Both install what they need (the emulator and the reference webhook verifier into .venv) on first use.

SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
MOTO_VERSION := 5.2.5
# The reference implementation the webhook tests verify signatures with (tests/fixtures/verify_webhook.py).
STANDARDWEBHOOKS_VERSION := 1.3.0
# What the tests' virtualenv holds. Its stamp records them, so changing a pin reinstalls.
VENV_PACKAGES := 'moto[server]==$(MOTO_VERSION)' 'standardwebhooks==$(STANDARDWEBHOOKS_VERSION)'

EXAMPLES_VENV := .venv-examples
EXAMPLE_REQUIREMENTS := $(wildcard examples/*/requirements.txt)

.PHONY: dev test lint build setup bench bench-payload chaos grid clean help python-test example-venv dead-letters-at-scale faketime FORCE

help:
	@echo "make dev    run the local stack: emulator, API on http://127.0.0.1:8080, a worker (Ctrl-C stops all)"
	@echo "make test   every check: fmt, clippy, unit and integration tests on the emulator, the CDK app's"
	@echo "            tests, synth, cdk-nag, cfn-lint, hadolint, the worker's Docker context, the short scaling grid"
	@echo "make build  debug build of every binary"
	@echo "make bench  throughput, requests per job, latency, Lambda sizes on the emulator (bench/README.md)"
	@echo "make bench-payload  S3 payload upload and download MiB/s and memory on the emulator (PAYLOAD_SIZES)"
	@echo "make chaos  the full chaos run: workers killed, AWS faults injected, every job checked (make test runs a short one)"
	@echo "make grid   the scaling policy over the full grid of workloads against the oracle and the anchors (make test runs a short one)"
	@echo "make lambdas | synth | deploy | destroy   build and deploy to AWS (see cdk/README.md)"

$(VENV)/.ok: $(if $(filter-out $(shell cat $(VENV)/.ok 2>/dev/null),$(VENV_PACKAGES)),FORCE)
	python3 -m venv $(VENV)
	$(PIP) install --quiet --disable-pip-version-check $(VENV_PACKAGES)
	echo "$(VENV_PACKAGES)" >$@

# The tests shift a worker's clock with Debian's faketime (an LD_PRELOAD library).
FAKETIME := $(shell command -v faketime 2>/dev/null)
faketime:
ifeq ($(FAKETIME),)
	@if [ "$$(id -u)" = 0 ]; then apt-get install -y -qq faketime >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq faketime; }; \
	else sudo apt-get install -y -qq faketime || { echo "install Debian's faketime (apt-get install faketime): the tests shift a worker's clock with it"; exit 1; }; fi
endif

setup: $(VENV)/.ok faketime

# The Python helper and every example's pinned requirements, for the examples on the local stack
# and their tests (kept apart from the emulator's virtualenv).
$(EXAMPLES_VENV)/.ok: python/pyproject.toml python/sluice_handler.py $(EXAMPLE_REQUIREMENTS)
	python3 -m venv $(EXAMPLES_VENV)
	$(EXAMPLES_VENV)/bin/pip install --quiet --disable-pip-version-check ./python $(addprefix -r ,$(EXAMPLE_REQUIREMENTS))
	touch $@

example-venv: $(EXAMPLES_VENV)/.ok

# The Python helper's tests (standard library only) and each example's, on real processes.
python-test: example-venv
	python3 -m unittest discover -s python/tests
	for d in examples/*/; do $(EXAMPLES_VENV)/bin/python -m unittest discover -s "$$d" || exit 1; done

build:
	cargo build --workspace --bins

dev: setup build
	scripts/dev.sh

lint:
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings

test: setup lint build python-test cdk-test docker-context-check
	"$${CARGO_TARGET_DIR:-target}/debug/sluice" simulate --grid short
	cargo test --workspace

# The scaling policy over the full grid of workloads (scaling/README.md): one line per case and a
# summary against the oracle and the tuned anchors; exits 1 when a target is missed.
# Override the start-up delay with GRID_STARTUP (seconds).
GRID_STARTUP ?= 60
grid:
	cargo run --quiet --release --bin sluice -- simulate --grid full --startup-delay $(GRID_STARTUP)

# Benchmarks against the emulator (not part of `make test`): one table, also bench-results/bench.json.
# SLUICE_BENCH_LAMBDA_INIT=1 also builds the functions for this machine to time their start-up.
# It ends with the payload figures: S3 throughput on loopback, and a JOB_FILE_SIZE job through a
# worker process with that worker's peak memory.
bench: setup
	@if [ "$(SLUICE_BENCH_LAMBDA_INIT)" = 1 ]; then cargo build --profile lambda-release -p submit -p status -p backlog; fi
	cargo bench -p sluice-worker --bench pipeline
	$(MAKE) bench-payload PAYLOAD_SIZES=1GiB

# The S3 payload adapter against the emulator (not part of `make test`): upload and download MiB/s
# and memory for each size in PAYLOAD_SIZES, then one job with a JOB_FILE_SIZE file through a
# release worker process, with the worker's peak memory (bench/README.md).
PAYLOAD_SIZES ?= 64MiB 256MiB 1GiB
JOB_FILE_SIZE ?= 1GiB
bench-payload: setup
	cargo build --release -p sluice-worker --bin sluice-worker
	cargo bench -p sluice --bench payload -- $(addprefix --size ,$(PAYLOAD_SIZES)) --job-size $(JOB_FILE_SIZE)

# The chaos run at full size (tests/chaos/main.rs; `make test` runs a short version): bounded in
# jobs and time, loopback only. Override with SLUICE_CHAOS_JOBS, _SECONDS, _LONGEST_MS, _SEED,
# _DLQ_POISON.
CHAOS_JOBS ?= 300
CHAOS_SECONDS ?= 120
CHAOS_LONGEST_MS ?= 20000
CHAOS_DLQ_POISON ?= 2000
chaos: setup build
	SLUICE_CHAOS_JOBS=$(CHAOS_JOBS) SLUICE_CHAOS_SECONDS=$(CHAOS_SECONDS) SLUICE_CHAOS_LONGEST_MS=$(CHAOS_LONGEST_MS) \
		SLUICE_CHAOS_DLQ_POISON=$(CHAOS_DLQ_POISON) \
		cargo test --test chaos

# The dead-letter reconciler against thousands of messages on the emulator (`make test` runs it
# with 400): prints each run's figures. Override the count with DEAD_LETTERS.
DEAD_LETTERS ?= 2000
dead-letters-at-scale: setup build
	SLUICE_DEAD_LETTERS=$(DEAD_LETTERS) cargo test --test integration \
		the_reconciler_settles_thousands_of_dead_letters_in_a_few_runs -- --nocapture

clean:
	rm -rf $(VENV) $(EXAMPLES_VENV) target

include mk/cdk.mk
