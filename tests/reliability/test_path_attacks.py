"""Unicode, traversal and encoding tricks in model names and paths.

The filter routes and authorizes by the model name in the path. A path that names no
configured model exactly must be refused (404 unknown model, or 400) and never reach an
upstream: a model server that decodes or normalises the path itself could otherwise be
handed a model the policy never checked. Every trick below ends on wine, and the token
may call iris only: 403 is therefore right too (the filter read the name as wine and
refused it), and any request reaching an upstream is a bypass. A path the filter let
through as model-less would reach the stack's catch-all upstream, so it is seen too.
"""

from __future__ import annotations

import json

import pytest

from reliability.harness import configs
from reliability.harness.rawhttp import RawConnection
from reliability.harness.stack import Stack

IRIS, WINE = configs.IRIS, configs.WINE
BODY = json.dumps({"instances": [[5.1, 3.5, 1.4, 0.2]]}).encode()

# Request targets as sent on the wire (bytes, so raw UTF-8 and odd bytes go out untouched).
TARGETS: dict[str, bytes] = {
    "dot-segments-into-other-model": f"/v1/models/{IRIS}/../{WINE}:predict".encode(),
    "dot-segments-out-of-models": b"/v1/models/../../admin:predict",
    "encoded-dot-segments": f"/v1/models/{IRIS}/%2e%2e/{WINE}:predict".encode(),
    "encoded-slash": f"/v1/models/{IRIS}%2f..%2f{WINE}:predict".encode(),
    "double-encoded-slash": f"/v1/models/{IRIS}%252f..%252f{WINE}:predict".encode(),
    "double-encoded-dots": f"/v1/models/%252e%252e%252f{WINE}:predict".encode(),
    "encoded-model-name": b"/v1/models/" + "".join(f"%{b:02x}" for b in WINE.encode()).encode() + b":predict",
    "encoded-hyphen": WINE.replace("-", "%2D").join(["/v1/models/", ":predict"]).encode(),
    "double-encoded-model-name": b"/v1/models/" + "".join(f"%25{b:02x}" for b in WINE.encode()).encode() + b":predict",
    "encoded-colon-verb": f"/v1/models/{WINE}%3Apredict".encode(),
    "backslash-traversal": f"/v1/models/{IRIS}\\..\\{WINE}:predict".encode(),
    "double-slash": f"//v1/models/{WINE}:predict".encode(),
    "trailing-dot-segment": f"/v1/models/{WINE}/.:predict".encode(),
    "semicolon-path-parameter": f"/v1/models/{WINE};x=1:predict".encode(),
    "upper-case-name": f"/v1/models/{WINE.upper()}:predict".encode(),
    "nul-in-name": f"/v1/models/{WINE}%00:predict".encode(),
    "trailing-space-encoded": f"/v1/models/{WINE}%20:predict".encode(),
    "zero-width-space": f"/v1/models/{WINE}%E2%80%8B:predict".encode(),
    "right-to-left-override": f"/v1/models/%E2%80%AE{WINE}:predict".encode(),
    "dotless-i-confusable": WINE.replace("i", "%C4%B1").join(["/v1/models/", ":predict"]).encode(),
    "fullwidth-raw-utf8": "/v1/models/ｓｋｌｅａｒｎ-ｗｉｎｅ:predict".encode(),
    "overlong-utf8-slash": f"/v1/models/{IRIS}%c0%af..%c0%af{WINE}:predict".encode(),
    "raw-non-utf8-byte": f"/v1/models/{WINE}".encode() + b"\xff:predict",
    "v2-dot-segments": f"/v2/models/{IRIS}/../{WINE}/infer".encode(),
    "v2-versions-traversal": f"/v2/models/{IRIS}/versions/../../{WINE}/infer".encode(),
    "query-smuggled-name": f"/v1/models/{WINE}?model={IRIS}:predict".encode(),
    "fragment-in-target": f"/v1/models/{WINE}:predict#{IRIS}".encode(),
    "absolute-form-other-host": f"http://internal.example/v1/models/{WINE}:predict".encode(),
    "asterisk-form": b"*",
    "very-long-name": b"/v1/models/" + b"a" * 8000 + b":predict",
}


def iris_only_token(stack: Stack) -> str:
    return stack.keys.rs256(stack.keys.claims(scope="models:iris"))


def post(stack: Stack, target: bytes, token: str | None) -> int | None:
    head = b"POST " + target + b" HTTP/1.1\r\nHost: gateway.test\r\nContent-Type: application/json\r\n"
    if token:
        head += f"Authorization: Bearer {token}\r\n".encode()
    with RawConnection("127.0.0.1", stack.port) as conn:
        conn.send(head + f"Content-Length: {len(BODY)}\r\n\r\n".encode() + BODY)
        response = conn.read_response("POST")
    return response.status if response else None


def test_control_iris_token_reaches_iris_but_not_wine(stack: Stack) -> None:
    token = iris_only_token(stack)
    assert post(stack, f"/v1/models/{IRIS}:predict".encode(), token) == 200
    assert post(stack, f"/v1/models/{WINE}:predict".encode(), token) == 403
    ((upstream, method, target, routed),) = stack.reached()
    assert (upstream in ("iris-a", "iris-b"), method, target, routed) == (True, "POST", f"/v1/models/{IRIS}:predict", IRIS)


@pytest.mark.parametrize("target", TARGETS.values(), ids=TARGETS.keys())
def test_tricky_path_never_reaches_an_upstream(stack: Stack, target: bytes) -> None:
    status = post(stack, target, iris_only_token(stack))
    assert status in (400, 403, 404), f"{target[:80]!r} answered {status}"
    stack.assert_upstream_saw_nothing(repr(target[:80]))


@pytest.mark.parametrize("target", TARGETS.values(), ids=TARGETS.keys())
def test_tricky_path_without_token_never_reaches_an_upstream(stack: Stack, target: bytes) -> None:
    status = post(stack, target, None)
    assert status in (400, 401, 403, 404), f"{target[:80]!r} answered {status}"
    stack.assert_upstream_saw_nothing(repr(target[:80]))
