# vnmask: the two commands are `make dev` and `make test`; everything else is their parts.
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
VENV := .venv
STAMP := .local/stamps
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: deps test test-rust dev services-start services-stop lambda-build clean fmt bench-assign

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

# Runs every test against freshly started local services, and stops them whatever happens.
test: deps
	@trap 'infra/local/services.sh stop' EXIT; \
	infra/local/services.sh start; \
	source .local/services.env; \
	cargo test --workspace --locked

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
