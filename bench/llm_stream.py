"""Benchmark case llm-stream: a streamed chat through the full policy, against the same KServe
OpenAI server called directly.

Each round sends one streamed chat completion (`stream: true`, `max_tokens` tokens) to the
server directly and one through modelgate, alternately, so drift on this shared machine hits
both alike, and timestamps every read of the response: time to the first body bytes, time to
the last, and the gaps between server-sent events. The server spends `--token-delay-ms` on
each token (openai_server.py), so the events arrive one by one and a gap is one chunk's trip
through the proxy. Through modelgate the filter also adds `stream_options.include_usage` to
the body and removes the usage-only event from the stream, as it does for any stream whose
client did not ask for usage: the client gets the same events either way.

Prints one JSON line per path (`"type": "llm_stream"`), which bench/report.py puts beside the
V1 cases: added latency per request (p50 of the whole stream) and per chunk (p50 gap).

usage: llm_stream.py DIRECT_URL GATEWAY_URL TOKEN [--requests N] [--max-tokens N]
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import time
import urllib.parse

MODEL = "markov-zen"
PATH = "/openai/v1/chat/completions"


def streamed_chat(base: str, token: str, max_tokens: int, seed: int) -> dict:
    """One streamed chat; microsecond timings of its first byte, last byte and event gaps."""
    url = urllib.parse.urlsplit(base)
    body = json.dumps(
        {
            "model": MODEL,
            "messages": [{"role": "user", "content": "Is now better than never?"}],
            "max_tokens": max_tokens,
            "seed": seed,
            "stream": True,
        }
    ).encode()
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=60)
    try:
        start = time.perf_counter()
        conn.request(
            "POST",
            PATH,
            body=body,
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
        )
        response = conn.getresponse()
        if response.status != 200:
            raise SystemExit(f"llm_stream: {base} answered {response.status}: {response.read()[:300]!r}")
        events, arrivals, buffered = [], [], b""
        while True:
            data = response.read1(65536)
            if not data:
                break
            now = time.perf_counter()
            buffered += data
            while b"\n\n" in buffered:
                event, buffered = buffered.split(b"\n\n", 1)
                events.append(event)
                arrivals.append(now)
        if not events or events[-1] != b"data: [DONE]":
            raise SystemExit(f"llm_stream: {base}: the stream did not end with [DONE]")
        gaps = [(b - a) * 1e6 for a, b in zip(arrivals, arrivals[1:])]
        return {
            "ttfb_us": (arrivals[0] - start) * 1e6,
            "total_us": (arrivals[-1] - start) * 1e6,
            "gaps_us": gaps,
            "events": len(events),
        }
    finally:
        conn.close()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def summary(path: str, runs: list[dict], max_tokens: int) -> dict:
    gaps = [g for r in runs for g in r["gaps_us"]]
    totals = [r["total_us"] for r in runs]
    events = {r["events"] for r in runs}
    return {
        "type": "llm_stream",
        "path": path,
        "requests": len(runs),
        "max_tokens": max_tokens,
        "events": sorted(events),
        "ttfb_p50_us": statistics.median(r["ttfb_us"] for r in runs),
        "total_p50_us": statistics.median(totals),
        "total_p99_us": percentile(totals, 0.99),
        "gap_p50_us": statistics.median(gaps),
        "gap_p99_us": percentile(gaps, 0.99),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("direct")
    parser.add_argument("gateway")
    parser.add_argument("token")
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--max-tokens", type=int, default=32)
    args = parser.parse_args()
    runs = {"direct": [], "modelgate": []}
    # Warm-up: connections, the filter's token cache, the server's first generation.
    for base in (args.direct, args.gateway):
        streamed_chat(base, args.token, args.max_tokens, 0)
    for i in range(args.requests):
        order = [("direct", args.direct), ("modelgate", args.gateway)]
        for path, base in order if i % 2 == 0 else reversed(order):
            runs[path].append(streamed_chat(base, args.token, args.max_tokens, i))
    direct, gateway = (summary(p, runs[p], args.max_tokens) for p in ("direct", "modelgate"))
    if direct["events"] != gateway["events"]:
        raise SystemExit(f"llm_stream: the client saw {gateway['events']} events through modelgate, {direct['events']} direct")
    for line in (direct, gateway):
        print(json.dumps(line))


if __name__ == "__main__":
    main()
