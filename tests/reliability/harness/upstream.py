"""A recording upstream that answers like KServe's V1/V2 REST server, and faulty variants.

The e2e suite (tests/e2e) runs real KServe model servers. This suite needs something
else from its upstream: to see every byte the gateway forwards, so that a request the
policy denies, or a second request smuggled inside a first one, is caught the moment it
reaches the upstream. KServe's server cannot show that (its /metrics counts only requests
it routed to a model), so this is a small threaded HTTP/1.1 server on raw sockets that
records every request it parses, answers the KServe V1/V2 shapes the tests use, and can
misbehave on purpose (reset connections, close mid-body).
"""

from __future__ import annotations

import enum
import json
import re
import socket
import struct
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

MAX_HEAD = 1 << 20
IO_TIMEOUT = 30.0


class Behaviour(enum.Enum):
    KSERVE = "kserve"  # answer like KServe's V1/V2 REST server
    RESET = "reset"  # read the request, then reset the connection (RST, no response)
    CLOSE_MID_BODY = "close-mid-body"  # send headers and part of the body, then close
    BAD_RESPONSE = "bad-response"  # answer with the malformed response the query's `bad=` names


# Malformed responses for Behaviour.BAD_RESPONSE, by name (the request's `?bad=<name>`).
BAD_RESPONSES = {
    "bad-status-line": b"HTTP/1.1 OK\r\ncontent-length: 2\r\n\r\n{}",
    "not-http": b"SSH-2.0-OpenSSH_9.6\r\n",
    "conflicting-content-length": b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 40\r\n\r\n{}",
    "nul-in-header": b"HTTP/1.1 200 OK\r\nx-a: a\x00b\r\ncontent-length: 2\r\n\r\n{}",
    "huge-header": b"HTTP/1.1 200 OK\r\nx-a: " + b"a" * (2 << 20) + b"\r\ncontent-length: 2\r\n\r\n{}",
    "bad-chunked": b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
}


@dataclass
class RecordedRequest:
    method: str
    target: str
    version: str
    headers: list[tuple[str, str]]
    connection: int
    body: bytes | None = None  # None while the body is still arriving (or never arrived)
    received_at: float = field(default_factory=time.monotonic)

    def header(self, name: str) -> str | None:
        name = name.lower()
        for key, value in self.headers:
            if key.lower() == name:
                return value
        return None


class _BadRequest(Exception):
    pass


V1_MODEL = re.compile(r"^/v1/models/([^/:]+)(:predict|:explain)?$")
V2_MODEL = re.compile(r"^/v2/models/([^/]+)(?:/versions/[^/]+)?(/infer|/ready)?$")


class RecordingUpstream:
    """Threaded HTTP/1.1 upstream on 127.0.0.1:`port` that records what it receives."""

    def __init__(self, port: int, name: str, models: list[str], behaviour: Behaviour = Behaviour.KSERVE):
        self.port = port
        self.name = name
        self.models = list(models)
        self.behaviour = behaviour
        self._lock = threading.Lock()
        self._requests: list[RecordedRequest] = []
        self._malformed: list[bytes] = []
        self._conns: dict[int, socket.socket] = {}
        self._next_conn = 0
        self._listener: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()

    # -- lifecycle -------------------------------------------------------------------
    def start(self) -> RecordingUpstream:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(512)
        listener.settimeout(0.2)
        self._listener = listener
        self._stopping.clear()
        self._thread = threading.Thread(target=self._accept_loop, name=f"upstream-{self.name}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop accepting and close every open connection."""
        self._stopping.set()
        if self._thread:
            self._thread.join(timeout=5)
        if self._listener:
            self._listener.close()
            self._listener = None
        with self._lock:
            conns = list(self._conns.values())
            self._conns.clear()
        for conn in conns:
            # shutdown wakes the serving thread's blocking recv; close alone would not.
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- what was seen ---------------------------------------------------------------
    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    @property
    def malformed(self) -> list[bytes]:
        with self._lock:
            return list(self._malformed)

    def targets(self) -> list[str]:
        return [r.target for r in self.requests]

    def clear(self) -> None:
        with self._lock:
            self._requests.clear()
            self._malformed.clear()

    # -- serving ---------------------------------------------------------------------
    def _accept_loop(self) -> None:
        assert self._listener is not None
        while not self._stopping.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self._next_conn += 1
                conn_id = self._next_conn
                self._conns[conn_id] = conn
            threading.Thread(target=self._serve, args=(conn, conn_id), daemon=True).start()

    def _serve(self, conn: socket.socket, conn_id: int) -> None:
        conn.settimeout(IO_TIMEOUT)
        reader = _Reader(conn)
        try:
            while not self._stopping.is_set():
                head = reader.read_head()
                if head is None:
                    return
                request = self._parse_head(head, conn_id)
                with self._lock:
                    self._requests.append(request)
                if self.behaviour is Behaviour.RESET:
                    _reset(conn)
                    return
                request.body = reader.read_body(request)
                if self.behaviour is Behaviour.CLOSE_MID_BODY:
                    conn.sendall(
                        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                        b"content-length: 1000\r\n\r\n" + b'{"predictions": [1, 2'
                    )
                    conn.close()
                    return
                if self.behaviour is Behaviour.BAD_RESPONSE:
                    bad = request.target.partition("bad=")[2].split("&")[0]
                    conn.sendall(BAD_RESPONSES.get(bad, b"HTTP/1.1 500 Unknown bad= case\r\ncontent-length: 0\r\n\r\n"))
                    conn.close()
                    return
                status, payload = self._answer(request)
                close = (request.header("connection") or "").lower() == "close"
                conn.sendall(self._response(status, payload, close))
                if close:
                    return
        except _BadRequest as exc:
            with self._lock:
                self._malformed.append(str(exc).encode())
            try:
                conn.sendall(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
            except OSError:
                pass
        except OSError:
            pass
        finally:
            with self._lock:
                self._conns.pop(conn_id, None)
            try:
                conn.close()
            except OSError:
                pass

    def _response(self, status: int, payload: object, close: bool) -> bytes:
        body = json.dumps(payload).encode()
        lines = [
            f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}",
            "content-type: application/json",
            f"content-length: {len(body)}",
            # Which replica answered, for the tests that check routing and load spreading.
            f"x-upstream: {self.name}",
        ]
        if close:
            lines.append("connection: close")
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + body

    def _parse_head(self, head: bytes, conn_id: int) -> RecordedRequest:
        try:
            text = head.decode("latin-1")
            lines = text.split("\r\n")
            method, target, version = lines[0].split(" ")
        except ValueError as exc:
            raise _BadRequest(f"bad request line: {head[:200]!r}") from exc
        headers = []
        for line in lines[1:]:
            key, sep, value = line.partition(":")
            if not sep or not key or key != key.strip():
                raise _BadRequest(f"bad header line: {line[:200]!r}")
            headers.append((key, value.strip()))
        return RecordedRequest(method, target, version, headers, conn_id)

    def _answer(self, request: RecordedRequest) -> tuple[int, object]:
        path = request.target.split("?", 1)[0]
        if path == "/" and request.method == "GET":
            return 200, {"status": "alive"}
        if path == "/v1/models" and request.method == "GET":
            return 200, {"models": self.models}
        if path == "/v2/health/ready":
            return 200, {"ready": True}
        match = V1_MODEL.match(path) or V2_MODEL.match(path)
        if not match or match.group(1) not in self.models:
            name = match.group(1) if match else path
            return 404, {"error": f"Model with name {name} does not exist."}
        model, verb = match.group(1), match.group(2)
        if verb in (":predict", ":explain") and request.method == "POST":
            try:
                doc = json.loads(request.body or b"")
                rows = doc.get("instances", doc.get("inputs"))
                return 200, {"predictions": [0 for _ in rows]}
            except (ValueError, AttributeError, TypeError):
                return 400, {"error": "Failed to decode or parse binary json"}
        if verb == "/infer" and request.method == "POST":
            return 200, {"model_name": model, "id": "1", "outputs": [{"name": "output-0", "shape": [1], "datatype": "INT64", "data": [0]}]}
        if verb == "/ready":
            return 200, {"name": model, "ready": True}
        if verb is None and request.method == "GET":
            return 200, {"name": model, "ready": True}
        return 405, {"error": "Method Not Allowed"}


class _Reader:
    """Buffered reads of one connection: request heads, Content-Length and chunked bodies."""

    def __init__(self, conn: socket.socket):
        self.conn = conn
        self.buf = b""

    def _more(self) -> bool:
        chunk = self.conn.recv(65536)
        if not chunk:
            return False
        self.buf += chunk
        return True

    def read_head(self) -> bytes | None:
        while b"\r\n\r\n" not in self.buf:
            if len(self.buf) > MAX_HEAD:
                raise _BadRequest("request head larger than 1 MiB")
            if not self._more():
                if self.buf:
                    raise _BadRequest(f"connection closed inside a request head: {self.buf[:200]!r}")
                return None
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        return head

    def read_body(self, request: RecordedRequest) -> bytes:
        te = (request.header("transfer-encoding") or "").lower()
        lengths = {v for k, v in request.headers if k.lower() == "content-length"}
        if te and lengths:
            raise _BadRequest("both transfer-encoding and content-length reached the upstream")
        if len(lengths) > 1:
            raise _BadRequest("conflicting content-length values reached the upstream")
        if te:
            if te != "chunked":
                raise _BadRequest(f"unexpected transfer-encoding {te!r} reached the upstream")
            return self._read_chunked()
        length = int(lengths.pop()) if lengths else 0
        while len(self.buf) < length:
            if not self._more():
                raise _BadRequest("connection closed inside a request body")
        body, self.buf = self.buf[:length], self.buf[length:]
        return body

    def _read_chunked(self) -> bytes:
        body = b""
        while True:
            while b"\r\n" not in self.buf:
                if not self._more():
                    raise _BadRequest("connection closed inside a chunk size")
            size_line, self.buf = self.buf.split(b"\r\n", 1)
            try:
                size = int(size_line.split(b";")[0], 16)
            except ValueError as exc:
                raise _BadRequest(f"bad chunk size {size_line[:50]!r}") from exc
            if size == 0:
                # Skip trailers up to the blank line.
                while not self.buf.startswith(b"\r\n") and b"\r\n\r\n" not in self.buf:
                    if not self._more():
                        raise _BadRequest("connection closed inside trailers")
                if self.buf.startswith(b"\r\n"):
                    self.buf = self.buf[2:]
                else:
                    self.buf = self.buf.split(b"\r\n\r\n", 1)[1]
                return body
            while len(self.buf) < size + 2:
                if not self._more():
                    raise _BadRequest("connection closed inside a chunk")
            if self.buf[size : size + 2] != b"\r\n":
                raise _BadRequest("chunk not followed by CRLF")
            body += self.buf[:size]
            self.buf = self.buf[size + 2 :]


def _reset(conn: socket.socket) -> None:
    """Close with SO_LINGER 0 so the peer sees a TCP RST, as when a process dies."""
    try:
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.close()
    except OSError:
        pass


_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed"}


class ReplicaProcess:
    """A KServe-like upstream in its own process, so a test can SIGKILL it like a crashed replica.

    It records nothing the test can read; use it where the point is the process dying.
    """

    def __init__(self, port: int, name: str, models: list[str]):
        self.port = port
        self.name = name
        self.models = models
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 10.0) -> ReplicaProcess:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "reliability.harness.upstream", "--port", str(self.port), "--name", self.name, "--models", ",".join(self.models)],
            cwd=Path(__file__).resolve().parents[2],
            stdout=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                if self.proc.poll() is not None:
                    raise AssertionError(f"replica {self.name} exited with {self.proc.returncode}") from None
                time.sleep(0.05)
        raise AssertionError(f"replica {self.name} not listening on {self.port} within {timeout}s")

    def kill(self) -> None:
        """SIGKILL: the kernel closes its sockets, as when a model server crashes."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.kill()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


def main() -> None:
    """Run one upstream as its own process, so tests can SIGKILL it like a crashed replica."""
    import argparse
    import signal

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--models", required=True, help="comma-separated model names")
    parser.add_argument("--behaviour", default=Behaviour.KSERVE.value, choices=[b.value for b in Behaviour])
    args = parser.parse_args()
    upstream = RecordingUpstream(args.port, args.name, args.models.split(","), Behaviour(args.behaviour))
    upstream.start()
    print(f"upstream {args.name} listening on 127.0.0.1:{args.port}", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    while not stop.wait(0.5):
        pass
    upstream.stop()


if __name__ == "__main__":
    main()
