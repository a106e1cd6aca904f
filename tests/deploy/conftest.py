"""Fixtures for the deploy/ tests: the built artifacts they need, failing with the build command."""

from __future__ import annotations

from pathlib import Path

import pytest

from deploy_support import HOST_BIN, REPO, WASM


@pytest.fixture(scope="session")
def wasm_bytes() -> bytes:
    if not WASM.is_file():
        pytest.fail(f"{WASM.relative_to(REPO)} is missing: build it with `make wasm`")
    return WASM.read_bytes()


@pytest.fixture(scope="session")
def host_bin() -> Path:
    if not HOST_BIN.is_file():
        pytest.fail(f"{HOST_BIN.relative_to(REPO)} is missing: build it with `make build`")
    return HOST_BIN
