"""The filter's own cost: time per request of modelgate.wasm under V8 and under wasmtime, beside
a minimal filter (the floor of any Proxy-Wasm filter), and the host calls each request makes.

Envoy Gateway runs Wasm filters in V8; `modelgate` runs them in wasmtime. This script writes one
plan (plugins, their configurations, the requests of each case, what each request must end with)
and replays it through both:

- V8: bench/v8/bench.mjs, Node.js's V8 with a small Proxy-Wasm ABI shim (bench/v8/shim.mjs, a
  stand-in for Envoy's host by necessity: no Envoy runs here);
- wasmtime: host/examples/filter_cost.rs, the real modelgate runtime (`ChainStream`), as the
  gateway and `modelgate test` drive it.

Both check every request's outcome (forwarded, with the headers and filter state the filter
must set), so a broken harness cannot report a fast wrong answer.

Cases (tokens minted here with PyJWT and the demo's RS256 key, claims valid for an hour):
    v1-cached   cached RS256 token + quota + 1-instance KServe V1 predict (bench/config/policy.json.in,
                the request of `make bench`'s mg-full and of bench/guest_instructions.py)
    v1-cold     the same with a token never seen before on each request (RS256 verified every time)
    v1-100      a 100-instance V1 predict (the policy's maxInstances raised from 64 to 128)
    v2          a KServe V2 infer with one [1, 4] FP32 input
    openai-chat a chat completion under bench/config/policy-llm.json.in (token budget reserved at
                admission, settled in on_log from the response's usage)
    floor       host/tests/filters/header_floor: reads `:path`, sets one header

Run after `make build` (and the floor filter's build, done here):
    .venv/bin/python bench/filter_cost.py [--requests N] [--out FILE.jsonl]
Prints a table and, with --out, one JSON line per runtime and case for bench/report.py.
A benchmark: it fails only when a request ends differently than the plan says.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

import jwt

REPO = Path(__file__).resolve().parent.parent
DEMO = REPO / "examples" / "policy-tests" / "demo"
ARTIFACT = REPO / "target" / "modelgate.wasm"
FLOOR_DIR = REPO / "target" / "test-filters"
FLOOR = FLOOR_DIR / "wasm32-wasip1" / "release" / "header_floor.wasm"
ISSUER = "https://issuer.modelgate.demo"
AUDIENCE = "modelgate-demo"
ROUTING_HEADER = "x-gateway-model-name"


def render(template: str) -> str:
    """A bench/config policy template with the demo's RS256 test key as its one JWKS key."""
    demo = json.loads((DEMO / "policy.json").read_text())
    keys = [key for key in demo["jwt"]["jwks"]["keys"] if key.get("kid") == "demo-rs256"]
    text = (REPO / "bench" / "config" / template).read_text()
    return text.replace("@ISSUER@", ISSUER).replace("@AUDIENCE@", AUDIENCE).replace("@JWKS@", json.dumps({"keys": keys}))


def batch_policy() -> str:
    policy = json.loads(render("policy.json.in"))
    policy["models"]["sklearn-iris"]["validation"]["maxInstances"] = 128
    return json.dumps(policy)


def token(jti: int) -> str:
    key = (DEMO / "keys" / "demo-rs256.key").read_text()
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": "bench", "scope": "predict", "iat": now,
              "exp": now + 3600, "jti": f"bench-{jti}"}
    return jwt.encode(claims, key, algorithm="RS256", headers={"kid": "demo-rs256"})


def request(method: str, path: str, bearer: str | None, body: bytes) -> dict:
    """The request headers as Envoy hands them to a filter: pseudo-headers first, lower-case."""
    headers = [[":authority", "models.local"], [":path", path], [":method", method], [":scheme", "http"],
               ["user-agent", "wrk"], ["content-type", "application/json"], ["content-length", str(len(body))],
               ["x-forwarded-proto", "http"], ["x-request-id", "3f1c3d3e-2b7a-4d0e-9a51-6d1f0c7b9e21"]]
    if bearer:
        headers.insert(4, ["authorization", f"Bearer {bearer}"])
    return {"headers": headers, "body": body.decode()}


def response(body: dict) -> dict:
    text = json.dumps(body)
    return {"headers": [[":status", "200"], ["content-type", "application/json"],
                        ["content-length", str(len(text))]], "body": text}


def v1(instances: int) -> bytes:
    return json.dumps({"instances": [[5.1, 3.5, 1.4, 0.2]] * instances}).encode()


def plan(requests: int) -> dict:
    cached = token(0)
    cold = [token(i + 1) for i in range(requests)]
    predictions = response({"predictions": [0]})
    iris = {"forwarded": True, "headers": {ROUTING_HEADER: "sklearn-iris"},
            "filterState": {"wasm.modelgate.model": "sklearn-iris", "wasm.modelgate.outcome": "allowed",
                            "wasm.modelgate.subject": "bench"}}
    v2_body = json.dumps({"inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "FP32",
                                      "data": [5.1, 3.5, 1.4, 0.2]}]}).encode()
    v2_response = response({"model_name": "sklearn-iris", "outputs": [
        {"name": "output-0", "shape": [1], "datatype": "INT64", "data": [0]}]})
    chat = json.dumps({"model": "markov-zen", "max_tokens": 16,
                       "messages": [{"role": "user", "content": "Is now better than never?"}]}).encode()
    chat_response = response({
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "markov-zen",
        "choices": [{"index": 0, "finish_reason": "length",
                     "message": {"role": "assistant", "content": "Now is better than never."}}],
        "usage": {"prompt_tokens": 12, "completion_tokens": 16, "total_tokens": 28}})
    predict = "/v1/models/sklearn-iris:predict"
    return {
        "plugins": {
            "full": {"wasm": str(ARTIFACT), "config": render("policy.json.in"), "holdHeaders": False},
            # The same policy with room for 100 instances (its maxInstances is 64).
            "full-batch": {"wasm": str(ARTIFACT), "config": batch_policy(), "holdHeaders": False},
            "llm": {"wasm": str(ARTIFACT), "config": render("policy-llm.json.in"), "holdHeaders": True},
            "floor": {"wasm": str(FLOOR), "config": "", "holdHeaders": False},
        },
        "cases": [
            {"name": "floor", "plugin": "floor", "requests": [request("POST", predict, cached, v1(1))],
             "response": predictions,
             "expect": {"forwarded": True, "headers": {"x-floor-path": str(len(predict))}, "filterState": {}}},
            {"name": "v1-cached", "plugin": "full", "requests": [request("POST", predict, cached, v1(1))],
             "response": predictions, "expect": iris},
            {"name": "v1-cold", "plugin": "full", "requests": [request("POST", predict, t, v1(1)) for t in cold],
             "response": predictions, "expect": iris, "distinct": True},
            {"name": "v1-100", "plugin": "full-batch", "requests": [request("POST", predict, cached, v1(100))],
             "response": predictions, "expect": iris},
            {"name": "v2", "plugin": "full",
             "requests": [request("POST", "/v2/models/sklearn-iris/infer", cached, v2_body)],
             "response": v2_response, "expect": iris},
            {"name": "openai-chat", "plugin": "llm",
             "requests": [request("POST", "/openai/v1/chat/completions", cached, chat)],
             "response": chat_response,
             "expect": {"forwarded": True, "headers": {ROUTING_HEADER: "markov-zen"},
                        "filterState": {"wasm.modelgate.model": "markov-zen", "wasm.modelgate.outcome": "allowed",
                                        "wasm.modelgate.subject": "bench"}}},
        ],
        "requests": requests,
    }


def build_floor() -> None:
    subprocess.run(["cargo", "build", "-q", "--release", "--target", "wasm32-wasip1", "-p", "header_floor",
                    "--manifest-path", str(REPO / "host/tests/filters/Cargo.toml"), "--target-dir", str(FLOOR_DIR)],
                   check=True)


def run(command: list[str], what: str) -> list[dict]:
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    if done.returncode != 0:
        raise SystemExit(f"{what} failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=2000, help="timed requests per case (default 2000)")
    parser.add_argument("--out", type=Path, help="append the results as JSON lines here")
    args = parser.parse_args()
    if not ARTIFACT.exists():
        raise SystemExit(f"{ARTIFACT} is missing: run `make wasm`")
    build_floor()
    with tempfile.TemporaryDirectory() as tmp:
        plan_file = Path(tmp) / "plan.json"
        plan_file.write_text(json.dumps(plan(args.requests)))
        loadavg = os.getloadavg()
        v8 = run(["node", "--no-liftoff", str(REPO / "bench/v8/bench.mjs"), str(plan_file)], "the V8 bench")
        wasmtime = run(["cargo", "run", "-q", "--release", "-p", "modelgate-host", "--example", "filter_cost", "--",
                        str(plan_file)], "the wasmtime bench")
    results = v8 + wasmtime
    floors = {r["runtime"]: r["ns_per_request"] for r in results if r["case"] == "floor"}
    print(f"filter cost per request ({args.requests} requests per case; load average {loadavg[0]:.2f} at start)")
    print(f"{'case':<12} {'runtime':<9} {'µs/request':>11} {'× floor':>8} {'host calls':>11}")
    for r in results:
        r["x_floor"] = r["ns_per_request"] / floors[r["runtime"]]
        r["loadavg"] = f"{loadavg[0]:.2f} {loadavg[1]:.2f} {loadavg[2]:.2f}"
        calls = f"{r['host_calls']:.1f}" if "host_calls" in r else "–"
        print(f"{r['case']:<12} {r['runtime']:<9} {r['ns_per_request'] / 1000:>11.2f} {r['x_floor']:>7.1f}× {calls:>11}")
    if args.out:
        with args.out.open("a") as out:
            for r in results:
                out.write(json.dumps({"type": "filter_cost", **r}) + "\n")


if __name__ == "__main__":
    main()
