"""A closed-loop HTTP/1.1 load generator on asyncio: `concurrency` keep-alive connections,
each sending the next request as soon as the previous answer arrived.

It counts every outcome: statuses, and client-side failures by kind (reset, closed without
an answer, timeout, connect error). wrk would be faster but reports failed requests only as
totals; the reliability suites must tell the policy's own answers from real failures.
"""

from __future__ import annotations

import asyncio
import collections
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Self

REQUEST_TIMEOUT = 10.0


@dataclass
class LoadResult:
    statuses: collections.Counter = field(default_factory=collections.Counter)
    failures: collections.Counter = field(default_factory=collections.Counter)
    # (expected, got) for requests built with an expected status that got another one.
    mismatches: collections.Counter = field(default_factory=collections.Counter)
    latencies: list[float] = field(default_factory=list)
    # (monotonic time, status or failure kind) of every outcome other than the one expected
    # (200 unless the request said otherwise), for reports.
    events: list[tuple[float, str]] = field(default_factory=list)
    started: float = 0.0
    ended: float = 0.0

    @property
    def total(self) -> int:
        return sum(self.statuses.values()) + sum(self.failures.values())

    def count_other_than(self, *statuses: int) -> int:
        """Outcomes that are neither one of `statuses` nor an answer at all: the failures."""
        return sum(n for s, n in self.statuses.items() if s not in statuses) + sum(self.failures.values())

    def percentile(self, p: float) -> float:
        if not self.latencies:
            return 0.0
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]

    def summary(self) -> str:
        seconds = max(self.ended - self.started, 1e-9)
        return (
            f"{self.total} requests in {seconds:.1f}s ({self.total / seconds:.0f}/s), "
            f"statuses {dict(self.statuses)}, failures {dict(self.failures)}, "
            f"unexpected (expected, got) {dict(self.mismatches)}, "
            f"p50 {self.percentile(50) * 1000:.1f} ms, p99 {self.percentile(99) * 1000:.1f} ms"
        )


class _Failure(Exception):
    def __init__(self, kind: str):
        super().__init__(kind)
        self.kind = kind


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """(status, whether the server asked to close the connection)."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    length = 0
    chunked = False
    close = False
    for line in lines[1:]:
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key == "content-length":
            length = int(value.strip())
        elif key == "transfer-encoding" and "chunked" in value.lower():
            chunked = True
        elif key == "connection" and "close" in value.lower():
            close = True
    if chunked:
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    else:
        await reader.readexactly(length)
    return status, close


# A request is its bytes, or its bytes and the status it must get (for mixed loads in which
# some requests are meant to be refused by the policy).
RequestFactory = Callable[[], bytes | tuple[bytes, int]]


async def _worker(port: int, make_request: RequestFactory, result: LoadResult, stop: threading.Event) -> None:
    reader = writer = None
    while not stop.is_set():
        try:
            if writer is None:
                try:
                    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), REQUEST_TIMEOUT)
                except (OSError, TimeoutError) as exc:
                    raise _Failure("connect") from exc
            request = make_request()
            data, expected = request if isinstance(request, tuple) else (request, None)
            start = time.monotonic()
            writer.write(data)
            try:
                status, close = await asyncio.wait_for(_read_response(reader), REQUEST_TIMEOUT)
            except TimeoutError as exc:
                raise _Failure("timeout") from exc
            except asyncio.IncompleteReadError as exc:
                raise _Failure("closed-without-answer" if not exc.partial else "truncated") from exc
            except ConnectionResetError as exc:
                raise _Failure("reset") from exc
            result.latencies.append(time.monotonic() - start)
            result.statuses[status] += 1
            if expected is not None and status != expected:
                result.mismatches[(expected, status)] += 1
            if status != (200 if expected is None else expected):
                result.events.append((time.monotonic(), str(status)))
            if close:
                writer.close()
                reader = writer = None
        except _Failure as failure:
            result.failures[failure.kind] += 1
            result.events.append((time.monotonic(), failure.kind))
            if writer is not None:
                writer.close()
            reader = writer = None
            await asyncio.sleep(0.01)
    if writer is not None:
        writer.close()


class LoadGenerator:
    """Runs the load on its own thread until `stop()`; `result` is live while it runs."""

    def __init__(self, port: int, make_request: RequestFactory, concurrency: int):
        self.port = port
        self.make_request = make_request
        self.concurrency = concurrency
        self.result = LoadResult()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="load", daemon=True)

    def _run(self) -> None:
        async def main() -> None:
            await asyncio.gather(*(_worker(self.port, self.make_request, self.result, self._stop) for _ in range(self.concurrency)))

        self.result.started = time.monotonic()
        asyncio.run(main())
        self.result.ended = time.monotonic()

    def start(self) -> LoadGenerator:
        self._thread.start()
        return self

    def stop(self) -> LoadResult:
        self._stop.set()
        self._thread.join(REQUEST_TIMEOUT + 5)
        assert not self._thread.is_alive(), "load generator did not stop"
        return self.result

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        if self._thread.is_alive():
            self.stop()
