"""`modelgate serve --manifests` runs deploy/ itself in front of real KServe model servers.

The real `modelgate` binary (target/release) reads the manifests a user applies (through
tests/deploy/local-overlay/, which is deploy/ plus a test HMAC key) and serves them with Envoy
Gateway's semantics; the model servers are KServe's own Python server (tests/e2e/
model_server.py, sklearn-iris trained at start-up). So a route, listener, buffer limit or
policy that deploy/ gets wrong fails here: removing the iris route from deploy/ turns the
prediction below into a 404 (`test_the_prediction_depends_on_deploys_iris_route` shows it on a
copy of deploy/).

Also:
- `modelgate check --manifests deploy/` exits 0 and lists what the host does not emulate;
  a dangling reference fails naming the object and field;
- `/metrics` names the filter's metrics by deploy/'s EnvoyProxy stats tag rules;
- with no ClientTrafficPolicy, a 40 KiB body gets Envoy Gateway's 413 (its 32 KiB default
  buffer limit, internal/xds/translator/listener.go), while deploy/'s policy (2 MiB) lets the
  same body reach the filter;
- an explain request reaches the explainer when its rule's match is Exact, whichever order the
  rules are written in, and the predictor when the explain rule's path is a shorter prefix
  (Envoy Gateway's internal/gatewayapi/sort.go).
- two replicas serving deploy/ratelimit-global's BackendTrafficPolicy against one real
  redis-server (`--ratelimit-redis`) admit a caller exactly the policy's number of times
  between them, keyed on the headers the filter sets.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import jwt
import pytest
import requests
import yaml

from deploy_support import DEPLOY, HOST_BIN, REPO, WASM, run

# The e2e suite's certificate helper (a P-256 certificate for a name and 127.0.0.1).
sys.path.insert(0, str(REPO / "tests" / "e2e"))
import keys  # noqa: E402

OVERLAY = Path(__file__).resolve().parent / "local-overlay"
MODEL_SERVER = REPO / "tests" / "e2e" / "model_server.py"
START_TIMEOUT_S = 60.0
IRIS = "sklearn-iris"
# deploy/modelgate/envoyextensionpolicy.yaml's issuer and audience.
ISSUER = "https://idp.example.com/"
AUDIENCE = "modelgate"
ROWS = [[6.8, 2.8, 4.8, 1.4], [6.0, 3.4, 4.5, 1.6]]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(url: str, proc: subprocess.Popen, log: Path, **kwargs) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"{proc.args[:3]} exited with {proc.returncode}:\n{log.read_text()[-4000:]}")
        try:
            if requests.get(url, timeout=1, **kwargs).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    pytest.fail(f"{url} not ready after {START_TIMEOUT_S}s:\n{log.read_text()[-4000:]}")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def built() -> None:
    missing = [str(p) for p in (HOST_BIN, WASM) if not p.exists()]
    if missing:
        pytest.fail(f"not built: {', '.join(missing)}; run `make build`")


def model_server(tmp: Path, role: str) -> tuple[subprocess.Popen, int]:
    port = free_port()
    log = tmp / f"iris-{role}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, str(MODEL_SERVER), "--model", "iris", "--name", IRIS,
             "--port", str(port), "--role", role],  # fmt: skip
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    wait_for(f"http://127.0.0.1:{port}/v1/models/{IRIS}", proc, log)
    return proc, port


@pytest.fixture(scope="module")
def iris(tmp_path_factory) -> int:
    """A KServe predictor serving sklearn-iris; its port."""
    proc, port = model_server(tmp_path_factory.mktemp("predictor"), "predictor")
    yield port
    stop(proc)


@pytest.fixture(scope="module")
def iris_explainer(tmp_path_factory) -> int:
    """KServe's explainer component for sklearn-iris (answers `:explain`); its port."""
    proc, port = model_server(tmp_path_factory.mktemp("explainer"), "explainer")
    yield port
    stop(proc)


def requests_seen(port: int) -> int:
    """How many requests the model server got (model_server.py's own counter)."""
    text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    return int(sum(float(line.split()[-1]) for line in text.splitlines()
                   if line.startswith("model_server_requests_total{")))  # fmt: skip


def tls_secret_dir(tmp: Path) -> tuple[Path, Path]:
    """A directory holding the HTTPS listener's Secret `kserve/modelgate-tls` (in a cluster
    cert-manager makes it), and the certificate to trust."""
    cert_path, key_path = keys.self_signed_cert(str(tmp / "tls"), "modelgate-local")
    cert_pem, key_pem = Path(cert_path).read_text(), Path(key_path).read_text()
    secret_dir = tmp / "secret"
    secret_dir.mkdir()
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "kubernetes.io/tls",
        "metadata": {"name": "modelgate-tls", "namespace": "kserve"},
        "stringData": {"tls.crt": cert_pem, "tls.key": key_pem},
    }
    (secret_dir / "modelgate-tls.yaml").write_text(yaml.safe_dump(secret))
    return secret_dir, Path(cert_path)


class Gateway:
    """A running `modelgate serve --manifests`, stopped with SIGTERM on exit."""

    def __init__(
        self,
        tmp: Path,
        paths: list[Path],
        backends: dict[str, int],
        env: dict[str, str] | None = None,
        https: bool = True,
        extra: tuple[str, ...] = (),
    ):
        self.http = free_port()
        self.https = free_port()
        self.admin = admin = free_port()
        self.log = tmp / "modelgate.log"
        argv = [str(HOST_BIN), "serve", "--manifests", *map(str, paths), "--wasm", str(WASM),
                "--listener", f"http=127.0.0.1:{self.http}", "--admin", f"127.0.0.1:{admin}"]  # fmt: skip
        if https:
            argv += ["--listener", f"https=127.0.0.1:{self.https}"]
        for service, port in backends.items():
            argv += ["--backend", f"{service}=127.0.0.1:{port}"]
        argv += extra
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
        wait_for(f"http://127.0.0.1:{admin}/ready", self.proc, self.log)

    def stop(self) -> None:
        stop(self.proc)


@pytest.fixture(scope="module")
def hmac_secret() -> str:
    return secrets.token_urlsafe(48)


def token(secret: str, scope: str = f"predict:{IRIS}", sub: str = "alice") -> str:
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": sub, "scope": scope, "iat": now, "exp": now + 600}
    return jwt.encode(claims, secret, algorithm="HS256", headers={"kid": "local-test"})


def backends(predictor: int, explainer: int | None = None) -> dict[str, int]:
    """Every Service deploy/'s routes name. sklearn-mnist has no server here: its Services
    point at a port nothing listens on (no test sends to them)."""
    nowhere = free_port()
    return {
        "sklearn-iris-predictor.ml-models:80": predictor,
        # The GRPCRoute's port: KServe's gRPC server is not started here (no test calls it).
        "sklearn-iris-predictor.ml-models:8081": nowhere,
        "sklearn-mnist-predictor.ml-models": nowhere,
        "sklearn-mnist-explainer.ml-models": explainer or nowhere,
    }


def serve_over_https(tmp: Path, overlay: Path, iris: int, hmac_secret: str, extra: tuple[str, ...] = ()) -> Gateway:
    """`overlay` served with a fresh TLS Secret in front of the iris predictor; `gateway.ca`
    is the certificate to trust."""
    secret_dir, ca = tls_secret_dir(tmp)
    gateway = Gateway(tmp, [overlay, secret_dir], backends(iris), {"MODELGATE_JWT_HMAC_KEY": hmac_secret}, extra=extra)
    gateway.ca = ca
    return gateway


@pytest.fixture(scope="module")
def deployed(built, iris, hmac_secret, tmp_path_factory):
    """deploy/ (through the local overlay) served in front of the iris predictor."""
    tmp = tmp_path_factory.mktemp("deployed")
    gateway = serve_over_https(tmp, OVERLAY, iris, hmac_secret)
    yield gateway
    gateway.stop()


def predict(gateway: Gateway, secret: str, body: object, port: int | None = None, sub: str = "alice") -> requests.Response:
    return requests.post(
        f"https://127.0.0.1:{port or gateway.https}/v1/models/{IRIS}:predict",
        json=body,
        headers={"authorization": f"Bearer {token(secret, sub=sub)}"},
        verify=str(gateway.ca),
        timeout=10,
    )


# --- check ---------------------------------------------------------------------------------


def test_check_of_deploy_is_ok_and_lists_what_is_not_emulated(built):
    result = run([str(HOST_BIN), "check", "--manifests", str(DEPLOY), "--wasm", str(WASM)])
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "OK"
    assert "  NetworkPolicy ml-models/model-servers-from-gateway-only: not emulated: the host has no equivalent of a NetworkPolicy" in lines
    assert any(
        line.startswith("  ClientTrafficPolicy kserve/modelgate-client: spec.http2.initialStreamWindowSize: not emulated")
        for line in lines
    ), result.stdout
    # deploy/'s Secret and Services exist only in a cluster: reported, not errors, for check.
    assert any("Secret kserve/modelgate-tls is not in the manifests" in line and line.endswith("(serve needs it)") for line in lines)


def test_check_names_the_object_and_field_of_a_dangling_reference(built, tmp_path):
    extra = tmp_path / "extra.yaml"
    extra.write_text(
        """apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: typo, namespace: ml-models}
spec:
  parentRefs: [{name: kserve-ingress-gateway, namespace: kserve, sectionName: https}]
  rules: [{backendRefs: [{name: sklearn-iirs-predictor, port: 80}]}]
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: BackendTrafficPolicy
metadata: {name: lost, namespace: kserve}
spec:
  targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: kserve-gateway}]
  timeout: {http: {requestTimeout: 5s}}
"""
    )
    result = run([str(HOST_BIN), "check", "--manifests", str(DEPLOY), str(extra), "--wasm", str(WASM)])
    assert result.returncode == 1, result.stdout
    assert "HTTPRoute ml-models/typo: spec.rules[0].backendRefs[0]: Service ml-models/sklearn-iirs-predictor is not in the manifests" in result.stdout
    assert "BackendTrafficPolicy kserve/lost: spec.targetRefs[0]: Gateway kserve/kserve-gateway is not in the manifests" in result.stdout


# --- deploy/ served ------------------------------------------------------------------------


def test_deploy_serves_iris_predictions_from_the_real_model_server(deployed, iris, hmac_secret):
    before = requests_seen(iris)
    r = predict(deployed, hmac_secret, {"instances": ROWS})
    assert r.status_code == 200, r.text
    assert len(r.json()["predictions"]) == len(ROWS)
    assert requests_seen(iris) == before + 1
    # Without a token the filter (targeting the whole Gateway) answers before any route.
    r = requests.post(f"https://127.0.0.1:{deployed.https}/v1/models/{IRIS}:predict",
                      json={"instances": ROWS}, verify=str(deployed.ca), timeout=10)  # fmt: skip
    assert r.status_code == 401
    assert requests_seen(iris) == before + 1


def test_metrics_are_named_by_deploys_envoy_proxy_stats_tags(deployed, hmac_secret):
    assert predict(deployed, hmac_secret, {"instances": ROWS}).status_code == 200
    metrics = requests.get(f"http://127.0.0.1:{deployed.admin}/metrics", timeout=5).text
    # deploy/gateway/envoyproxy.yaml's tag rules, as Envoy's /stats/prometheus names them.
    line = next(
        (l for l in metrics.splitlines() if l.startswith('modelgate_requests{model="sklearn-iris",outcome="allowed"} ')),
        None,
    )
    assert line is not None, metrics
    assert float(line.split()[-1]) >= 1


def test_the_http_listener_only_redirects_to_https(deployed, hmac_secret):
    r = requests.get(
        f"http://127.0.0.1:{deployed.http}/v1/models/{IRIS}",
        headers={"authorization": f"Bearer {token(hmac_secret)}"},
        allow_redirects=False,
        timeout=10,
    )
    assert r.status_code == 301, r.text
    assert r.headers["location"].startswith("https://127.0.0.1")


def test_deploys_client_traffic_policy_lets_a_40_kib_body_reach_the_filter(deployed, iris, hmac_secret):
    before = requests_seen(iris)
    body = {"instances": [ROWS[0]] * 1900}
    assert len(json.dumps(body)) >= 40 * 1024
    r = predict(deployed, hmac_secret, body)
    # The filter's own answer (deploy/'s maxInstances is 100), not the buffer limit's 413.
    assert r.status_code == 400, r.text
    assert "instances" in r.json()["error"]
    assert requests_seen(iris) == before


def deploy_copy(tmp: Path, drop: dict[str, str]) -> Path:
    """deploy/ and the overlay copied to `tmp` (same layout), with `drop[kustomization]`
    left out of that kustomization's resources. Returns the overlay."""
    shutil.copytree(DEPLOY, tmp / "deploy", ignore=shutil.ignore_patterns("oci"))
    shutil.copytree(OVERLAY, tmp / "tests" / "deploy" / "local-overlay")
    for kustomization, resource in drop.items():
        path = tmp / "deploy" / kustomization
        doc = yaml.safe_load(path.read_text())
        assert resource in doc["resources"], f"{resource} not in {kustomization}"
        doc["resources"].remove(resource)
        path.write_text(yaml.safe_dump(doc))
    return tmp / "tests" / "deploy" / "local-overlay"


def test_without_a_client_traffic_policy_a_40_kib_body_gets_envoy_gateways_413(built, iris, hmac_secret, tmp_path):
    overlay = deploy_copy(tmp_path, {"gateway/kustomization.yaml": "clienttrafficpolicy.yaml"})
    gateway = serve_over_https(tmp_path, overlay, iris, hmac_secret)
    try:
        before = requests_seen(iris)
        body = {"instances": [ROWS[0]] * 1900}
        assert len(json.dumps(body)) >= 40 * 1024
        r = predict(gateway, hmac_secret, body)
        assert r.status_code == 413, r.text
        assert r.text == "Payload Too Large"
        assert requests_seen(iris) == before
        # A small body still goes through.
        assert predict(gateway, hmac_secret, {"instances": ROWS}).status_code == 200
    finally:
        gateway.stop()


def test_the_prediction_depends_on_deploys_iris_route(built, iris, hmac_secret, tmp_path):
    overlay = deploy_copy(tmp_path, {"kserve/kustomization.yaml": "httproute-sklearn-iris.yaml"})
    gateway = serve_over_https(tmp_path, overlay, iris, hmac_secret)
    try:
        before = requests_seen(iris)
        r = predict(gateway, hmac_secret, {"instances": ROWS})
        # The fallback's direct response: no route for the model.
        assert r.status_code == 404, r.text
        assert r.json() == {"error": "no model route for this request"}
        assert requests_seen(iris) == before
    finally:
        gateway.stop()


# --- route precedence with real servers ----------------------------------------------------

EXPLAIN_GATEWAY = """apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: ml}
spec:
  gatewayClassName: eg
  listeners: [{name: http, port: 80, protocol: HTTP}]
"""


def explain_route(explain_path: dict, explain_first: bool) -> str:
    explain = {"matches": [{"path": explain_path}], "backendRefs": [{"name": "iris-explainer", "port": 80}]}
    predict_rule = {
        "matches": [{"path": {"type": "PathPrefix", "value": "/v1/models"}}],
        "backendRefs": [{"name": "iris-predictor", "port": 80}],
    }
    rules = [explain, predict_rule] if explain_first else [predict_rule, explain]
    route = {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": "iris", "namespace": "ml"},
        "spec": {"parentRefs": [{"name": "gw"}], "rules": rules},
    }
    return EXPLAIN_GATEWAY + "---\n" + yaml.safe_dump(route)


@pytest.mark.parametrize(
    ("explain_path", "explain_first", "reaches"),
    [
        ({"type": "Exact", "value": f"/v1/models/{IRIS}:explain"}, True, "explainer"),
        ({"type": "Exact", "value": f"/v1/models/{IRIS}:explain"}, False, "explainer"),
        # Shorter than the predict rule's /v1/models: the prefix rule ranks first.
        ({"type": "PathPrefix", "value": "/v1"}, True, "predictor"),
    ],
    ids=["exact-explain-first", "exact-explain-second", "shorter-prefix-explain"],
)
def test_explain_reaches_the_explainer_when_its_match_is_exact(
    built, iris, iris_explainer, tmp_path, explain_path, explain_first, reaches
):
    manifests = tmp_path / "routes.yaml"
    manifests.write_text(explain_route(explain_path, explain_first))
    gateway = Gateway(
        tmp_path, [manifests], {"iris-predictor.ml": iris, "iris-explainer.ml": iris_explainer}, https=False
    )
    try:
        r = requests.post(
            f"http://127.0.0.1:{gateway.http}/v1/models/{IRIS}:explain", json={"instances": ROWS}, timeout=10
        )
        if reaches == "explainer":
            assert r.status_code == 200, r.text
            assert len(r.json()["explanations"]) == len(ROWS), r.text
        else:
            # KServe's predictor without an explainer answers 501.
            assert r.status_code == 501, r.text
        # Predictions still go to the predictor.
        r = requests.post(
            f"http://127.0.0.1:{gateway.http}/v1/models/{IRIS}:predict", json={"instances": ROWS}, timeout=10
        )
        assert r.status_code == 200, r.text
    finally:
        gateway.stop()


# --- deploy/ratelimit-global: one budget across replicas -----------------------------------


@pytest.fixture(scope="module")
def redis_port(tmp_path_factory) -> int:
    """A real redis-server (Debian package) on a free port, as Envoy Gateway's rate limit
    service would count in."""
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server is not installed: run scripts/setup.sh")
    port = free_port()
    tmp = tmp_path_factory.mktemp("redis")
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(tmp)],  # fmt: skip
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as conn:
                conn.sendall(b"PING\r\n")
                if conn.recv(16).startswith(b"+PONG"):
                    break
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                pytest.fail(f"redis-server on {port} did not answer")
            time.sleep(0.1)
    yield port
    stop(proc)


# Few requests, and an hour's window so the test never straddles a window's start; the
# selectors (the model header and the caller key the filter sets) stay deploy/'s.
GLOBAL_LIMIT = 4


def global_limit_overlay(tmp: Path) -> Path:
    overlay = tmp / "global-overlay"
    overlay.mkdir()
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [str(OVERLAY), str(DEPLOY / "ratelimit-global")],
        "patches": [
            {
                "target": {"group": "gateway.envoyproxy.io", "kind": "BackendTrafficPolicy",
                           "name": "modelgate-global-ratelimit", "namespace": "kserve"},  # fmt: skip
                "patch": yaml.safe_dump([
                    {"op": "replace", "path": "/spec/rateLimit/global/rules/0/limit",
                     "value": {"requests": GLOBAL_LIMIT, "unit": "Hour"}},
                ]),  # fmt: skip
            }
        ],
    }
    (overlay / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    return overlay


def test_replicas_serving_deploys_global_rate_limit_keep_one_budget_per_caller(
    built, iris, hmac_secret, redis_port, tmp_path
):
    overlay = global_limit_overlay(tmp_path)
    redis = ("--ratelimit-redis", f"127.0.0.1:{redis_port}")
    replicas = []
    try:
        for name in ("replica-a", "replica-b"):
            (tmp_path / name).mkdir()
            replicas.append(serve_over_https(tmp_path / name, overlay, iris, hmac_secret, extra=redis))
        before = requests_seen(iris)
        answers = [predict(replicas[i % 2], hmac_secret, {"instances": ROWS}) for i in range(GLOBAL_LIMIT + 4)]
        statuses = [r.status_code for r in answers]
        # Round robin over two replicas, each with its own filter limit (burst 100): the
        # shared Redis count lets exactly the policy's number through, the rest get Envoy's
        # rate limit answer without reaching the model server.
        assert statuses == [200] * GLOBAL_LIMIT + [429] * 4, statuses
        assert all(r.headers.get("x-envoy-ratelimited") == "true" for r in answers[GLOBAL_LIMIT:])
        assert requests_seen(iris) == before + GLOBAL_LIMIT
        # Another caller has a budget of its own (the Distinct caller key).
        assert predict(replicas[1], hmac_secret, {"instances": ROWS}, sub="bob").status_code == 200
    finally:
        for gateway in replicas:
            gateway.stop()


def test_check_of_deploys_global_rate_limit_says_serve_needs_its_redis(built):
    result = run([str(HOST_BIN), "check", "--manifests", str(DEPLOY), str(DEPLOY / "ratelimit-global"), "--wasm", str(WASM)])
    assert result.returncode == 0, result.stdout + result.stderr
    assert any(
        "BackendTrafficPolicy kserve/modelgate-global-ratelimit: spec.rateLimit.global:" in line
        and "--ratelimit-redis" in line
        for line in result.stdout.splitlines()
    ), result.stdout
