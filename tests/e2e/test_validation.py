"""KServe V1/V2 validation at the gateway: malformed bodies get 400 (413 past the size limit)
and never reach a model server, while valid bodies still get KServe's exact answer."""

from __future__ import annotations

import json
import struct

import pytest
import requests

import corpus
import demo_config
from helpers import total_requests

IRIS = demo_config.IRIS
JSON = {"Content-Type": "application/json"}
V1_PATH = f"/v1/models/{IRIS}:predict"
V2_PATH = f"/v2/models/{IRIS}/infer"


def assert_rejected_before_kserve(stack, gw, path: str, body, status: int = 400) -> dict:
    before = total_requests(stack)
    r = gw.post(f"{stack.gateway}{path}", data=body, headers=JSON, timeout=15)
    assert r.status_code == status, f"{r.status_code} {r.text[:300]}"
    assert r.headers.get("content-type", "").startswith("application/json"), r.headers
    error = r.json()["error"]
    assert isinstance(error, str) and error
    assert total_requests(stack) == before, "a rejected request reached a model server"
    return r.json()


@pytest.mark.parametrize("case", list(corpus.V1_MALFORMED))
def test_malformed_v1_body_is_400_and_never_reaches_kserve(stack, gw, case):
    assert_rejected_before_kserve(stack, gw, V1_PATH, corpus.V1_MALFORMED[case])


@pytest.mark.parametrize("case", list(corpus.V2_MALFORMED))
def test_malformed_v2_body_is_400_and_never_reaches_kserve(stack, gw, case):
    assert_rejected_before_kserve(stack, gw, V2_PATH, corpus.V2_MALFORMED[case])


def test_malformed_explain_body_is_400_too(stack, gw):
    assert_rejected_before_kserve(stack, gw, f"/v1/models/{IRIS}:explain", corpus.V1_MALFORMED["ragged rows"])


def test_wine_checks_its_own_feature_count(stack, gw):
    body = json.dumps({"instances": [corpus.ROW]}).encode()
    answer = assert_rejected_before_kserve(stack, gw, f"/v1/models/{demo_config.WINE}:predict", body)
    assert "13" in answer["error"], answer


def test_the_error_says_what_and_where(stack, gw):
    body = json.dumps({"instances": [corpus.ROW, corpus.ROW, corpus.ROW, [1.0, 2.0, 3.0]]}).encode()
    answer = assert_rejected_before_kserve(stack, gw, V1_PATH, body)
    assert "instances[3]" in answer["error"], answer


def oversize_v1(extra: int = 1) -> bytes:
    """A valid V1 body padded with whitespace to deploy/'s `maxBodyBytes` plus `extra`: only
    its size is wrong."""
    body = json.dumps({"instances": [corpus.ROW]}).encode()
    return body[:-1] + b" " * (demo_config.MAX_BODY_BYTES + extra - len(body)) + b"}"


def test_oversize_body_is_413(stack, gw):
    body = oversize_v1()
    assert len(body) == demo_config.MAX_BODY_BYTES + 1
    # Below deploy/'s ClientTrafficPolicy buffer limit, so the filter's JSON 413 answers it.
    assert len(body) < demo_config.BUFFER_LIMIT
    answer = assert_rejected_before_kserve(stack, gw, V1_PATH, body, status=413)
    assert answer == {"error": f"request body exceeds {demo_config.MAX_BODY_BYTES} bytes"}
    # Control: one byte less is forwarded.
    r = gw.post(f"{stack.gateway}{V1_PATH}", data=oversize_v1(0), headers=JSON, timeout=15)
    assert r.status_code == 200, r.text[:300]


def test_oversize_chunked_body_is_413(stack, gw):
    body = oversize_v1()

    def chunks():
        for i in range(0, len(body), 64 * 1024):
            yield body[i : i + 64 * 1024]

    before = total_requests(stack)
    r = gw.post(f"{stack.gateway}{V1_PATH}", data=chunks(), headers=JSON, timeout=15)
    assert r.status_code == 413, r.text[:300]
    assert total_requests(stack) == before


def test_unknown_model_is_404_in_kserves_shape(stack, gw):
    before = total_requests(stack)
    r = gw.post(f"{stack.gateway}/v1/models/no-such-model:predict", json={"instances": [corpus.ROW]}, timeout=10)
    assert r.status_code == 404
    assert r.json() == {"error": "Model with name no-such-model does not exist."}
    assert total_requests(stack) == before


def _direct(stack, path: str, body: bytes) -> requests.Response:
    return requests.post(f"{stack.model_server_url('iris-1')}{path}", data=body, headers=JSON, timeout=10)


@pytest.mark.parametrize("case", list(corpus.V1_VALID_EDGES))
def test_valid_v1_edge_bodies_get_kserves_exact_answer(stack, gw, case):
    body = corpus.V1_VALID_EDGES[case]
    via = gw.post(f"{stack.gateway}{V1_PATH}", data=body, headers=JSON, timeout=10)
    kserve = _direct(stack, V1_PATH, body)
    assert kserve.status_code == 200, kserve.text
    assert (via.status_code, via.content) == (200, kserve.content)


@pytest.mark.parametrize("case", list(corpus.V2_VALID_EDGES))
def test_valid_v2_edge_bodies_get_kserves_exact_answer(stack, gw, case):
    body = corpus.V2_VALID_EDGES[case]
    via = gw.post(f"{stack.gateway}{V2_PATH}", data=body, headers=JSON, timeout=10)
    kserve = _direct(stack, V2_PATH, body)
    assert kserve.status_code == 200, kserve.text
    assert (via.status_code, via.content) == (200, kserve.content)


def test_what_kserve_does_with_the_corpus_unprotected(stack):
    """The reason for the gateway: KServe alone accepts most of the corpus into the model.

    Not an assertion about modelgate but a guard on the corpus: if KServe ever started
    rejecting these itself with 400, the corpus would no longer show anything.
    """
    statuses = {case: _direct(stack, V1_PATH, body).status_code for case, body in corpus.V1_MALFORMED.items()}
    reached_the_model = [case for case, status in statuses.items() if status >= 500]
    assert len(reached_the_model) >= 10, statuses


def binary_infer(rows: list[list[float]], declared_bytes: int | None = None) -> tuple[bytes, dict]:
    """A V2 infer body with the binary tensor extension: JSON header, then raw FP64 data."""
    data = b"".join(struct.pack("<4d", *row) for row in rows)
    size = len(data) if declared_bytes is None else declared_bytes
    header = json.dumps(
        {
            "id": "binary-1",
            "inputs": [
                {
                    "name": "input-0",
                    "shape": [len(rows), 4],
                    "datatype": "FP64",
                    "parameters": {"binary_data_size": size},
                }
            ],
        }
    ).encode()
    headers = {
        "Content-Type": "application/octet-stream",
        "Inference-Header-Content-Length": str(len(header)),
    }
    return header + data, headers


def test_v2_binary_extension_body_gets_kserves_exact_answer(stack, gw):
    body, headers = binary_infer([corpus.ROW, [6.8, 2.8, 4.8, 1.4]])
    via = gw.post(f"{stack.gateway}{V2_PATH}", data=body, headers=headers, timeout=10)
    kserve = requests.post(f"{stack.model_server_url('iris-1')}{V2_PATH}", data=body, headers=headers, timeout=10)
    assert kserve.status_code == 200, kserve.text
    assert (via.status_code, via.content) == (200, kserve.content)
    assert via.json()["outputs"][0]["data"] == [0, 1]


def test_v2_binary_extension_with_a_wrong_size_is_400(stack, gw):
    body, headers = binary_infer([corpus.ROW], declared_bytes=24)
    before = total_requests(stack)
    r = gw.post(f"{stack.gateway}{V2_PATH}", data=body, headers=headers, timeout=10)
    assert r.status_code == 400, r.text
    assert "binary" in r.json()["error"] or "binary_data_size" in r.json()["error"], r.text
    assert total_requests(stack) == before
