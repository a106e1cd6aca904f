"""Differential test: the filter and KServe's own decoding agree on every body we have.

For every body of the project's corpora (tests/e2e/corpus.py, fuzz/seeds/, the shape cases of
tests/reliability/test_body_shapes.py, the classes of issue 12; V1 ones also wrapped as a
structured CloudEvent), sent with each of the header sets
that change how KServe reads a body (content types, a repeated content type, binary-mode
CloudEvent headers), through the real gateway in front of the real KServe servers:

- the filter refuses it (a 4xx JSON error, and the request id never reaches a model server), or
- it is forwarded, and then KServe's own decoding functions, run offline on the body and the
  header lines the model server actually received (its /debug/requests record; kserve_decode.py:
  `DataPlane.decode`,
  `get_predict_input`), give a model input that fits the model the gateway validated it for
  (sklearn-iris: a numeric [N, 4] array with 1 <= N <= 100), and the live answer is 200.

The same runs through a second gateway configured with `validation.cloudEvents: unwrap`, where
CloudEvents are forwarded when their `data` is valid.
"""

from __future__ import annotations

import base64
import dataclasses
import itertools
import json
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import requests

import corpus
import demo_config
import keys
import stack as stack_mod
from helpers import post_raw

IRIS = demo_config.IRIS
HERE = Path(__file__).resolve().parent
SEEDS = HERE.parent.parent / "fuzz" / "seeds"
IRIS_SERVERS = ["iris-1", "iris-2"]
CE_ATTRIBUTES = {"specversion": "1.0", "type": "t", "source": "s", "id": "1", "time": "2020-01-01T00:00:00Z"}
BINARY_CE = [("ce-specversion", "1.0"), ("ce-source", "s"), ("ce-type", "t"), ("ce-id", "1")]
JSON_TYPE = [("Content-Type", "application/json")]

V1_HEADERS: dict[str, list[tuple[str, str]]] = {
    "json": JSON_TYPE,
    "no content-type": [],
    "charset": [("Content-Type", "application/json; charset=utf-8")],
    "upper-case type": [("Content-Type", "Application/JSON")],
    "text/plain": [("Content-Type", "text/plain")],
    "cloudevents+json": [("Content-Type", "application/cloudevents+json")],
    "octet-stream": [("Content-Type", "application/octet-stream")],
    "repeated content-type": [("Content-Type", "application/json"), ("Content-Type", "text/plain")],
    "binary cloudevent": JSON_TYPE + BINARY_CE + [("ce-contenttype", "application/json")],
    "binary cloudevent without ce-contenttype": JSON_TYPE + BINARY_CE,
    "three ce headers": JSON_TYPE + BINARY_CE[:3],
}
V2_HEADERS: dict[str, list[tuple[str, str]]] = {
    "json": JSON_TYPE,
    "no content-type": [],
    "charset": [("Content-Type", "application/json; charset=utf-8")],
    "text/plain": [("Content-Type", "text/plain")],
    "octet-stream": [("Content-Type", "application/octet-stream")],
    "cloudevents+json": [("Content-Type", "application/cloudevents+json")],
}


def seeds(target: str) -> dict[str, bytes]:
    return {f"seed {p.name}": p.read_bytes() for p in sorted((SEEDS / target).iterdir())}


def reliability_bodies() -> tuple[dict[str, bytes], dict[str, bytes]]:
    """The V1 and V2 bodies of the reliability suite's shape cases (its model is iris too)."""
    sys.path.insert(0, str(HERE.parent))
    from reliability import test_body_shapes as shapes

    v1, v2 = {}, {}
    cases = [(name, path, body) for name, (path, body, _) in shapes.WRONG_SHAPES.items()]
    cases += [(name, path, body) for name, (path, body) in shapes.RIGHT_SHAPES.items()]
    for name, path, body in cases:
        (v1 if path == shapes.V1 else v2)[f"reliability {name}"] = corpus.j(body)
    return v1, v2


RELIABILITY_V1, RELIABILITY_V2 = reliability_bodies()


def v2_input(shape, data, datatype="FP64") -> bytes:
    return corpus.v2(corpus.tensor(shape=shape, data=data, datatype=datatype))


ISSUE_12_V2 = {
    "zero-size tensor": v2_input([0, 4], []),
    "rank 65": v2_input([1] * 64 + [4], corpus.ROW),
    "three features": v2_input([1, 3], corpus.ROW[:3]),
    "rank 1": v2_input([4], corpus.ROW),
    "rank 3": v2_input([1, 1, 4], corpus.ROW),
    "BYTES on a numeric model": v2_input([1, 4], ["a", "b", "c", "d"], datatype="BYTES"),
    "BOOL on a numeric model": v2_input([1, 4], [True, False, True, True], datatype="BOOL"),
    "INT64": v2_input([1, 4], [5, 3, 1, 0], datatype="INT64"),
    "101 instances": v2_input([101, 4], corpus.ROW * 101),
    "two inputs": corpus.v2(corpus.tensor(), corpus.tensor(name="x", shape=[1], data=[1.0])),
    "NaN": b'{"inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "FP64", "data": [NaN, 1, 2, 3]}]}',
    "FP16 as JSON": v2_input([1, 4], corpus.ROW, datatype="FP16"),
    "BF16": v2_input([1, 4], corpus.ROW, datatype="BF16"),
    "DataFrame of one [1, 4] input": corpus.v2(corpus.tensor(), parameters={"content_type": "pd"}),
    "DataFrame of four columns": corpus.v2(
        *(corpus.tensor(name=n, shape=[2], data=[1.0, 2.0]) for n in "abcd"), parameters={"content_type": "pd"}
    ),
}


def cloudevents(bodies: dict[str, bytes]) -> dict[str, bytes]:
    """Each JSON body as a structured CloudEvent's `data`, alone and behind valid outer rows."""
    out = {}
    for name, body in bodies.items():
        try:
            data = json.loads(body)
        except ValueError:
            continue
        out[f"event around {name}"] = corpus.j({**CE_ATTRIBUTES, "data": data})
        out[f"event around {name}, valid outer rows"] = corpus.j({**CE_ATTRIBUTES, "data": data, "instances": [corpus.ROW]})
    out["event with data as a JSON string"] = corpus.j({**CE_ATTRIBUTES, "data": json.dumps({"instances": [corpus.ROW]})})
    out["event without time"] = corpus.j({**{k: v for k, v in CE_ATTRIBUTES.items() if k != "time"}, "data": {"instances": [[1, 2, 3]]}, "instances": [corpus.ROW]})
    return out


V1_PLAIN = {**corpus.V1_MALFORMED, **corpus.V1_VALID_EDGES, **seeds("v1_body"), **RELIABILITY_V1}
V1_EVENTS = cloudevents({**corpus.V1_VALID_EDGES, "too few features": corpus.V1_MALFORMED["too few features"], "too many instances": corpus.V1_MALFORMED["too many instances"], "instances empty": corpus.V1_MALFORMED["instances empty"]})
V2_BODIES = {**corpus.V2_MALFORMED, **corpus.V2_VALID_EDGES, **seeds("v2_body"), **RELIABILITY_V2, **ISSUE_12_V2}


@dataclasses.dataclass
class Case:
    protocol: str
    body_name: str
    headers_name: str
    body: bytes
    headers: list[tuple[str, str]]
    request_id: str = ""
    status: int = 0
    answer: bytes = b""
    received: list | None = None  # the header pairs the model server got, when forwarded
    received_body: bytes | None = None

    @property
    def label(self) -> str:
        return f"{self.protocol} {self.body_name!r} with {self.headers_name}"


def cases() -> list[Case]:
    out = [Case("v1", b, h, body, hs) for (b, body), (h, hs) in itertools.product({**V1_PLAIN, **V1_EVENTS}.items(), V1_HEADERS.items())]
    out += [Case("v2", b, h, body, hs) for (b, body), (h, hs) in itertools.product(V2_BODIES.items(), V2_HEADERS.items())]
    return out


def recent_by_id(stack) -> dict[str, dict]:
    """The requests the iris servers recorded (headers in arrival order, body), by request id."""
    seen = {}
    for server in IRIS_SERVERS:
        r = requests.get(f"{stack.model_server_url(server)}/debug/requests", timeout=5)
        r.raise_for_status()
        for item in r.json()["requests"]:
            rid = item["headers"].get("x-request-id")
            if rid:
                seen[rid] = item
    return seen


def run_through(stack, gateway: str, all_cases: list[Case]) -> None:
    """Send every case; note its answer and, when forwarded, the headers KServe received."""
    subjects = itertools.count()
    # Batches smaller than the model servers' record of recent requests (256 each).
    for start in range(0, len(all_cases), 80):
        batch = all_cases[start : start + 80]
        token = stack.token("RS256", sub=f"differential-{uuid.uuid4().hex[:8]}-{next(subjects)}", scope=demo_config.IRIS_SCOPE)
        for case in batch:
            case.request_id = f"diff-{uuid.uuid4().hex}"
            path = f"/v1/models/{IRIS}:predict" if case.protocol == "v1" else f"/v2/models/{IRIS}/infer"
            headers = [*case.headers, ("Authorization", f"Bearer {token}"), ("x-request-id", case.request_id)]
            case.status, case.answer = post_raw(gateway, path, case.body, headers)
        seen = recent_by_id(stack)
        for case in batch:
            item = seen.get(case.request_id)
            if item is not None:
                case.received = item["header_list"]
                case.received_body = item["body"].encode("latin-1")


def kserve_decode(forwarded: list[Case]) -> list[dict]:
    lines = "".join(
        json.dumps(
            {
                "protocol": c.protocol,
                "body": base64.b64encode(c.received_body or b"").decode(),
                "headers": c.received,
            }
        )
        + "\n"
        for c in forwarded
    )
    out = subprocess.run(
        [sys.executable, str(HERE / "kserve_decode.py")], input=lines, capture_output=True, text=True, timeout=120, check=False
    )
    assert out.returncode == 0, out.stderr[-2000:]
    results = [json.loads(line) for line in out.stdout.splitlines()]
    assert len(results) == len(forwarded), out.stderr[-2000:]
    return results


def fits_the_model(result: dict) -> bool:
    """sklearn-iris as the gateway validates for it: numbers, [N, 4], 1 <= N <= 100 (an array,
    or a DataFrame of 4 numeric columns for a V2 `content_type: "pd"` request)."""
    if result.get("outcome") != "input" or result.get("kind") not in ("ndarray", "dataframe"):
        return False
    shape = result["shape"]
    if len(shape) != 2 or shape[1] != demo_config.IRIS_FEATURES or not 1 <= shape[0] <= demo_config.MAX_INSTANCES:
        return False
    return result["numeric"] if result["kind"] == "dataframe" else result["dtype"][1] in "iuf"


def disagreements(all_cases: list[Case]) -> list[str]:
    problems = []
    forwarded = [c for c in all_cases if c.received is not None]
    for case in all_cases:
        if case.received is None:
            try:
                error = json.loads(case.answer)["error"]
            except (ValueError, KeyError, TypeError):
                error = None
            if case.status not in (400, 413, 415) or not isinstance(error, str):
                problems.append(f"{case.label}: neither forwarded nor refused with a JSON 4xx: {case.status} {case.answer[:200]!r}")
    for case in forwarded:
        if case.received_body != case.body:
            problems.append(f"{case.label}: the model server received other bytes than were sent")
    for case, result in zip(forwarded, kserve_decode(forwarded)):
        if not fits_the_model(result):
            problems.append(f"{case.label}: forwarded, but KServe decodes it to {result}")
        elif case.status != 200:
            problems.append(f"{case.label}: forwarded, KServe decodes {result}, yet answered {case.status} {case.answer[:200]!r}")
    return problems


def test_filter_and_kserve_decoding_agree_on_the_whole_corpus(stack):
    all_cases = cases()
    run_through(stack, stack.gateway, all_cases)
    problems = disagreements(all_cases)
    assert not problems, f"{len(problems)} of {len(all_cases)} cases disagree:\n" + "\n".join(problems[:40])

    # Not vacuous: the valid bodies went through, in every framing KServe reads as JSON.
    passed = {(c.protocol, c.body_name, c.headers_name) for c in all_cases if c.received is not None}
    for name in corpus.V1_VALID_EDGES:
        for headers in ("json", "no content-type", "charset", "upper-case type", "cloudevents+json", "octet-stream", "repeated content-type", "three ce headers"):
            assert ("v1", name, headers) in passed, (name, headers)
    for name in [n for n in RELIABILITY_V1 if "v1-one-row" in n or "v1-three-rows" in n]:
        assert ("v1", name, "json") in passed, name
    for name in [*corpus.V2_VALID_EDGES, "INT64", "reliability v2-flat", "reliability v2-nested", "DataFrame of four columns"]:
        for headers in ("json", "charset", "cloudevents+json"):
            assert ("v2", name, headers) in passed, (name, headers)
    # And under the default `cloudEvents: reject`, no structured CloudEvent did.
    assert not [c.label for c in all_cases if c.received is not None and c.body_name.startswith("event around")]


@pytest.fixture(scope="module")
def unwrapping_gateway(stack, tmp_path_factory):
    """A second gateway before the same KServe servers, with `validation.cloudEvents: unwrap`."""
    run_dir = tmp_path_factory.mktemp("unwrap")
    spare = stack_mod.free_ports()
    ports = dataclasses.replace(stack.ports, gateway=spare.gateway, https=spare.https, admin=spare.admin)
    config = demo_config.filter_config(stack.keyset)
    config["validation"]["cloudEvents"] = "unwrap"
    filter_path = run_dir / "filter-config.json"
    filter_path.write_text(json.dumps(config))
    cert, key = keys.self_signed_cert(str(run_dir / "tls"))
    host_path = run_dir / "modelgate.yaml"
    import yaml

    host_path.write_text(yaml.safe_dump(demo_config.host_config(ports, str(stack_mod.WASM), str(filter_path), cert, key)))
    proc = stack_mod.Process("modelgate-unwrap", [str(stack_mod.HOST_BINARY), "serve", "--config", str(host_path)], run_dir / "modelgate.log")
    with stack_mod.serving(proc, f"http://127.0.0.1:{ports.admin}/ready"):
        yield f"http://127.0.0.1:{ports.gateway}"


def test_with_cloudevents_unwrapped_the_filter_validates_what_kserve_feeds_the_model(stack, unwrapping_gateway):
    event_cases = [c for c in cases() if c.protocol == "v1" and c.body_name.startswith("event")]
    run_through(stack, unwrapping_gateway, event_cases)
    problems = disagreements(event_cases)
    assert not problems, f"{len(problems)} of {len(event_cases)} cases disagree:\n" + "\n".join(problems[:40])
    passed = {(c.body_name, c.headers_name) for c in event_cases if c.received is not None}
    for name in corpus.V1_VALID_EDGES:
        assert (f"event around {name}", "json") in passed
        assert (f"event around {name}, valid outer rows", "cloudevents+json") in passed
    for name in ("too few features", "too many instances", "instances empty"):
        assert (f"event around {name}, valid outer rows", "json") not in passed, name
