"""The modelgate host runs the filter with the configuration taken straight from the
EnvoyExtensionPolicy in deploy/, and decides exactly as with the same configuration inline.

This is what lets a platform team try the in-cluster policy locally: `fromEnvoyExtensionPolicy`
reads the manifest's `spec.wasm[].config`, `rootID`, `failOpen` and `env.hostKeys` the way Envoy
Gateway delivers them. Each run starts the real `modelgate` binary with the real
`modelgate.wasm` in front of a small Python upstream on loopback (ports 18400-18499), sends the
same requests, and compares status codes and bodies.

The policy in deploy/ trusts only its identity provider's public keys, whose private halves
nobody has, so no valid token exists for it. The manifest itself runs requests that need no
valid token (every one is refused before any model sees it); a copy of the manifest that
differs in nothing but `jwt.jwks` (keys this test makes, checked field by field) runs the full
set: valid calls, unknown model, wrong scope, bad bodies.
"""

from __future__ import annotations

import copy
import json
import os
import secrets
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import jwt
import pytest
import yaml

from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from deploy_support import DEPLOY, WASM, load_docs, run

POLICY = DEPLOY / "modelgate" / "envoyextensionpolicy.yaml"
PORTS = range(18400, 18500)
READY_TIMEOUT_S = 30.0
TEST_KID = "deploy-test"


# --- loopback plumbing ---------------------------------------------------------------------


def free_port(taken: set[int]) -> int:
    """A port in this suite's range that nothing listens on (others' suites use other ranges)."""
    for port in PORTS:
        if port in taken:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        taken.add(port)
        return port
    raise RuntimeError(f"no free port in {PORTS.start}-{PORTS.stop - 1}")


class Upstream(BaseHTTPRequestHandler):
    """Stands in for a KServe predictor: answers 200 with what it was asked, so a response
    proves the request got through and where the gateway routed it."""

    seen: list[dict]

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self.answer(b"")

    def do_POST(self) -> None:  # noqa: N802
        length = int(self.headers.get("content-length", "0"))
        self.answer(self.rfile.read(length))

    def answer(self, body: bytes) -> None:
        seen = {
            "path": self.path,
            "model": self.headers.get("x-gateway-model-name"),
            "limitKey": self.headers.get("x-modelgate-ratelimit-key"),
            "authorization": self.headers.get("authorization"),
            "body": body.decode("utf-8", "replace"),
        }
        self.server.seen.append(seen)  # type: ignore[attr-defined]
        payload = json.dumps({"upstream": seen}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (base signature)
        pass


@pytest.fixture(scope="module")
def ports() -> set[int]:
    return set()


@pytest.fixture(scope="module")
def upstream(ports):
    server = ThreadingHTTPServer(("127.0.0.1", free_port(ports)), Upstream)
    server.seen = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


class Host:
    """A running `modelgate serve`, stopped with SIGTERM (its graceful drain) on exit."""

    def __init__(self, binary: Path, config: Path, env: dict[str, str], admin: int, listener: int):
        self.listener = listener
        self.log = config.with_suffix(".log")
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                [str(binary), "serve", "--config", str(config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            if self.proc.poll() is not None:
                pytest.fail(f"modelgate exited with {self.proc.returncode}:\n{self.log.read_text()}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{admin}/ready", timeout=1) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"modelgate not ready after {READY_TIMEOUT_S}s:\n{self.log.read_text()}")
            time.sleep(0.05)  # polling for readiness, not an assertion

    def request(self, method: str, path: str, headers: dict[str, str], body: bytes | None) -> tuple[int, dict, str | None]:
        """(status, JSON body, WWW-Authenticate challenge)."""
        req = urllib.request.Request(f"http://127.0.0.1:{self.listener}{path}", data=body, method=method)
        for name, value in headers.items():
            req.add_header(name, value)
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return resp.status, json.loads(resp.read()), resp.headers.get("www-authenticate")
        except urllib.error.HTTPError as err:
            raw = err.read()
            return err.code, json.loads(raw) if raw else {}, err.headers.get("www-authenticate")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# --- the policy and the requests -----------------------------------------------------------


def deployed_policy() -> dict:
    (policy,) = load_docs(POLICY)
    return policy


@pytest.fixture(scope="module")
def signing_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def with_test_keys(policy: dict, key: rsa.RSAPrivateKey) -> dict:
    """The policy with `jwt.jwks.keys` replaced by the public half of `key`, nothing else."""
    jwk = json.loads(RSAAlgorithm.to_jwk(key.public_key()))
    jwk.update({"kid": TEST_KID, "alg": "RS256", "use": "sig"})
    changed = copy.deepcopy(policy)
    changed["spec"]["wasm"][0]["config"]["jwt"]["jwks"]["keys"] = [jwk]
    return changed


def host_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG")} | {"RUST_LOG": "warn"}


def token(config: dict, key: rsa.RSAPrivateKey | str, scopes: list[str], kid: str = TEST_KID, algorithm: str = "RS256", **claims: object) -> str:
    now = int(time.time())
    audiences = config["jwt"]["audiences"]
    payload = {
        "iss": config["jwt"]["issuer"],
        "aud": audiences[0] if isinstance(audiences, list) else audiences,
        "sub": "deploy-test-user",
        "iat": now,
        "exp": now + 3600,
        "scope": " ".join(scopes),
        **claims,
    }
    return jwt.encode(payload, key, algorithm=algorithm, headers={"kid": kid})


def request_set(config: dict, key: rsa.RSAPrivateKey) -> list[tuple[str, str, str, dict[str, str], bytes | None]]:
    """(name, method, path, headers, body): each a different decision the filter makes."""
    iris = token(config, key, ["predict:sklearn-iris"])
    mnist_only = token(config, key, ["predict:sklearn-mnist"])
    expired = token(config, key, ["predict:sklearn-iris"], exp=int(time.time()) - 3600)
    json_ct = {"content-type": "application/json"}
    good = json.dumps({"instances": [[5.1, 3.5, 1.4, 0.2]]}).encode()
    return [
        ("valid predict", "POST", "/v1/models/sklearn-iris:predict", {"authorization": f"Bearer {iris}", **json_ct}, good),
        ("valid model info", "GET", "/v1/models/sklearn-iris", {"authorization": f"Bearer {iris}"}, None),
        ("valid v2 infer", "POST", "/v2/models/sklearn-iris/infer", {"authorization": f"Bearer {iris}", **json_ct},
         json.dumps({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [5.1, 3.5, 1.4, 0.2]}]}).encode()),
        ("model list", "GET", "/v1/models", {"authorization": f"Bearer {iris}"}, None),
        ("unknown model", "POST", "/v1/models/nope:predict", {"authorization": f"Bearer {iris}", **json_ct}, good),
        ("no token", "POST", "/v1/models/sklearn-iris:predict", json_ct, good),
        ("expired token", "POST", "/v1/models/sklearn-iris:predict", {"authorization": f"Bearer {expired}", **json_ct}, good),
        ("other model's scope", "POST", "/v1/models/sklearn-iris:predict", {"authorization": f"Bearer {mnist_only}", **json_ct}, good),
        ("wrong feature count", "POST", "/v1/models/sklearn-iris:predict", {"authorization": f"Bearer {iris}", **json_ct},
         json.dumps({"instances": [[1.0, 2.0, 3.0]]}).encode()),
        ("not json", "POST", "/v1/models/sklearn-iris:predict", {"authorization": f"Bearer {iris}", **json_ct}, b"{instances"),
        ("client-set routing header", "POST", "/v1/models/nope:predict",
         {"authorization": f"Bearer {iris}", "x-gateway-model-name": "sklearn-iris", **json_ct}, good),
        ("model repository", "POST", "/v2/repository/models/sklearn-iris/unload", {"authorization": f"Bearer {iris}"}, b""),
        # KServe's ART explainer reads instances[0] as the inputs and instances[1] as their
        # labels (its sample input.json: one 28x28x1 image and its label).
        ("art explain", "POST", "/v1/models/sklearn-mnist:explain", {"authorization": f"Bearer {mnist_only}", **json_ct},
         json.dumps({"instances": [[[[[-0.5]] * 28] * 28], [0]]}).encode()),
        ("tabular explain body", "POST", "/v1/models/sklearn-mnist:explain", {"authorization": f"Bearer {mnist_only}", **json_ct}, good),
    ]


def model_routes(model: str) -> list[dict]:
    """The rules of deploy/kserve/httproute-<model>.yaml: the model's V1/V2 paths, and only
    with the header the filter sets (the explainer rule is left out: no explainer here)."""
    header = [{"name": "x-gateway-model-name", "exact": model}]
    return [
        {"name": f"{model}{prefix}", "match": {"prefix": prefix, "headers": header}, "cluster": model}
        for prefix in ("/v1/models", "/v2/models")
    ]


def host_config(tmp: Path, name: str, filter_source: dict, upstream_port: int, listener: int, admin: int) -> Path:
    config = {
        "version": 1,
        "listeners": [{"address": f"127.0.0.1:{listener}", "healthPath": None}],
        "admin": {"address": f"127.0.0.1:{admin}"},
        "clusters": [
            {"name": "sklearn-iris", "endpoints": [f"127.0.0.1:{upstream_port}"]},
            {"name": "sklearn-mnist", "endpoints": [f"127.0.0.1:{upstream_port}"]},
        ],
        "routes": model_routes("sklearn-iris") + model_routes("sklearn-mnist"),
        "filters": [{"name": "modelgate", "wasm": str(WASM), "vmCount": 2, **filter_source}],
        "accessLog": {"enabled": False},
        "reload": {"watch": False},
    }
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def from_policy(file: Path) -> dict:
    return {"fromEnvoyExtensionPolicy": {"file": str(file), "wasmName": "modelgate"}}


def inline(policy: dict) -> dict:
    (entry,) = policy["spec"]["wasm"]
    return {
        "rootId": entry["rootID"],
        "failOpen": entry["failOpen"],
        "env": {"hostKeys": entry["env"]["hostKeys"]},
        "config": entry["config"],
    }


def decisions(host_bin, tmp, name, source, upstream, ports, requests) -> tuple[list[tuple[int, dict, str | None]], list[dict]]:
    """The (status, body) of each request, and what reached the upstream, in order."""
    listener, admin = free_port(ports), free_port(ports)
    config = host_config(tmp, name, source, upstream.server_address[1], listener, admin)
    upstream.seen.clear()
    host = Host(host_bin, config, host_env(), admin, listener)
    try:
        answers = [host.request(method, path, headers, body) for _, method, path, headers, body in requests]
    finally:
        host.stop()
    return answers, list(upstream.seen)


def compare(host_bin, tmp, policy_file, policy, upstream, ports, requests) -> tuple[dict[str, tuple[int, dict, str | None]], list[dict]]:
    """Run `requests` through the policy read from `policy_file` and through `policy`'s config
    inline; assert both decide alike. Returns the decisions by request name and what reached
    the upstream."""
    via_policy, reached_via_policy = decisions(host_bin, tmp, "from-policy", from_policy(policy_file), upstream, ports, requests)
    via_inline, reached_via_inline = decisions(host_bin, tmp, "inline", inline(policy), upstream, ports, requests)
    names = [name for name, *_ in requests]
    assert dict(zip(names, via_policy)) == dict(zip(names, via_inline))
    assert reached_via_policy == reached_via_inline
    return dict(zip(names, via_policy)), reached_via_policy


# --- the tests -----------------------------------------------------------------------------


def test_check_accepts_the_policy_in_deploy(host_bin, wasm_bytes, tmp_path):
    config = host_config(tmp_path, "check", from_policy(POLICY), 18499, 18498, 18497)
    result = run([str(host_bin), "check", "--config", str(config)], env=host_env())
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "OK"


def test_check_names_the_field_of_a_broken_policy(host_bin, wasm_bytes, tmp_path):
    """The filter really parses the manifest's config: a typo is refused, naming its path."""
    policy = deployed_policy()
    policy["spec"]["wasm"][0]["config"]["models"]["sklearn-iris"]["rateLimit"]["requestsPerMinit"] = 5
    broken = tmp_path / "broken-policy.yaml"
    broken.write_text(yaml.safe_dump(policy))
    config = host_config(tmp_path, "broken", from_policy(broken), 18499, 18498, 18497)
    result = run([str(host_bin), "check", "--config", str(config)], env=host_env())
    assert result.returncode != 0
    assert "models.sklearn-iris.rateLimit" in result.stdout + result.stderr


def test_deployed_policy_refuses_alike_from_the_manifest_and_inline(host_bin, wasm_bytes, tmp_path, upstream, ports, signing_key):
    """The manifest as committed: without its identity provider's keys every request is refused
    before a model sees it, for the same reason either way."""
    policy = deployed_policy()
    config = policy["spec"]["wasm"][0]["config"]
    foreign = token(config, signing_key, ["predict:sklearn-iris"], kid="idp-rs256-2026")
    unknown_kid = token(config, signing_key, ["predict:sklearn-iris"])
    json_ct = {"content-type": "application/json"}
    body = json.dumps({"instances": [[5.1, 3.5, 1.4, 0.2]]}).encode()
    requests = [
        ("no token", "POST", "/v1/models/sklearn-iris:predict", json_ct, body),
        ("model list without token", "GET", "/v1/models", {}, None),
        ("token from another signer", "POST", "/v1/models/sklearn-iris:predict", {"authorization": f"Bearer {foreign}", **json_ct}, body),
        ("unknown key id", "POST", "/v1/models/sklearn-iris:predict", {"authorization": f"Bearer {unknown_kid}", **json_ct}, body),
        ("not a jwt", "GET", "/v1/models/sklearn-mnist", {"authorization": "Bearer not-a-jwt"}, None),
    ]
    decided, reached = compare(host_bin, tmp_path, POLICY, policy, upstream, ports, requests)
    assert {name: status for name, (status, _, _) in decided.items()} == dict.fromkeys(decided, 401)
    assert reached == []
    assert all(challenge.startswith('Bearer realm="modelgate"') for _, _, challenge in decided.values())


def test_policy_with_test_keys_decides_alike_from_the_manifest_and_inline(host_bin, wasm_bytes, tmp_path, upstream, ports, signing_key):
    deployed = deployed_policy()
    policy = with_test_keys(deployed, signing_key)
    # Nothing but the keys differs from the manifest in deploy/.
    assert {**policy["spec"]["wasm"][0]["config"], "jwt": None} == {**deployed["spec"]["wasm"][0]["config"], "jwt": None}
    assert {**policy["spec"]["wasm"][0]["config"]["jwt"], "jwks": None} == {**deployed["spec"]["wasm"][0]["config"]["jwt"], "jwks": None}
    assert {**policy["spec"], "wasm": None} == {**deployed["spec"], "wasm": None}
    policy_file = tmp_path / "envoyextensionpolicy.yaml"
    policy_file.write_text(yaml.safe_dump(policy, sort_keys=False))

    config = policy["spec"]["wasm"][0]["config"]
    decided, reached = compare(host_bin, tmp_path, policy_file, policy, upstream, ports, request_set(config, signing_key))

    # The decisions are the policy's, not an artefact of both runs failing alike.
    assert {name: status for name, (status, _, _) in decided.items()} == {
        "valid predict": 200,
        "valid model info": 200,
        "valid v2 infer": 200,
        "model list": 200,
        "unknown model": 404,
        "no token": 401,
        "expired token": 401,
        "other model's scope": 403,
        "wrong feature count": 400,
        "not json": 400,
        "client-set routing header": 404,
        # The policy gives no model adminScopes, so the filter refuses the repository API
        # (and deploy/'s HTTPRoutes would not route it either).
        "model repository": 403,
        "art explain": 200,
        "tabular explain body": 400,
    }
    assert decided["unknown model"][1] == {"error": "Model with name nope does not exist."}
    assert decided["wrong feature count"][1] == {"error": "instances[0]: expected 4 features, got 3"}
    assert decided["model list"][1] == {"models": ["sklearn-iris"]}
    assert decided["tabular explain body"][1] == {
        "error": "instances: the ART explainer takes [inputs, labels], got 1 entries"
    }
    assert 'error="insufficient_scope"' in decided["other model's scope"][2]
    assert 'error="invalid_token"' in decided["expired token"][2]
    # Only the valid model requests reached the upstream, routed by the header the filter set,
    # carrying the caller's rate-limit key for Envoy Gateway's global limit and no token.
    assert [(seen["path"], seen["model"]) for seen in reached] == [
        ("/v1/models/sklearn-iris:predict", "sklearn-iris"),
        ("/v1/models/sklearn-iris", "sklearn-iris"),
        ("/v2/models/sklearn-iris/infer", "sklearn-iris"),
        ("/v1/models/sklearn-mnist:explain", "sklearn-mnist"),
    ]
    assert config["rateLimit"]["keyHeader"] == "x-modelgate-ratelimit-key"
    assert all(seen["limitKey"] == "deploy-test-user" for seen in reached)
    assert all(seen["authorization"] is None for seen in reached)


# --- an HMAC secret through env.hostKeys -----------------------------------------------------

HMAC_VAR = "MODELGATE_JWT_HMAC_KEY"
HMAC_KID = "gateway-hs256"


def with_env_hmac_key(policy: dict) -> dict:
    """The policy plus an `oct` key whose secret is the variable the manifest lists in
    `env.hostKeys` (docs/deploy.md, "Configure the policy"), with HS256 allowed."""
    changed = copy.deepcopy(policy)
    jwt_config = changed["spec"]["wasm"][0]["config"]["jwt"]
    jwt_config["jwks"]["keys"].append({"kty": "oct", "kid": HMAC_KID, "alg": "HS256", "use": "sig", "kFromEnv": HMAC_VAR})
    jwt_config["algorithms"].append("HS256")
    return changed


def test_hmac_key_from_host_keys_verifies_tokens_and_stays_out_of_config(host_bin, wasm_bytes, tmp_path, upstream, ports):
    """The secret is in the gateway's environment only: the manifest's `env.hostKeys` lets the
    VM read it, the filter verifies HS256 tokens with it, and neither the policy nor the host's
    config dump nor its log shows it."""
    deployed = deployed_policy()
    assert HMAC_VAR in deployed["spec"]["wasm"][0]["env"]["hostKeys"]
    policy = with_env_hmac_key(deployed)
    policy_file = tmp_path / "envoyextensionpolicy-hmac.yaml"
    policy_file.write_text(yaml.safe_dump(policy, sort_keys=False))
    config = policy["spec"]["wasm"][0]["config"]
    secret = secrets.token_urlsafe(48)

    # Without the variable the filter refuses the config, naming the key and the variable.
    check = host_config(tmp_path, "hmac-check", from_policy(policy_file), 18499, 18498, 18497)
    result = run([str(host_bin), "check", "--config", str(check)], env=host_env())
    assert result.returncode != 0
    assert f"jwt.jwks.keys[2].kFromEnv: environment variable {HMAC_VAR} is not set" in result.stdout + result.stderr

    listener, admin = free_port(ports), free_port(ports)
    serve = host_config(tmp_path, "hmac-serve", from_policy(policy_file), upstream.server_address[1], listener, admin)
    upstream.seen.clear()
    host = Host(host_bin, serve, host_env() | {HMAC_VAR: secret}, admin, listener)
    try:
        json_ct = {"content-type": "application/json"}
        body = json.dumps({"instances": [[5.1, 3.5, 1.4, 0.2]]}).encode()
        scopes = ["predict:sklearn-iris"]
        signed = token(config, secret, scopes, kid=HMAC_KID, algorithm="HS256")
        forged = token(config, secrets.token_urlsafe(48), scopes, kid=HMAC_KID, algorithm="HS256")
        path = "/v1/models/sklearn-iris:predict"
        accepted = host.request("POST", path, {"authorization": f"Bearer {signed}", **json_ct}, body)
        refused = host.request("POST", path, {"authorization": f"Bearer {forged}", **json_ct}, body)
        with urllib.request.urlopen(f"http://127.0.0.1:{admin}/config_dump", timeout=10) as resp:
            dump = resp.read().decode()
    finally:
        host.stop()

    assert accepted[0] == 200, accepted
    assert accepted[1]["upstream"]["model"] == "sklearn-iris"
    assert refused[0] == 401, refused
    assert 'error="invalid_token"' in refused[2]
    assert [seen["path"] for seen in upstream.seen] == [path]
    assert HMAC_VAR in dump  # the dump is the real one: it names the variable ...
    assert secret not in dump  # ... but never its value
    assert secret not in policy_file.read_text()
    assert secret not in host.log.read_text()
