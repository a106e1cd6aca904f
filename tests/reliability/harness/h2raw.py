"""HTTP/2 with prior knowledge (h2c) that can send what a conforming client never would.

Built on the `h2` package with its outbound validation off, so header values with CR/LF,
connection-specific headers or lying content-lengths go out as written; frames that even
`h2` cannot produce (an endless CONTINUATION run) are serialised with `hyperframe`.
Every read has a deadline, as in rawhttp.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass, field
from typing import Self

import h2.config
import h2.connection
import h2.events
import h2.exceptions
from hyperframe.frame import ContinuationFrame, HeadersFrame

from .rawhttp import HangError

DEFAULT_TIMEOUT = 10.0


@dataclass
class StreamOutcome:
    """How one stream ended: a response, a reset, or the connection going away under it."""

    status: int | None = None
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytes = b""
    reset_code: int | None = None
    goaway_code: int | None = None
    ended: bool = False

    @property
    def refused(self) -> bool:
        """The host refused the stream without an HTTP status (RST_STREAM or GOAWAY)."""
        return self.status is None and (self.reset_code is not None or self.goaway_code is not None)


class H2Client:
    def __init__(self, port: int, timeout: float = DEFAULT_TIMEOUT):
        self.timeout = timeout
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        config = h2.config.H2Configuration(
            client_side=True,
            validate_outbound_headers=False,
            normalize_outbound_headers=False,
            validate_inbound_headers=False,
        )
        self.conn = h2.connection.H2Connection(config)
        self.conn.initiate_connection()
        self.outcomes: dict[int, StreamOutcome] = {}
        self.goaway_code: int | None = None
        self.closed = False
        self.flush()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            self.send_bytes(data)

    def send_bytes(self, data: bytes) -> bool:
        try:
            self.sock.sendall(data)
            return True
        except (BrokenPipeError, ConnectionResetError):
            self.closed = True
            return False

    def request(self, headers: list[tuple[str, str]], body: bytes = b"") -> int:
        """Start a stream with these headers (pseudo-headers included by the caller)."""
        stream_id = self.conn.get_next_available_stream_id()
        encoded = [(k.encode(), v.encode("latin-1")) for k, v in headers]
        self.conn.send_headers(stream_id, encoded, end_stream=not body)
        if body:
            self.conn.send_data(stream_id, body, end_stream=True)
        self.outcomes[stream_id] = StreamOutcome()
        self.flush()
        return stream_id

    def continuation_flood(self, headers: list[tuple[str, str]], frames: int, frame_size: int = 16_000) -> int:
        """HEADERS without END_HEADERS, then `frames` CONTINUATION frames of junk header
        fields that never end (CVE-2024-27316 class). Returns the stream id."""
        stream_id = self.conn.get_next_available_stream_id()
        block = self.conn.encoder.encode([(k.encode(), v.encode()) for k, v in headers])
        self.outcomes[stream_id] = StreamOutcome()
        self.send_bytes(HeadersFrame(stream_id, data=block, flags=[]).serialize())
        # A literal header field without indexing, new name: 0x00, name, value (no Huffman).
        filler = b"x" * 100  # under 127, so each length is one prefix byte
        field_bytes = b"\x00" + bytes([len(filler)]) + filler + bytes([len(filler)]) + filler
        chunk = field_bytes * (frame_size // len(field_bytes))
        for _ in range(frames):
            if not self.send_bytes(ContinuationFrame(stream_id, data=chunk, flags=[]).serialize()):
                break
        return stream_id

    def wait(self, stream_ids: list[int], timeout: float | None = None) -> dict[int, StreamOutcome]:
        """Read until every stream in `stream_ids` ended, was reset or the connection went away."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while not all(self._done(s) for s in stream_ids):
            if self.closed:
                break
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise HangError(f"h2 streams {[s for s in stream_ids if not self._done(s)]} unanswered")
            self.sock.settimeout(remaining)
            try:
                data = self.sock.recv(65536)
            except TimeoutError as exc:
                raise HangError("h2 connection silent") from exc
            except ConnectionResetError:
                data = b""
            if not data:
                self.closed = True
                break
            try:
                events = self.conn.receive_data(data)
            except h2.exceptions.ProtocolError:
                self.closed = True
                break
            for event in events:
                self._apply(event)
            self.flush()
        return {s: self.outcomes[s] for s in stream_ids}

    def _done(self, stream_id: int) -> bool:
        outcome = self.outcomes[stream_id]
        return outcome.ended or outcome.reset_code is not None or outcome.goaway_code is not None

    def _apply(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.ResponseReceived):
            outcome = self.outcomes.setdefault(event.stream_id, StreamOutcome())
            outcome.headers = list(event.headers)
            outcome.status = int(dict(event.headers)[b":status"])
        elif isinstance(event, h2.events.DataReceived):
            self.outcomes.setdefault(event.stream_id, StreamOutcome()).body += event.data
            self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        elif isinstance(event, h2.events.StreamEnded):
            self.outcomes.setdefault(event.stream_id, StreamOutcome()).ended = True
        elif isinstance(event, h2.events.StreamReset):
            self.outcomes.setdefault(event.stream_id, StreamOutcome()).reset_code = int(event.error_code)
        elif isinstance(event, h2.events.ConnectionTerminated):
            self.goaway_code = int(event.error_code)
            for stream_id, outcome in self.outcomes.items():
                if stream_id > (event.last_stream_id or 0) and not outcome.ended:
                    outcome.goaway_code = self.goaway_code
