"""KServe's own request decoding, offline: what model input a request becomes.

Reads JSON lines on stdin, one request each: {"protocol": "v1"|"v2", "body": base64,
"headers": [[name, value], ...]} (the headers as the model server received them), and
writes one JSON line per request:

  {"outcome": "input", "kind": "ndarray", "shape": [...], "dtype": "float64"}
  {"outcome": "input", "kind": "dataframe", "shape": [...], "numeric": true}
  {"outcome": "input", "kind": "list"|..., ...}
  {"outcome": "refused", "status": 400|422, "error": "..."}   KServe's own 4xx
  {"outcome": "crash", "error": "..."}                         what the server answers with 500

It runs the functions the installed KServe (0.21) runs for a request, in their order:
V1 (`kserve/protocol/rest/v1_endpoints.py` `V1Endpoints.predict`): the headers as
`dict(request.headers.items())`, `DataPlane.decode` (CloudEvents, content type, orjson),
then `kserve.utils.utils.get_predict_input` as the sklearn model here does (`Model.validate`
checks nothing without a predictor config, as in model_server.py).
V2 (`v2_endpoints.py` `V2Endpoints.infer`): FastAPI's body parsing for
`Union[InferenceRequest, bytes]` (`fastapi/routing.py`: JSON only for `application/json` or
`application/*+json`, then pydantic), `DataPlane.decode` with `REST_V2`, `get_predict_input`.
A separate process because importing kserve parses `sys.argv` and sets up its logging.
"""

from __future__ import annotations

import base64
import email.message
import json
import sys

sys.argv = sys.argv[:1]

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pydantic  # noqa: E402

from kserve.errors import InvalidInput  # noqa: E402
from kserve.model_repository import ModelRepository  # noqa: E402
from kserve.protocol.dataplane import DataPlane  # noqa: E402
from kserve.protocol.rest.v2_datamodels import InferenceRequest  # noqa: E402
from kserve.utils.utils import get_predict_input  # noqa: E402

DATAPLANE = DataPlane(model_registry=ModelRepository())


def describe(model_input) -> dict:
    if isinstance(model_input, np.ndarray):
        return {"outcome": "input", "kind": "ndarray", "shape": list(model_input.shape), "dtype": model_input.dtype.str}
    if isinstance(model_input, pd.DataFrame):
        numeric = all(pd.api.types.is_numeric_dtype(t) and not pd.api.types.is_bool_dtype(t) for t in model_input.dtypes)
        return {"outcome": "input", "kind": "dataframe", "shape": list(model_input.shape), "numeric": numeric}
    return {"outcome": "input", "kind": type(model_input).__name__}


def fastapi_body(body: bytes, headers: list[list[str]]):
    """What FastAPI hands `V2Endpoints.infer` as `request_body` (strict content type)."""
    if not body:
        return body
    content_type = next((v for k, v in headers if k.lower() == "content-type"), None)
    if content_type:
        message = email.message.Message()
        message["content-type"] = content_type
        subtype = message.get_content_subtype()
        if message.get_content_maintype() == "application" and (subtype == "json" or subtype.endswith("+json")):
            try:
                parsed = json.loads(body)
            except json.JSONDecodeError as e:
                raise Refused(422, f"JSON decode error: {e}") from e
            try:
                return InferenceRequest.model_validate(parsed)
            except pydantic.ValidationError as e:
                raise Refused(422, str(e).splitlines()[0]) from e
    return body


class Refused(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def decode(request: dict) -> dict:
    body = base64.b64decode(request["body"])
    pairs = request["headers"]
    headers = dict((k.lower(), v) for k, v in pairs)  # starlette lower-cases; the last copy wins
    try:
        if request["protocol"] == "v1":
            payload, _ = DATAPLANE.decode(body=body, headers=headers)
        else:
            request_body = fastapi_body(body, pairs)
            payload, _ = DATAPLANE.decode(request_body, headers, protocol_version="v2", model_name="m")
        return describe(get_predict_input(payload))
    except Refused as e:
        return {"outcome": "refused", "status": e.status, "error": str(e)}
    except InvalidInput as e:
        return {"outcome": "refused", "status": 400, "error": str(e)}
    except Exception as e:  # noqa: BLE001 - the server's generic handler: a 500
        return {"outcome": "crash", "error": f"{type(e).__name__}: {e}"}


def main() -> None:
    for line in sys.stdin:
        if line.strip():
            print(json.dumps(decode(json.loads(line))), flush=True)


if __name__ == "__main__":
    main()
