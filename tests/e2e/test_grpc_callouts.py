"""`proxy_grpc_call` and `proxy_grpc_stream` from a filter, against KServe's own gRPC server.

The host's conformance filter (host/tests/filters/conformance, written with the proxy-wasm Rust
SDK 0.2.5) makes a unary call or opens a stream to the service and method the request's headers
name, and answers with what its callbacks saw, one line each (dispatch, initial metadata,
message, trailing metadata, close; or the unary response). The calls go through the gateway's
HTTP/2 cluster (`appProtocol: kubernetes.io/h2c`) to KServe's `inference.GRPCInferenceService`
(`model_server.py --grpc-port`, KServe's GRPCServer and servicer), whose own counter and recorded
metadata show what reached it. Statuses are Envoy's (source/extensions/common/wasm/context.cc
`grpcCall`/`grpcStream`, source/common/grpc/async_client_impl.cc): a name that is no cluster
is PARSE_FAILURE, a GrpcService naming a missing cluster INTERNAL_FAILURE, a call the router
times out closes UNAVAILABLE (14) with "upstream request timeout" (router.cc
`onUpstreamTimeoutAbort`, utility.cc `prepareLocalReply` mapping 504 to 14).
"""

from __future__ import annotations

import dataclasses
import socket
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest
import requests
import yaml
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc as pb_grpc

import demo_config
import stack as stack_mod

WINE = demo_config.WINE
FILTERS = stack_mod.REPO / "host" / "tests" / "filters"
FILTER_TARGET = stack_mod.REPO / "target" / "test-filters"
CONFORMANCE = FILTER_TARGET / "wasm32-wasip1" / "release" / "conformance.wasm"


def build_conformance_filter() -> Path:
    """Build the test filters as the runtime's tests do (cargo makes a rebuild a no-op)."""
    subprocess.run(
        [
            "cargo", "build", "--release", "--target", "wasm32-wasip1",
            "--manifest-path", str(FILTERS / "Cargo.toml"), "--target-dir", str(FILTER_TARGET),
        ],  # fmt: skip
        check=True,
    )
    return CONFORMANCE


def grpc_service(cluster: str, authority: str = "") -> bytes:
    """A serialized `envoy.config.core.v3.GrpcService` with `envoy_grpc` (field 1): its
    `cluster_name` (1) and `authority` (2), in protobuf's wire format (tag, length, bytes)."""

    def field(number: int, value: bytes) -> bytes:
        assert len(value) < 128
        return bytes([number << 3 | 2, len(value)]) + value

    inner = field(1, cluster.encode()) + (field(2, authority.encode()) if authority else b"")
    return field(1, inner)


class CalloutStack:
    def __init__(self, run_dir: Path):
        self.run_dir = run_dir
        ports = dataclasses.astuple(stack_mod.free_ports())
        self.gateway_port, self.admin_port, self.http_port, self.grpc_port = ports[:4]
        # Listens and never accepts: connections open, nothing ever answers.
        self.blackhole = socket.socket()
        self.blackhole.bind(("127.0.0.1", 0))
        self.blackhole.listen(16)
        self.processes: list[stack_mod.Process] = []

    def start(self) -> None:
        stack_mod.Stack.check_built()
        wasm = build_conformance_filter()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        config = self.run_dir / "modelgate.yaml"
        config.write_text(yaml.safe_dump(self.host_config(wasm), sort_keys=False))
        server = stack_mod.Process(
            "wine-grpc",
            [
                sys.executable, str(stack_mod.MODEL_SERVER), "--model", "wine", "--name", WINE,
                "--port", str(self.http_port), "--grpc-port", str(self.grpc_port),
            ],  # fmt: skip
            self.run_dir / "logs" / "wine-grpc.log",
        )
        server.start()
        self.processes.append(server)
        gateway = stack_mod.Process(
            "modelgate",
            [str(stack_mod.HOST_BINARY), "serve", "--config", str(config)],
            self.run_dir / "logs" / "modelgate.log",
        )
        gateway.start()
        self.processes.append(gateway)
        stack_mod.wait_http(server, f"http://127.0.0.1:{self.http_port}/v2/models/{WINE}/ready")
        stack_mod.wait_http(gateway, f"http://127.0.0.1:{self.admin_port}/ready")

    def host_config(self, wasm: Path) -> dict:
        h2c = "kubernetes.io/h2c"
        blackhole = f"127.0.0.1:{self.blackhole.getsockname()[1]}"
        return {
            "version": 1,
            "listeners": [{"name": "http", "address": f"127.0.0.1:{self.gateway_port}"}],
            "admin": {"address": f"127.0.0.1:{self.admin_port}"},
            "clusters": [
                {"name": "kserve-grpc", "endpoints": [f"127.0.0.1:{self.grpc_port}"],
                 "appProtocol": h2c},
                {"name": "blackhole", "endpoints": [blackhole], "appProtocol": h2c},
                {"name": "kserve-rest", "endpoints": [f"127.0.0.1:{self.http_port}"]},
            ],  # fmt: skip
            # The filter answers every request itself; the route only has to exist.
            "routes": [{"name": "all", "match": {"prefix": "/"}, "cluster": "kserve-rest"}],
            "filters": [
                {"name": "callouts", "wasm": str(wasm), "rootId": "conformance", "vmCount": 1}
            ],
            "reload": {"watch": False},
        }

    def stop(self) -> None:
        for proc in reversed(self.processes):
            proc.signal_group(15)
        for proc in reversed(self.processes):
            if not proc.wait(10.0):
                proc.signal_group(9)
                proc.wait(5.0)
        self.blackhole.close()

    def call(self, case: str, method: str, request: bytes = b"", **headers: str) -> list[str]:
        """What the filter saw of one call or stream, one line per callback."""
        sent = {"x-case": case, "x-grpc-method": method, "x-grpc-request-hex": request.hex()}
        sent.setdefault("x-grpc-service", "kserve-grpc")
        sent.update({k.replace("_", "-"): v for k, v in headers.items()})
        r = requests.get(f"http://127.0.0.1:{self.gateway_port}/callout", headers=sent, timeout=20)
        assert r.status_code == 200, r.text
        return r.text.splitlines()

    def reached(self, method: str) -> float:
        text = requests.get(f"http://127.0.0.1:{self.http_port}/metrics", timeout=5).text
        for line in text.splitlines():
            if line.startswith(f'model_server_requests_total{{endpoint="grpc_{method}"}} '):
                return float(line.split()[-1])
        return 0.0

    def last_call(self) -> dict:
        recent = requests.get(f"http://127.0.0.1:{self.http_port}/debug/requests", timeout=5)
        return [r for r in recent.json()["requests"] if r["endpoint"].startswith("grpc_")][-1]


@pytest.fixture(scope="module")
def cs(tmp_path_factory):
    s = CalloutStack(tmp_path_factory.mktemp("grpc-callouts"))
    try:
        s.start()
    except (stack_mod.StackError, subprocess.CalledProcessError) as e:
        s.stop()
        pytest.fail(f"the callout stack did not start: {e}", pytrace=False)
    yield s
    dead = [f"{p.name}:\n{p.log_tail()}" for p in s.processes if not p.alive()]
    s.stop()
    assert not dead, "exited during the suite: " + "\n".join(dead)


def fields(line: str) -> dict[str, str]:
    """`word k=v k=v ... message=free text` as a dict (the first word under `kind`)."""
    line, _, message = line.partition(" message=")
    kind, *rest = line.split(" ")
    out = {"kind": kind, "message": message}
    for item in rest:
        key, _, value = item.partition("=")
        out[key] = value
    return out


def test_a_unary_call_reaches_kserve_and_the_filter_reads_its_answer(cs):
    before = cs.reached("ServerLive")
    lines = cs.call("grpc-call", "ServerLive", pb.ServerLiveRequest().SerializeToString())
    dispatch, response = (fields(line) for line in lines)
    assert dispatch["kind"] == "dispatch=ok"
    # proxy-wasm-cpp-host's gRPC call tokens: low bits 01 (wasm.h, CalloutType::GrpcCall).
    assert int(dispatch["token"]) % 4 == 1
    assert response["status"] == "0"
    assert response["token"] == dispatch["token"]
    assert pb.ServerLiveResponse.FromString(bytes.fromhex(response["body"])).live is True
    assert cs.reached("ServerLive") == before + 1
    seen = cs.last_call()
    assert seen["path"] == "/inference.GRPCInferenceService/ServerLive"
    # The filter's metadata, and what Envoy's async client adds (async_client_impl.cc and its
    # router: x-envoy-internal, the expected timeout); grpcio consumes grpc-timeout itself.
    assert seen["headers"]["x-callout"] == "conformance"
    assert seen["headers"]["x-envoy-internal"] == "true"
    assert seen["headers"]["x-envoy-expected-rq-timeout-ms"] == "5000"


def test_a_unary_call_through_a_grpc_service_proto_gets_model_metadata(cs):
    request = pb.ModelMetadataRequest(name=WINE).SerializeToString()
    lines = cs.call(
        "grpc-call",
        "ModelMetadata",
        request,
        x_grpc_service_hex=grpc_service("kserve-grpc", authority="models.example").hex(),
    )
    response = fields(lines[-1])
    assert response["status"] == "0", lines
    metadata = pb.ModelMetadataResponse.FromString(bytes.fromhex(response["body"]))
    assert metadata.name == WINE
    direct = kserve_direct(cs).ModelMetadata(pb.ModelMetadataRequest(name=WINE), timeout=10)
    assert metadata == direct


def kserve_direct(cs) -> pb_grpc.GRPCInferenceServiceStub:
    channel = grpc.insecure_channel(f"127.0.0.1:{cs.grpc_port}")
    return pb_grpc.GRPCInferenceServiceStub(channel)


def test_a_failed_unary_call_closes_with_the_servers_status_and_message(cs):
    request = pb.ModelMetadataRequest(name="no-such-model").SerializeToString()
    lines = cs.call("grpc-call", "ModelMetadata", request)
    response = fields(lines[-1])
    with pytest.raises(grpc.RpcError) as direct:
        kserve_direct(cs).ModelMetadata(
            pb.ModelMetadataRequest(name="no-such-model"), timeout=10
        )
    # What KServe's own client sees is what the filter's on_grpc_call_response gets.
    assert response["status"] == str(direct.value.code().value[0])
    assert response["status"] != "0"
    assert response["body"] == ""
    assert response["message"] == direct.value.details(), lines


@pytest.mark.parametrize("case", ["grpc-stream", "grpc-stream-close"])
def test_a_stream_sees_metadata_the_message_trailers_and_the_close(cs, case):
    before = cs.reached("ModelMetadata")
    request = pb.ModelMetadataRequest(name=WINE).SerializeToString()
    lines = [fields(line) for line in cs.call(case, "ModelMetadata", request)]
    assert [line["kind"] for line in lines] == [
        "dispatch=ok",
        "initial",
        "message",
        "trailing",
        "close",
    ], lines
    dispatch, initial, message, trailing, close = lines
    # Stream tokens: low bits 10 (CalloutType::GrpcStream).
    assert int(dispatch["token"]) % 4 == 2
    assert {line["token"] for line in lines[1:]} == {dispatch["token"]}
    assert initial["status"] == "200"
    assert initial["content-type"] == "application/grpc"
    assert pb.ModelMetadataResponse.FromString(bytes.fromhex(message["body"])).name == WINE
    assert trailing["grpc-status"] == "0"
    assert close["status"] == "0"
    assert cs.reached("ModelMetadata") == before + 1


def test_a_name_that_is_no_cluster_is_a_parse_failure(cs):
    assert cs.call("grpc-call", "ServerLive", x_grpc_service="no-such-cluster") == [
        "dispatch=ParseFailure"
    ]
    assert cs.call("grpc-stream", "ServerLive", x_grpc_service="no-such-cluster") == [
        "dispatch=ParseFailure"
    ]


def test_a_grpc_service_naming_a_missing_cluster_is_an_internal_failure(cs):
    service = grpc_service("no-such-cluster").hex()
    for case in ("grpc-call", "grpc-stream"):
        lines = cs.call(case, "ServerLive", x_grpc_service_hex=service)
        assert lines == ["dispatch=InternalFailure"], case


def test_a_call_the_router_times_out_closes_unavailable(cs):
    started = time.monotonic()
    lines = cs.call("grpc-call", "ServerLive", x_grpc_service="blackhole", x_grpc_timeout_ms="300")
    elapsed = time.monotonic() - started
    response = fields(lines[-1])
    assert response["status"] == "14", lines
    assert response["message"] == "upstream request timeout", lines
    assert response["body"] == ""
    assert elapsed >= 0.3
