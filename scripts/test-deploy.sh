#!/usr/bin/env bash
# Proves deploy/ without a cluster:
#   1. every manifest validates against the real CRDs in ../shared/crds with
#      ../shared/tools/validate_manifests.py (0 errors), as CI requires;
#   2. tests/deploy: the OCI image layout, the manifests' consistency, and the host running
#      the filter config taken straight from the EnvoyExtensionPolicy.
# Installs what it needs: the validator's requirements into .venv, and skopeo (the
# independent OCI implementation the image tests copy the layout with).
# The validator and the CRDs are read from shared/ beside the repository, never copied in.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(git rev-parse --show-toplevel 2>/dev/null || pwd)
shared="$root/../shared"
validator="$shared/tools/validate_manifests.py"

say() { echo "test-deploy: $*"; }

if [[ ! -f $validator ]]; then
    say "$validator not found: the repository must sit beside shared/ (as CI clones it)"
    exit 1
fi

scripts/setup.sh
py=.venv/bin/python

# Reinstall only when the validator's requirements change (a hash marker, like setup.sh's).
reqs="$shared/tools/requirements.txt"
marker=.venv/.modelgate-validator-requirements
want=$(sha256sum "$reqs" | cut -d' ' -f1)
if [[ "$(cat "$marker" 2>/dev/null || true)" != "$want" ]]; then
    say "installing the manifest validator's requirements into .venv"
    PIP_DISABLE_PIP_VERSION_CHECK=1 "$py" -m pip install --quiet -r "$reqs"
    echo "$want" >"$marker"
fi

if ! command -v skopeo >/dev/null; then
    say "installing skopeo from Debian packages"
    if [[ $(id -u) -eq 0 ]]; then sudo=""; else sudo="sudo"; fi
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends skopeo >/dev/null
fi

say "validating deploy/ against the CRDs in $shared/crds"
"$py" "$validator" --quiet deploy/

say "running tests/deploy"
"$py" -m pytest -q tests/deploy
