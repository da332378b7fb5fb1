# vnmask: the two commands are `make dev` and `make test`; everything else is their parts.
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
VENV := .venv
STAMP := .local/stamps
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
# The SAM CLI must not try to phone home (there is no internet here, nor in CI).
export SAM_CLI_TELEMETRY := 0

.PHONY: deps test dev template-check services-start services-stop lambda-build clean fmt bench bench-assign

deps: $(STAMP)/python $(STAMP)/npm

$(STAMP)/python: infra/requirements.txt
	@mkdir -p $(STAMP)
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r infra/requirements.txt
	@touch $@

$(STAMP)/npm: infra/local/package.json infra/local/package-lock.json
	@mkdir -p $(STAMP)
	npm ci --prefix infra/local --no-audit --no-fund --silent
	@touch $@

# Runs every test against freshly started local services (the end-to-end test starts the
# whole dev stack itself), stops them whatever happens, then checks the template.
test: deps
	@trap 'infra/local/services.sh stop' EXIT; \
	infra/local/services.sh start; \
	source .local/services.env; \
	cargo test --workspace --locked
	$(MAKE) template-check

# template.yaml: lint, validate and build every function for arm64, all offline. The build
# takes the whole deploy path (SAM, cargo-lambda, zig, arm64 bootstrap) without LTO or
# optimisation (2.5 min instead of 6 on 2 cores, cold), since only the path is checked here;
# `sam build` for a deploy, and `make bench`'s zips, use the real profile.
template-check: deps
	cfn-lint template.yaml
	sam validate --lint
	# The SAM transform itself (lint alone passes a template the transform refuses); offline.
	sam validate --region us-east-1
	CARGO_PROFILE_RELEASE_LTO=off CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 \
	  CARGO_PROFILE_RELEASE_OPT_LEVEL=0 sam build --beta-features --build-dir .aws-sam/build

# The whole system on 127.0.0.1 until Ctrl-C (infra/local/dev.py).
dev: deps
	$(VENV)/bin/python infra/local/dev.py

# Every benchmark against freshly started local services; rewrites BENCHMARKS.md from this run
# (infra/bench/run.sh). Reports, never fails on a figure; not part of `make test`.
bench: deps
	infra/bench/run.sh

# The assign function's throughput against freshly started local services: a report, not a test.
bench-assign: deps
	@trap 'infra/local/services.sh stop' EXIT; \
	infra/local/services.sh start; \
	source .local/services.env; \
	cargo bench --locked -p assign --bench throughput

fmt:
	cargo fmt --all

lambda-build: deps
	cargo lambda build --release --arm64 --workspace

services-start: deps
	infra/local/services.sh start

services-stop:
	infra/local/services.sh stop

clean: services-stop
	rm -rf .local target
