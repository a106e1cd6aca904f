"""HTTP/1.1 over plain sockets, for requests no HTTP library would send.

Every socket operation has a timeout, so a gateway that hangs fails the test
with `HangError` instead of blocking the suite.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass, field
from typing import Self

# Long enough for a loaded 2-core machine, short enough that a hang is obvious.
DEFAULT_TIMEOUT = 10.0
MAX_HEAD = 1 << 20


class HangError(AssertionError):
    """The peer neither answered nor closed within the deadline."""


@dataclass
class Response:
    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes
    # False when the peer closed before the announced body length arrived.
    complete: bool = True
    raw_head: bytes = field(default=b"", repr=False)
    # Statuses of the 1xx interim responses that came before this one.
    interim: list[int] = field(default_factory=list)

    def header(self, name: str) -> str | None:
        name = name.lower()
        for key, value in self.headers:
            if key.lower() == name:
                return value
        return None

    def header_values(self, name: str) -> list[str]:
        name = name.lower()
        return [v for k, v in self.headers if k.lower() == name]

    def connection_close(self) -> bool:
        return any("close" in v.lower() for v in self.header_values("connection"))


class RawConnection:
    """One client connection that sends arbitrary bytes and parses what comes back."""

    def __init__(self, host: str, port: int, timeout: float = DEFAULT_TIMEOUT):
        self.timeout = timeout
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        self.eof = False

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def send(self, data: bytes) -> bool:
        """Send bytes; False if the peer already closed or reset the connection."""
        try:
            self.sock.sendall(data)
            return True
        except (BrokenPipeError, ConnectionResetError):
            return False

    def _fill(self, deadline: float) -> bool:
        """Read more bytes into the buffer; False on EOF or reset."""
        if self.eof:
            return False
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise HangError(f"no data and no close within {self.timeout}s")
        self.sock.settimeout(remaining)
        try:
            chunk = self.sock.recv(65536)
        except TimeoutError as exc:
            raise HangError(f"no data and no close within {self.timeout}s") from exc
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            self.eof = True
            return False
        self.buf += chunk
        return True

    def read_response(self, method: str = "GET", timeout: float | None = None) -> Response | None:
        """The next response, skipping 1xx; None if the peer closed before sending one."""
        deadline = time.monotonic() + (timeout or self.timeout)
        interim: list[int] = []
        while True:
            while b"\r\n\r\n" not in self.buf:
                if len(self.buf) > MAX_HEAD:
                    raise AssertionError("response head larger than 1 MiB")
                if not self._fill(deadline):
                    if self.buf:
                        raise AssertionError(f"truncated response head: {self.buf[:200]!r}")
                    return None
            head, self.buf = self.buf.split(b"\r\n\r\n", 1)
            lines = head.decode("latin-1").split("\r\n")
            parts = lines[0].split(" ", 2)
            if len(parts) < 2 or not parts[0].startswith("HTTP/"):
                raise AssertionError(f"not an HTTP response: {lines[0]!r}")
            status = int(parts[1])
            reason = parts[2] if len(parts) > 2 else ""
            headers = []
            for line in lines[1:]:
                key, _, value = line.partition(":")
                headers.append((key.strip(), value.strip()))
            response = Response(status, reason, headers, b"", raw_head=head, interim=interim)
            if 100 <= status < 200:
                interim.append(status)
                continue
            self._read_body(response, method, deadline)
            return response

    def _read_body(self, response: Response, method: str, deadline: float) -> None:
        if method == "HEAD" or response.status in (204, 304):
            return
        te = (response.header("transfer-encoding") or "").lower()
        length = response.header("content-length")
        if "chunked" in te:
            response.body, response.complete = self._read_chunked(deadline)
        elif length is not None:
            want = int(length)
            while len(self.buf) < want:
                if not self._fill(deadline):
                    break
            response.body, self.buf = self.buf[:want], self.buf[want:]
            response.complete = len(response.body) == want
        else:
            while self._fill(deadline):
                pass
            response.body, self.buf = self.buf, b""

    def _read_chunked(self, deadline: float) -> tuple[bytes, bool]:
        body = b""
        while True:
            while b"\r\n" not in self.buf:
                if not self._fill(deadline):
                    return body, False
            size_line, self.buf = self.buf.split(b"\r\n", 1)
            size = int(size_line.split(b";")[0].strip() or b"0", 16)
            while len(self.buf) < size + 2:
                if not self._fill(deadline):
                    body += self.buf[:size]
                    return body, False
            body += self.buf[:size]
            self.buf = self.buf[size + 2 :]
            if size == 0:
                # Trailers are not used by these tests; the terminating CRLF was consumed.
                return body, True

    def wait_closed(self, timeout: float) -> bool:
        """True if the peer closes within `timeout`; any bytes sent meanwhile are kept in buf."""
        deadline = time.monotonic() + timeout
        try:
            while self._fill(deadline):
                pass
        except HangError:
            return False
        return True


def exchange(port: int, data: bytes, method: str = "GET", timeout: float = DEFAULT_TIMEOUT) -> Response | None:
    """Send `data` on a fresh connection and return the first response (None if closed)."""
    with RawConnection("127.0.0.1", port, timeout) as conn:
        conn.send(data)
        return conn.read_response(method)


def request_bytes(
    method: str,
    path: str,
    headers: list[tuple[str, str]] | None = None,
    body: bytes = b"",
    host: str = "gateway.test",
) -> bytes:
    """A well-formed HTTP/1.1 request; Content-Length is added when a body is given."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}"]
    for key, value in headers or []:
        lines.append(f"{key}: {value}")
    if body and not any(k.lower() in ("content-length", "transfer-encoding") for k, _ in headers or []):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
