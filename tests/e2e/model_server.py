"""A real KServe model server for the demo and the end-to-end tests.

It is KServe's own Python server (`kserve.ModelServer`, FastAPI + uvicorn) serving a
scikit-learn model trained at start-up from the datasets scikit-learn ships (iris, wine, and
for deploy/'s sklearn-mnist the digits made 28x28, digits.py), so nothing is downloaded.
KServe's `sklearnserver` is not on PyPI, so the model class here does what it does:
`get_predict_input` -> `predict` -> `get_predict_response`, which serves both the V1 and the
V2 (Open Inference) protocols.

Roles:
  predictor  serves `:predict` (V1) and `infer` (V2); `:explain` answers KServe's 501,
             as a real predictor without an explainer component does.
  explainer  serves the same model under the same name and also implements `explain`,
             the way KServe's explainer component answers `:explain` for an
             InferenceService. The explanation is linear SHAP: for the logistic
             regression trained here, each feature's contribution to the predicted
             class's logit relative to the training mean, coef[c][j] * (x[j] - mean[j]).
             For a linear model with independent features this is exact: the
             contributions add up to logit(x) - logit(mean). It is our own code, not
             alibi or another explainer library (none is installed here).

With `--grpc-port` it also serves KServe's gRPC inference service (KServe's own `GRPCServer`
and servicer, `inference.GRPCInferenceService`), bound to `--host` rather than KServe's `[::]`.

Two additions serve the tests, neither changes KServe's answers:
  - a Prometheus counter `model_server_requests_total{endpoint}` of every request that
    reached this process, gRPC calls included as `grpc_<Method>` (KServe's own histograms only
    count requests that got as far as `predict`, so they cannot prove a rejected request
    never arrived);
  - `GET /debug/requests`: the last requests received with their headers (as a dict, and
    as the list of pairs in arrival order, so a duplicate shows) and their body (the
    first 64 KiB, latin-1 decoded so any bytes survive JSON), so a test can assert exactly
    what the gateway forwarded to which replica. An endpoint rather than a log line because
    logs are noisy to parse and per-request logging costs throughput (see REFERENCE.md
    section 5).

Run: python model_server.py --model iris --name sklearn-iris --port 8081 [--role explainer]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time
import warnings
from concurrent import futures


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", choices=["iris", "wine", "mnist"], required=True)
    parser.add_argument("--name", required=True, help="model name on the URL path")
    parser.add_argument("--port", type=int, required=True, help="HTTP port")
    parser.add_argument("--grpc-port", type=int, default=0, help="gRPC port (0: no gRPC)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind")
    parser.add_argument("--role", choices=["predictor", "explainer"], default="predictor")
    parser.add_argument("--replica", default="", help="label shown in /debug/requests")
    parser.add_argument("--verbose", action="store_true", help="keep KServe's per-request logs")
    return parser.parse_args(argv)


# kserve.model_server parses sys.argv when it is imported, and argparse accepts abbreviations:
# our `--model iris` would become its `--model_name iris`. Parse ours first, then hide them
# from KServe before the import.
ARGS = parse_args(sys.argv[1:])
sys.argv = sys.argv[:1]

import grpc  # noqa: E402
import numpy as np  # noqa: E402
from sklearn import datasets  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import FunctionTransformer, StandardScaler  # noqa: E402

import kserve  # noqa: E402
from kserve import model_server as kserve_model_server  # noqa: E402
from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc  # noqa: E402
from kserve.protocol.grpc.interceptors import (  # noqa: E402
    ExceptionToStatusInterceptor,
    LoggingInterceptor,
)
from kserve.protocol.grpc.server import GRPCServer  # noqa: E402
from kserve.protocol.grpc.servicer import InferenceServicer  # noqa: E402
from kserve.protocol.rest.server import RESTServer  # noqa: E402
from kserve.utils.utils import get_predict_input, get_predict_response  # noqa: E402

import digits  # noqa: E402
from request_recorder import REQUESTS, RecentRequests, RequestRecorder  # noqa: E402

def train(dataset: str):
    """Trains a deterministic classifier on a dataset bundled with scikit-learn."""
    if dataset == "mnist":
        images, labels = digits.load()
        model = make_pipeline(FunctionTransformer(digits.digit_pixels), LogisticRegression(max_iter=1000))
        model.fit(digits.mnist_pixels(images), labels)
        return model, None
    data = datasets.load_iris() if dataset == "iris" else datasets.load_wine()
    if dataset == "iris":
        # Unscaled, so the coefficients explain the raw features the caller sends.
        model = LogisticRegression(max_iter=1000)
    else:
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    model.fit(data.data, data.target)
    return model, data


class SklearnModel(kserve.Model):
    """A scikit-learn classifier behind KServe's V1 and V2 protocols."""

    def __init__(self, name: str, dataset: str):
        super().__init__(name)
        self.dataset = dataset
        self.model = None
        self.data = None
        self.ready = False

    def load(self) -> bool:
        self.model, self.data = train(self.dataset)
        self.ready = True
        return self.ready

    def predict(self, payload, headers=None):
        instances = get_predict_input(payload)
        result = self.model.predict(instances)
        return get_predict_response(payload, result, self.name)

    def get_input_types(self):
        n = digits.SIDE * digits.SIDE if self.dataset == "mnist" else self.data.data.shape[1]
        return [{"name": "input-0", "datatype": "FP64", "shape": [-1, n]}]

    def get_output_types(self):
        return [{"name": "output-0", "datatype": "INT64", "shape": [-1]}]


class LinearShapExplainer(SklearnModel):
    """The iris model again, plus `explain`: linear SHAP values of the predicted class."""

    def explain(self, payload, headers=None):
        instances = np.asarray(get_predict_input(payload), dtype=float)
        mean = self.data.data.mean(axis=0)
        classes = self.model.predict(instances)
        explanations = []
        for row, cls in zip(instances, classes):
            coef = self.model.coef_[cls]
            contributions = coef * (row - mean)
            base = float(coef @ mean + self.model.intercept_[cls])
            explanations.append(
                {
                    "predicted_class": int(cls),
                    "class_name": str(self.data.target_names[cls]),
                    "method": "linear-shap",
                    "base_logit": round(base, 6),
                    "contributions": {
                        name: round(float(c), 6)
                        for name, c in zip(self.data.feature_names, contributions)
                    },
                }
            )
        return {"explanations": explanations}


class AdversarialExplainer(SklearnModel):
    """The mnist model again, plus `explain` in the shape of KServe's ART explainer: the
    smallest walk found along the sign of the gradient of (other class's logit - predicted
    class's logit) that changes the prediction, in steps of 0.05 up to 40 steps."""

    STEP, MAX_STEPS = 0.05, 40

    def explain(self, payload, headers=None):
        images = np.asarray(payload["instances"][0], dtype=float)
        rows = images.reshape(len(images), -1)
        prediction = int(self.model.predict(rows[:1])[0])
        # d(logit)/d(pixel) of the pipeline: the block mean spreads each weight over 9 pixels.
        coef = self.model[-1].coef_
        weights = digits.mnist_pixels(coef.reshape(-1, 8, 8) * 16.0) / digits.SCALE**2
        runner_up = int(np.argsort(self.model.decision_function(rows[:1])[0])[-2])
        direction = np.sign(weights[runner_up] - weights[prediction])
        adversarial = rows[0].copy()
        for _ in range(self.MAX_STEPS):
            if int(self.model.predict(adversarial[None])[0]) != prediction:
                break
            adversarial = adversarial + self.STEP * direction
        adv_prediction = int(self.model.predict(adversarial[None])[0])
        return {
            "explanations": {
                "adversarial_example": adversarial.reshape((1, *images.shape[1:])).tolist(),
                "L2 error": float(np.linalg.norm(adversarial - rows[0])),
                "adversarial_prediction": adv_prediction,
                "prediction": prediction,
            }
        }


class CountingInterceptor(grpc.aio.ServerInterceptor):
    """Counts every gRPC call that reached this process (`grpc_<Method>`) and records its
    metadata in the recent requests, before KServe's own interceptors and servicer run."""

    def __init__(self, recent: RecentRequests):
        self.recent = recent

    async def intercept_service(self, continuation, handler_call_details):
        method = handler_call_details.method
        kind = "grpc_" + method.rsplit("/", 1)[-1]
        REQUESTS.labels(endpoint=kind).inc()
        pairs = [(k, v if isinstance(v, str) else v.decode("latin-1"))
                 for k, v in handler_call_details.invocation_metadata or ()]  # fmt: skip
        self.recent.add(
            {
                "time": time.time(),
                "method": "POST",
                "path": method,
                "endpoint": kind,
                "headers": dict(pairs),
                "header_list": pairs,
                "body": "",
            }
        )
        return await continuation(handler_call_details)


class LoopbackGRPCServer(GRPCServer):
    """KServe's GRPCServer on a chosen address, with the counting interceptor first.

    KServe binds `[::]` and fixes its interceptors in `GRPCServer.start`; this repeats that
    method with the same servicer and interceptors.
    """

    def __init__(self, host: str, recent: RecentRequests, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.bind_host = host
        self.recent = recent

    async def start(self, max_workers):
        servicer = InferenceServicer(self._data_plane, self._model_repository_extension)
        self._server = grpc.aio.server(
            futures.ThreadPoolExecutor(max_workers=max_workers),
            interceptors=(
                CountingInterceptor(self.recent),
                LoggingInterceptor(),
                ExceptionToStatusInterceptor(),
            ),
        )
        grpc_predict_v2_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, self._server)
        self._server.add_insecure_port(f"{self.bind_host}:{self._port}")
        await self._server.start()
        await self._server.wait_for_termination()


class LoopbackModelServer(kserve.ModelServer):
    """KServe's ModelServer with its listeners on a chosen address.

    KServe hard-codes host 0.0.0.0 in RESTServer (and `[::]` for gRPC); this repeats
    ModelServer.start for the single-worker REST case and sets the uvicorn host before it
    binds, and starts KServe's gRPC server (LoopbackGRPCServer) when a gRPC port is given.
    """

    def __init__(self, host: str, recent: RecentRequests, grpc_port: int = 0, **kwargs):
        super().__init__(enable_grpc=False, **kwargs)
        self.bind_host = host
        self.recent = recent
        self.loopback_grpc_port = grpc_port

    def start(self, models) -> None:
        self._register_and_check_atleast_one_model_is_ready(models)
        self._rest_server = RESTServer(
            "kserve.model_server:app",
            self.dataplane,
            self.model_repository_extension,
            self.http_port,
            grace_period=self.grace_period,
            timeout_keep_alive=self.timeout_keep_alive,
        )
        self._rest_server.config.host = self.bind_host
        self.servers.append(self._rest_server.start())
        if self.loopback_grpc_port:
            self._grpc_server = LoopbackGRPCServer(
                self.bind_host,
                self.recent,
                self.loopback_grpc_port,
                self.dataplane,
                self.model_repository_extension,
                kwargs={},
                grace_period=self.grace_period,
            )
            self.servers.append(self._grpc_server.start(self.max_threads))
        self.setup_event_loop()
        self.register_signal_handler()
        asyncio.run(self._serve())


def quiet_loggers() -> None:
    """Drops the ~1 KB of logs KServe and FastAPI write per request (REFERENCE.md section 5):
    a deprecation warning repeated on every request, the access line and the timing lines."""
    warnings.filterwarnings("ignore", message=".* is deprecated")
    for name in ("uvicorn.access", "kserve.trace"):
        logging.getLogger(name).setLevel(logging.WARNING)


def main() -> None:
    replica = ARGS.replica or f"{ARGS.name}@{ARGS.port}"
    explainers = {"iris": LinearShapExplainer, "mnist": AdversarialExplainer}
    if ARGS.role == "explainer" and ARGS.model not in explainers:
        sys.exit("model_server: the explainer role is implemented for iris and mnist only")
    model_class = explainers[ARGS.model] if ARGS.role == "explainer" else SklearnModel
    model = model_class(ARGS.name, ARGS.model)
    model.load()

    recent = RecentRequests(replica)
    app = kserve_model_server.app
    app.add_middleware(RequestRecorder, recent=recent)

    @app.get("/debug/requests")
    def debug_requests():
        return recent.snapshot()

    server = LoopbackModelServer(
        ARGS.host,
        recent,
        grpc_port=ARGS.grpc_port,
        http_port=ARGS.port,
        enable_latency_logging=False,
    )
    # After the server's constructor: it (re)configures KServe's logging.
    if not ARGS.verbose:
        quiet_loggers()
    print(
        f"model_server: {replica} serving {ARGS.name} ({ARGS.model}, {ARGS.role}) "
        f"on http://{ARGS.host}:{ARGS.port}"
        + (f" and grpc://{ARGS.host}:{ARGS.grpc_port}" if ARGS.grpc_port else ""),
        flush=True,
    )
    server.start([model])


if __name__ == "__main__":
    main()
