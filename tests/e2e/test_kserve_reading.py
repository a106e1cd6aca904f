"""Bodies the model server reads differently from a plain JSON validator (issue 12).

Each class was a way past the gateway: a body or header that a validator reading the JSON
alone would pass, and that KServe 0.21 then turns into a 500 or into a different model input.
Every test sends the case through the gateway and proves with the model servers' own request
counters that a refused request reached none of them; a control sends the same request to a
KServe server directly and shows what the gateway saved it from.
"""

from __future__ import annotations

import json

import pytest
import requests

import corpus
import demo_config
from helpers import post_raw, total_requests

IRIS = demo_config.IRIS
WINE = demo_config.WINE
V1_PATH = f"/v1/models/{IRIS}:predict"
V2_PATH = f"/v2/models/{IRIS}/infer"
JSON = {"Content-Type": "application/json"}
CE_ATTRIBUTES = {"specversion": "1.0", "type": "t", "source": "s", "id": "1", "time": "2020-01-01T00:00:00Z"}
BINARY_CE = {"ce-specversion": "1.0", "ce-source": "s", "ce-type": "t", "ce-id": "1", "ce-contenttype": "application/json"}


def direct(stack, path: str, body: bytes, headers: dict) -> requests.Response:
    return requests.post(f"{stack.model_server_url('iris-1')}{path}", data=body, headers=headers, timeout=10)


def refused(stack, gw, path: str, body: bytes, headers: dict, status: int, where: str) -> str:
    before = total_requests(stack)
    r = gw.post(f"{stack.gateway}{path}", data=body, headers=headers, timeout=10)
    assert r.status_code == status, f"{r.status_code} {r.text[:300]}"
    error = r.json()["error"]
    assert error.startswith(where), error
    assert total_requests(stack) == before, "a refused request reached a model server"
    return error


def v2_input(shape, data, datatype="FP64", name="input-0") -> bytes:
    return json.dumps({"inputs": [{"name": name, "shape": shape, "datatype": datatype, "data": data}]}).encode()


# --- CloudEvents ---------------------------------------------------------------------------


def test_structured_cloudevent_is_refused_before_kserve(stack, gw):
    # Valid outer rows; KServe would predict on `data`, three features on a 4-feature model.
    body = json.dumps({**CE_ATTRIBUTES, "data": {"instances": [[5.1, 3.5, 1.4]]}, "instances": [corpus.ROW]}).encode()
    refused(stack, gw, V1_PATH, body, JSON, 400, "body: a structured CloudEvent")
    assert direct(stack, V1_PATH, body, JSON).status_code == 500


def test_structured_cloudevent_on_explain_and_as_cloudevents_json_is_refused_too(stack, gw):
    body = json.dumps({**CE_ATTRIBUTES, "data": {"instances": [corpus.ROW] * 150}}).encode()
    refused(stack, gw, f"/v1/models/{IRIS}:explain", body, JSON, 400, "body: a structured CloudEvent")
    refused(stack, gw, V1_PATH, body, {"Content-Type": "application/cloudevents+json"}, 400, "body: a structured CloudEvent")
    # KServe alone predicts on all 150 rows, past maxInstances.
    answer = direct(stack, V1_PATH, body, JSON)
    assert answer.status_code == 200 and len(answer.json()["predictions"]) == 150


def test_binary_cloudevent_is_refused_before_kserve(stack, gw):
    body = corpus.j({"instances": [corpus.ROW]})
    headers = {**JSON, **BINARY_CE}
    refused(stack, gw, V1_PATH, body, headers, 400, "ce-specversion: binary-mode CloudEvents")
    assert direct(stack, V1_PATH, body, headers).status_code == 500


# --- content types -------------------------------------------------------------------------


@pytest.mark.parametrize("content_type", ["application/json; charset=utf-8", "Application/JSON", "application/json;charset=\"UTF-8\""])
def test_a_json_type_kserve_would_not_parse_is_normalised_and_predicts(stack, gw, content_type):
    body = corpus.j({"instances": [corpus.ROW, [6.8, 2.8, 4.8, 1.4]]})
    assert direct(stack, V1_PATH, body, {"Content-Type": content_type}).status_code == 500
    before = total_requests(stack, ["iris-1", "iris-2"])
    r = gw.post(f"{stack.gateway}{V1_PATH}", data=body, headers={"Content-Type": content_type}, timeout=10)
    assert (r.status_code, r.json()) == (200, {"predictions": [0, 1]}), r.text
    assert total_requests(stack, ["iris-1", "iris-2"]) == before + 1


def test_a_repeated_content_type_reaches_kserve_as_the_one_validated(stack, gw):
    # KServe keeps the last copy (`dict(request.headers.items())`), a header read the first.
    body = corpus.j({"instances": [corpus.ROW]})
    headers = [("Content-Type", "application/json"), ("Content-Type", "text/plain")]
    status, answer = post_raw(stack.model_server_url("iris-1"), V1_PATH, body, headers)
    assert status == 500, answer
    before = total_requests(stack, ["iris-1", "iris-2"])
    status, answer = post_raw(stack.gateway, V1_PATH, body, [*headers, ("Authorization", gw.headers["Authorization"])])
    assert (status, json.loads(answer)) == (200, {"predictions": [0]}), answer
    assert total_requests(stack, ["iris-1", "iris-2"]) == before + 1


@pytest.mark.parametrize("content_type", ["text/plain", "application/json; charset=utf-16", "application/x-www-form-urlencoded"])
def test_a_type_kserve_hands_the_model_as_bytes_is_415(stack, gw, content_type):
    body = corpus.j({"instances": [corpus.ROW]})
    refused(stack, gw, V1_PATH, body, {"Content-Type": content_type}, 415, "content-type: ")
    assert direct(stack, V1_PATH, body, {"Content-Type": content_type}).status_code == 500


def test_v2_without_a_json_type_is_415(stack, gw):
    body = v2_input([1, 4], corpus.ROW)
    refused(stack, gw, V2_PATH, body, {"Content-Type": "text/plain"}, 415, "content-type: ")
    assert direct(stack, V2_PATH, body, {"Content-Type": "text/plain"}).status_code == 400


# --- V2 tensors ----------------------------------------------------------------------------


def test_v2_zero_size_tensor_is_400(stack, gw):
    body = v2_input([0, 4], [])
    refused(stack, gw, V2_PATH, body, JSON, 400, "inputs[0].shape: [0, 4] is a zero-size tensor")
    assert direct(stack, V2_PATH, body, JSON).status_code == 500


def test_v2_rank_past_numpys_limit_is_400(stack, gw):
    body = v2_input([1] * 64 + [4], corpus.ROW)
    refused(stack, gw, V2_PATH, body, JSON, 400, "inputs[0].shape: 65 dimensions")
    assert direct(stack, V2_PATH, body, JSON).status_code == 500


def test_v2_shape_that_does_not_fit_the_models_features_is_400(stack, gw):
    body = v2_input([1, 3], corpus.ROW[:3])
    refused(stack, gw, V2_PATH, body, JSON, 400, "inputs[0].shape: [1, 3], this model takes [N, 4]")
    assert direct(stack, V2_PATH, body, JSON).status_code == 500


def test_v2_bytes_on_a_numeric_model_is_400(stack, gw):
    body = v2_input([1, 4], ["a", "b", "c", "d"], datatype="BYTES")
    refused(stack, gw, V2_PATH, body, JSON, 400, "inputs[0].datatype: BYTES, this model takes numbers")
    assert direct(stack, V2_PATH, body, JSON).status_code == 500


def test_v2_declared_inputs_of_wine_are_enforced(stack, gw, subject):
    wine_row = [13.2, 1.78, 2.14, 11.2, 100.0, 2.65, 2.76, 0.26, 1.28, 4.38, 1.05, 3.4, 1050.0]
    path = f"/v2/models/{WINE}/infer"
    refused(stack, gw, path, v2_input([1, 13], wine_row, datatype="FP32"), JSON, 400, 'inputs[0].datatype: FP32, the model declares FP64 for "input-0"')
    refused(stack, gw, path, v2_input([1, 13], wine_row, name="x"), JSON, 400, 'inputs[0].name: unknown input "x"')
    before = total_requests(stack, ["wine"])
    r = gw.post(f"{stack.gateway}{path}", data=v2_input([1, 13], wine_row), headers=JSON, timeout=10)
    assert r.status_code == 200, r.text
    assert r.json()["outputs"][0]["data"] == [0]
    assert total_requests(stack, ["wine"]) == before + 1


def test_v2_dataframe_request_must_be_one_feature_column_per_input(stack, gw):
    # `content_type: "pd"` makes KServe build a DataFrame, one column per input.
    one_input = corpus.v2(corpus.tensor(), parameters={"content_type": "pd"})
    refused(stack, gw, V2_PATH, one_input, JSON, 400, "inputs[0].shape: parameters.content_type \"pd\"")
    assert direct(stack, V2_PATH, one_input, JSON).status_code == 500
    columns = corpus.v2(*(corpus.tensor(name=n, shape=[1], data=[v]) for n, v in zip("abcd", corpus.ROW)), parameters={"content_type": "pd"})
    r = gw.post(f"{stack.gateway}{V2_PATH}", data=columns, headers=JSON, timeout=10)
    assert (r.status_code, r.json()["outputs"][0]["data"]) == (200, [0]), r.text


@pytest.mark.parametrize(("datatype", "where"), [("FP16", "inputs[0].data: FP16"), ("BF16", "inputs[0].datatype: BF16")])
def test_v2_half_precision_kserve_cannot_read_from_json_is_400(stack, gw, datatype, where):
    body = v2_input([1, 4], corpus.ROW, datatype=datatype)
    refused(stack, gw, V2_PATH, body, JSON, 400, where)
    assert direct(stack, V2_PATH, body, JSON).status_code == 400  # KServe's own, after reaching it
