#!/usr/bin/env bash
# The reliability suites of issue 8 (everything but the soak and cargo-fuzz): adversarial
# HTTP, JWT and path cases, fault injection, reload under load, all through the real
# `modelgate` host and modelgate.wasm in front of recording upstreams. CI runs this; it
# takes about 3 minutes and must stay under 5 (enforced below).
#   scripts/test-reliability.sh [pytest args...]   e.g. -k smuggling, -x, -m "not slow"
# Uses ports 18600-18679 on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-.venv/bin/python}
[[ -x $PYTHON ]] || { echo "test-reliability: $PYTHON missing; run scripts/setup.sh" >&2; exit 2; }

# The artifacts under test. Cargo makes these no-ops when nothing changed;
# RELIABILITY_NO_BUILD=1 skips them when the caller just built them.
if [[ ${RELIABILITY_NO_BUILD:-0} != 1 ]]; then
    scripts/build-wasm.sh
    cargo build -q --release -p modelgate-host
fi
# The host's conformance filter doubles as the fault injector (trap, loop, oom on demand).
cargo build -q --release --target wasm32-wasip1 --manifest-path host/tests/filters/Cargo.toml \
    --target-dir target/test-filters

exec timeout --signal=INT --kill-after=30 300 \
    "$PYTHON" -m pytest -c tests/reliability/pytest.ini tests/reliability "$@"
