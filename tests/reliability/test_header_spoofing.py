"""Headers a client must not be able to set: the routing header the host routes on, and the
identity headers the filter fills from the token.

If a client-sent `x-gateway-model-name` survived, a caller allowed to use iris could steer
its request to wine's cluster (the host routes on that header); if a client-sent
`x-user-id` survived, a model server trusting it would see a forged identity.
"""

from __future__ import annotations

import pytest

from reliability.harness import configs
from reliability.harness.rawhttp import exchange, request_bytes
from reliability.harness.stack import CATCH_ALL, Stack

IRIS, WINE = configs.IRIS, configs.WINE
BODY = b'{"instances": [[5.1, 3.5, 1.4, 0.2]]}'


def iris_only_token(stack: Stack) -> str:
    return stack.keys.rs256(stack.keys.claims(sub="alice", scope="models:iris"))


SPOOFS = {
    "lower-case": [(configs.ROUTING_HEADER, WINE)],
    "mixed-case": [("X-Gateway-Model-Name", WINE)],
    "twice": [(configs.ROUTING_HEADER, WINE), (configs.ROUTING_HEADER, WINE)],
    "empty-then-wine": [(configs.ROUTING_HEADER, ""), (configs.ROUTING_HEADER, WINE)],
}


@pytest.mark.parametrize("spoof", SPOOFS.values(), ids=SPOOFS.keys())
def test_routing_header_from_the_client_cannot_pick_another_model(stack: Stack, spoof: list[tuple[str, str]]) -> None:
    headers = [("Content-Type", "application/json"), ("Authorization", f"Bearer {iris_only_token(stack)}"), *spoof]
    response = exchange(stack.port, request_bytes("POST", f"/v1/models/{IRIS}:predict", headers, BODY), "POST")
    assert response is not None and response.status == 200, response
    assert response.header("x-upstream") in ("iris-a", "iris-b"), f"served by {response.header('x-upstream')}"
    assert not stack.upstreams["wine"].requests, "the client's routing header sent the request to wine"
    (seen,) = stack.seen()
    assert [v for k, v in seen.headers if k.lower() == configs.ROUTING_HEADER] == [IRIS]


# Model-less paths and what the filter does with them when the caller holds a valid token:
# forward them (to the catch-all route, as KServe's generated route would), or answer the
# model list itself.
MODEL_LESS = {"/v2/health/ready": "forwarded", "/": "forwarded", "/metrics": "forwarded", "/v1/models/": "listed"}


@pytest.mark.parametrize("path", MODEL_LESS.keys())
@pytest.mark.parametrize("with_token", [True, False], ids=["token", "no-token"])
def test_routing_header_on_a_path_without_a_model_reaches_no_model(stack: Stack, path: str, with_token: bool) -> None:
    """Paths naming no model pass the filter without a routing header: a client-sent one
    must be gone too, or it would route the request into wine's cluster unchecked."""
    headers = [(configs.ROUTING_HEADER, WINE)]
    if with_token:
        headers.append(("Authorization", f"Bearer {iris_only_token(stack)}"))
    response = exchange(stack.port, request_bytes("GET", path, headers))
    assert response is not None, "closed without an answer"
    if not with_token:
        assert response.status == 401, response
        stack.assert_upstream_saw_nothing(f"spoofed routing header on {path} without a token")
    elif MODEL_LESS[path] == "listed":
        assert response.status == 200 and response.header("x-upstream") is None, response
        stack.assert_upstream_saw_nothing(f"model list on {path}")
    else:
        # Only the catch-all saw it, and without the client's routing header.
        assert stack.reached() == [(CATCH_ALL, "GET", path, None)]


@pytest.mark.parametrize("name", [configs.FORWARDED_SUB_HEADER, "X-User-Id"])
def test_identity_header_from_the_client_is_replaced_by_the_token_claim(stack: Stack, name: str) -> None:
    headers = [
        ("Content-Type", "application/json"),
        ("Authorization", f"Bearer {iris_only_token(stack)}"),
        (name, "admin"),
        (name, "root"),
    ]
    response = exchange(stack.port, request_bytes("POST", f"/v1/models/{IRIS}:predict", headers, BODY), "POST")
    assert response is not None and response.status == 200, response
    (seen,) = stack.seen()
    assert [v for k, v in seen.headers if k.lower() == configs.FORWARDED_SUB_HEADER] == ["alice"]


def test_identity_spoof_without_a_token_is_refused(stack: Stack) -> None:
    headers = [("Content-Type", "application/json"), (configs.FORWARDED_SUB_HEADER, "admin")]
    response = exchange(stack.port, request_bytes("POST", f"/v1/models/{IRIS}:predict", headers, BODY), "POST")
    assert response is not None and response.status == 401, response
    stack.assert_upstream_saw_nothing("identity spoof without token")
