"""The stack under test: recording upstreams (two iris replicas, wine, a catch-all, and
three that misbehave: one resets, one closes mid-body, one sends malformed responses)
behind a `modelgate` host running the real modelgate.wasm.

The catch-all route (last, every path, to its own recording upstream) stands for the route
KServe generates for an InferenceService (`^/.*$` to the predictor, REFERENCE.md section
2): whatever the filter lets through without naming a model reaches an upstream that
records it, so a pass-through can never hide behind the host's own 404."""

from __future__ import annotations

import json
from pathlib import Path

from . import certs, configs, rawhttp, tokens
from .gateway import Gateway
from .ports import PortPool
from .upstream import Behaviour, RecordedRequest, RecordingUpstream, ReplicaProcess

# The upstream behind the catch-all route: what the filter forwarded without a model.
CATCH_ALL = "catch-all"


class Stack:
    def __init__(
        self,
        workdir: Path,
        keys: tokens.KeySet,
        pool: PortPool,
        extra_filters: list[dict] | None = None,
        killable_iris_b: bool = False,
    ):
        """`killable_iris_b` runs the second iris replica as its own process (`replica`),
        which a test can SIGKILL; it records nothing, unlike the in-process upstreams."""
        self.workdir = workdir
        self.keys = keys
        models = [configs.IRIS, configs.WINE]
        self.upstreams = {
            "iris-a": RecordingUpstream(pool.take(), "iris-a", models),
            "wine": RecordingUpstream(pool.take(), "wine", models),
            "reset": RecordingUpstream(pool.take(), "reset", [configs.RESET_MODEL], Behaviour.RESET),
            "midbody": RecordingUpstream(pool.take(), "midbody", [configs.MIDBODY_MODEL], Behaviour.CLOSE_MID_BODY),
            "bad-response": RecordingUpstream(pool.take(), "bad-response", [configs.BAD_RESPONSE_MODEL], Behaviour.BAD_RESPONSE),
            # Answers like a predictor serving both models, as KServe's server would.
            CATCH_ALL: RecordingUpstream(pool.take(), CATCH_ALL, models),
        }
        self.replica: ReplicaProcess | None = None
        if killable_iris_b:
            self.replica = ReplicaProcess(pool.take(), "iris-b", models)
            iris_b_port = self.replica.port
        else:
            self.upstreams["iris-b"] = RecordingUpstream(pool.take(), "iris-b", models)
            iris_b_port = self.upstreams["iris-b"].port
        clusters = {
            "iris": [self.upstreams["iris-a"].port, iris_b_port],
            "wine": [self.upstreams["wine"].port],
            "reset": [self.upstreams["reset"].port],
            "midbody": [self.upstreams["midbody"].port],
            "bad-response": [self.upstreams["bad-response"].port],
            CATCH_ALL: [self.upstreams[CATCH_ALL].port],
        }
        model_clusters = {
            configs.IRIS: "iris",
            configs.WINE: "wine",
            configs.RESET_MODEL: "reset",
            configs.MIDBODY_MODEL: "midbody",
            configs.BAD_RESPONSE_MODEL: "bad-response",
        }
        self.filters = [*(extra_filters or []), configs.modelgate_filter(keys)]
        port, admin, self.tls_port = pool.take(), pool.take(), pool.take()
        config = configs.host_config(
            port, admin, clusters, self.filters, model_clusters, never_eject=frozenset({"reset", "midbody", "bad-response"})
        )
        # Short slow-client deadlines (defaults: 30 s head, 10 s TLS handshake, 5 min request)
        # so the slowloris cases finish in seconds; no honest case here comes near them.
        config["requestTimeout"] = "5s"
        for listener in config["listeners"]:
            listener["headerReadTimeout"] = "5s"
        config["routes"].append({"name": "kserve-catch-all", "match": {"prefix": "/"}, "cluster": CATCH_ALL})
        # A TLS listener beside the plain one, for the handshake cases.
        workdir.mkdir(parents=True, exist_ok=True)
        cert, key = certs.write_self_signed(workdir)
        config["listeners"].append(
            {"name": "tls", "address": f"127.0.0.1:{self.tls_port}", "tls": {"certFile": str(cert), "keyFile": str(key)},
             "headerReadTimeout": "5s", "tlsHandshakeTimeout": "5s"}
        )
        self.gateway = Gateway(workdir, config, port, admin)

    @property
    def port(self) -> int:
        return self.gateway.port

    def start(self) -> Stack:
        for upstream in self.upstreams.values():
            upstream.start()
        if self.replica:
            self.replica.start()
        try:
            self.gateway.start()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        self.gateway.stop()
        for upstream in self.upstreams.values():
            upstream.stop()
        if self.replica:
            self.replica.stop()

    # -- what the upstreams saw ------------------------------------------------------
    def seen(self) -> list[RecordedRequest]:
        """Every request any upstream has parsed the head of, complete or not."""
        return [r for u in self.upstreams.values() for r in u.requests]

    def reached(self) -> list[tuple[str, str, str, str | None]]:
        """What reached which upstream: (upstream, method, target, routing header) for
        every request an in-process upstream recorded, in no particular order across them."""
        return [
            (name, r.method, r.target, r.header(configs.ROUTING_HEADER))
            for name, u in self.upstreams.items()
            for r in u.requests
        ]

    def upstream_of(self, request: RecordedRequest) -> str:
        return next(name for name, u in self.upstreams.items() if any(r is request for r in u.requests))

    def clear(self) -> None:
        for upstream in self.upstreams.values():
            upstream.clear()

    def assert_upstream_saw_nothing(self, case: str) -> None:
        seen = self.seen()
        malformed = [m for u in self.upstreams.values() for m in u.malformed]
        assert not seen and not malformed, (
            f"{case}: a request the gateway should have stopped reached an upstream: "
            f"{[(r.method, r.target) for r in seen]} {malformed}"
        )

    # -- clients ---------------------------------------------------------------------
    def token(self, **claims: object) -> str:
        return self.keys.rs256(self.keys.claims(**claims))

    def predict_bytes(
        self,
        model: str = configs.IRIS,
        token: str | None = None,
        rows: int = 1,
        extra_headers: list[tuple[str, str]] | None = None,
        query: str = "",
    ) -> bytes:
        body = json.dumps({"instances": [[5.1, 3.5, 1.4, 0.2]] * rows}).encode()
        headers = [("Content-Type", "application/json")]
        if token is not None:
            headers.append(("Authorization", f"Bearer {token}"))
        headers.extend(extra_headers or [])
        return rawhttp.request_bytes("POST", f"/v1/models/{model}:predict{query}", headers, body)

    def predict(self, model: str = configs.IRIS, token: str | None = None, **kwargs: object) -> rawhttp.Response:
        response = rawhttp.exchange(self.port, self.predict_bytes(model, token or self.token(), **kwargs), method="POST")
        assert response is not None, "gateway closed the connection without answering a valid predict"
        return response
