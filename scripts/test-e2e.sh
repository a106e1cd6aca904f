#!/usr/bin/env bash
# The end-to-end suite: real KServe model servers behind the real `modelgate` host running
# the real modelgate.wasm (`make test-e2e` builds both first). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/pytest tests/e2e -q "$@"
