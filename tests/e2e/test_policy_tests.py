"""`modelgate test` against the real thing: the same requests, sent through the gateway in
front of the KServe servers and run offline by `modelgate test`, get the same verdicts.

The differential: every case below is sent to the running stack first (tokens minted by
PyJWT with the stack's keys). What the client got (status, the headers a policy answers with,
the filter's body) and what the model server received (found by request id in its
`/debug/requests`: the routing header, the forwarded subject) become the expectations of a
generated test file over the stack's own filter config. `modelgate test` must pass every case.

Also: the demo example's policy.json is the demo policy (so the example suite tests what
`make demo` runs).
"""

from __future__ import annotations

import json
import subprocess
import time
import uuid

import requests
import yaml

import corpus
import demo_config
import keys
import stack as stack_mod
from helpers import recent_requests
from test_security import ATTACKS

IRIS = demo_config.IRIS
WINE = demo_config.WINE
BOTH = f"{demo_config.IRIS_SCOPE} {demo_config.WINE_SCOPE}"
IRIS_ROW = corpus.ROW
WINE_ROW = [13.2, 1.78, 2.14, 11.2, 100.0, 2.65, 2.76, 0.26, 1.28, 4.38, 1.05, 3.4, 1050.0]
EXAMPLE = stack_mod.REPO / "examples" / "policy-tests" / "demo"
# The headers a policy answers with; compared (value, or absence) on every filter reply.
REPLY_HEADERS = ["content-type", "www-authenticate", "retry-after", "ratelimit-limit", "ratelimit-remaining"]
# What the model server must have received from the filter, when the request got through.
FORWARDED_HEADERS = [demo_config.ROUTING_HEADER, demo_config.SUBJECT_HEADER]


def j(value) -> bytes:
    return json.dumps(value).encode()


def v1(model: str) -> str:
    return f"/v1/models/{model}:predict"


def iris_v2() -> bytes:
    return j({"inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "FP64", "data": IRIS_ROW}]})


def cases(stack) -> list[dict]:
    """(name, method, path, body, token factory, extra headers) for each single-request case."""
    iris_body = j({"instances": [IRIS_ROW]})
    wine_body = j({"instances": [WINE_ROW]})
    good = lambda s, sub: s.token("RS256", sub=sub, scope=BOTH)  # noqa: E731
    out = [
        ("iris V1 predict", "POST", v1(IRIS), iris_body, good, {}),
        ("wine V1 predict", "POST", v1(WINE), wine_body, good, {}),
        ("iris V2 infer", "POST", f"/v2/models/{IRIS}/infer", iris_v2(), good, {}),
        ("iris V1 explain", "POST", f"/v1/models/{IRIS}:explain", iris_body, good, {}),
        ("iris model info", "GET", f"/v1/models/{IRIS}", None, good, {}),
        ("wine V2 ready", "GET", f"/v2/models/{WINE}/ready", None, good, {}),
        ("V1 model list", "GET", "/v1/models", None, good, {}),
        ("V2 model list", "GET", "/v2/models", None, good, {}),
        (
            "model list with one scope",
            "GET",
            "/v1/models",
            None,
            lambda s, sub: s.token("ES256", sub=sub, scope=demo_config.WINE_SCOPE),
            {},
        ),
        ("client routing header replaced", "POST", v1(IRIS), iris_body, good, {demo_config.ROUTING_HEADER: WINE}),
        ("client subject header replaced", "POST", v1(IRIS), iris_body, good, {demo_config.SUBJECT_HEADER: "admin"}),
        ("unknown model V1", "POST", v1("no-such-model"), iris_body, good, {}),
        ("unknown model V2", "POST", "/v2/models/no-such-model/infer", iris_v2(), good, {}),
        ("missing token", "POST", v1(IRIS), iris_body, None, {}),
    ]
    for alg in keys.ALGORITHMS:
        out.append(
            (f"valid {alg} token", "POST", v1(IRIS), iris_body,
             lambda s, sub, alg=alg: s.token(alg, sub=sub, scope=BOTH), {})
        )  # fmt: skip
    for attack, factory in ATTACKS.items():
        out.append((f"token: {attack}", "POST", v1(IRIS), iris_body, factory, {}))
    for scope, model in [(demo_config.WINE_SCOPE, IRIS), (demo_config.IRIS_SCOPE, WINE), ("", IRIS)]:
        body = iris_body if model == IRIS else wine_body
        out.append(
            (f"scope {scope!r} on {model}", "POST", v1(model), body,
             lambda s, sub, scope=scope: s.token("ES256", sub=sub, scope=scope), {})
        )  # fmt: skip
    out.append(
        ("scopes as a list claim", "POST", v1(IRIS), iris_body,
         lambda s, sub: s.token("RS384", sub=sub, scp=[demo_config.IRIS_SCOPE]), {})
    )  # fmt: skip
    for name in ["truncated JSON", "too few features", "ragged rows", "row of strings", "null feature",
                 "instances empty", "both instances and inputs", "top-level array", "empty body",
                 "invalid UTF-8", "nested too deep", "misspelt key"]:  # fmt: skip
        out.append((f"V1 body: {name}", "POST", v1(IRIS), corpus.V1_MALFORMED[name], good, {}))
    for name in list(corpus.V2_MALFORMED)[:6]:
        out.append((f"V2 body: {name}", "POST", f"/v2/models/{IRIS}/infer", corpus.V2_MALFORMED[name], good, {}))
    # Valid but for its size: past the policy's maxBodyBytes, within the buffer limit.
    small = iris_body[:-1]
    oversize = small + b" " * (demo_config.MAX_BODY_BYTES + 1 - len(iris_body)) + b"}"
    out.append(("body over maxBodyBytes", "POST", v1(IRIS), oversize, good, {}))
    out.append(("wine with iris features", "POST", v1(WINE), iris_body, good, {}))
    return out


def send(stack, method: str, path: str, body: bytes | None, token: str | None, extra: dict) -> tuple[dict, requests.Response]:
    headers = {"x-request-id": f"difftest-{uuid.uuid4()}", **extra}
    if body is not None:
        headers["content-type"] = "application/json"
    if token is not None:
        headers["authorization"] = f"Bearer {token}"
    r = requests.request(method, f"{stack.gateway}{path}", data=body, headers=headers, timeout=15)
    return headers, r


def received_by_model_servers(stack) -> dict[str, dict]:
    """Headers each model server received, by request id."""
    seen = {}
    for server in stack.model_servers():
        for item in recent_requests(stack, server.name):
            request_id = item["headers"].get("x-request-id", "")
            if request_id.startswith("difftest-"):
                seen[request_id] = item["headers"]
    return seen


def expectation(r: requests.Response, upstream: dict | None) -> tuple[dict, dict | None]:
    """The `expect` block (and the stub's answer) that states what the gateway did."""
    if upstream is not None:
        expect = {
            "status": r.status_code,
            "upstream": {"headers": {h: upstream[h] for h in FORWARDED_HEADERS if h in upstream},
                         "headersAbsent": [h for h in FORWARDED_HEADERS if h not in upstream]},
        }  # fmt: skip
        return expect, {"status": r.status_code}
    present = {h: r.headers[h] for h in REPLY_HEADERS if h in r.headers}
    absent = [h for h in REPLY_HEADERS if h not in r.headers]
    expect = {"status": r.status_code, "headers": present, "headersAbsent": absent, "upstream": False}
    expect["bodyExact"] = r.text
    return expect, None


def request_block(method: str, path: str, headers: dict, body_file: str | None) -> dict:
    block = {"method": method, "path": path, "headers": dict(headers)}
    if body_file is not None:
        block["bodyFile"] = body_file
    return block


def test_the_runner_agrees_with_the_gateway_in_front_of_kserve(stack, tmp_path):
    sent = []
    for i, (name, method, path, body, factory, extra) in enumerate(cases(stack)):
        subject = f"difftest-{i}-{uuid.uuid4().hex[:8]}"
        token = factory(stack, subject) if factory else None
        headers, r = send(stack, method, path, body, token, extra)
        sent.append((name, method, path, body, headers, r))

    # A sequence: wine's burst of 5 per subject, then 429, sent back to back.
    subject = f"difftest-quota-{uuid.uuid4().hex[:8]}"
    token = stack.token("RS256", sub=subject, scope=BOTH)
    quota = [send(stack, "POST", v1(WINE), j({"instances": [WINE_ROW]}), token, {}) for _ in range(6)]
    statuses = [r.status_code for _, r in quota]
    assert statuses == [200] * 5 + [429], statuses

    seen = received_by_model_servers(stack)
    now = int(time.time())
    tests = []
    for i, (name, method, path, body, headers, r) in enumerate(sent):
        body_file = None
        if body is not None:
            body_file = f"bodies/{i}.bin"
            (tmp_path / "bodies").mkdir(exist_ok=True)
            (tmp_path / body_file).write_bytes(body)
        expect, stub = expectation(r, seen.get(headers["x-request-id"]))
        case = {"name": f"{i:02d} {name}", "request": request_block(method, path, headers, body_file), "expect": expect}
        if stub:
            case["upstreamResponse"] = stub
        tests.append(case)
    (tmp_path / "bodies" / "wine.json").write_bytes(j({"instances": [WINE_ROW]}))
    steps = []
    for headers, r in quota:
        expect, stub = expectation(r, seen.get(headers["x-request-id"]))
        steps.append({"request": {"headers": {"x-request-id": headers["x-request-id"]}}, "expect": expect})
    quota_headers = {k: v for k, v in quota[0][0].items() if k != "x-request-id"}
    tests.append(
        {"name": "wine quota, burst of 5 then 429",
         "request": request_block("POST", v1(WINE), quota_headers, "bodies/wine.json"),
         "steps": steps}
    )  # fmt: skip

    statuses = {case["expect"]["status"] for case in tests if "expect" in case}
    assert {200, 400, 401, 403, 404, 413} <= statuses, f"the cases should cover every verdict: {statuses}"
    assert len(tests) >= 50

    suite = {
        "policy": {"file": str(stack.filter_config_path), "env": stack.filter_env},
        "now": now,
        # As the stack's gateway: deploy/'s ClientTrafficPolicy.
        "bufferLimit": demo_config.BUFFER_LIMIT,
        "tests": tests,
    }
    suite_file = tmp_path / "differential.test.yaml"
    suite_file.write_text(yaml.safe_dump(suite, sort_keys=False, allow_unicode=True))
    run = subprocess.run(
        [str(stack_mod.HOST_BINARY), "test", "--wasm", str(stack_mod.WASM), str(suite_file)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, f"{run.stdout}\n{run.stderr}\n(suite: {suite_file})"
    assert run.stdout.splitlines()[-1] == f"{len(tests)} passed, 0 failed", run.stdout


def test_the_example_policy_is_the_demo_policy():
    # examples/policy-tests/demo/policy.json must be demo_config.filter_config over the
    # example's test keys; regenerate with examples/policy-tests/demo/make_policy.py.
    checked_in = json.loads((EXAMPLE / "policy.json").read_text())
    assert checked_in == demo_config.filter_config(keys.KeySet.load(str(EXAMPLE / "keys")))
