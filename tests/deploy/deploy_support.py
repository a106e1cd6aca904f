"""Paths and helpers shared by the deploy/ tests (fixtures are in conftest.py).

The manifest validator and the CRDs it checks against live in ../shared beside the
repository (CI clones the repository next to it); they are never copied into the repo.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
SHARED = REPO.parent / "shared"
VALIDATOR = SHARED / "tools" / "validate_manifests.py"
WASM = REPO / "target" / "modelgate.wasm"
HOST_BIN = REPO / "target" / "release" / "modelgate"
BUILD_IMAGE = DEPLOY / "oci" / "build-image.py"


def manifest_files() -> list[Path]:
    """Every manifest in deploy/ (kustomization files are build instructions, not objects)."""
    return sorted(
        p for p in DEPLOY.rglob("*.yaml") if p.name != "kustomization.yaml"
    )


def load_docs(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as fh:
        return [d for d in yaml.safe_load_all(fh) if d is not None]


def all_objects() -> list[tuple[Path, dict]]:
    return [(p, d) for p in manifest_files() for d in load_docs(p)]


def objects_of(kind: str) -> list[tuple[Path, dict]]:
    return [(p, d) for p, d in all_objects() if d.get("kind") == kind]


def one(kind: str, name: str) -> dict:
    """The single object of `kind` named `name` in the default setup (alternatives excluded)."""
    found = [
        d
        for p, d in objects_of(kind)
        if d["metadata"]["name"] == name and p.parent.name != "istio"
    ]
    assert found, f"deploy/ defines no {kind} named {name}"
    return found[0]


def run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False, **kwargs)
