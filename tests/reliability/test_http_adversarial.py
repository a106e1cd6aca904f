"""Hostile HTTP/1.1 through the host: oversized heads and bodies, malformed messages,
request smuggling and slow clients.

Every case asserts, besides its status: no hang (every socket read has a deadline), no
crash (the `stack` fixture checks the host is alive and answers /health afterwards), and
that nothing the host refused reached an upstream.
"""

from __future__ import annotations

import collections
import json
import ssl
import threading
import time

import pytest

from reliability.harness import configs
from reliability.harness.rawhttp import RawConnection, Response, request_bytes
from reliability.harness.stack import Stack

PREDICT = f"/v1/models/{configs.IRIS}:predict"
VALID_BODY = json.dumps({"instances": [[5.1, 3.5, 1.4, 0.2]]}).encode()


def send_raw(stack: Stack, data: bytes, method: str = "POST", timeout: float = 10.0) -> Response | None:
    """Send while reading, so an early answer (413/431 before the upload ends) is not lost."""
    with RawConnection("127.0.0.1", stack.port, timeout) as conn:
        sender = threading.Thread(target=conn.send, args=(data,), daemon=True)
        sender.start()
        response = conn.read_response(method)
        sender.join(timeout)
        return response


def auth(stack: Stack) -> tuple[str, str]:
    return ("Authorization", f"Bearer {stack.token()}")


def head(stack: Stack, *lines: str, path: str = PREDICT, method: str = "POST") -> bytes:
    """A request head with a valid token, so only the case's own fault can get it refused."""
    name, value = auth(stack)
    first = f"{method} {path} HTTP/1.1\r\nHost: gateway.test\r\n{name}: {value}\r\n"
    return (first + "".join(line + "\r\n" for line in lines) + "\r\n").encode("latin-1")


# -- controls: the same requests, well-formed, pass ------------------------------------------


def test_control_valid_predict_reaches_the_upstream(stack: Stack) -> None:
    response = stack.predict()
    assert response.status == 200, response
    assert [r.target for r in stack.seen()] == [PREDICT]
    assert stack.seen()[0].body == VALID_BODY


def test_control_chunked_predict_reaches_the_upstream(stack: Stack) -> None:
    body = f"{len(VALID_BODY):x}\r\n".encode() + VALID_BODY + b"\r\n0\r\n\r\n"
    response = send_raw(stack, head(stack, "Content-Type: application/json", "Transfer-Encoding: chunked") + body)
    assert response is not None and response.status == 200, response
    assert [r.body for r in stack.seen()] == [VALID_BODY]


# -- oversized heads and bodies ---------------------------------------------------------------


@pytest.mark.parametrize(
    "lines",
    [
        pytest.param(["X-Big: " + "a" * (1 << 20)], id="one-1MiB-header"),
        pytest.param([f"X-Many-{i}: v" for i in range(500)], id="500-headers"),
        pytest.param(["Cookie: " + "c=" + "x" * 200_000] * 3, id="three-200KiB-cookies"),
    ],
)
def test_oversized_request_head_is_431(stack: Stack, lines: list[str]) -> None:
    response = send_raw(stack, head(stack, "Content-Type: application/json", f"Content-Length: {len(VALID_BODY)}", *lines) + VALID_BODY)
    assert response is not None and response.status == 431, response
    stack.assert_upstream_saw_nothing("oversized head")


def test_oversized_path_is_rejected(stack: Stack) -> None:
    response = send_raw(stack, head(stack, path="/v1/models/" + "a" * (1 << 20) + ":predict"))
    assert response is not None and response.status in (414, 431), response
    stack.assert_upstream_saw_nothing("oversized path")


@pytest.mark.parametrize(
    ("size", "framing"),
    [
        pytest.param(configs.MAX_BODY_BYTES + 1, "content-length", id="policy-limit+1-content-length"),
        pytest.param(configs.MAX_BODY_BYTES * 3, "chunked", id="policy-limitx3-chunked"),
        pytest.param(4 << 20, "content-length", id="4MiB-content-length"),
        pytest.param(4 << 20, "chunked", id="4MiB-chunked"),
    ],
)
def test_oversized_body_is_413(stack: Stack, size: int, framing: str) -> None:
    rows = b"[5.1, 3.5, 1.4, 0.2]"
    payload = b'{"instances": [' + b",".join([rows] * (size // (len(rows) + 1) + 1)) + b"]}"
    if framing == "chunked":
        # 16 KiB chunks: the limit must count decoded bytes across chunks.
        chunks = [payload[i : i + 16384] for i in range(0, len(payload), 16384)]
        body = b"".join(f"{len(c):x}\r\n".encode() + c + b"\r\n" for c in chunks) + b"0\r\n\r\n"
        data = head(stack, "Content-Type: application/json", "Transfer-Encoding: chunked") + body
    else:
        data = head(stack, "Content-Type: application/json", f"Content-Length: {len(payload)}") + payload
    response = send_raw(stack, data)
    assert response is not None and response.status == 413, response
    stack.assert_upstream_saw_nothing(f"oversized body ({framing})")


def test_huge_upload_is_refused_once_past_the_limit_without_waiting_for_the_rest(stack: Stack) -> None:
    """Content-Length 100 GiB, of which the client sends 256 KiB and then waits: the answer
    must come as soon as the limit is passed, not after 100 GiB (or never)."""
    data = head(stack, "Content-Type: application/json", f"Content-Length: {100 << 30}") + b"[" * (256 << 10)
    response = send_raw(stack, data, timeout=10)
    assert response is not None and response.status == 413, response
    stack.assert_upstream_saw_nothing("huge upload")


def test_denied_request_expecting_100_continue_is_answered_without_its_body(stack: Stack) -> None:
    """No token and `Expect: 100-continue`: the refusal must come at once, without first
    inviting the body (and without waiting for a body that will never be sent)."""
    data = request_bytes(
        "POST", PREDICT, [("Content-Type", "application/json"), ("Content-Length", str(len(VALID_BODY))), ("Expect", "100-continue")]
    )
    with RawConnection("127.0.0.1", stack.port, timeout=5) as conn:
        conn.send(data)
        response = conn.read_response("POST")
    assert response is not None and response.status == 401, response
    assert 100 not in response.interim, "the body of a refused request was invited with 100 Continue"
    stack.assert_upstream_saw_nothing("denied Expect: 100-continue")


def test_body_in_one_byte_chunks_costs_linear_time(stack: Stack) -> None:
    """A 40 KiB body sent as 40,960 one-byte chunks: each chunk may reach the filter as a
    body callback (Envoy semantics), so anything quadratic in the chunk count, such as
    copying the cumulative body on every call, would take minutes instead of seconds."""
    rows = b",".join([b"[5.1, 3.5, 1.4, 0.2]"] * 60)
    payload = (b'{"instances": [' + rows + b"]}").ljust(40 * 1024, b" ")
    chunks = b"".join(b"1\r\n" + payload[i : i + 1] + b"\r\n" for i in range(len(payload))) + b"0\r\n\r\n"
    started = time.monotonic()
    response = send_raw(stack, head(stack, "Content-Type: application/json", "Transfer-Encoding: chunked") + chunks, timeout=20)
    elapsed = time.monotonic() - started
    assert response is not None and response.status == 200, response
    assert elapsed < 10.0, f"{len(payload)} one-byte chunks took {elapsed:.1f}s"
    assert [r.body for r in stack.seen()] == [payload]


def test_a_thousand_pipelined_requests_are_answered_in_order(stack: Stack) -> None:
    requests = b"".join(request_bytes("GET", "/health", [("X-Seq", str(i))]) for i in range(1000))
    with RawConnection("127.0.0.1", stack.port, timeout=20) as conn:
        sender = threading.Thread(target=conn.send, args=(requests,), daemon=True)
        sender.start()
        statuses = [r.status if (r := conn.read_response()) else None for _ in range(1000)]
        sender.join(5)
    assert statuses == [200] * 1000


# -- malformed HTTP ---------------------------------------------------------------------------

# Each targets a model path and carries a valid token (inserted after the first line by
# `with_token`), so a request the host failed to refuse would be forwarded to iris and seen
# there: a target the gateway answers itself (such as /health) could never show that.
MALFORMED = {
    "garbage-request-line": b"GARBAGE\r\n\r\n",
    "method-only": b"GET\r\n\r\n",
    "missing-version": b"GET /v1/models/sklearn-iris\r\nHost: x\r\n\r\n",
    "unknown-version": b"GET /v1/models/sklearn-iris HTTP/9.9\r\nHost: x\r\n\r\n",
    "extra-request-line-token": b"GET /v1/models/sklearn-iris HTTP/1.1 extra\r\nHost: x\r\n\r\n",
    "space-in-target": b"GET /v1/models/sklearn iris:predict HTTP/1.1\r\nHost: x\r\n\r\n",
    "nul-in-target": b"GET /v1/models/sklearn-iris\x00:predict HTTP/1.1\r\nHost: x\r\n\r\n",
    "control-char-in-method": b"G\x01T /v1/models/sklearn-iris HTTP/1.1\r\nHost: x\r\n\r\n",
    "header-name-with-space": b"GET /v1/models/sklearn-iris HTTP/1.1\r\nHost: x\r\nBad Header: v\r\n\r\n",
    "space-before-colon": b"GET /v1/models/sklearn-iris HTTP/1.1\r\nHost : x\r\n\r\n",
    "header-without-colon": b"GET /v1/models/sklearn-iris HTTP/1.1\r\nHost: x\r\nNoColonHere\r\n\r\n",
    "nul-in-header-value": b"GET /v1/models/sklearn-iris HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n",
    "bare-cr-in-header-value": b"GET /v1/models/sklearn-iris HTTP/1.1\r\nHost: x\r\nX-A: a\rb\r\n\r\n",
    "obs-fold-continuation": b"GET /v1/models/sklearn-iris HTTP/1.1\r\nHost: x\r\nX-A: a\r\n folded\r\n\r\n",
    "empty-header-name": b"GET /v1/models/sklearn-iris HTTP/1.1\r\nHost: x\r\n: v\r\n\r\n",
    "non-numeric-content-length": b"POST /v1/models/sklearn-iris:predict HTTP/1.1\r\nHost: x\r\nContent-Length: 12a\r\n\r\n",
    "negative-content-length": b"POST /v1/models/sklearn-iris:predict HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
    "content-length-overflow": b"POST /v1/models/sklearn-iris:predict HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999999\r\n\r\n",
}


def with_token(stack: Stack, data: bytes) -> bytes:
    line, sep, rest = data.partition(b"\r\n")
    name, value = auth(stack)
    return line + sep + f"{name}: {value}\r\n".encode() + rest


def test_control_well_formed_model_request_with_the_token_reaches_iris(stack: Stack) -> None:
    """What makes the malformed cases matter: the same request, well formed, is forwarded."""
    response = send_raw(stack, with_token(stack, b"GET /v1/models/sklearn-iris HTTP/1.1\r\nHost: x\r\n\r\n"), method="GET")
    assert response is not None and response.status == 200, response
    ((upstream, method, target, routed),) = stack.reached()
    assert (upstream in ("iris-a", "iris-b"), method, target, routed) == (True, "GET", "/v1/models/sklearn-iris", configs.IRIS)


@pytest.mark.parametrize("data", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_request_is_400(stack: Stack, data: bytes) -> None:
    response = send_raw(stack, with_token(stack, data), method="GET")
    assert response is not None and response.status == 400, response
    stack.assert_upstream_saw_nothing("malformed request")


def test_malformed_request_on_a_model_path_is_400(stack: Stack) -> None:
    """The same faults on a path the filter would forward, with a valid token."""
    data = head(stack, "Content-Type: application/json", "X-Bad: a\x00b", f"Content-Length: {len(VALID_BODY)}") + VALID_BODY
    response = send_raw(stack, data)
    assert response is not None and response.status == 400, response
    stack.assert_upstream_saw_nothing("malformed request on a model path")


BAD_CHUNKED = {
    "non-hex-size": b"zz\r\nabc\r\n0\r\n\r\n",
    "size-overflow": b"ffffffffffffffffffffff\r\n" + VALID_BODY + b"\r\n0\r\n\r\n",
    "negative-size": b"-5\r\nabcde\r\n0\r\n\r\n",
    "missing-crlf-after-data": b"4\r\nabcdXYZ\r\n0\r\n\r\n",
    "size-larger-than-data-then-garbage": b"100\r\n" + VALID_BODY + b"\r\n0\r\n\r\nGARBAGE GARBAGE\r\n\r\n" + b"x" * 300,
    "huge-chunk-extension": b"4;" + b"e" * 100_000 + b"\r\nabcd\r\n0\r\n\r\n",
}


@pytest.mark.parametrize("body", BAD_CHUNKED.values(), ids=BAD_CHUNKED.keys())
def test_bad_chunked_body_is_400(stack: Stack, body: bytes) -> None:
    data = head(stack, "Content-Type: application/json", "Transfer-Encoding: chunked") + body
    response = send_raw(stack, data)
    assert response is not None and response.status == 400, response
    stack.assert_upstream_saw_nothing("bad chunked body")


def test_body_cut_short_never_reaches_the_upstream(stack: Stack) -> None:
    """The client announces 1000 bytes, sends 10 and half-closes: nothing may go upstream."""
    with RawConnection("127.0.0.1", stack.port) as conn:
        conn.send(head(stack, "Content-Type: application/json", "Content-Length: 1000") + VALID_BODY[:10])
        conn.sock.shutdown(1)  # SHUT_WR: the request can never complete
        response = conn.read_response("POST")
    # Answering 400 or just closing are both right; forwarding a partial body is not.
    assert response is None or response.status == 400, response
    stack.assert_upstream_saw_nothing("truncated body")


# -- request smuggling ------------------------------------------------------------------------

SMUGGLED_PATH = f"/v1/models/{configs.WINE}:predict"


def smuggled_request(stack: Stack) -> bytes:
    """A complete second request hidden where a desynchronised parser would see it."""
    return request_bytes("POST", SMUGGLED_PATH, [auth(stack), ("Content-Type", "application/json")], VALID_BODY)


def assert_not_smuggled(stack: Stack, conn: RawConnection) -> None:
    """Nothing reached the upstream as a second request, and the host did not answer one."""
    targets = [r.target for r in stack.seen()]
    assert SMUGGLED_PATH not in targets, f"smuggled request reached the upstream: {targets}"
    assert all(r.body is None or b"POST" not in r.body for r in stack.seen()), "smuggled bytes forwarded as a body"
    # After an ambiguous message the host must close the connection (RFC 9112 6.1 and 6.3),
    # never read the rest of the bytes as a new request.
    closed = conn.wait_closed(5.0)
    second = conn.buf
    assert closed, "the connection stayed open after an ambiguously framed request"
    assert b"HTTP/1.1" not in second, f"the host answered the smuggled request too: {second[:200]!r}"


def test_smuggling_content_length_and_transfer_encoding(stack: Stack) -> None:
    """CL.TE: a valid chunked body, then a second request that CL-framing would read next.

    Envoy rejects a request with both headers (400, `allow_chunked_length` off). RFC 9112
    6.1 also allows processing it by Transfer-Encoding alone if the connection is closed
    after the response, which is what hyper does (it drops Content-Length before the host
    sees the request, so the host cannot answer 400). Either way the second request must
    never reach the upstream and never be answered.
    """
    chunked = f"{len(VALID_BODY):x}\r\n".encode() + VALID_BODY + b"\r\n0\r\n\r\n"
    data = head(stack, "Content-Type: application/json", f"Content-Length: {len(chunked)}", "Transfer-Encoding: chunked")
    with RawConnection("127.0.0.1", stack.port) as conn:
        conn.send(data + chunked + smuggled_request(stack))
        first = conn.read_response("POST")
        assert first is not None and first.status in (200, 400), first
        if first.status == 200:
            # Processed by Transfer-Encoding: the body is the decoded chunk, nothing more.
            assert [(r.target, r.body) for r in stack.seen()] == [(PREDICT, VALID_BODY)]
        else:
            stack.assert_upstream_saw_nothing("CL+TE refused")
        assert_not_smuggled(stack, conn)


def test_smuggling_transfer_encoding_then_content_length(stack: Stack) -> None:
    """TE.CL: the body by CL would end early and leave the smuggled request on the wire."""
    smuggled = smuggled_request(stack)
    chunk = f"{len(smuggled):x}\r\n".encode() + smuggled + b"\r\n0\r\n\r\n"
    data = head(stack, "Content-Type: application/json", "Transfer-Encoding: chunked", "Content-Length: 4") + chunk
    with RawConnection("127.0.0.1", stack.port) as conn:
        conn.send(data)
        first = conn.read_response("POST")
        assert first is not None and first.status == 400, first
        assert_not_smuggled(stack, conn)


@pytest.mark.parametrize(
    "lengths",
    [pytest.param(("5", str(len(VALID_BODY))), id="two-headers"), pytest.param((f"5, {len(VALID_BODY)}",), id="one-list")],
)
def test_smuggling_duplicate_differing_content_length(stack: Stack, lengths: tuple[str, ...]) -> None:
    data = head(stack, "Content-Type: application/json", *(f"Content-Length: {v}" for v in lengths)) + VALID_BODY + smuggled_request(stack)
    with RawConnection("127.0.0.1", stack.port) as conn:
        conn.send(data)
        first = conn.read_response("POST")
        assert first is not None and first.status == 400, first
        assert_not_smuggled(stack, conn)


TE_OBFUSCATIONS = {
    "xchunked": ["Transfer-Encoding: xchunked"],
    "chunked-then-identity": ["Transfer-Encoding: chunked, identity"],
    "identity-header-after-chunked": ["Transfer-Encoding: chunked", "Transfer-Encoding: identity"],
    "quoted": ['Transfer-Encoding: "chunked"'],
    "vertical-tab": ["Transfer-Encoding:\x0bchunked"],
    "space-before-colon": ["Transfer-Encoding : chunked"],
    "newline-continuation": ["Transfer-Encoding:", " chunked"],
    "te-on-http10": None,  # built below: HTTP/1.0 has no chunked coding
}


@pytest.mark.parametrize("name", TE_OBFUSCATIONS.keys())
def test_smuggling_transfer_encoding_obfuscation(stack: Stack, name: str) -> None:
    """Each variant is either not `chunked` to a strict parser or not parseable at all: 400."""
    smuggled = smuggled_request(stack)
    chunk = f"{len(smuggled):x}\r\n".encode() + smuggled + b"\r\n0\r\n\r\n"
    lines = TE_OBFUSCATIONS[name]
    if lines is None:
        data = head(stack, "Content-Type: application/json", "Transfer-Encoding: chunked", f"Content-Length: {len(chunk)}")
        data = data.replace(b"HTTP/1.1\r\n", b"HTTP/1.0\r\n", 1) + chunk
    else:
        data = head(stack, "Content-Type: application/json", *lines, f"Content-Length: {len(chunk)}") + chunk
    with RawConnection("127.0.0.1", stack.port) as conn:
        conn.send(data)
        first = conn.read_response("POST")
        assert first is not None and first.status == 400, first
        assert_not_smuggled(stack, conn)


# Lists that end in `chunked`, which hyper alone would decode as chunked. Envoy's HTTP/1
# codec accepts only a Transfer-Encoding equal to `chunked` (repeated fields joined into one
# list) and answers anything else 501 before any filter runs (`onHeadersCompleteBase`,
# envoy source/common/http/http1/codec_impl.cc; RFC 9112 6.1: 501 for a coding the server
# does not understand), closing the connection.
TE_LISTS_ENDING_IN_CHUNKED = {
    "gzip-chunked": ["Transfer-Encoding: gzip, chunked"],
    "chunked-chunked": ["Transfer-Encoding: chunked, chunked"],
    "identity-chunked": ["Transfer-Encoding: identity, chunked"],
    "gzip-field-then-chunked-field": ["Transfer-Encoding: gzip", "Transfer-Encoding: chunked"],
    "chunked-field-twice": ["Transfer-Encoding: chunked", "Transfer-Encoding: chunked"],
}


@pytest.mark.parametrize("name", TE_LISTS_ENDING_IN_CHUNKED.keys())
def test_transfer_encoding_other_than_one_chunked_coding_is_501(stack: Stack, name: str) -> None:
    chunk = f"{len(VALID_BODY):x}\r\n".encode() + VALID_BODY + b"\r\n0\r\n\r\n"
    data = head(stack, "Content-Type: application/json", *TE_LISTS_ENDING_IN_CHUNKED[name]) + chunk
    with RawConnection("127.0.0.1", stack.port) as conn:
        conn.send(data + smuggled_request(stack))
        first = conn.read_response("POST")
        assert first is not None and first.status == 501, first
        assert json.loads(first.body)["error"].startswith("unsupported transfer-encoding"), first.body
        stack.assert_upstream_saw_nothing(f"Transfer-Encoding {name}")
        assert_not_smuggled(stack, conn)


def test_control_chunked_in_any_case_is_accepted(stack: Stack) -> None:
    """The coding name is case-insensitive (RFC 9112 7): `Chunked` is the one coding."""
    chunk = f"{len(VALID_BODY):x}\r\n".encode() + VALID_BODY + b"\r\n0\r\n\r\n"
    response = send_raw(stack, head(stack, "Content-Type: application/json", "Transfer-Encoding: Chunked") + chunk)
    assert response is not None and response.status == 200, response
    assert [(r.target, r.body) for r in stack.seen()] == [(PREDICT, VALID_BODY)]


def test_pipelined_denied_request_does_not_carry_the_next(stack: Stack) -> None:
    """A denied request (no token) pipelined with an allowed one on one connection.

    The host may answer the second or close after the first (a server may close instead of
    reading a refused request's body), but it must never read the first body as a request,
    and if the second is served it goes up alone, with its own body.
    """
    denied = request_bytes("POST", PREDICT, [("Content-Type", "application/json")], VALID_BODY)
    allowed = request_bytes("POST", PREDICT, [auth(stack), ("Content-Type", "application/json")], VALID_BODY)
    with RawConnection("127.0.0.1", stack.port) as conn:
        conn.send(denied + allowed)
        first = conn.read_response("POST")
        assert first is not None and first.status == 401, first
        second = conn.read_response("POST")
    seen = [(r.target, r.body, r.header("authorization") is not None) for r in stack.seen()]
    if second is None:
        assert seen == [], f"the connection closed, yet the upstream saw {seen}"
    else:
        assert second.status == 200, second
        assert seen == [(PREDICT, VALID_BODY, True)]


# -- slow clients -----------------------------------------------------------------------------

# hyper's default header read timeout is 30 s; Envoy's request_headers_timeout is off by default
# but its stream idle timeout (5 min) still ends a silent stream. A gateway that never ends a
# trickling client holds a connection and a task per attacker forever.
SLOW_CLIENT_BUDGET = 40.0
SLOW_CLIENTS = 30


def test_control_tls_listener_answers(stack: Stack) -> None:
    """The TLS listener the handshake cases below stall works for an honest client."""
    context = ssl.create_default_context(cafile=str(stack.workdir / "server.pem"))
    with RawConnection("127.0.0.1", stack.tls_port) as conn:
        conn.sock = context.wrap_socket(conn.sock, server_hostname="gateway.test")
        conn.send(request_bytes("GET", "/health"))
        response = conn.read_response()
    assert response is not None and response.status == 200, response


def _trickle(conn: RawConnection, prefix: bytes, drip: bytes, stop: threading.Event, interval: float) -> None:
    if not conn.send(prefix):
        return
    while not stop.wait(interval):
        if not conn.send(drip):
            return


@pytest.mark.slow
def test_slow_clients_are_timed_out_and_do_not_starve_others(stack: Stack) -> None:
    """Slowloris heads, bodies and TLS handshakes: each dribbles a line or a byte a second
    and never finishes.

    While they hold their connections, normal requests are served at once; within the
    budget the host closes every one of them (with or without a 408), and nothing the
    slow clients sent reaches an upstream.
    """
    stop = threading.Event()
    conns: list[tuple[str, RawConnection]] = []
    threads = []
    for i in range(SLOW_CLIENTS):
        if i % 3 == 0:
            kind, prefix, drip = "head", f"GET /v1/models/{configs.IRIS} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {stack.token()}\r\n".encode(), b"X-Drip: 1\r\n"
        elif i % 3 == 1:
            kind, prefix, drip = "body", head(stack, "Content-Type: application/json", "Content-Length: 100000"), b"1"
        else:
            # The first bytes of a TLS ClientHello record, then one byte a second.
            kind, prefix, drip = "tls-handshake", b"\x16\x03\x01\x02\x00\x01", b"\x00"
        conn = RawConnection("127.0.0.1", stack.tls_port if kind == "tls-handshake" else stack.port, timeout=SLOW_CLIENT_BUDGET + 10)
        conns.append((kind, conn))
        thread = threading.Thread(target=_trickle, args=(conn, prefix, drip, stop, 1.0), daemon=True)
        thread.start()
        threads.append(thread)
    try:
        time.sleep(2.0)  # let every slow client get its prefix in before measuring others
        started = time.monotonic()
        response = stack.predict()
        assert response.status == 200, response
        assert stack.gateway.health(timeout=5) == 200
        assert time.monotonic() - started < 5.0, "slow clients delayed a normal request"

        deadline = time.monotonic() + SLOW_CLIENT_BUDGET
        survivors = []
        for kind, conn in conns:
            remaining = max(0.1, deadline - time.monotonic())
            if not conn.wait_closed(remaining):
                survivors.append(kind)
            elif conn.buf and not conn.buf.startswith(b"HTTP/1.1 408") and not conn.buf.startswith(b"HTTP/1.1 400"):
                # Something other than a timeout answer: the request was served or refused
                # for another reason. Record what came back.
                survivors.append(f"{kind}: answered {conn.buf[:60]!r}")
        assert not survivors, f"slow clients not timed out within {SLOW_CLIENT_BUDGET}s: {dict(collections.Counter(survivors))}"
    finally:
        stop.set()
        for _, conn in conns:
            conn.close()
        for thread in threads:
            thread.join(5)
    assert [r.target for r in stack.seen()] == [PREDICT], "a slow client's request reached the upstream"
