"""Fixtures shared by the reliability suites.

Each test module gets one stack (recording upstreams behind a `modelgate` host running the
real modelgate.wasm). Around every case the `stack` fixture clears what the upstreams
recorded and afterwards asserts the post-conditions every case shares: the host process is
alive and still answers `/health`, and no wasm VM crashed. A host that died is restarted for
the next case, so one crash fails one case, not the rest of the module.
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
def stack(module_stack: Stack, request: pytest.FixtureRequest) -> Iterator[Stack]:
    if not module_stack.gateway.alive():
        module_stack.gateway.start()
    module_stack.clear()
    failures = module_stack.gateway.vm_failures()
    yield module_stack
    module_stack.gateway.assert_serving()
    # Hostile input must be refused by the filter, never crash its VM. Only modules that
    # inject VM faults on purpose (INJECTS_VM_FAULTS = True) may fail VMs. Under the default
    # failure policy one failure is an outage of that worker's routes until the next reload.
    if not getattr(request.module, "INJECTS_VM_FAULTS", False):
        after = module_stack.gateway.vm_failures()
        assert after == failures, f"a wasm VM failed during the case ({after - failures:.0f} failed):\n{module_stack.gateway.log_tail()}"
