# The one command surface for people, the README and CI (.ci/run calls `make test`).
#
#   make run              the gateway in standalone mode on config/samples, on 127.0.0.1:8080
#   make test             every test: fmt check, clippy, cargo test, the SDK suite, manifest checks
#   make fmt / lint       format the code / clippy with warnings as errors
#   make generate         write the CRD YAML under crds/ from the Rust types
#   make check-generated  fail when the committed CRD YAML differs from the types
#   make bench            uprox vs nginx vs direct upstream (bench/run.sh; BENCH_DURATION=10s)
#   make bench-reload     standalone change-to-effect latency (bench/reload.py)
#   make bench-scale      10,000 MachineTokens and 1,000 Services through operator and gateway
#   make sdk              the Python and Node SDK suites and the offline manifest checks (tests/sdk/run.sh)
#   make chart            helm lint, helm template and offline validation of charts/uprox (tests/chart/run.sh)
#   make image            the container image with both binaries (needs Docker; IMAGE=...)
#   make kind-up          a kind cluster from kind-cluster.yaml with the CRDs (needs Docker and kind)
#   make e2e              the kind suite: operator and gateway against a real cluster (tests/kind/run.sh)

SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

CARGO ?= cargo
LISTEN ?= 127.0.0.1:8080

.PHONY: help run test fmt fmt-check lint cargo-test generate check-generated bench bench-reload bench-scale sdk chart image kind-up e2e

help:
	@sed -n 's/^#   make /make /p' $(firstword $(MAKEFILE_LIST))

run:
	$(CARGO) run --release -p uprox-gateway --bin uprox-gateway -- \
		--config config/samples --state .state --listen $(LISTEN)

# Sequential on purpose: the cheapest checks fail first.
test:
	$(MAKE) --no-print-directory fmt-check
	$(MAKE) --no-print-directory lint
	$(MAKE) --no-print-directory cargo-test
	$(MAKE) --no-print-directory sdk
	$(MAKE) --no-print-directory chart

fmt:
	$(CARGO) fmt --all

fmt-check:
	$(CARGO) fmt --all -- --check

lint:
	$(CARGO) clippy --workspace --all-targets -- -D warnings

cargo-test:
	$(CARGO) test --workspace

generate:
	$(CARGO) run -p uprox-crds --bin crdgen

check-generated: generate
	git diff --exit-code -- crds/ charts/uprox/crds/

bench:
	bash bench/run.sh

bench-reload:
	python3 bench/reload.py

bench-scale:
	$(CARGO) bench -p uprox-cluster-tests --bench scale

sdk:
	bash tests/sdk/run.sh

chart:
	bash tests/chart/run.sh

IMAGE ?= ghcr.io/uprox/uprox:dev
image:
	docker build -t $(IMAGE) .

kind-up:
	kind get clusters 2>/dev/null | grep -qx uprox-e2e || kind create cluster --config kind-cluster.yaml --wait 120s
	kubectl --context kind-uprox-e2e apply -f crds/

e2e:
	bash tests/kind/run.sh
