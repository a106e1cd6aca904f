"""Tracing as deploy/gateway/envoyproxy.yaml sets it up, with the real `modelgate` host and the
real `modelgate.wasm` (the EnvoyExtensionPolicy in deploy/) in front of a recording upstream.

The spans go to a small OTLP/gRPC receiver in this file (grpcio serving the
`opentelemetry-proto` package's TraceService), which decodes them with the official generated
messages: a span the host encodes wrongly fails here. Envoy Gateway points Envoy's
OpenTelemetry tracer at the collector over gRPC (docs/tracing.md), so that is what is served.

What is checked, per Envoy's OpenTelemetry tracer under Envoy Gateway's defaults:
- one request is one SERVER span (`ingress`) with Envoy's tags and the manifest's tags, the
  model among them read from the filter state the filter set; and one CLIENT span
  (`router <cluster> egress`, Envoy Gateway sets `spawn_upstream_span`) whose id is the
  parent in the `traceparent` the upstream receives, in the same trace;
- an incoming sampled `traceparent` keeps its trace id and is honoured whatever the sampling
  percentage; an unsampled one is not exported but still propagated;
- at sampling 0 nothing is exported and the upstream still gets an (unsampled) context;
- a collector that is down neither fails nor holds a request, and the lost spans are counted.
"""

from __future__ import annotations

import copy
import os
import re
import secrets
import socket
import threading
import time
import urllib.request
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import grpc
import pytest
import yaml
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.trace.v1 import trace_pb2

from deploy_support import DEPLOY, WASM, load_docs
from test_policy_in_host import (
    Host,
    deployed_policy,
    host_env,
    model_routes,
    token,
    with_test_keys,
)

ENVOY_PROXY = DEPLOY / "gateway" / "envoyproxy.yaml"
FLUSH_INTERVAL = "200ms"
# Long enough for several flush intervals of the host's exporter to have passed.
SETTLE_S = 1.5
IRIS_BODY = b'{"instances": [[5.1, 3.5, 1.4, 0.2]]}'


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- the collector and the upstream --------------------------------------------------------


class Collector(trace_service_pb2_grpc.TraceServiceServicer):
    """An OTLP/gRPC trace receiver keeping every span it is sent, decoded."""

    def __init__(self) -> None:
        self.spans: list[tuple[dict, trace_pb2.Span]] = []
        self.lock = threading.Lock()

    def Export(self, request, context):  # noqa: N802 (the service's method name)
        with self.lock:
            for resource_spans in request.resource_spans:
                resource = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
                for scope in resource_spans.scope_spans:
                    self.spans.extend((resource, span) for span in scope.spans)
        return trace_service_pb2.ExportTraceServiceResponse()

    def of_trace(self, trace_id: bytes) -> list[trace_pb2.Span]:
        with self.lock:
            return [s for _, s in self.spans if s.trace_id == trace_id]

    def count(self) -> int:
        with self.lock:
            return len(self.spans)


@pytest.fixture(scope="module")
def collector():
    servicer = Collector()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    servicer.address = f"127.0.0.1:{port}"
    yield servicer
    server.stop(grace=None)


class Recorder(BaseHTTPRequestHandler):
    """Stands in for a KServe predictor (a mock: only the headers it receives matter here)."""

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        self.rfile.read(int(self.headers.get("content-length", "0")))
        self.server.seen.append({k.lower(): v for k, v in self.headers.items()})  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (base signature)
        pass


@pytest.fixture(scope="module")
def upstream():
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Recorder)
    server.seen = []  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


# --- the host ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def signing_key():
    from cryptography.hazmat.primitives.asymmetric import rsa

    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def envoy_proxy_with(tmp: Path, name: str, **changes) -> Path:
    """deploy's EnvoyProxy with `spec.telemetry.tracing` changed only as given."""
    (proxy,) = load_docs(ENVOY_PROXY)
    proxy = copy.deepcopy(proxy)
    tracing = proxy["spec"]["telemetry"]["tracing"]
    for field in ("samplingRate", "samplingFraction"):
        tracing.pop(field, None)
    tracing.update(changes)
    path = tmp / f"envoyproxy-{name}.yaml"
    path.write_text(yaml.safe_dump(proxy))
    return path


def start_host(host_bin: Path, tmp: Path, name: str, policy_file: Path, upstream, envoy_proxy: Path, collector: str) -> Host:
    listener, admin = free_port(), free_port()
    config = {
        "version": 1,
        "listeners": [{"address": f"127.0.0.1:{listener}", "healthPath": None}],
        "admin": {"address": f"127.0.0.1:{admin}"},
        "clusters": [{"name": "sklearn-iris", "endpoints": [f"127.0.0.1:{upstream.server_address[1]}"]}],
        "routes": model_routes("sklearn-iris"),
        "filters": [{
            "name": "modelgate",
            "wasm": str(WASM),
            "vmCount": 1,
            "fromEnvoyExtensionPolicy": {"file": str(policy_file), "wasmName": "modelgate"},
        }],
        "accessLog": {"enabled": False},
        "reload": {"watch": False},
        "tracing": {"fromEnvoyProxy": str(envoy_proxy), "collector": collector, "flushInterval": FLUSH_INTERVAL},
    }
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    host = Host(host_bin, path, host_env(), admin, listener)
    host.admin = admin
    return host


@pytest.fixture(scope="module")
def policy(tmp_path_factory, signing_key) -> tuple[Path, dict]:
    """deploy's EnvoyExtensionPolicy with this test's JWT key (nothing else changed)."""
    changed = with_test_keys(deployed_policy(), signing_key)
    path = tmp_path_factory.mktemp("policy") / "policy.yaml"
    path.write_text(yaml.safe_dump(changed))
    return path, changed["spec"]["wasm"][0]["config"]


def predict(host: Host, headers: dict[str, str]) -> int:
    status, _, _ = host.request("POST", "/v1/models/sklearn-iris:predict", {"content-type": "application/json", **headers}, IRIS_BODY)
    return status


def wait_for_spans(collector: Collector, trace_id: bytes, count: int) -> list[trace_pb2.Span]:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        spans = collector.of_trace(trace_id)
        if len(spans) >= count:
            time.sleep(SETTLE_S)  # anything more for this trace would arrive meanwhile
            return collector.of_trace(trace_id)
        time.sleep(0.05)  # polling for the exporter's batch, not an assertion
    return collector.of_trace(trace_id)


def parse_traceparent(value: str) -> tuple[bytes, bytes, str]:
    match = re.fullmatch(r"00-([0-9a-f]{32})-([0-9a-f]{16})-(0[01])", value)
    assert match, f"not a traceparent Envoy writes: {value!r}"
    return bytes.fromhex(match[1]), bytes.fromhex(match[2]), match[3]


def attributes(span: trace_pb2.Span) -> dict[str, str]:
    return {a.key: a.value.string_value for a in span.attributes}


def one_of(spans, kind) -> trace_pb2.Span:
    found = [s for s in spans if s.kind == kind]
    assert len(found) == 1, f"{len(found)} spans of kind {kind}: {spans}"
    return found[0]


# --- the tests -----------------------------------------------------------------------------


def test_deploy_envoy_proxy_traces_a_request_with_the_filter_state_tags(host_bin, wasm_bytes, tmp_path, policy, upstream, collector, signing_key):
    """deploy/gateway/envoyproxy.yaml as committed (10% sampling): a caller's sampled context
    is honoured, so its request is traced with certainty."""
    policy_file, config = policy
    host = start_host(host_bin, tmp_path, "deploy", policy_file, upstream, ENVOY_PROXY, collector.address)
    try:
        trace_id, caller_span = secrets.token_bytes(16), secrets.token_bytes(8)
        upstream.seen.clear()
        status = predict(host, {
            "authorization": f"Bearer {token(config, signing_key, ['predict:sklearn-iris'], sub='tracer-1')}",
            "traceparent": f"00-{trace_id.hex()}-{caller_span.hex()}-01",
            "tracestate": "vendor=opaque",
        })
        assert status == 200
        spans = wait_for_spans(collector, trace_id, 2)
    finally:
        host.stop()
    assert len(spans) == 2, spans
    server = one_of(spans, trace_pb2.Span.SPAN_KIND_SERVER)
    client = one_of(spans, trace_pb2.Span.SPAN_KIND_CLIENT)
    (seen,) = upstream.seen
    # The upstream's parent is the CLIENT span, child of the SERVER span, child of the caller.
    up_trace, up_parent, up_flags = parse_traceparent(seen["traceparent"])
    assert (up_trace, up_parent, up_flags) == (trace_id, client.span_id, "01")
    assert seen["tracestate"] == "vendor=opaque"
    assert client.parent_span_id == server.span_id
    assert server.parent_span_id == caller_span
    assert server.trace_state == "vendor=opaque"
    assert server.name == "ingress"
    assert client.name == "router sklearn-iris egress"
    assert server.start_time_unix_nano <= client.start_time_unix_nano <= client.end_time_unix_nano <= server.end_time_unix_nano
    tags = attributes(server)
    # The manifest's tags, read from the filter state the filter set.
    assert tags["modelgate.model"] == "sklearn-iris"
    assert tags["modelgate.outcome"] == "allowed"
    assert tags["modelgate.subject"] == "tracer-1"
    # Envoy's own.
    assert tags["guid:x-request-id"] == seen["x-request-id"]
    assert tags["http.method"] == "POST"
    assert tags["http.url"] == f"http://127.0.0.1:{host.listener}/v1/models/sklearn-iris:predict"
    assert tags["http.status_code"] == "200"
    assert tags["http.protocol"] == "HTTP/1.1"
    assert tags["component"] == "proxy"
    assert tags["upstream_cluster"] == "sklearn-iris"
    assert tags["response_flags"] == "-"
    assert tags["request_size"] == str(len(IRIS_BODY))
    assert "error" not in tags
    assert server.status.code == trace_pb2.Status.STATUS_CODE_UNSET
    assert attributes(client)["upstream_address"] == f"127.0.0.1:{upstream.server_address[1]}"
    resource = next(r for r, s in collector.spans if s.trace_id == trace_id)
    assert resource["service.name"] == "modelgate"


def test_a_new_trace_at_full_sampling_and_a_denied_request(host_bin, wasm_bytes, tmp_path, policy, upstream, collector, signing_key):
    policy_file, config = policy
    proxy = envoy_proxy_with(tmp_path, "all", samplingRate=100)
    host = start_host(host_bin, tmp_path, "all", policy_file, upstream, proxy, collector.address)
    try:
        upstream.seen.clear()
        status = predict(host, {"authorization": f"Bearer {token(config, signing_key, ['predict:sklearn-iris'])}"})
        assert status == 200
        (seen,) = upstream.seen
        trace_id, parent, flags = parse_traceparent(seen["traceparent"])
        assert flags == "01"
        assert seen["tracestate"] == ""
        spans = wait_for_spans(collector, trace_id, 2)
        server = one_of(spans, trace_pb2.Span.SPAN_KIND_SERVER)
        assert one_of(spans, trace_pb2.Span.SPAN_KIND_CLIENT).span_id == parent
        assert server.parent_span_id == b""

        # Denied by the filter: a server span with the filter's outcome, nothing upstream.
        before = collector.count()
        upstream.seen.clear()
        assert predict(host, {}) == 401
        assert upstream.seen == []
        deadline = time.monotonic() + 10
        while collector.count() == before and time.monotonic() < deadline:
            time.sleep(0.05)  # polling for the exporter's batch, not an assertion
        time.sleep(SETTLE_S)
    finally:
        host.stop()
    new = collector.spans[before:]
    assert len(new) == 1, new
    _, denied = new[0]
    assert denied.kind == trace_pb2.Span.SPAN_KIND_SERVER
    tags = attributes(denied)
    assert tags["http.status_code"] == "401"
    assert tags["modelgate.outcome"] == "unauthenticated"
    # No route matched before the filter answered (the routes need the header it sets).
    assert "upstream_cluster" not in tags


def test_sampling_zero_exports_nothing_but_propagates_and_honours_a_sampled_caller(host_bin, wasm_bytes, tmp_path, policy, upstream, collector, signing_key):
    policy_file, config = policy
    proxy = envoy_proxy_with(tmp_path, "none", samplingRate=0)
    host = start_host(host_bin, tmp_path, "none", policy_file, upstream, proxy, collector.address)
    bearer = {"authorization": f"Bearer {token(config, signing_key, ['predict:sklearn-iris'])}"}
    try:
        upstream.seen.clear()
        for _ in range(5):
            assert predict(host, bearer) == 200
        unsampled_caller = secrets.token_bytes(16)
        assert predict(host, {**bearer, "traceparent": f"00-{unsampled_caller.hex()}-{secrets.token_hex(8)}-00"}) == 200
        own = [parse_traceparent(s["traceparent"]) for s in upstream.seen]
        sampled_caller = secrets.token_bytes(16)
        assert predict(host, {**bearer, "traceparent": f"00-{sampled_caller.hex()}-{secrets.token_hex(8)}-01"}) == 200
        honoured = wait_for_spans(collector, sampled_caller, 2)
    finally:
        host.stop()
    # Every request carried a context upstream, unsampled, each its own new trace...
    assert [flags for _, _, flags in own] == ["00"] * 6
    assert len({trace for trace, _, _ in own[:5]}) == 5
    # ...the unsampled caller's trace id kept...
    assert own[5][0] == unsampled_caller
    # ...and none of them was exported; the sampled caller's request was.
    for trace, _, _ in own:
        assert collector.of_trace(trace) == []
    assert len(honoured) == 2


def test_a_dead_collector_neither_fails_nor_holds_requests(host_bin, wasm_bytes, tmp_path, policy, upstream, collector, signing_key):
    policy_file, config = policy
    proxy = envoy_proxy_with(tmp_path, "dead", samplingRate=100)
    dead = f"127.0.0.1:{free_port()}"  # nothing listens there
    host = start_host(host_bin, tmp_path, "dead", policy_file, upstream, proxy, dead)
    bearer = {"authorization": f"Bearer {token(config, signing_key, ['predict:sklearn-iris'])}"}
    try:
        # Each request has the client's 10 s timeout: a request held by the exporter fails it.
        statuses = [predict(host, bearer) for _ in range(12)]
        time.sleep(SETTLE_S)
        with urllib.request.urlopen(f"http://127.0.0.1:{host.admin}/metrics", timeout=5) as resp:
            metrics = resp.read().decode()
    finally:
        host.stop()
    assert statuses == [200] * 12
    lost = re.search(r'^modelgate_tracing_spans_dropped_total\{reason="export_failed"\} (\d+)$', metrics, re.M)
    assert lost and int(lost[1]) == 24, metrics
