"""What tracing costs a request: the host in front of nginx with tracing off, on at sampling 0
(every request gets a trace context and a `traceparent` upstream, nothing is exported) and on at
100% (two spans per request exported over OTLP/gRPC to a receiver in this process, which
decodes them with `opentelemetry-proto` and counts them), measured with wrk in interleaved
rounds so drift in the machine's load hits every case alike.

    .venv/bin/python bench/tracing_overhead.py [--seconds 5] [--rounds 3] [--connections 16]

Prints a Markdown table (requests/s and wrk's latency percentiles, the median round of each
case) and the spans the receiver got, which must be 2 per request of the 100% case.
"""

from __future__ import annotations

import argparse
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from concurrent import futures
from pathlib import Path

import grpc
import yaml
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

REPO = Path(__file__).resolve().parents[1]
HOST_BIN = REPO / "target" / "release" / "modelgate"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Counter(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self) -> None:
        self.spans = 0
        self.lock = threading.Lock()

    def Export(self, request, context):  # noqa: N802 (the service's method name)
        n = sum(len(s.spans) for r in request.resource_spans for s in r.scope_spans)
        with self.lock:
            self.spans += n
        return trace_service_pb2.ExportTraceServiceResponse()


def wait_ready(url: str, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"{proc.args[0]} exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"{url} not ready")


def start_nginx(tmp: Path) -> tuple[subprocess.Popen, int]:
    port = free_port()
    conf = tmp / "nginx.conf"
    conf.write_text(
        f"worker_processes 1; daemon off; pid {tmp}/nginx.pid; error_log stderr error;\n"
        "events { worker_connections 1024; }\n"
        f"http {{ access_log off; client_body_temp_path {tmp}; proxy_temp_path {tmp};\n"
        f"  fastcgi_temp_path {tmp}; uwsgi_temp_path {tmp}; scgi_temp_path {tmp};\n"
        f"  server {{ listen 127.0.0.1:{port}; location / {{ return 200 '{{}}'; }} }} }}\n"
    )
    proc = subprocess.Popen(["nginx", "-p", str(tmp), "-c", str(conf)])
    wait_ready(f"http://127.0.0.1:{port}/", proc)
    return proc, port


def start_host(tmp: Path, name: str, upstream: int, tracing: dict | None) -> tuple[subprocess.Popen, int]:
    listener, admin = free_port(), free_port()
    config = {
        "version": 1,
        "concurrency": 1,
        "listeners": [{"address": f"127.0.0.1:{listener}", "healthPath": None}],
        "admin": {"address": f"127.0.0.1:{admin}"},
        "clusters": [{"name": "nginx", "endpoints": [f"127.0.0.1:{upstream}"]}],
        "routes": [{"name": "all", "match": {"prefix": "/"}, "cluster": "nginx"}],
        "accessLog": {"enabled": False},
        "reload": {"watch": False},
    }
    if tracing is not None:
        config["tracing"] = tracing
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    proc = subprocess.Popen([str(HOST_BIN), "serve", "--config", str(path)], env={"RUST_LOG": "warn"})
    wait_ready(f"http://127.0.0.1:{admin}/ready", proc)
    return proc, listener


def wrk(port: int, seconds: int, connections: int) -> dict:
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", f"http://127.0.0.1:{port}/v1/models/m:predict"],
        capture_output=True, text=True, check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out)[1])
    total = int(re.search(r"(\d+) requests in", out)[1])
    lat = {p: re.search(rf"\s{p}%\s+([\d.]+\w+)", out)[1] for p in ("50", "99")}
    return {"rps": rps, "requests": total, **lat}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=16)
    args = parser.parse_args()
    counter = Counter()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(counter, server)
    collector = server.add_insecure_port("127.0.0.1:0")
    server.start()

    def tracing(rate: int) -> dict:
        return {
            "samplingRate": rate,
            "provider": {"type": "OpenTelemetry", "host": "127.0.0.1", "port": collector},
            "tags": {"model": "%FILTER_STATE(wasm.modelgate.model:PLAIN)%"},
        }

    procs = []
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        try:
            nginx, upstream = start_nginx(tmp)
            procs.append(nginx)
            cases = {}
            for name, config in (("off", None), ("on, sampling 0", tracing(0)), ("on, sampling 100", tracing(100))):
                proc, port = start_host(tmp, name.replace(",", "").replace(" ", "-"), upstream, config)
                procs.append(proc)
                cases[name] = port
            results: dict[str, list[dict]] = {name: [] for name in cases}
            for _ in range(args.rounds):
                for name, port in cases.items():
                    results[name].append(wrk(port, args.seconds, args.connections))
            time.sleep(6)  # the exporter's 5 s flush interval: the last spans arrive
        finally:
            for proc in procs:
                proc.terminate()
                proc.wait()
            server.stop(grace=None)
    print(f"wrk -t1 -c{args.connections}, {args.rounds} interleaved rounds of {args.seconds}s, host with 1 worker, nginx upstream\n")
    print("| tracing | requests/s (median round) | p50 | p99 | rounds' requests/s |")
    print("|---|---|---|---|---|")
    for name, rounds in results.items():
        median = sorted(rounds, key=lambda r: r["rps"])[len(rounds) // 2]
        spread = ", ".join(f"{r['rps']:.0f}" for r in rounds)
        print(f"| {name} | {statistics.median(r['rps'] for r in rounds):.0f} | {median['50']} | {median['99']} | {spread} |")
    sampled = sum(r["requests"] for r in results["on, sampling 100"])
    print(f"\nspans received: {counter.spans}; requests at sampling 100: {sampled} (2 spans each: {2 * sampled})")


if __name__ == "__main__":
    main()
