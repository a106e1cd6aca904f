# modelgate: the two commands a new machine needs are `make demo` and `make test`.
# Each target delegates to a script owned by the part it exercises.
SHELL := /bin/bash
WASM := target/modelgate.wasm

.PHONY: setup setup-llm wasm build demo demo-llm test test-rust test-policy test-e2e test-deploy test-reliability test-fuzz test-bench-report test-mutants mutants bench bench-scale soak fuzz lint

setup:            ## install toolchain target, apt packages and the Python venv
	scripts/setup.sh

setup-llm:        ## setup, plus .venv-llm (kserve[llm] with vLLM, ~10 GB) for the KServe OpenAI server
	scripts/setup.sh --llm

wasm:             ## build the filter: target/modelgate.wasm (cargo, then wasm-opt -Oz)
	scripts/build-wasm.sh

build: wasm       ## build the host binary `modelgate`
	cargo build --release -p modelgate-host

demo: setup build ## run modelgate in front of real KServe model servers
	scripts/demo.sh

demo-llm: setup-llm build ## the demo plus KServe's OpenAI server: chat, streaming, token budgets
	scripts/demo.sh --llm

lint:            ## rustfmt, clippy (native and wasm32; policies/ and filter/ deny clocks and panics), module circles
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings
	cargo clippy -p modelgate-filter --target wasm32-wasip1 -- -D warnings
	python3 scripts/module_cycles.py
	.venv/bin/python -m pytest -q -p no:cacheprovider scripts/test_module_cycles.py

test: setup-llm wasm lint test-rust test-policy test-deploy test-e2e test-reliability test-fuzz test-bench-report test-mutants ## every test, green

test-rust: wasm
	cargo test --workspace

test-policy: build ## the example policy tests (docs/policy-tests.md) with the built modelgate
	target/release/modelgate test examples/policy-tests

test-deploy: build  ## manifests vs the real CRDs, the OCI image, the host reading the policy
	scripts/test-deploy.sh

test-e2e: build
	scripts/test-e2e.sh

test-reliability: build ## hostile input and faults through the host (the soak is `make soak`)
	scripts/test-reliability.sh

test-fuzz:        ## every fuzz target for a short, bounded time (longer: `make fuzz`)
	scripts/fuzz.sh 10

test-bench-report: ## the bench reports' parsing (error responses are not throughput)
	.venv/bin/python -m pytest -q -p no:cacheprovider bench/test_report.py bench/scale/test_scale_report.py

bench: setup build
	bench/run.sh

bench-scale: setup build ## cost against models, keys, callers, tokens, body size and replicas (~12 min)
	.venv/bin/python bench/scale/scale.py
	command -v valgrind >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind >/dev/null; }
	.venv/bin/python bench/scale/instructions.py --out bench/results/scale-instructions.md

soak: setup build
	tests/reliability/soak.sh

fuzz:
	scripts/fuzz.sh

test-mutants:     ## cargo-mutants on the policies/ lines this checkout changes against main (none: no-op)
	scripts/mutants.sh --in-diff

mutants:          ## cargo-mutants over all of policies/ (hours; report: docs/mutants.md)
	scripts/mutants.sh
