"""What the gateway forwards: the request a KServe server receives is the one the client sent,
body byte for byte, with exactly the headers the policy sets and none a client may not pick.

The answers are compared with KServe's elsewhere (test_walkthrough.py); these tests look at
the other half, the request, as the model servers recorded it (`/debug/requests`,
model_server.py). A gateway that rewrote, truncated or re-encoded a body, or let a client's
copy of a policy header through beside its own, would still get a 200 and be caught here.
"""

from __future__ import annotations

import json
import uuid

import requests

import demo_config
from helpers import recorded

IRIS = demo_config.IRIS
WINE = demo_config.WINE
IRIS_REPLICAS = ("iris-1", "iris-2")


def values(item: dict, name: str) -> list[str]:
    return [v for k, v in item["header_list"] if k == name]


def send(stack, token: str, path: str, body: bytes, **headers: str) -> tuple[str, requests.Response]:
    request_id = f"fwd-{uuid.uuid4()}"
    r = requests.post(
        f"{stack.gateway}{path}",
        data=body,
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}", "x-request-id": request_id, **headers},
        timeout=10,
    )
    assert r.status_code == 200, r.text
    return request_id, r


def test_v1_body_and_policy_headers_reach_the_model_server_as_sent(stack, token, subject):
    # Unusual but valid: whitespace, an exponent, an extra field with a unicode escape. A
    # gateway that re-serialised the JSON would change these bytes.
    body = b'{ "instances" : [ [5.1, 3.5e0, 1.4, 0.2] ],\n  "note": "\\u00e9t\\u00e9" }'
    request_id, _ = send(
        stack,
        token,
        f"/v1/models/{IRIS}:predict",
        body,
        **{demo_config.ROUTING_HEADER: WINE, demo_config.SUBJECT_HEADER: "admin"},
    )
    ((server, item),) = recorded(stack, "x-request-id", request_id, (*IRIS_REPLICAS, "wine"))
    assert server in IRIS_REPLICAS
    assert (item["method"], item["path"]) == ("POST", f"/v1/models/{IRIS}:predict")
    assert item["body"].encode("latin-1") == body
    # The filter's values, once each: the client's copies were removed, not kept beside them.
    assert values(item, demo_config.ROUTING_HEADER) == [IRIS]
    assert values(item, demo_config.SUBJECT_HEADER) == [subject]
    assert values(item, "content-type") == ["application/json"]
    assert values(item, "content-length") == [str(len(body))]
    # deploy/'s policy strips the token once verified (`jwt.stripAuthorization`).
    assert demo_config.DEPLOY_POLICY["jwt"]["stripAuthorization"] is True
    assert values(item, "authorization") == []


def test_v2_body_reaches_the_model_server_as_sent(stack, token):
    body = json.dumps(
        {"id": "fwd", "inputs": [{"name": "input-0", "shape": [2, 4], "datatype": "FP64", "data": [[5.1, 3.5, 1.4, 0.2], [6.8, 2.8, 4.8, 1.4]]}]},
        indent=1,
    ).encode()
    request_id, r = send(stack, token, f"/v2/models/{IRIS}/infer", body)
    assert r.json()["outputs"][0]["shape"] == [2]
    ((server, item),) = recorded(stack, "x-request-id", request_id, (*IRIS_REPLICAS, "wine"))
    assert server in IRIS_REPLICAS
    assert item["body"].encode("latin-1") == body
    assert values(item, demo_config.ROUTING_HEADER) == [IRIS]


def test_a_chunked_body_reaches_the_model_server_whole(stack, token):
    rows = [[5.1, 3.5, 1.4, 0.2]] * 50
    body = json.dumps({"instances": rows}).encode()
    pieces = [body[i : i + 97] for i in range(0, len(body), 97)]
    request_id, r = send(stack, token, f"/v1/models/{IRIS}:predict", iter(pieces))
    assert len(r.json()["predictions"]) == 50
    ((_, item),) = recorded(stack, "x-request-id", request_id, (*IRIS_REPLICAS, "wine"))
    assert item["body"].encode("latin-1") == body


def test_wine_gets_wines_requests_only(stack, token):
    body = json.dumps({"instances": [[13.2, 1.78, 2.14, 11.2, 100.0, 2.65, 2.76, 0.26, 1.28, 4.38, 1.05, 3.4, 1050.0]]}).encode()
    request_id, _ = send(stack, token, f"/v1/models/{WINE}:predict", body, **{demo_config.ROUTING_HEADER: IRIS})
    ((server, item),) = recorded(stack, "x-request-id", request_id, (*IRIS_REPLICAS, "wine"))
    assert server == "wine"
    assert item["body"].encode("latin-1") == body
    assert values(item, demo_config.ROUTING_HEADER) == [WINE]
