"""Every path KServe 0.21 serves gets the decision docs/config.md's endpoint table states.

The table lists the routes the installed KServe registers (`kserve/protocol/rest/server.py`,
`v1_endpoints.py`, `v2_endpoints.py`); each case here sends one of them through the demo
gateway to the real KServe servers and proves where it went with the servers' own request
counters (`model_server_requests_total`). The repository extension (`/v2/repository/...`) has
its own suite, test_repository.py.
"""

from __future__ import annotations

import pytest
import requests

import corpus
import demo_config
from helpers import total_requests

IRIS = demo_config.IRIS
IRIS_SERVERS = ["iris-1", "iris-2"]
V2_BODY = corpus.v2(corpus.tensor())

# (method, path, body, the servers that may answer it)
MODEL_PATHS = [
    ("GET", f"/v1/models/{IRIS}", None, IRIS_SERVERS),
    ("POST", f"/v1/models/{IRIS}:predict", corpus.j({"instances": [corpus.ROW]}), IRIS_SERVERS),
    # deploy/'s sklearn-iris has no explainer: its predictor answers (501).
    ("POST", f"/v1/models/{IRIS}:explain", corpus.j({"instances": [corpus.ROW]}), IRIS_SERVERS),
    ("GET", f"/v2/models/{IRIS}", None, IRIS_SERVERS),
    ("GET", f"/v2/models/{IRIS}/versions/1", None, IRIS_SERVERS),
    ("GET", f"/v2/models/{IRIS}/ready", None, IRIS_SERVERS),
    ("GET", f"/v2/models/{IRIS}/versions/1/ready", None, IRIS_SERVERS),
    ("POST", f"/v2/models/{IRIS}/infer", V2_BODY, IRIS_SERVERS),
    ("POST", f"/v2/models/{IRIS}/versions/1/infer", V2_BODY, IRIS_SERVERS),
]

MODEL_LESS_PATHS = [
    ("GET", "/v2"),
    ("GET", "/v2/health/live"),
    ("GET", "/v2/health/ready"),
    ("GET", "/"),
    ("GET", "/metrics"),
    ("GET", "/openapi.json"),
    ("HEAD", "/openapi.json"),
    ("GET", "/docs"),
    ("POST", "/v1/timeseries/forecast"),
    ("GET", "/v1/timeseries/models"),
]


def send(stack, method: str, path: str, body: bytes | None, token: str | None) -> requests.Response:
    headers = {"Content-Type": "application/json"} if body is not None else {}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return requests.request(method, f"{stack.gateway}{path}", data=body, headers=headers, timeout=15)


@pytest.mark.parametrize(("method", "path", "body", "servers"), MODEL_PATHS, ids=[f"{m} {p}" for m, p, _, _ in MODEL_PATHS])
def test_model_path_is_forwarded_with_the_models_policy(stack, token, subject, method, path, body, servers):
    # Without the model's scope: 403 at the edge, nothing reaches a server.
    before = total_requests(stack)
    wine_only = stack.token("RS256", sub=subject, scope=demo_config.WINE_SCOPE)
    denied = send(stack, method, path, body, wine_only)
    assert denied.status_code == 403, denied.text
    assert total_requests(stack) == before

    # With it: forwarded to exactly one of the model's servers, which gives KServe's answer.
    before_model = total_requests(stack, servers)
    r = send(stack, method, path, body, token)
    assert r.status_code < 500 or r.status_code == 501, f"{r.status_code} {r.text[:300]}"
    assert total_requests(stack, servers) == before_model + 1
    assert total_requests(stack) == before + 1
    direct = requests.request(
        method,
        f"{stack.model_server_url(servers[0])}{path}",
        data=body,
        headers={"Content-Type": "application/json"} if body is not None else {},
        timeout=15,
    )
    assert r.status_code == direct.status_code, (r.text[:300], direct.text[:300])


@pytest.mark.parametrize("path", ["/v1/models", "/v2/models"])
def test_model_listing_is_answered_at_the_edge(stack, gw, path):
    before = total_requests(stack)
    r = gw.get(f"{stack.gateway}{path}", timeout=5)
    assert r.status_code == 200
    assert sorted(r.json()["models"]) == [IRIS, demo_config.WINE]
    assert total_requests(stack) == before


@pytest.mark.parametrize(("method", "path"), MODEL_LESS_PATHS, ids=[f"{m} {p}" for m, p in MODEL_LESS_PATHS])
def test_model_less_path_is_authenticated_and_not_routed(stack, token, method, path):
    before = total_requests(stack)
    anonymous = send(stack, method, path, None, None)
    assert anonymous.status_code == 401
    authenticated = send(stack, method, path, None, token)
    # The demo routes only by the routing header, which no model-less path gets: the
    # gateway's own "no route" answer, and no model server sees the request.
    assert authenticated.status_code == 404, authenticated.text
    assert total_requests(stack) == before
    # Control: KServe itself does serve the path (or answers it as its table says).
    direct = requests.request(method, f"{stack.model_server_url('iris-1')}{path}", timeout=5)
    expected = {"/docs": 404, "/v1/timeseries/forecast": 404, "/v1/timeseries/models": 404}.get(path, 200)
    assert direct.status_code == expected, direct.text[:200]
