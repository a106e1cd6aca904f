"""Malformed KServe request bodies, each with the reason a gateway must refuse it.

KServe itself checks little (REFERENCE.md section 2): most of these reach the model and come
back as 500s after burning model-server time, or as pydantic 422s for V2. The gateway answers
400 for every one of them, before the model server sees anything.
Bodies are bytes, sent with `Content-Type: application/json`, to sklearn-iris (4 features,
at most 100 instances in the demo config).
"""

from __future__ import annotations

import json

ROW = [5.1, 3.5, 1.4, 0.2]


def j(value) -> bytes:
    return json.dumps(value).encode()


def v2(*inputs, **top) -> bytes:
    return j({"inputs": list(inputs), **top})


def tensor(**fields) -> dict:
    base = {"name": "input-0", "shape": [1, 4], "datatype": "FP64", "data": ROW}
    base.update(fields)
    return {k: v for k, v in base.items() if v is not None}


V1_MALFORMED: dict[str, bytes] = {
    "empty body": b"",
    "truncated JSON": b'{"instances": [[5.1, 3.5, 1.4, 0.2]]',
    "not JSON at all": b"instances=5.1,3.5,1.4,0.2",
    "invalid UTF-8": b'{"instances": [[5.1, 3.5, 1.4, "\xff"]]}',
    "NaN literal": b'{"instances": [[NaN, 3.5, 1.4, 0.2]]}',
    "top-level array": j([ROW]),
    "top-level string": j("instances"),
    "top-level number": b"42",
    "top-level null": b"null",
    "empty object": j({}),
    "misspelt key": j({"Instances": [ROW]}),
    "instances null": j({"instances": None}),
    "instances a string": j({"instances": "5.1,3.5,1.4,0.2"}),
    "instances an object": j({"instances": {"row": ROW}}),
    "instances empty": j({"instances": []}),
    "inputs empty": j({"inputs": []}),
    "both instances and inputs": j({"instances": [ROW], "inputs": [ROW]}),
    "too few features": j({"instances": [[5.1, 3.5, 1.4]]}),
    "too many features": j({"instances": [ROW + [9.9]]}),
    "empty row": j({"instances": [[]]}),
    "ragged rows": j({"instances": [ROW, [5.1, 3.5, 1.4]]}),
    "scalar rows": j({"instances": ROW}),
    "row of strings": j({"instances": [["5.1", "3.5", "1.4", "0.2"]]}),
    "null feature": j({"instances": [[5.1, None, 1.4, 0.2]]}),
    "boolean feature": j({"instances": [[5.1, True, 1.4, 0.2]]}),
    "object feature": j({"instances": [[5.1, {"v": 3.5}, 1.4, 0.2]]}),
    "nested too deep": j({"instances": [[[5.1], [3.5], [1.4], [0.2]]]}),
    "deeply nested": b'{"instances": ' + b"[" * 5000 + b"]" * 5000 + b"}",
    "number out of range": b'{"instances": [[1e999, 3.5, 1.4, 0.2]]}',
    "too many instances": j({"instances": [ROW] * 101}),
    # orjson, KServe's V1 parser, refuses the whole body (KServe's 400, after reaching it).
    "lone surrogate in an extra field": b'{"instances": [[5.1, 3.5, 1.4, 0.2]], "note": "\\ud800"}',
}

V2_MALFORMED: dict[str, bytes] = {
    "not JSON": b"{inputs:",
    "empty object": j({}),
    "inputs empty": v2(),
    "inputs a string": j({"inputs": "input-0"}),
    "inputs not objects": j({"inputs": [ROW]}),
    "input without name": v2(tensor(name=None)),
    "input without datatype": v2(tensor(datatype=None)),
    "input without shape": v2(tensor(shape=None)),
    "input without data": v2(tensor(data=None)),
    "unknown datatype": v2(tensor(datatype="FLOAT64")),
    "lower-case datatype": v2(tensor(datatype="fp64")),
    "negative shape": v2(tensor(shape=[-1, 4])),
    "fractional shape": v2(tensor(shape=[1.5, 4])),
    "shape a string": v2(tensor(shape="1,4")),
    "fewer elements than the shape": v2(tensor(data=[5.1, 3.5, 1.4])),
    "more elements than the shape": v2(tensor(data=ROW + [9.9])),
    "nested data not matching the shape": v2(tensor(shape=[2, 4], data=[ROW, [5.1, 3.5]])),
    "strings in FP64": v2(tensor(data=["5.1", "3.5", "1.4", "0.2"])),
    "fraction in INT32": v2(tensor(datatype="INT32", data=[5, 3, 1.5, 0])),
    "300 in UINT8": v2(tensor(datatype="UINT8", data=[5, 3, 300, 0])),
    "negative in UINT16": v2(tensor(datatype="UINT16", data=[5, 3, -1, 0])),
    "number in BOOL": v2(tensor(datatype="BOOL", data=[1, 0, 1, 0])),
    "null in FP32": v2(tensor(datatype="FP32", data=[5.1, None, 1.4, 0.2])),
    # Python's json lets it through; KServe's answer then cannot encode the id (500).
    "lone surrogate in the id": b'{"id": "\\ud800", "inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "FP64", "data": [5.1, 3.5, 1.4, 0.2]}]}',
}

# Bodies that are unusual but valid: the gateway must pass them and KServe's answer comes back.
V1_VALID_EDGES: dict[str, bytes] = {
    "whitespace and newlines": b'{\n  "instances" : [ [ 5.1 , 3.5 , 1.4 , 0.2 ] ]\n}\n',
    "exponents and integers": j({"instances": [[51e-1, 3, 1.4e0, 0]]}),
    "exactly max instances": j({"instances": [ROW] * 100}),
    "unicode escapes in an extra field": b'{"instances": [[5.1, 3.5, 1.4, 0.2]], "note": "\\u00e9t\\u00e9"}',
}

V2_VALID_EDGES: dict[str, bytes] = {
    "flat data": v2(tensor(), id="edge-flat"),
    "nested data": v2(tensor(shape=[2, 4], data=[ROW, [6.8, 2.8, 4.8, 1.4]]), id="edge-nested"),
    "FP32": v2(tensor(datatype="FP32"), id="edge-fp32"),
}


def grpc_frame(message: bytes, flags: int = 0, length: int | None = None) -> bytes:
    """One gRPC length-prefixed message (flags, big-endian length, bytes)."""
    size = len(message) if length is None else length
    return bytes([flags]) + size.to_bytes(4, "big") + message


# `ModelInferRequest` bytes by hand: field 1 (`model_name`) is key 0x0a.
GRPC_INFER_IRIS = b"\x0a\x0csklearn-iris\x12\x011"

# Bodies of a gRPC `ModelInfer` call the filter cannot read as KServe's server would (policies
# `grpc.rs`); each is refused with 400 (grpc-status 13 INTERNAL) before the server.
GRPC_MALFORMED: dict[str, bytes] = {
    "empty body": b"",
    "prefix only": b"\x00\x00\x00",
    "compressed flag": grpc_frame(GRPC_INFER_IRIS, flags=1),
    "unknown flags": grpc_frame(GRPC_INFER_IRIS, flags=0x80),
    "length past the end": grpc_frame(GRPC_INFER_IRIS, length=len(GRPC_INFER_IRIS) + 1),
    "length of 4 GiB - 1": grpc_frame(b"", length=0xFFFFFFFF),
    "two messages": grpc_frame(GRPC_INFER_IRIS) * 2,
    "trailing byte": grpc_frame(GRPC_INFER_IRIS) + b"\x00",
    "name not UTF-8": grpc_frame(b"\x0a\x02\xff\xfe"),
    "field runs past the end": grpc_frame(b"\x0a\x05ab"),
    "field number 0": grpc_frame(GRPC_INFER_IRIS + b"\x00"),
    "truncated key": grpc_frame(b"\x80"),
    "eleven-byte varint": grpc_frame(b"\x08" + b"\xff" * 10 + b"\x01" + GRPC_INFER_IRIS),
    "group": grpc_frame(b"\x0b\x0c" + GRPC_INFER_IRIS),
    "empty model name": grpc_frame(b"\x0a\x00"),
    "no model name": grpc_frame(b"\x12\x011"),
    "model name with a slash": grpc_frame(b"\x0a\x03a/b"),
}
