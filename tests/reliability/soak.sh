#!/usr/bin/env bash
# Soak (issue 8): 10 minutes at 64 concurrent clients through the full modelgate policy,
# one of two KServe replicas restarted halfway; reports errors other than the policy's own
# answers and the gateway's RSS growth from minute 2 to the end (must stay under 10%).
# Run by `make soak` (which builds first); not part of CI. Settings (environment):
# SOAK_SECONDS, SOAK_CONCURRENCY, SOAK_UPSTREAM=kserve|recording, SOAK_BASELINE_SECONDS,
# SOAK_MAX_RSS_GROWTH; see tests/reliability/soak.py. Ports 18680-18699.
set -euo pipefail
cd "$(dirname "$0")/../.."

PYTHON=${PYTHON:-.venv/bin/python}
[[ -x $PYTHON ]] || { echo "soak: $PYTHON missing; run scripts/setup.sh (make setup)" >&2; exit 2; }
for artifact in target/release/modelgate target/modelgate.wasm; do
    [[ -f $artifact ]] || { echo "soak: $artifact missing; run make build" >&2; exit 2; }
done
PYTHONPATH=tests exec "$PYTHON" -m reliability.soak
