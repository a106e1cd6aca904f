"""The guide's walkthrough (shared GUIDE-kgateway-kserve.md, "Testing the Setup" through
"Monitoring"), replayed through modelgate in front of real KServe servers.

Where the guide only shows a command, these tests assert what a user should see: the
gateway's answers are compared with the answers KServe gives when called directly, byte for
byte, and the model servers' own counters show where each request went.
"""

from __future__ import annotations

import json
import subprocess
import uuid

import pytest
import requests

import demo_config
import digits
from helpers import filter_outcome, model_server_requests, received_headers, total_requests

IRIS = demo_config.IRIS
WINE = demo_config.WINE
MNIST = demo_config.MNIST
# The cluster deploy/'s sklearn-iris predict rule becomes (Envoy Gateway's irRouteDestinationName).
IRIS_CLUSTER = f"httproute/ml-models/{IRIS}/rule/0"
JSON = {"Content-Type": "application/json"}
IRIS_ROWS = [[5.1, 3.5, 1.4, 0.2], [6.8, 2.8, 4.8, 1.4], [6.3, 3.3, 6.0, 2.5]]
WINE_ROW = [13.2, 1.78, 2.14, 11.2, 100.0, 2.65, 2.76, 0.26, 1.28, 4.38, 1.05, 3.4, 1050.0]


def direct(stack, server: str, method: str, path: str, body: bytes | None = None) -> requests.Response:
    url = f"{stack.model_server_url(server)}{path}"
    return requests.request(method, url, data=body, headers=JSON if body is not None else {}, timeout=10)


def assert_same_answer(via_gateway: requests.Response, from_kserve: requests.Response) -> None:
    assert via_gateway.status_code == from_kserve.status_code, via_gateway.text
    assert via_gateway.content == from_kserve.content
    assert via_gateway.headers.get("content-type") == from_kserve.headers.get("content-type")


def test_every_model_server_is_reachable(stack):
    for spec in stack.model_servers():
        r = direct(stack, spec.name, "GET", f"/v1/models/{spec.model_name}")
        assert r.status_code == 200
        assert r.json() == {"name": spec.model_name, "ready": True}


def test_readiness_is_the_admin_listeners_and_deploys_listeners_serve_models_only(stack, gw):
    # Envoy Gateway's listeners answer no health path of their own (docs/manifests.md); the
    # gateway's readiness is on its admin listener, as Envoy's is.
    before = total_requests(stack)
    r = requests.get(f"{stack.admin}/ready", timeout=5)
    assert (r.status_code, r.text) == (200, "ready\n")
    # On the HTTPS listener /health is a request like any other: the filter wants a token,
    # and with one no route of deploy/ matches it.
    assert requests.get(f"{stack.gateway}/health", timeout=5).status_code == 401
    assert gw.get(f"{stack.gateway}/health", timeout=5).status_code == 404
    assert total_requests(stack) == before


def test_plain_http_is_only_a_redirect_to_https(stack, gw):
    # deploy/gateway/https-redirect.yaml: the HTTP listener's one route. The filter runs first
    # (it targets the whole Gateway), so a request without a token gets its 401.
    path = f"/v1/models/{IRIS}:predict"
    before = total_requests(stack)
    r = gw.post(f"{stack.gateway_http}{path}", json={"instances": IRIS_ROWS[:1]}, allow_redirects=False, timeout=5)
    assert r.status_code == 301, r.text
    # Same authority, scheme https: Envoy strips the port only when it is the old scheme's
    # default (80 in the cluster; here the listener's local port).
    assert r.headers["location"] == f"https://127.0.0.1:{stack.ports.gateway}{path}"
    assert requests.post(f"{stack.gateway_http}{path}", json={"instances": IRIS_ROWS[:1]}, timeout=5).status_code == 401
    assert total_requests(stack) == before


def test_list_models_shows_the_models_the_token_may_call(stack, gw, subject):
    r = gw.get(f"{stack.gateway}/v1/models", timeout=5)
    assert r.status_code == 200
    assert sorted(r.json()["models"]) == [IRIS, WINE]

    wine_only = stack.token("ES256", sub=subject, scope=demo_config.WINE_SCOPE)
    r = requests.get(
        f"{stack.gateway}/v1/models", headers={"Authorization": f"Bearer {wine_only}"}, timeout=5
    )
    assert r.status_code == 200
    assert r.json()["models"] == [WINE]


def test_v2_list_models_is_answered_at_the_edge_too(stack, gw):
    before = total_requests(stack)
    r = gw.get(f"{stack.gateway}/v2/models", timeout=5)
    assert r.status_code == 200
    assert sorted(r.json()["models"]) == [IRIS, WINE]
    assert total_requests(stack) == before


@pytest.mark.parametrize("path", [f"/v1/models/{IRIS}", f"/v2/models/{IRIS}", f"/v2/models/{IRIS}/ready"])
def test_model_info_is_kserves_answer(stack, gw, path):
    assert_same_answer(gw.get(f"{stack.gateway}{path}", timeout=5), direct(stack, "iris-1", "GET", path))


V1_BODIES = {
    "one row": {"instances": IRIS_ROWS[:1]},
    "three rows": {"instances": IRIS_ROWS},
    "columnar inputs": {"inputs": IRIS_ROWS},
    "integers": {"instances": [[5, 3, 1, 0]]},
    "max instances": {"instances": IRIS_ROWS * 33 + IRIS_ROWS[:1]},
}


@pytest.mark.parametrize("name", list(V1_BODIES))
def test_v1_predict_is_byte_for_byte_kserves_answer(stack, gw, name):
    body = json.dumps(V1_BODIES[name]).encode()
    path = f"/v1/models/{IRIS}:predict"
    via = gw.post(f"{stack.gateway}{path}", data=body, headers=JSON, timeout=10)
    assert via.status_code == 200, via.text
    assert_same_answer(via, direct(stack, "iris-1", "POST", path, body))
    assert len(via.json()["predictions"]) == len(V1_BODIES[name].get("instances") or V1_BODIES[name]["inputs"])


def test_v2_infer_is_byte_for_byte_kserves_answer(stack, gw):
    # With an `id` KServe echoes it; without one it makes up a random one per call.
    body = json.dumps(
        {
            "id": "walkthrough-v2",
            "inputs": [{"name": "input-0", "shape": [3, 4], "datatype": "FP64", "data": IRIS_ROWS}],
        }
    ).encode()
    path = f"/v2/models/{IRIS}/infer"
    via = gw.post(f"{stack.gateway}{path}", data=body, headers=JSON, timeout=10)
    assert via.status_code == 200, via.text
    assert_same_answer(via, direct(stack, "iris-2", "POST", path, body))
    assert via.json()["outputs"][0]["data"] == [0, 1, 2]


def test_https_listener_serves_the_same_answer(stack, gw):
    body = json.dumps({"instances": IRIS_ROWS}).encode()
    path = f"/v1/models/{IRIS}:predict"
    via = gw.post(f"{stack.gateway_tls}{path}", data=body, headers=JSON, timeout=10, verify=str(stack.cert_path))
    assert_same_answer(via, direct(stack, "iris-1", "POST", path, body))


@pytest.mark.parametrize(
    ("protocol_flag", "base_attr", "status"),
    [("--http2", "gateway_tls", b"200"), ("--http2-prior-knowledge", "gateway_http", b"301")],
    ids=["h2 over TLS (ALPN)", "h2c on the HTTP listener, which only redirects"],
)
def test_http2_clients_get_the_same_answer(stack, token, protocol_flag, base_attr, status):
    # curl, since requests speaks HTTP/1.1 only; the status line proves the protocol used.
    body = json.dumps({"instances": IRIS_ROWS}).encode()
    path = f"/v1/models/{IRIS}:predict"
    result = subprocess.run(
        [
            "curl", "-si", protocol_flag, "--cacert", str(stack.cert_path),
            "-H", f"Authorization: Bearer {token}", "-H", "Content-Type: application/json",
            "--data-binary", "@-", f"{getattr(stack, base_attr)}{path}",
        ],
        input=body, capture_output=True, timeout=20, check=True,
    )  # fmt: skip
    head, _, answer = result.stdout.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/2 " + status), head
    if status == b"200":
        assert answer == direct(stack, "iris-1", "POST", path, body).content


def test_explain_goes_to_the_explainer(stack, gw):
    # deploy/'s explainer: sklearn-mnist's (an ART explainer, deploy/kserve/sklearn-mnist.yaml),
    # reached through its HTTPRoute's Exact explain rule, before the model's path prefixes.
    image, label = digits.image(0)
    body = json.dumps({"instances": [[image], [label]]}).encode()
    path = f"/v1/models/{MNIST}:explain"
    servers = ("mnist", "mnist-explainer")
    scoped = stack.token("RS256", sub="mnist-explain", scope=demo_config.MNIST_SCOPE)
    before = {n: model_server_requests(stack, n).get("v1_explain", 0) for n in servers}
    via = requests.post(f"{stack.gateway}{path}", data=body, headers={**JSON, "Authorization": f"Bearer {scoped}"}, timeout=30)
    after = {n: model_server_requests(stack, n).get("v1_explain", 0) for n in servers}
    assert via.status_code == 200, via.text
    assert after == {"mnist": before["mnist"], "mnist-explainer": before["mnist-explainer"] + 1}
    assert_same_answer(via, direct(stack, "mnist-explainer", "POST", path, body))
    explanation = via.json()["explanations"]
    assert explanation["prediction"] == label
    assert explanation["adversarial_prediction"] != label


def test_explain_of_a_model_without_explainer_is_kserves_501(stack, gw):
    # deploy/'s sklearn-iris has no explainer: `:explain` matches its predict rule's prefix.
    body = json.dumps({"instances": IRIS_ROWS[:1]}).encode()
    path = f"/v1/models/{IRIS}:explain"
    before = total_requests(stack, ["iris-1", "iris-2"])
    via = gw.post(f"{stack.gateway}{path}", data=body, headers=JSON, timeout=10)
    assert total_requests(stack, ["iris-1", "iris-2"]) == before + 1
    assert via.status_code == 501
    assert_same_answer(via, direct(stack, "iris-1", "POST", path, body))


def test_mnist_predicts_digits_through_deploys_route(stack, token):
    images, labels = zip(*(digits.image(i) for i in range(3)))
    rows = [sum((px for row in img for px in row), []) for img in images]
    assert all(len(r) == demo_config.MNIST_FEATURES for r in rows)
    body = json.dumps({"instances": rows}).encode()
    path = f"/v1/models/{MNIST}:predict"
    scoped = stack.token("RS256", sub="mnist-walkthrough", scope=demo_config.MNIST_SCOPE)
    via = requests.post(f"{stack.gateway}{path}", data=body, headers={**JSON, "Authorization": f"Bearer {scoped}"}, timeout=10)
    assert via.status_code == 200, via.text
    assert_same_answer(via, direct(stack, "mnist", "POST", path, body))
    assert via.json()["predictions"] == list(labels)
    # 783 features: the filter refuses it for deploy/'s featureCount before KServe sees it.
    short = json.dumps({"instances": [rows[0][:-1]]}).encode()
    before = total_requests(stack, ["mnist"])
    r = requests.post(f"{stack.gateway}{path}", data=short, headers={**JSON, "Authorization": f"Bearer {scoped}"}, timeout=10)
    assert r.status_code == 400, r.text
    assert total_requests(stack, ["mnist"]) == before


def test_two_models_are_routed_by_name(stack, gw):
    iris_before = sum(model_server_requests(stack, n).get("v1_predict", 0) for n in ("iris-1", "iris-2"))
    wine_before = model_server_requests(stack, "wine").get("v1_predict", 0)
    wine_body = json.dumps({"instances": [WINE_ROW]}).encode()
    wine_path = f"/v1/models/{WINE}:predict"
    via = gw.post(f"{stack.gateway}{wine_path}", data=wine_body, headers=JSON, timeout=10)
    assert via.status_code == 200, via.text
    assert model_server_requests(stack, "wine").get("v1_predict", 0) == wine_before + 1
    assert sum(model_server_requests(stack, n).get("v1_predict", 0) for n in ("iris-1", "iris-2")) == iris_before
    assert_same_answer(via, direct(stack, "wine", "POST", wine_path, wine_body))


def test_load_is_spread_over_both_iris_replicas(stack, gw):
    n = 20
    before = {r: model_server_requests(stack, r).get("v1_predict", 0) for r in ("iris-1", "iris-2")}
    body = json.dumps({"instances": IRIS_ROWS[:1]}).encode()
    for _ in range(n):
        r = gw.post(f"{stack.gateway}/v1/models/{IRIS}:predict", data=body, headers=JSON, timeout=10)
        assert r.status_code == 200, r.text
    served = {r: model_server_requests(stack, r).get("v1_predict", 0) - before[r] for r in before}
    assert sum(served.values()) == n
    # deploy/ sets no load balancer, so Envoy Gateway's least request; one request at a time
    # makes every pick a tie, which the host breaks round robin (docs/manifests.md): an even
    # split, give or take the one request a neighbour test may interleave.
    for replica, count in served.items():
        assert abs(count - n / 2) <= 1, served


def test_custom_headers_and_request_id_reach_the_model_server(stack, gw, subject):
    request_id = f"req-{uuid.uuid4()}"
    r = gw.post(
        f"{stack.gateway}/v1/models/{IRIS}:predict",
        data=json.dumps({"instances": IRIS_ROWS[:1]}),
        headers={**JSON, "X-User-ID": "user123", "X-Request-ID": request_id},
        timeout=10,
    )
    assert r.status_code == 200, r.text
    # deploy/'s ClientTrafficPolicy (requestID: PreserveOrGenerate) keeps the client's id; Envoy
    # puts none on the response (no always_set_request_id_in_response under Envoy Gateway).
    assert "x-request-id" not in r.headers, r.headers
    received = received_headers(stack, "x-request-id", request_id)
    assert len(received) == 1, received
    headers = received[0]
    assert headers["x-user-id"] == "user123"
    assert headers[demo_config.SUBJECT_HEADER] == subject  # the claim the filter forwards
    assert headers[demo_config.ROUTING_HEADER] == IRIS
    assert headers["x-forwarded-proto"] == "https"  # deploy/'s HTTPS listener


def test_a_request_id_is_generated_when_absent(stack, gw):
    marker = f"no-id-{uuid.uuid4()}"
    r = gw.post(
        f"{stack.gateway}/v1/models/{IRIS}:predict",
        data=json.dumps({"instances": IRIS_ROWS[:1]}),
        headers={**JSON, "X-User-ID": marker},
        timeout=10,
    )
    assert r.status_code == 200, r.text
    received = received_headers(stack, "x-user-id", marker)
    assert len(received) == 1, received
    assert uuid.UUID(received[0]["x-request-id"]).version == 4, received


def test_metrics_count_outcomes_per_model(stack, gw, subject):
    allowed_before = filter_outcome(stack, IRIS, "allowed")
    invalid_before = filter_outcome(stack, IRIS, "invalid")
    forbidden_before = filter_outcome(stack, WINE, "forbidden")
    ok = gw.post(f"{stack.gateway}/v1/models/{IRIS}:predict", json={"instances": IRIS_ROWS[:1]}, timeout=10)
    bad = gw.post(f"{stack.gateway}/v1/models/{IRIS}:predict", json={"instances": [[1.0]]}, timeout=10)
    iris_only = stack.token("EdDSA", sub=subject, scope=demo_config.IRIS_SCOPE)
    denied = requests.post(
        f"{stack.gateway}/v1/models/{WINE}:predict",
        json={"instances": [WINE_ROW]},
        headers={"Authorization": f"Bearer {iris_only}"},
        timeout=10,
    )
    assert (ok.status_code, bad.status_code, denied.status_code) == (200, 400, 403)
    assert filter_outcome(stack, IRIS, "allowed") == allowed_before + 1
    assert filter_outcome(stack, IRIS, "invalid") == invalid_before + 1
    assert filter_outcome(stack, WINE, "forbidden") == forbidden_before + 1


def test_gateway_metrics_count_requests_by_cluster(stack, gw):
    from helpers import gateway_metrics

    def iris_200() -> float:
        return sum(
            v
            for name, labels, v in gateway_metrics(stack)
            if name == "envoy_cluster_upstream_rq"
            and labels == {"envoy_cluster_name": IRIS_CLUSTER, "envoy_response_code": "200"}
        )

    before = iris_200()
    r = gw.post(f"{stack.gateway}/v1/models/{IRIS}:predict", json={"instances": IRIS_ROWS[:1]}, timeout=10)
    assert r.status_code == 200
    assert iris_200() == before + 1


def test_config_dump_shows_the_effective_config_without_secrets(stack):
    r = requests.get(f"{stack.admin}/config_dump", timeout=5)
    assert r.status_code == 200
    dump = r.json()
    text = r.text
    # deploy/'s routes, named and ordered as Envoy Gateway names and orders them (docs/manifests.md).
    assert {c["name"] for c in dump["clusters"]} == {
        IRIS_CLUSTER,
        "grpcroute/ml-models/sklearn-iris-grpc/rule/0",
        "httproute/ml-models/sklearn-mnist/rule/0",
        "httproute/ml-models/sklearn-mnist/rule/1",
        "httproute/ml-models/sklearn-wine/rule/0",
    }
    assert [rt["name"] for rt in dump["routes"]] == [
        "httproute/ml-models/sklearn-mnist/rule/0/match/0",  # the Exact explain rule first
        "httproute/ml-models/sklearn-wine/rule/0/match/2",  # the repository API's longer prefix
        "grpcroute/ml-models/sklearn-iris-grpc/rule/0/match/0",
        "httproute/ml-models/sklearn-iris/rule/0/match/0",
        "httproute/ml-models/sklearn-iris/rule/0/match/1",
        "httproute/ml-models/sklearn-mnist/rule/1/match/0",
        "httproute/ml-models/sklearn-mnist/rule/1/match/1",
        "httproute/ml-models/sklearn-wine/rule/0/match/0",
        "httproute/ml-models/sklearn-wine/rule/0/match/1",
        "httproute/kserve/model-fallback/rule/0/match/0",
        "httproute/kserve/model-fallback/rule/0/match/1",
        "httproute/kserve/https-redirect/rule/0/match/0",
    ]
    assert f"127.0.0.1:{stack.ports.iris2}" in text
    # The HMAC secrets (from the gateway's environment) must not leak through the admin listener.
    for alg in ("HS256", "HS384", "HS512"):
        assert stack.keyset.keys[alg].private.decode() not in text
