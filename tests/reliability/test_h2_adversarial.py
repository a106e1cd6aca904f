"""Hostile HTTP/2 (h2c with prior knowledge) through the host.

The host speaks HTTP/2 to clients and HTTP/1.1 to the upstreams, so every HTTP/2 request
is rewritten as HTTP/1.1: the classic place for downgrade smuggling (CR/LF in a value
becoming a new header or a new request, a connection-specific header or a lying
content-length surviving the rewrite). Besides those: rapid reset and CONTINUATION floods,
which must cost the host a connection at most.

A malformed HTTP/2 request may be refused with a stream reset instead of a 400 (RFC 9113
8.1.1 says "treated as a stream error"); either is right, a response from the upstream is not.
"""

from __future__ import annotations

import json

import pytest

from reliability.harness import configs
from reliability.harness.h2raw import H2Client
from reliability.harness.stack import Stack

PREDICT = f"/v1/models/{configs.IRIS}:predict"
BODY = json.dumps({"instances": [[5.1, 3.5, 1.4, 0.2]]}).encode()


def predict_headers(stack: Stack, path: str = PREDICT, extra: list[tuple[str, str]] | None = None) -> list[tuple[str, str]]:
    return [
        (":method", "POST"),
        (":scheme", "http"),
        (":authority", "gateway.test"),
        (":path", path),
        ("content-type", "application/json"),
        ("authorization", f"Bearer {stack.token()}"),
        *(extra or []),
    ]


def test_control_h2_predict_reaches_the_upstream_as_http11(stack: Stack) -> None:
    with H2Client(stack.port) as client:
        stream = client.request(predict_headers(stack), BODY)
        outcome = client.wait([stream])[stream]
    assert outcome.status == 200, outcome
    seen = stack.seen()
    assert [(r.target, r.body, r.version) for r in seen] == [(PREDICT, BODY, "HTTP/1.1")]


INJECTIONS = {
    "crlf-in-header-value": [("x-note", "a\r\nx-injected: 1")],
    "crlf-request-in-header-value": [("x-note", f"a\r\n\r\nPOST /v1/models/{configs.WINE}:predict HTTP/1.1\r\nHost: x\r\n\r\n")],
    "lf-in-header-value": [("x-note", "a\nx-injected: 1")],
    "nul-in-header-value": [("x-note", "a\x00b")],
    "upper-case-header-name": [("X-Upper", "1")],
    "colon-in-header-name": [("x-a:b", "1")],
    "space-in-header-name": [("x a", "1")],
    "transfer-encoding-chunked": [("transfer-encoding", "chunked")],
    "connection-header": [("connection", "keep-alive")],
    "keep-alive-header": [("keep-alive", "timeout=5")],
    "te-not-trailers": [("te", "gzip")],
    "upgrade-header": [("upgrade", "websocket")],
}


@pytest.mark.parametrize("extra", INJECTIONS.values(), ids=INJECTIONS.keys())
def test_h2_downgrade_injection_is_refused(stack: Stack, extra: list[tuple[str, str]]) -> None:
    with H2Client(stack.port) as client:
        stream = client.request(predict_headers(stack, extra=extra), BODY)
        outcome = client.wait([stream])[stream]
    assert outcome.refused or outcome.status == 400, outcome
    stack.assert_upstream_saw_nothing("h2 downgrade injection")


@pytest.mark.parametrize(
    "path",
    [
        pytest.param(f"{PREDICT} HTTP/1.1\r\nHost: x\r\n\r\nPOST /v1/models/{configs.WINE}:predict", id="crlf-request-in-path"),
        pytest.param(f"{PREDICT}\r\nx-injected: 1", id="crlf-header-in-path"),
        pytest.param(f"/v1/models/{configs.IRIS} :predict", id="space-in-path"),
        pytest.param("", id="empty-path"),
        pytest.param("v1/models/sklearn-iris:predict", id="relative-path"),
    ],
)
def test_h2_malformed_path_is_refused(stack: Stack, path: str) -> None:
    with H2Client(stack.port) as client:
        stream = client.request(predict_headers(stack, path=path), BODY)
        outcome = client.wait([stream])[stream]
    assert outcome.refused or outcome.status in (400, 404), outcome
    stack.assert_upstream_saw_nothing("h2 malformed path")


@pytest.mark.parametrize("declared", [5, len(BODY) + 100], ids=["shorter", "longer"])
def test_h2_content_length_disagreeing_with_data_is_refused(stack: Stack, declared: int) -> None:
    """RFC 9113 8.1.1: a content-length that does not match the DATA is malformed."""
    with H2Client(stack.port) as client:
        stream = client.request(predict_headers(stack, extra=[("content-length", str(declared))]), BODY)
        outcome = client.wait([stream])[stream]
    assert outcome.refused or outcome.status == 400, outcome
    stack.assert_upstream_saw_nothing("h2 content-length mismatch")


def test_h2_missing_pseudo_headers_are_refused(stack: Stack) -> None:
    with H2Client(stack.port) as client:
        stream = client.request([(":method", "POST"), (":scheme", "http"), ("authorization", f"Bearer {stack.token()}")], BODY)
        outcome = client.wait([stream])[stream]
    assert outcome.refused or outcome.status == 400, outcome
    stack.assert_upstream_saw_nothing("h2 without :path")


def test_h2_rapid_reset_costs_at_most_the_connection(stack: Stack) -> None:
    """1000 streams opened and reset at once (CVE-2023-44487): the host may answer with
    GOAWAY, but must stay up and keep serving new connections."""
    with H2Client(stack.port) as client:
        for _ in range(1000):
            stream = client.conn.get_next_available_stream_id()
            client.conn.send_headers(stream, [(k.encode(), v.encode()) for k, v in predict_headers(stack)], end_stream=False)
            client.conn.reset_stream(stream)
            if client.closed:
                break
            client.flush()
    with H2Client(stack.port) as client:
        stream = client.request(predict_headers(stack), BODY)
        assert client.wait([stream])[stream].status == 200


def test_h2_continuation_flood_is_cut_off(stack: Stack) -> None:
    """HEADERS followed by CONTINUATION frames that never end (CVE-2024-27316): the host
    must stop reading them (GOAWAY or close) instead of buffering without limit."""
    with H2Client(stack.port, timeout=20) as client:
        stream = client.continuation_flood(predict_headers(stack), frames=2000)  # ~32 MB of header block
        outcome = client.wait([stream])[stream]
        assert client.closed or outcome.refused, outcome
    stack.assert_upstream_saw_nothing("continuation flood")


def test_h2_unknown_frame_type_is_ignored(stack: Stack) -> None:
    """RFC 9113 5.5: frames of unknown type are ignored, so the request beside one passes."""
    with H2Client(stack.port) as client:
        client.send_bytes(b"\x00\x00\x05\xfa\x00\x00\x00\x00\x00HELLO")
        stream = client.request(predict_headers(stack), BODY)
        outcome = client.wait([stream])[stream]
    assert outcome.status == 200, outcome


def test_h2_http11_bytes_after_the_preface_close_the_connection(stack: Stack) -> None:
    with H2Client(stack.port) as client:
        client.send_bytes(f"POST {PREDICT} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(BODY)}\r\n\r\n".encode() + BODY)
        stream = client.request(predict_headers(stack), BODY)
        client.wait([stream])
        assert client.closed or client.goaway_code is not None, "the host kept reading after a broken frame"
    stack.assert_upstream_saw_nothing("HTTP/1.1 inside HTTP/2")
