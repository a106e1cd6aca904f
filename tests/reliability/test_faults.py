"""Fault injection: filters that trap, spin or exhaust memory; upstreams that reset or close
mid-body; a replica killed under load.

Each fault must stay contained: the request that hit it gets the right error, the host
keeps serving every other request, and the failed VM is counted
(`modelgate_wasm_vm_failures_total`). The fault filter selects Envoy's FAIL_RELOAD failure
policy with a 1ms backoff, so the next stream on that worker gets a new VM: under the default
(FAIL_CLOSED) every later request on the worker would be 503 until a config push, which
host/tests/gateway_filters.rs shows.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from reliability.harness import configs
from reliability.harness.gateway import REPO
from reliability.harness.load import LoadGenerator
from reliability.harness.ports import suite_ports
from reliability.harness.rawhttp import RawConnection
from reliability.harness.stack import Stack
from reliability.harness.tokens import KeySet
from reliability.harness.upstream import BAD_RESPONSES
from reliability.harness.waiting import wait_until

# The host's conformance filter (host/tests/filters/conformance) fails on demand: the request
# header `x-case` set to `trap` panics (a trap), `loop` spins forever, `oom` allocates without
# end. Any other request passes, so one module shows both the request that hit the fault and
# the requests around it.
FAULT_WASM = REPO / "target" / "test-filters" / "wasm32-wasip1" / "release" / "conformance.wasm"
FAULT_BUILD = (
    "cargo build --release --target wasm32-wasip1 --manifest-path host/tests/filters/Cargo.toml "
    "--target-dir target/test-filters"
)
FAULTS = ["trap", "loop", "oom"]
# Read by conftest: the VM-crash check after each case does not apply here.
INJECTS_VM_FAULTS = True
# Short, so a spinning guest is stopped quickly; far above what a normal callback takes.
CALLBACK_DEADLINE = "500ms"
MEMORY_LIMIT = "64Mi"


def fault_filter() -> dict:
    if not FAULT_WASM.exists():
        raise AssertionError(f"missing {FAULT_WASM}: build it with `{FAULT_BUILD}` (scripts/test-reliability.sh does)")
    return {
        "name": "fault",
        "wasm": str(FAULT_WASM),
        "rootId": "",
        "failOpen": False,
        # Envoy's PluginConfig.failure_policy and reload_config (wasm.proto): reload the failed
        # VM on the first stream after 1-1.5ms.
        "failurePolicy": "FAIL_RELOAD",
        "reloadConfig": {"backoff": {"baseInterval": "1ms"}},
        "vmCount": 2,
        "memoryLimit": MEMORY_LIMIT,
        "callbackDeadline": CALLBACK_DEADLINE,
    }


@pytest.fixture(scope="module")
def module_stack(tmp_path_factory: pytest.TempPathFactory, keys: KeySet) -> Iterator[Stack]:
    """The usual stack with the fault filter first in the chain, before modelgate."""
    stack = Stack(Path(tmp_path_factory.mktemp("faults")), keys, suite_ports, extra_filters=[fault_filter()]).start()
    yield stack
    stack.stop()


def wait_for_failures(stack: Stack, above: float, timeout: float = 10.0) -> float:
    """The VM-failure counter once it passes `above`."""
    deadline = time.monotonic() + timeout
    while True:
        value = stack.gateway.vm_failures()
        if value > above or time.monotonic() > deadline:
            return value
        time.sleep(0.1)


def assert_normal_requests_served(stack: Stack, count: int = 10) -> None:
    """Enough requests to land on every VM of every filter: each must pass."""
    for _ in range(count):
        response = stack.predict()
        assert response.status == 200, f"a normal request after the fault got {response.status}: {response.body[:200]!r}"


# -- filters that fail ------------------------------------------------------------------------


@pytest.mark.parametrize("fault", FAULTS)
def test_filter_fault_gives_503_and_the_vm_is_reloaded(stack: Stack, fault: str) -> None:
    failures = stack.gateway.vm_failures()
    started = time.monotonic()
    response = stack.predict(extra_headers=[("x-case", fault)])
    elapsed = time.monotonic() - started
    assert response.status == 503, f"{fault}: answered {response.status} {response.body[:200]!r}"
    # A spinning guest must be stopped by the deadline, not run until the client gives up.
    assert elapsed < 5.0, f"{fault}: the answer took {elapsed:.1f}s"
    stack.assert_upstream_saw_nothing(f"request that hit a {fault}")
    assert wait_for_failures(stack, failures) > failures, f"{fault}: modelgate_wasm_vm_failures_total did not increase"
    time.sleep(0.01)  # past the 1-1.5ms reload backoff
    assert_normal_requests_served(stack)


def test_repeated_faults_of_every_kind_leave_the_host_serving(stack: Stack) -> None:
    failures = stack.gateway.vm_failures()
    for _ in range(5):
        for fault in FAULTS:
            time.sleep(0.01)  # past the reload backoff, so each fault meets a live VM
            response = stack.predict(extra_headers=[("x-case", fault)])
            assert response.status == 503, f"{fault}: answered {response.status}"
    assert wait_for_failures(stack, failures + 14) >= failures + 15, "not every fault failed its VM"
    time.sleep(0.01)
    assert_normal_requests_served(stack)


@pytest.mark.slow
def test_faults_under_load_only_fail_their_own_requests(stack: Stack) -> None:
    """Normal traffic at c=8 while faults of each kind keep hitting the same filter.

    Normal requests must all succeed, or at worst get 503 where they shared a VM with the
    fault at the moment it died (Envoy fails every stream of a failed VM); none may hang,
    be reset, or see another status.
    """
    token = stack.token()
    with LoadGenerator(stack.port, lambda: stack.predict_bytes(token=token), concurrency=8) as load:
        faults = 0
        for _ in range(4):
            for fault in FAULTS:
                response = stack.predict(extra_headers=[("x-case", fault)])
                assert response.status == 503, f"{fault} under load: answered {response.status}"
                faults += 1
        result = load.stop()
    assert result.total > 0
    assert not result.failures, f"normal requests failed at the client: {result.summary()}"
    unexpected = {s: n for s, n in result.statuses.items() if s not in (200, 503)}
    assert not unexpected, f"normal requests got {unexpected}: {result.summary()}"
    print(f"faults under load: {faults} faults, normal traffic {result.summary()}")
    assert_normal_requests_served(stack)


# -- upstreams that fail ----------------------------------------------------------------------


def test_upstream_reset_gives_502_or_503(stack: Stack) -> None:
    response = stack.predict(model=configs.RESET_MODEL)
    # Envoy answers 503 "upstream connect error or disconnect/reset before headers"; 502 is
    # the usual gateway answer for the same thing. Both say "the upstream broke".
    assert response.status in (502, 503), response
    assert stack.upstreams["reset"].requests, "the request never reached the resetting upstream"
    assert_normal_requests_served(stack)


def test_upstream_closing_mid_body_is_not_passed_off_as_complete(stack: Stack) -> None:
    """The upstream sends headers announcing 1000 bytes, 21 of them, then closes.

    Either the host buffered the response and answers 502, or it had already sent the
    headers downstream and must then cut the client connection short (Envoy resets the
    stream): the client must never receive what looks like a complete response.
    """
    with RawConnection("127.0.0.1", stack.port) as conn:
        conn.send(stack.predict_bytes(model=configs.MIDBODY_MODEL, token=stack.token()))
        response = conn.read_response("POST")
        if response is not None and response.status == 200:
            assert not response.complete, f"a truncated upstream body was passed off as complete: {response.body!r}"
            assert conn.wait_closed(5.0), "the client connection stayed open after a truncated body"
        else:
            assert response is not None and response.status in (502, 503), response
    assert stack.upstreams["midbody"].requests, "the request never reached the upstream"
    assert_normal_requests_served(stack)


@pytest.mark.parametrize("bad", BAD_RESPONSES.keys())
def test_malformed_upstream_response_gives_502(stack: Stack, bad: str) -> None:
    """An upstream that answers garbage: the client gets a clean 502 (Envoy: 503 "protocol
    error"), never the garbage, and the host keeps serving."""
    response = stack.predict(model=configs.BAD_RESPONSE_MODEL, query=f"?bad={bad}")
    assert response.status in (502, 503), f"{bad}: answered {response.status} {response.body[:100]!r}"
    assert stack.upstreams["bad-response"].requests, "the request never reached the upstream"
    assert_normal_requests_served(stack)


# -- a replica killed under load --------------------------------------------------------------


@pytest.fixture(params=[["connect-failure"], ["connect-failure", "reset"]], ids=["retry-connect-failure", "retry-reset-too"])
def killable_stack(request: pytest.FixtureRequest, tmp_path: Path, keys: KeySet) -> Iterator[Stack]:
    stack = Stack(tmp_path, keys, suite_ports, killable_iris_b=True)
    for route in stack.gateway.config["routes"]:
        route["retry"] = {"on": request.param, "numRetries": 1}
    stack.start()
    yield stack
    stack.stop()


@pytest.mark.slow
def test_replica_killed_under_load(killable_stack: Stack) -> None:
    """SIGKILL one of the two iris replicas while 16 clients keep predicting.

    Retrying connect failures only, requests in flight on the dead replica may fail with
    502/503 (at most one per client; new ones go to the survivor and the dead replica is
    ejected). Retrying resets too, as Envoy's `retry_on: reset` does, none may fail. In both,
    no request may hang or see another status, and the survivor serves everything after.
    """
    stack = killable_stack
    assert stack.replica is not None
    retries_resets = "reset" in stack.gateway.config["routes"][0]["retry"]["on"]
    token = stack.token()
    concurrency = 16
    with LoadGenerator(stack.port, lambda: stack.predict_bytes(token=token), concurrency) as load:
        wait_until(lambda: load.result.statuses[200] >= 200, "load did not get going")
        killed_at = time.monotonic()
        stack.replica.kill()
        served_before = sum(load.result.statuses.values())
        # Long enough after the kill for ejection and for any late failure to show.
        wait_until(
            lambda: time.monotonic() > killed_at + 8 and sum(load.result.statuses.values()) >= served_before + 1000,
            "load stalled after the kill",
            timeout=30,
        )
        result = load.stop()
    stack.gateway.assert_serving()
    print(f"replica killed under load (retry on reset: {retries_resets}): {result.summary()}")
    assert not result.failures, f"client-side failures: {result.summary()}"
    bad = {s: n for s, n in result.statuses.items() if s not in (200, 502, 503)}
    assert not bad, f"unexpected statuses: {result.summary()}"
    errors = [e for e in result.events if e[1] in ("502", "503")]
    assert len(errors) <= (0 if retries_resets else concurrency), f"{len(errors)} requests failed: {result.summary()}"
    late = [e for e in errors if e[0] > killed_at + 5.0]
    assert not late, f"requests still failing {late[0][0] - killed_at:.1f}s after the kill: {result.summary()}"
    assert stack.upstreams["iris-a"].requests, "the surviving replica served nothing"
