#!/usr/bin/env bash
# The end-to-end suite: real KServe model servers behind the real `modelgate` host running
# the real modelgate.wasm (`make test-e2e` builds both first), and KServe's OpenAI server in
# .venv-llm for the LLM tests. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --llm
exec .venv/bin/pytest tests/e2e -q "$@"
