"""Ways around a quota: concurrency across worker VMs, aliases, the other protocol, another
token for the same subject. Each must draw from the same bucket.

The stack here gives iris a burst of 10 that refills at one request a minute, so during a
case the quota allows exactly 10 requests per subject (11 if a refill happens to land in
the case). Everything past it must be 429 with `Retry-After`, and never reach an upstream.
"""

from __future__ import annotations

import concurrent.futures
import copy
import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from reliability.harness import configs
from reliability.harness.ports import suite_ports
from reliability.harness.rawhttp import exchange, request_bytes
from reliability.harness.stack import Stack
from reliability.harness.tokens import KeySet

BURST = 10
ALIAS = "iris-alias"
V1_BODY = json.dumps({"instances": [[5.1, 3.5, 1.4, 0.2]]}).encode()
V2_BODY = json.dumps({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [5.1, 3.5, 1.4, 0.2]}]}).encode()


@pytest.fixture(scope="module")
def module_stack(tmp_path_factory: pytest.TempPathFactory, keys: KeySet) -> Iterator[Stack]:
    stack = Stack(Path(tmp_path_factory.mktemp("ratelimit")), keys, suite_ports)
    for entry in stack.gateway.config["filters"]:
        if entry["name"] == "modelgate":
            iris = copy.deepcopy(entry["config"]["models"][configs.IRIS])
            iris["aliases"] = [ALIAS]
            iris["rateLimit"] = {"requestsPerMinute": 1, "burst": BURST}
            entry["config"]["models"][configs.IRIS] = iris
    stack.start()
    yield stack
    stack.stop()


def fresh_subject() -> str:
    """Each case spends its own subject's bucket, so cases do not share quota."""
    return f"user-{uuid.uuid4()}"


def predict(stack: Stack, token: str, path: str = f"/v1/models/{configs.IRIS}:predict", body: bytes = V1_BODY) -> tuple[str, str | None]:
    """("upstream", None) when the request went through, else (status, Retry-After)."""
    headers = [("Content-Type", "application/json"), ("Authorization", f"Bearer {token}")]
    response = exchange(stack.port, request_bytes("POST", path, headers, body), "POST")
    assert response is not None, "closed without an answer"
    if response.header("x-upstream"):
        # The upstream's own status does not matter here (it answers 404 for an alias in
        # the path, as KServe would: the filter routes aliases but does not rewrite paths).
        return "upstream", None
    return str(response.status), response.header("retry-after")


def assert_quota_held(stack: Stack, outcomes: list[tuple[str, str | None]]) -> None:
    allowed = sum(1 for outcome, _ in outcomes if outcome == "upstream")
    limited = [retry for outcome, retry in outcomes if outcome == "429"]
    assert allowed + len(limited) == len(outcomes), f"answers other than the upstream's or 429: {outcomes}"
    assert BURST <= allowed <= BURST + 1, f"{allowed} allowed with a burst of {BURST}"
    assert all(retry is not None and int(retry) >= 1 for retry in limited), f"429 without a usable Retry-After: {limited}"
    assert len(stack.seen()) == allowed, f"{len(stack.seen())} reached an upstream, {allowed} were allowed"


def test_concurrent_requests_share_one_bucket_across_worker_vms(stack: Stack, keys: KeySet) -> None:
    """40 requests at once over 2 VMs: a per-VM counter, or a lost compare-and-swap race,
    would let up to twice the burst through."""
    token = keys.rs256(keys.claims(sub=fresh_subject()))
    with concurrent.futures.ThreadPoolExecutor(max_workers=40) as pool:
        outcomes = list(pool.map(lambda _: predict(stack, token), range(4 * BURST)))
    assert_quota_held(stack, outcomes)


def test_alias_and_v2_paths_draw_from_the_same_bucket(stack: Stack, keys: KeySet) -> None:
    token = keys.rs256(keys.claims(sub=fresh_subject()))
    paths = [
        (f"/v1/models/{configs.IRIS}:predict", V1_BODY),
        (f"/v1/models/{ALIAS}:predict", V1_BODY),
        (f"/v2/models/{configs.IRIS}/infer", V2_BODY),
        (f"/v2/models/{ALIAS}/versions/1/infer", V2_BODY),
    ]
    outcomes = [predict(stack, token, *paths[i % len(paths)]) for i in range(3 * BURST)]
    assert_quota_held(stack, outcomes)


def test_another_token_for_the_same_subject_draws_from_the_same_bucket(stack: Stack, keys: KeySet) -> None:
    """New tokens (RS256, ES256, different lifetimes) for one `sub` are one caller."""
    subject = fresh_subject()
    tokens = [keys.rs256(keys.claims(sub=subject, lifetime=600 + i)) for i in range(BURST)]
    tokens += [keys.es256(keys.claims(sub=subject, lifetime=900 + i)) for i in range(2 * BURST)]
    outcomes = [predict(stack, token) for token in tokens]
    assert_quota_held(stack, outcomes)
