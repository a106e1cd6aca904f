#!/usr/bin/env bash
# `make demo` runs setup and the build, then this: modelgate in front of real KServe model
# servers (two sklearn-iris replicas, sklearn-wine, an iris explainer), a walkthrough of
# curl commands with their real answers, then it keeps serving until Ctrl-C.
# Options: --no-walkthrough, --exit (stop after the walkthrough), --run-dir DIR,
# --verbose-models, --llm (`make demo-llm`: KServe's OpenAI server with two generative
# models too; needs .venv-llm from `scripts/setup.sh --llm`). Ports: MODELGATE_PORT_BASE=N
# moves them all (see tests/e2e/stack.py).
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ ! -x .venv/bin/python ]]; then
    echo "demo: .venv is missing; run scripts/setup.sh (or make demo)" >&2
    exit 1
fi
exec .venv/bin/python tests/e2e/demo.py "$@"
