"""KServe's gRPC inference service through the gateway, against KServe's own gRPC server.

A stack of its own: one KServe model server (sklearn-wine) serving REST and, on a second port,
`inference.GRPCInferenceService` (KServe's GRPCServer and servicer); the gateway with a cluster
to that port declared `appProtocol: kubernetes.io/h2c`, as a Service port would be for Envoy
Gateway, and the demo's filter policy. The client is grpcio with KServe's generated stubs.

What reached the server is read from its own counter (`model_server_requests_total`, counted by
an interceptor ahead of KServe's servicer: model_server.py), so "never reached" is proven by
the server, not inferred from the answer.
"""

from __future__ import annotations

import json
import os
import re
import socket
import sys
import time
from pathlib import Path

import grpc
import httpx
import pytest
import requests
import yaml
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc as pb_grpc

import corpus
import demo_config
import keys
import stack as stack_mod

WINE = demo_config.WINE
SERVICE = "/inference.GRPCInferenceService"
# The wine sample the REST suites use: 13 features.
WINE_ROW = [13.2, 1.78, 2.14, 11.2, 100.0, 2.65, 2.76, 0.26, 1.28, 4.38, 1.05, 3.4, 1050.0]


def _free_ports(n: int) -> list[int]:
    sockets = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _wait_ready(proc: stack_mod.Process, url: str) -> None:
    deadline = time.monotonic() + stack_mod.START_TIMEOUT
    while time.monotonic() < deadline:
        if not proc.alive():
            raise stack_mod.StackError(f"{proc.name} exited; its log:\n{proc.log_tail()}")
        try:
            if requests.get(url, timeout=1.0).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise stack_mod.StackError(f"{proc.name}: {url} not ready; its log:\n{proc.log_tail()}")


class GrpcStack:
    def __init__(self, run_dir: Path):
        self.run_dir = run_dir
        self.gateway_port, self.admin_port, self.http_port, self.grpc_port = _free_ports(4)
        self.keyset = keys.KeySet.generate()
        self.processes: list[stack_mod.Process] = []

    def start(self) -> None:
        stack_mod.Stack.check_built()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        filter_config = self.run_dir / "filter-config.json"
        filter_config.write_text(json.dumps(demo_config.filter_config(self.keyset), indent=2))
        host_config = self.run_dir / "modelgate.yaml"
        host_config.write_text(yaml.safe_dump(self.host_config(filter_config), sort_keys=False))
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
            [str(stack_mod.HOST_BINARY), "serve", "--config", str(host_config)],
            self.run_dir / "logs" / "modelgate.log",
        )
        gateway.start(env={**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "info")})
        self.processes.append(gateway)
        _wait_ready(server, f"http://127.0.0.1:{self.http_port}/v2/models/{WINE}/ready")
        _wait_ready(gateway, f"http://127.0.0.1:{self.admin_port}/ready")

    def host_config(self, filter_config: Path) -> dict:
        return {
            "version": 1,
            "listeners": [{"name": "http", "address": f"127.0.0.1:{self.gateway_port}"}],
            "admin": {"address": f"127.0.0.1:{self.admin_port}"},
            "clusters": [
                {
                    "name": f"{WINE}-grpc",
                    "endpoints": [f"127.0.0.1:{self.grpc_port}"],
                    "appProtocol": "kubernetes.io/h2c",
                }
            ],
            "routes": [
                {
                    "name": "kserve-grpc",
                    "match": {"prefix": f"{SERVICE}/"},
                    "cluster": f"{WINE}-grpc",
                }
            ],
            "filters": [
                {
                    "name": "modelgate",
                    "wasm": str(stack_mod.WASM),
                    "rootId": "modelgate",
                    "configFile": str(filter_config),
                    "vmCount": 1,
                }
            ],
            "reload": {"watch": False},
            "clientTraffic": demo_config.client_traffic(),
        }

    def stop(self) -> None:
        for proc in reversed(self.processes):
            proc.signal_group(15)
        for proc in reversed(self.processes):
            if not proc.wait(10.0):
                proc.signal_group(9)
                proc.wait(5.0)

    def token(self, **claims) -> str:
        return keys.mint(self.keyset, "RS256", **claims)

    def reached(self, method: str) -> float:
        """How many `method` calls KServe's gRPC server received (its own counter)."""
        text = requests.get(f"http://127.0.0.1:{self.http_port}/metrics", timeout=5).text
        m = re.search(
            rf'^model_server_requests_total{{endpoint="grpc_{method}"}} (\S+)$', text, re.M
        )
        return float(m.group(1)) if m else 0.0

    def last_call(self) -> dict:
        recent = requests.get(f"http://127.0.0.1:{self.http_port}/debug/requests", timeout=5)
        return [r for r in recent.json()["requests"] if r["endpoint"].startswith("grpc_")][-1]


@pytest.fixture(scope="module")
def gs(tmp_path_factory):
    s = GrpcStack(tmp_path_factory.mktemp("grpc-stack"))
    try:
        s.start()
    except stack_mod.StackError as e:
        s.stop()
        pytest.fail(f"the gRPC stack did not start: {e}", pytrace=False)
    yield s
    dead = [f"{p.name}:\n{p.log_tail()}" for p in s.processes if not p.alive()]
    s.stop()
    assert not dead, "exited during the suite: " + "\n".join(dead)


@pytest.fixture(scope="module")
def stub(gs):
    with grpc.insecure_channel(f"127.0.0.1:{gs.gateway_port}") as channel:
        yield pb_grpc.GRPCInferenceServiceStub(channel)


def infer_request(model: str = WINE) -> pb.ModelInferRequest:
    tensor = pb.ModelInferRequest.InferInputTensor(
        name="input-0",
        datatype="FP64",
        shape=[1, len(WINE_ROW)],
        contents=pb.InferTensorContents(fp64_contents=WINE_ROW),
    )
    return pb.ModelInferRequest(model_name=model, inputs=[tensor])


def bearer(token: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {token}")]


def test_model_infer_with_a_valid_token_reaches_kserve(gs, stub, subject):
    token = gs.token(sub=subject, scope=demo_config.WINE_SCOPE)
    before = gs.reached("ModelInfer")
    response = stub.ModelInfer(infer_request(), metadata=bearer(token), timeout=10)
    assert response.model_name == WINE
    assert response.outputs[0].name == "output-0"
    assert list(response.outputs[0].contents.int64_contents) in ([0], [1], [2])
    assert gs.reached("ModelInfer") == before + 1
    # The verified subject was forwarded as gRPC metadata, as for REST.
    assert gs.last_call()["headers"][demo_config.SUBJECT_HEADER] == subject


def test_metadata_ready_and_server_calls_pass(gs, stub, subject):
    md = bearer(gs.token(sub=subject, scope=demo_config.WINE_SCOPE))
    assert stub.ModelReady(pb.ModelReadyRequest(name=WINE), metadata=md, timeout=10).ready
    meta = stub.ModelMetadata(pb.ModelMetadataRequest(name=WINE), metadata=md, timeout=10)
    assert meta.name == WINE
    assert stub.ServerLive(pb.ServerLiveRequest(), metadata=md, timeout=10).live


def test_without_a_token_the_answer_is_trailers_only_unauthenticated(gs, stub):
    before = gs.reached("ModelInfer")
    with pytest.raises(grpc.RpcError) as caught:
        stub.ModelInfer(infer_request(), timeout=10)
    err = caught.value
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED  # 401 -> 16, Envoy's status.cc
    assert "missing bearer token" in err.details()
    # Trailers-only: no initial metadata; the headers came in the one HEADERS frame.
    assert not err.initial_metadata()
    assert dict(err.trailing_metadata())["www-authenticate"].startswith("Bearer")
    assert gs.reached("ModelInfer") == before

    # On the wire (h2c with prior knowledge): HTTP 200, application/grpc, grpc-status in the
    # headers, no body.
    message = infer_request().SerializeToString()
    body = b"\x00" + len(message).to_bytes(4, "big") + message
    with httpx.Client(http1=False, http2=True) as client:
        r = client.post(
            f"http://127.0.0.1:{gs.gateway_port}{SERVICE}/ModelInfer",
            content=body,
            headers={"content-type": "application/grpc", "te": "trailers"},
        )
    assert r.http_version == "HTTP/2"
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/grpc"
    assert r.headers["grpc-status"] == "16"
    assert r.content == b""
    assert gs.reached("ModelInfer") == before


def test_a_scope_miss_never_reaches_the_server(gs, stub, subject):
    token = gs.token(sub=subject, scope=demo_config.IRIS_SCOPE)
    before = gs.reached("ModelInfer")
    with pytest.raises(grpc.RpcError) as caught:
        stub.ModelInfer(infer_request(), metadata=bearer(token), timeout=10)
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED  # 403 -> 7
    assert f"missing scope {demo_config.WINE_SCOPE}" in caught.value.details()
    assert gs.reached("ModelInfer") == before
    # The same caller with the scope gets through: the counter does count.
    ok = gs.token(sub=subject, scope=demo_config.WINE_SCOPE)
    stub.ModelInfer(infer_request(), metadata=bearer(ok), timeout=10)
    assert gs.reached("ModelInfer") == before + 1


def test_over_quota_is_unavailable_and_never_reaches_the_server(gs, stub, subject):
    md = bearer(gs.token(sub=subject, scope=demo_config.WINE_SCOPE))
    burst = demo_config.WINE_QUOTA["burst"]
    before = gs.reached("ModelReady")
    codes = []
    for _ in range(burst + 3):
        try:
            stub.ModelReady(pb.ModelReadyRequest(name=WINE), metadata=md, timeout=10)
            codes.append(grpc.StatusCode.OK)
        except grpc.RpcError as e:
            codes.append(e.code())
    limited = codes.count(grpc.StatusCode.UNAVAILABLE)  # 429 -> 14
    assert limited >= 2, codes
    assert set(codes) == {grpc.StatusCode.OK, grpc.StatusCode.UNAVAILABLE}, codes
    assert gs.reached("ModelReady") == before + codes.count(grpc.StatusCode.OK)


def test_an_unknown_model_is_refused_before_the_server(gs, stub, subject):
    token = gs.token(sub=subject, scope=f"{demo_config.WINE_SCOPE} {demo_config.IRIS_SCOPE}")
    before = gs.reached("ModelInfer")
    with pytest.raises(grpc.RpcError) as caught:
        stub.ModelInfer(infer_request("no-such-model"), metadata=bearer(token), timeout=10)
    assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED  # 404 -> 12
    assert gs.reached("ModelInfer") == before


@pytest.mark.parametrize("label", list(corpus.GRPC_MALFORMED))
def test_unreadable_messages_are_refused_before_the_server(gs, subject, label):
    token = gs.token(sub=subject, scope=f"{demo_config.WINE_SCOPE} {demo_config.IRIS_SCOPE}")
    before = gs.reached("ModelInfer")
    with httpx.Client(http1=False, http2=True) as client:
        r = client.post(
            f"http://127.0.0.1:{gs.gateway_port}{SERVICE}/ModelInfer",
            content=corpus.GRPC_MALFORMED[label],
            headers={
                "content-type": "application/grpc",
                "te": "trailers",
                "authorization": f"Bearer {token}",
            },
        )
    assert r.status_code == 200
    assert r.headers["grpc-status"] == "13", r.headers  # 400 -> INTERNAL
    assert "gRPC" in r.headers["grpc-message"] or "model name" in r.headers["grpc-message"]
    assert gs.reached("ModelInfer") == before
