"""The suite's own instruments, checked without the gateway: if the recording upstream
missed requests or the raw client misread answers, every bypass check would be vacuous."""

from __future__ import annotations

import json

import pytest

from reliability.harness.load import LoadGenerator
from reliability.harness.ports import suite_ports
from reliability.harness.rawhttp import HangError, RawConnection, exchange, request_bytes
from reliability.harness.upstream import Behaviour, RecordingUpstream
from reliability.harness.waiting import wait_until

BODY = json.dumps({"instances": [[1, 2, 3, 4], [5, 6, 7, 8]]}).encode()


@pytest.fixture
def upstream():
    with RecordingUpstream(suite_ports.take(), "self-test", ["m"]) as server:
        yield server


def test_upstream_records_and_answers_like_kserve(upstream: RecordingUpstream) -> None:
    response = exchange(upstream.port, request_bytes("POST", "/v1/models/m:predict", [("Content-Type", "application/json")], BODY), "POST")
    assert response is not None and response.status == 200
    assert json.loads(response.body) == {"predictions": [0, 0]}
    missing = exchange(upstream.port, request_bytes("GET", "/v1/models/other"))
    assert missing is not None and missing.status == 404
    assert json.loads(missing.body) == {"error": "Model with name other does not exist."}
    assert [(r.method, r.target, r.body) for r in upstream.requests] == [
        ("POST", "/v1/models/m:predict", BODY),
        ("GET", "/v1/models/other", b""),
    ]


def test_upstream_sees_every_pipelined_request_including_smuggled_ones(upstream: RecordingUpstream) -> None:
    """What a desynchronised gateway would forward: a chunked body followed by a second request."""
    chunked = f"{len(BODY):x}\r\n".encode() + BODY + b"\r\n0\r\n\r\n"
    data = (
        request_bytes("POST", "/v1/models/m:predict", [("Transfer-Encoding", "chunked")]) + chunked
        + request_bytes("GET", "/v1/models/smuggled")
    )
    with RawConnection("127.0.0.1", upstream.port) as conn:
        conn.send(data)
        assert conn.read_response("POST").status == 200
        assert conn.read_response().status == 404
    assert [r.target for r in upstream.requests] == ["/v1/models/m:predict", "/v1/models/smuggled"]
    assert upstream.requests[0].body == BODY


def test_upstream_flags_ambiguous_framing_it_receives(upstream: RecordingUpstream) -> None:
    data = request_bytes("POST", "/x", [("Content-Length", "3"), ("Transfer-Encoding", "chunked")]) + b"0\r\n\r\n"
    response = exchange(upstream.port, data, "POST")
    assert response is not None and response.status == 400
    assert upstream.malformed, "the upstream did not flag CL+TE reaching it"


def test_resetting_upstream_resets() -> None:
    with RecordingUpstream(suite_ports.take(), "reset", ["m"], Behaviour.RESET) as server:
        assert exchange(server.port, request_bytes("GET", "/v1/models/m")) is None
        assert len(server.requests) == 1


def test_mid_body_upstream_truncates() -> None:
    with RecordingUpstream(suite_ports.take(), "midbody", ["m"], Behaviour.CLOSE_MID_BODY) as server:
        response = exchange(server.port, request_bytes("GET", "/v1/models/m"))
        assert response is not None and response.status == 200 and not response.complete


def test_raw_client_reports_a_silent_peer_as_a_hang(upstream: RecordingUpstream) -> None:
    with RawConnection("127.0.0.1", upstream.port, timeout=0.5) as conn:
        conn.send(b"GET /v1/models/m HTTP/1.1\r\nHost: x\r\n")  # head never finished
        with pytest.raises(HangError):
            conn.read_response()


def test_load_generator_counts_statuses(upstream: RecordingUpstream) -> None:
    with LoadGenerator(upstream.port, lambda: request_bytes("GET", "/v1/models/m"), concurrency=4) as load:
        wait_until(lambda: load.result.statuses[200] >= 50, "no load went through")
        result = load.stop()
    assert result.count_other_than(200) == 0
    assert result.statuses[200] == len(upstream.requests)
