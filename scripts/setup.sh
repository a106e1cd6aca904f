#!/usr/bin/env bash
# Installs what `make demo` and `make test` need on a fresh machine, and nothing else:
#   - the wasm32-wasip1 Rust target (the filter's build target);
#   - a Python venv at .venv with tests/requirements.txt (KServe, scikit-learn, PyJWT, ...);
#   - curl, which the demo walkthrough runs (Debian package, only when missing);
#   - binaryen's wasm-opt (Debian package `binaryen`, only when missing): `make wasm`
#     (scripts/build-wasm.sh) optimises the filter with it;
#   - Prometheus and promtool (Debian package `prometheus`, only when missing): the e2e suite
#     runs a real Prometheus against the stack, tests/deploy runs promtool on the alerts;
#   - with --llm (`make test`, `make demo-llm`): a second venv at .venv-llm with
#     tests/requirements-llm.txt (kserve[llm], vLLM: about 10 GB) for the KServe OpenAI
#     model server; `make demo` does not need it.
# Idempotent and silent when everything is already in place, so running it before every
# `make` target costs well under a second.
set -euo pipefail
cd "$(dirname "$0")/.."

LLM=0
for arg in "$@"; do
    case $arg in
        --llm) LLM=1 ;;
        *) echo "usage: scripts/setup.sh [--llm]" >&2; exit 2 ;;
    esac
done

say() { echo "setup: $*"; }

# The target must be added to the toolchain rust-toolchain.toml pins, which rustup selects
# from the working directory.
if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip1; then
    say "adding Rust target wasm32-wasip1"
    rustup target add wasm32-wasip1
fi

# The demo's walkthrough runs curl, as a user pasting its commands would.
if ! command -v curl >/dev/null; then
    say "installing curl"
    apt-get update -qq && apt-get install -y -qq curl >/dev/null
fi

# `make wasm` runs cargo's build of the filter through wasm-opt -Oz (scripts/build-wasm.sh).
if ! command -v wasm-opt >/dev/null; then
    say "installing binaryen (Debian package, for wasm-opt)"
    if [[ $(id -u) -eq 0 ]]; then sudo=""; else sudo="sudo"; fi
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends binaryen >/dev/null
fi

# The alert rules and the dashboard in deploy/monitoring/ are checked by promtool and against
# a real Prometheus. The package's service is not started: the tests run their own.
if ! command -v prometheus >/dev/null || ! command -v promtool >/dev/null; then
    say "installing prometheus (Debian package)"
    if [[ $(id -u) -eq 0 ]]; then sudo=""; else sudo="sudo"; fi
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi

# host/tests/gateway_global_ratelimit.rs and the scale benchmark's replicas count in a real
# Redis, each starting its own redis-server on a free port (the package's service is not used).
if ! command -v redis-server >/dev/null; then
    say "installing redis-server (Debian package)"
    if [[ $(id -u) -eq 0 ]]; then sudo=""; else sudo="sudo"; fi
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends redis-server >/dev/null
fi

# The venv is rebuilt only when tests/requirements.txt or the Python interpreter changed:
# the marker records a hash of both, written only after pip finished successfully.
PYTHON=${PYTHON:-python3}

# venv VENV REQS WHAT: make VENV hold REQS (WHAT says how long the first run takes).
venv() {
    local venv=$1 reqs=$2 what=$3
    local marker=$venv/.modelgate-requirements want have
    want=$( { "$PYTHON" --version 2>&1; cat "$reqs"; } | sha256sum | cut -d' ' -f1)
    have=$(cat "$marker" 2>/dev/null || true)
    if [[ "$want" != "$have" || ! -x $venv/bin/python ]]; then
        if [[ ! -x $venv/bin/python ]]; then
            say "creating Python venv in $venv ($("$PYTHON" --version 2>&1))"
            "$PYTHON" -m venv "$venv"
        fi
        say "installing $reqs into $venv ($what)"
        export PIP_DISABLE_PIP_VERSION_CHECK=1
        "$venv/bin/python" -m pip install --quiet --upgrade pip
        "$venv/bin/python" -m pip install --quiet -r "$reqs"
        echo "$want" >"$marker"
    fi
}

venv .venv tests/requirements.txt "first run takes about a minute"
if [[ $LLM == 1 ]]; then
    venv .venv-llm tests/requirements-llm.txt "about 10 GB; first run takes about 5 minutes"
fi
