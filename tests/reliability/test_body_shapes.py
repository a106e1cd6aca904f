"""Bodies of the wrong shape through the host: each is refused with the filter's 400 naming
the place, and no upstream sees it; bodies of the right shape reach iris byte for byte.

The e2e corpus (tests/e2e/corpus.py) runs these kinds of bodies against real KServe, where a
body the filter wrongly passes shows up only when the model happens to fail on it. Here the
recording upstreams answer anything, so the only thing that can catch a pass-through is what
they recorded, and that is asserted for every case. The rank cases are those a validator
comparing rows on their first dimension only would let through: a 4-feature model gets
4 lists of 1, or 4 lists of 2, instead of 4 numbers.
"""

from __future__ import annotations

import json

import pytest

from reliability.harness import configs
from reliability.harness.rawhttp import Response, exchange, request_bytes
from reliability.harness.stack import Stack

IRIS = configs.IRIS
ROW = [5.1, 3.5, 1.4, 0.2]
V1 = f"/v1/models/{IRIS}:predict"
V2 = f"/v2/models/{IRIS}/infer"


def tensor(shape: list[int], data: list, datatype: str = "FP64") -> dict:
    return {"name": "input-0", "shape": shape, "datatype": datatype, "data": data}


# name: (path, body, the place the error must name)
WRONG_SHAPES: dict[str, tuple[str, object, str]] = {
    "v1-features-as-lists-of-one": (V1, {"instances": [[[5.1], [3.5], [1.4], [0.2]]]}, "instances[0]"),
    "v1-features-as-lists-of-two": (V1, {"instances": [[[5.1, 3.5], [1.4, 0.2], [1.0, 2.0], [3.0, 4.0]]]}, "instances[0]"),
    "v1-second-row-deeper": (V1, {"instances": [ROW, [[5.1], [3.5], [1.4], [0.2]]]}, "instances[1]"),
    "v1-row-wrapped-once-more": (V1, {"instances": [[ROW]]}, "instances[0]"),
    "v1-columnar-inputs-as-lists-of-one": (V1, {"inputs": [[[5.1], [3.5], [1.4], [0.2]]]}, "inputs[0]"),
    "v1-ragged-inside-a-row": (V1, {"instances": [[[5.1, 3.5], [1.4], [1.0, 2.0], [3.0, 4.0]]]}, "instances[0][1]"),
    "v2-nested-data-of-another-shape": (V2, {"inputs": [tensor([1, 4], [[5.1, 3.5], [1.4, 0.2]])]}, "inputs[0].data"),
    "v2-fewer-elements-than-the-shape": (V2, {"inputs": [tensor([2, 4], ROW)]}, "inputs[0].data"),
    "v2-deeper-nesting-than-the-shape": (V2, {"inputs": [tensor([1, 4], [[[5.1], [3.5], [1.4], [0.2]]])]}, "inputs[0].data"),
}

RIGHT_SHAPES: dict[str, tuple[str, object]] = {
    "v1-one-row": (V1, {"instances": [ROW]}),
    "v1-three-rows": (V1, {"instances": [ROW, ROW, ROW]}),
    "v1-columnar-inputs": (V1, {"inputs": [ROW, ROW]}),
    "v2-flat": (V2, {"inputs": [tensor([2, 4], ROW + ROW)]}),
    "v2-nested": (V2, {"inputs": [tensor([2, 4], [ROW, ROW])]}),
}


def post(stack: Stack, path: str, body: bytes) -> Response:
    headers = [("Content-Type", "application/json"), ("Authorization", f"Bearer {stack.token()}")]
    response = exchange(stack.port, request_bytes("POST", path, headers, body), "POST")
    assert response is not None, "closed without an answer"
    return response


@pytest.mark.parametrize("name", WRONG_SHAPES.keys())
def test_wrong_shape_is_400_naming_the_place_and_never_reaches_an_upstream(stack: Stack, name: str) -> None:
    path, doc, place = WRONG_SHAPES[name]
    response = post(stack, path, json.dumps(doc).encode())
    assert response.status == 400, f"{name}: {response.status} {response.body[:200]!r}"
    error = json.loads(response.body)["error"]
    assert error.startswith(f"{place}:"), f"{name}: {error!r}"
    stack.assert_upstream_saw_nothing(name)


@pytest.mark.parametrize("name", RIGHT_SHAPES.keys())
def test_right_shape_reaches_iris_byte_for_byte(stack: Stack, name: str) -> None:
    path, doc = RIGHT_SHAPES[name]
    body = json.dumps(doc).encode()
    response = post(stack, path, body)
    assert response.status == 200, f"{name}: {response.status} {response.body[:200]!r}"
    (request,) = stack.seen()
    assert stack.upstream_of(request) in ("iris-a", "iris-b")
    assert (request.target, request.header(configs.ROUTING_HEADER), request.body) == (path, IRIS, body)
