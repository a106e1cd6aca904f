"""Fixtures shared by the reliability suites.

Each test module gets one stack (recording upstreams behind a `modelgate` host running the
real modelgate.wasm). Around every case the `stack` fixture clears what the upstreams
recorded and afterwards asserts the post-condition every case shares: the host process is
alive and still answers `/health`. A host that died is restarted for the next case, so one
crash fails one case, not the rest of the module.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from reliability.harness import tokens
from reliability.harness.ports import suite_ports
from reliability.harness.stack import Stack


@pytest.fixture(scope="session")
def keys() -> tokens.KeySet:
    return tokens.KeySet.generate()


@pytest.fixture(scope="module")
def module_stack(tmp_path_factory: pytest.TempPathFactory, keys: tokens.KeySet) -> Iterator[Stack]:
    stack = Stack(Path(tmp_path_factory.mktemp("stack")), keys, suite_ports).start()
    yield stack
    stack.stop()


@pytest.fixture
def stack(module_stack: Stack) -> Iterator[Stack]:
    if not module_stack.gateway.alive():
        module_stack.gateway.start()
    module_stack.clear()
    yield module_stack
    module_stack.gateway.assert_serving()
