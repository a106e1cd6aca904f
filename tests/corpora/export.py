"""Every input corpus the project has, as one JSON document of requests for the zero-trap run
(filter/tests/zero_traps.rs), which replays them through the production modelgate.wasm.

A trap fails the filter's VM, and under Envoy's default failure policy that is an outage of
the worker until the next config push (docs/failure-policy.md), so every corpus must pass
without one. Sources, each read where it lives so a case added there is replayed here too:

- fuzz/seeds/<target>/ and fuzz/corpus/<target>/ (when a fuzz run left one), decoded the way
  each fuzz target decodes its input (fuzz/fuzz_targets/*.rs), under the policies of
  fuzz/src/lib.rs (read from that file);
- tests/e2e/corpus.py: every malformed and edge KServe V1/V2 body, and every malformed gRPC
  `ModelInfer` body (with a valid one);
- OpenAI bodies (OPENAI_BODIES below, and the body_model fuzz inputs) on every OpenAI path
  under a policy with token budgets, answered with JSON and with SSE streams (whole, cut,
  malformed), so the response meter runs too;
- tests/reliability: every JWT attack and malformed Authorization value, every path attack
  with and without a token, every routing-header spoof, and the HTTP mutants of
  test_mutation_fuzz.py that still parse as a request, under the reliability policy with
  freshly generated keys (PyJWT + cryptography).

Output on stdout: {"configs": {id: text}, "plugin_configs": [{source, config}],
"cases": [{source, config, method, path, headers: [[name, value]], body, response?}]}, every
byte string as a list of byte values; `response` ([content type, body]) replaces the
default JSON answer of the "model server".
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import random
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO / "tests"), str(REPO / "tests" / "e2e")]

import corpus  # noqa: E402  tests/e2e/corpus.py
from reliability import test_header_spoofing, test_jwt_attacks, test_mutation_fuzz, test_path_attacks  # noqa: E402
from reliability.harness import configs, tokens  # noqa: E402

FUZZ = REPO / "fuzz"
JSON_TYPE = ("content-type", b"application/json")


def byte_list(data: bytes) -> list[int]:
    """Bytes as JSON can carry them whatever they hold: a list of byte values."""
    return list(data)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def fuzz_configs() -> tuple[dict[str, str], bytes]:
    """The fuzz fixtures' policies and HS256 secret, read from fuzz/src/lib.rs."""
    source = (FUZZ / "src" / "lib.rs").read_text(encoding="utf-8")
    secret = re.search(r'HS256_SECRET: &\[u8\] = b"([^"]*)"', source)[1].encode()
    raw = dict(re.findall(r'const (\w+)_CONFIG: &str = r#"(.*?)"#;', source, re.S))
    jwt = re.search(r'fn jwt_config\(\) -> String \{.*?format!\(\s*r#"(.*?)"#', source, re.S)[1]
    jwt = jwt.replace("{{", "{").replace("}}", "}").replace("{k}", b64url(secret))
    return {"fuzz-open": raw["OPEN"], "fuzz-keyed": raw["KEYED"], "fuzz-jwt": jwt}, secret


def fuzz_inputs(target: str) -> list[tuple[str, bytes]]:
    found = []
    for folder in (FUZZ / "seeds" / target, FUZZ / "corpus" / target):
        if folder.is_dir():
            found += [(str(p.relative_to(REPO)), p.read_bytes()) for p in sorted(folder.iterdir()) if p.is_file()]
    return found


def text(data: bytes) -> str:
    return data.decode("utf-8", "replace")


def clean_value(value: str) -> bytes:
    """Envoy refuses header values with CR, LF or NUL before any filter runs."""
    return "".join(c for c in value if c not in "\r\n\0").encode()


def case(source, config, method, path, headers=(), body=b""):
    if isinstance(path, str):
        path = path.encode("utf-8", "surrogateescape")
    return {
        "source": source,
        "config": config,
        "method": method,
        "path": byte_list(path),
        "headers": [[name, byte_list(value)] for name, value in headers],
        "body": byte_list(body),
    }


def signed_hs256(header: bytes, claims: bytes, secret: bytes) -> str:
    signing = f"{b64url(header)}.{b64url(claims)}".encode()
    return signing.decode() + "." + b64url(hmac.new(secret, signing, hashlib.sha256).digest())


def fuzz_cases(secret: bytes) -> tuple[list, list]:
    cases, plugin_configs = [], []
    for source, data in fuzz_inputs("config"):
        plugin_configs.append({"source": source, "config": byte_list(data)})
    for source, data in fuzz_inputs("router"):
        # The first line is the method, the rest the path (fuzz_targets/router.rs).
        method, newline, path = text(data).partition("\n")
        if not newline:
            method, path = "GET", text(data)
        cases.append(case(source, "fuzz-open", method, path))
    for target, path in (
        ("v1_body", "/v1/models/iris:predict"),
        ("v2_body", "/v2/models/iris/infer"),
        ("v2_body", "/v2/models/iris/versions/1/infer"),
        ("body_model", "/openai/v1/chat/completions"),
    ):
        for source, data in fuzz_inputs(target):
            cases.append(case(source, "fuzz-open", "POST", path, [JSON_TYPE], data))
    for source, data in fuzz_inputs("headers"):
        path, route, key = (text(data).split("\x1f") + ["", "", ""])[:3]
        headers = [("x-gateway-model-name", clean_value(route)), ("x-api-key", clean_value(key))]
        for _ in range(3):  # the target sends three requests on one store
            cases.append(case(source, "fuzz-keyed", "GET", path or "/v1/models/iris", headers))
    for source, data in fuzz_inputs("jwt"):
        raw = clean_value("Bearer " + text(data))
        cases.append(case(source, "fuzz-jwt", "GET", "/v1/models/sklearn-iris", [("authorization", raw)]))
        at = data.find(b"\xff")
        header, claims = (data[:at], data[at + 1 :]) if at >= 0 else (b'{"alg":"HS256","kid":"fuzz","typ":"JWT"}', data)
        token = signed_hs256(header, claims, secret)
        cases.append(case(source + " (signed)", "fuzz-jwt", "GET", "/v1/models/sklearn-iris", [("authorization", f"Bearer {token}".encode())]))
    return cases, plugin_configs


def e2e_cases() -> list:
    cases = []
    for name, bodies, path in (
        ("V1_MALFORMED", corpus.V1_MALFORMED, "/v1/models/sklearn-iris:predict"),
        ("V1_VALID_EDGES", corpus.V1_VALID_EDGES, "/v1/models/sklearn-iris:predict"),
        ("V2_MALFORMED", corpus.V2_MALFORMED, "/v2/models/sklearn-iris/infer"),
        ("V2_VALID_EDGES", corpus.V2_VALID_EDGES, "/v2/models/sklearn-iris/infer"),
    ):
        for label, body in bodies.items():
            cases.append(case(f"tests/e2e/corpus.py {name}[{label}]", "fuzz-open", "POST", path, [JSON_TYPE], body))
    grpc = [("content-type", b"application/grpc"), ("te", b"trailers")]
    infer = "/inference.GRPCInferenceService/ModelInfer"
    bodies = {**corpus.GRPC_MALFORMED, "valid": corpus.grpc_frame(corpus.GRPC_INFER_IRIS)}
    for label, body in bodies.items():
        cases.append(case(f"tests/e2e/corpus.py GRPC_MALFORMED[{label}]", "fuzz-open", "POST", infer, grpc, body))
    return cases


OPENAI_CONFIG = json.dumps({
    "version": 1,
    "rateLimit": {"key": {"header": "x-api-key"}, "maxKeys": 64},
    "openai": {},
    "models": {
        "llm": {
            "aliases": ["markov"],
            "protocols": ["openai"],
            "openai": {"maxTokens": 64, "tokenBudgets": [{"tokens": 1000, "per": "minute"}, {"tokens": 5000, "per": "day"}]},
        }
    },
})

OPENAI_PATHS = ("/openai/v1/chat/completions", "/openai/v1/completions", "/openai/v1/embeddings", "/openai/v1/rerank")

OPENAI_BODIES = {
    "chat": b'{"model":"llm","messages":[{"role":"user","content":"hi"}],"max_tokens":8}',
    "chat stream": b'{"model":"llm","messages":[{"role":"user","content":"hi"}],"stream":true}',
    "chat stream usage": b'{"model":"markov","messages":[],"stream":"yes","stream_options":{"include_usage":true}}',
    "completion": b'{"model":"llm","prompt":["a","b"],"n":2}',
    "token ids": b'{"model":"llm","prompt":[[1,2],[3]],"max_tokens":"4"}',
    "embeddings": b'{"model":"llm","input":[{"role":"user","content":[{"type":"text","text":"x"}]}]}',
    "huge max_tokens": b'{"model":"llm","prompt":"a","max_tokens":18446744073709551616}',
    "negative n": b'{"model":"llm","prompt":"a","n":-9223372036854775808}',
    "float tokens": b'{"model":"llm","prompt":"a","max_tokens":1e308}',
    "nested": b'{"model":"llm","messages":' + b"[" * 2000 + b"]" * 2000 + b"}",
    "surrogate": b'{"model":"llm","prompt":"\\ud800"}',
    "not an object": b"[1,2,3]",
    "empty": b"",
    "truncated": b'{"model":"llm","messages":[{"role":"us',
    "unknown model": b'{"model":"gpt-4","messages":[]}',
    "options without stream": b'{"model":"llm","messages":[],"stream_options":{"x":1}}',
    "content parts": b'{"model":"llm","messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"u","detail":"low"}},"x",'
    b'{"uuid":"u","image_pil":null},{"type":"input_audio","input_audio":{"data":"AA","format":"wav"}},{"type":"text","text":null}]}]}',
    "bad content parts": b'{"model":"llm","messages":[{"role":"narrator","content":[{"type":5},{"type":"text","text":[1]},{},'
    b'{"image_url":{"url":7}},{"type":"image_url","image_url":{"detail":[]}},{"uuid":1},null]}]}',
}

SSE_USAGE = (
    b'data: {"choices":[{"delta":{"content":"a"}}]}\n\n'
    b'data: {"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":1}}\n\n'
    b"data: [DONE]\n\n"
)

OPENAI_RESPONSES = {
    "json": ("application/json", b'{"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":2}}'),
    "json usage wrong": ("application/json", b'{"usage":{"prompt_tokens":-1,"completion_tokens":"x"}}'),
    "sse": ("text/event-stream", SSE_USAGE),
    "sse cut": ("text/event-stream", SSE_USAGE[:61]),
    "sse crlf": ("text/event-stream; charset=utf-8", SSE_USAGE.replace(b"\n", b"\r\n")),
    "sse garbage": ("text/event-stream", b"data: {\n\ndata:\n\n\n\n:comment\ndata: [1]\n\n" + b"\xff" * 64),
}


def openai_cases() -> list:
    cases = []
    key = ("x-api-key", b"zero-traps")
    for label, body in OPENAI_BODIES.items():
        # A key per body, so each gets past the budget at least once before it runs out.
        own_key = ("x-api-key", label.encode())
        for path in OPENAI_PATHS:
            for answer, (content_type, response) in OPENAI_RESPONSES.items():
                entry = case(f"export.py OPENAI_BODIES[{label}] {path} ({answer})", "openai", "POST", path, [JSON_TYPE, own_key], body)
                entry["response"] = [content_type, byte_list(response)]
                cases.append(entry)
    for source, data in fuzz_inputs("body_model"):
        for path in OPENAI_PATHS[:3]:
            cases.append(case(source, "openai", "POST", path, [JSON_TYPE, key], data))
    for path in ("/openai/v1/models", "/openai/v1/models/llm", "/openai/v1/models/nope", "/openai/v1/x"):
        cases.append(case("export.py OpenAI GET paths", "openai", "GET", path, [key]))
    return cases


def parse_request(data: bytes) -> tuple[str, bytes, list[tuple[str, bytes]], bytes] | None:
    """A raw HTTP/1.1 request as the host would hand it to the filters, or None when the
    host's HTTP parser would refuse it before any filter ran."""
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        return None
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ")
    if len(parts) != 3 or not parts[0].isalpha() or not parts[1] or parts[2] != b"HTTP/1.1":
        return None
    headers = []
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        token = re.fullmatch(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+", name)
        if not colon or not token or re.search(rb"[\x00-\x08\x0a-\x1f\x7f]", value):
            return None
        headers.append((name.decode().lower(), value.strip(b" \t")))
    headers = [(n, v) for n, v in headers if n not in ("host", "content-length", "transfer-encoding")]
    return parts[0].decode(), parts[1], headers, body


def reliability_cases() -> tuple[str, list]:
    keys = tokens.KeySet.generate()
    config = json.dumps(configs.filter_config(keys))
    cases = []
    forge = test_jwt_attacks.Forge(keys)
    iris = f"/v1/models/{configs.IRIS}:predict"
    body = test_path_attacks.BODY
    for name, attack in test_jwt_attacks.ATTACKS.items():
        token = attack(forge)
        headers = [JSON_TYPE, ("authorization", clean_value(f"Bearer {token}"))]
        cases.append(case(f"tests/reliability/test_jwt_attacks.py ATTACKS[{name}]", "reliability", "POST", iris, headers, body))
    for value in (b"Bearer", b"Bearer ", b"Basic YWRtaW46YWRtaW4=", b"Bearer \xff\xfe\xfd", b"Bearer " + base64.b64encode(b"\x00" * 30)):
        cases.append(case("tests/reliability/test_jwt_attacks.py malformed Authorization", "reliability", "POST", iris, [JSON_TYPE, ("authorization", value)], body))
    iris_token = keys.rs256(keys.claims(scope="models:iris"))
    for name, target in test_path_attacks.TARGETS.items():
        for token in (iris_token, None):
            headers = [JSON_TYPE] + ([("authorization", f"Bearer {token}".encode())] if token else [])
            cases.append(case(f"tests/reliability/test_path_attacks.py TARGETS[{name}]", "reliability", "POST", target, headers, body))
    for name, spoof in test_header_spoofing.SPOOFS.items():
        headers = [JSON_TYPE, ("authorization", f"Bearer {iris_token}".encode())]
        headers += [(k.lower(), v.encode()) for k, v in spoof]
        cases.append(case(f"tests/reliability/test_header_spoofing.py SPOOFS[{name}]", "reliability", "POST", iris, headers, test_header_spoofing.BODY))
    slot = test_mutation_fuzz.TOKEN_SLOT.encode()
    originals = test_mutation_fuzz.seeds()
    for seed in (1, 2, 3):
        rng = random.Random(seed)
        for i in range(test_mutation_fuzz.MUTANTS_PER_SEED):
            mutant = test_mutation_fuzz.mutate(rng, rng.choice(originals)).replace(slot, iris_token.encode())
            parsed = parse_request(mutant)
            if parsed:
                method, path, headers, rest = parsed
                cases.append(case(f"tests/reliability/test_mutation_fuzz.py seed {seed} mutant {i}", "reliability", method, path, headers, rest))
    return config, cases


def main() -> None:
    fuzz, secret = fuzz_configs()
    cases, plugin_configs = fuzz_cases(secret)
    cases += e2e_cases()
    cases += openai_cases()
    reliability_config, more = reliability_cases()
    cases += more
    configs_by_id = {**fuzz, "reliability": reliability_config, "openai": OPENAI_CONFIG}
    document = {"configs": configs_by_id, "plugin_configs": plugin_configs, "cases": cases}
    json.dump(document, sys.stdout)


if __name__ == "__main__":
    main()
