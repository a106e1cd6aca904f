#!/usr/bin/env bash
# Installs what `make demo` and `make test` need on a fresh machine, and nothing else:
#   - the wasm32-wasip1 Rust target (the filter's build target);
#   - a Python venv at .venv with tests/requirements.txt (KServe, scikit-learn, PyJWT, ...);
#   - curl, which the demo walkthrough runs (Debian package, only when missing);
#   - binaryen's wasm-opt (Debian package `binaryen`, only when missing): `make wasm`
#     (scripts/build-wasm.sh) optimises the filter with it;
#   - Prometheus and promtool (Debian package `prometheus`, only when missing): the e2e suite
#     runs a real Prometheus against the stack, tests/deploy runs promtool on the alerts.
# Idempotent and silent when everything is already in place, so running it before every
# `make` target costs well under a second.
set -euo pipefail
cd "$(dirname "$0")/.."

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

# The venv is rebuilt only when tests/requirements.txt or the Python interpreter changed:
# the marker records a hash of both, written only after pip finished successfully.
PYTHON=${PYTHON:-python3}
VENV=.venv
REQS=tests/requirements.txt
MARKER=$VENV/.modelgate-requirements
want=$( { "$PYTHON" --version 2>&1; cat "$REQS"; } | sha256sum | cut -d' ' -f1)
have=$(cat "$MARKER" 2>/dev/null || true)

if [[ "$want" != "$have" || ! -x $VENV/bin/python ]]; then
    if [[ ! -x $VENV/bin/python ]]; then
        say "creating Python venv in $VENV ($("$PYTHON" --version 2>&1))"
        "$PYTHON" -m venv "$VENV"
    fi
    say "installing $REQS into $VENV (first run takes about a minute)"
    export PIP_DISABLE_PIP_VERSION_CHECK=1
    "$VENV/bin/python" -m pip install --quiet --upgrade pip
    "$VENV/bin/python" -m pip install --quiet -r "$REQS"
    echo "$want" >"$MARKER"
fi
