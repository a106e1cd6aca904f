"""What every test model server adds to KServe's app, so a test can see what reached it.

Shared by model_server.py (the scikit-learn servers) and openai_server.py (the OpenAI ones):
  - a Prometheus counter `model_server_requests_total{endpoint}` of every request that
    reached this process (KServe's own histograms only count requests that got as far as
    the model, so they cannot prove a rejected request never arrived);
  - `GET /debug/requests` (registered by the server): the last requests received with their
    headers and body, and the status and body the app answered (a stream's bytes as sent),
    from `RecentRequests`; bodies are kept up to 64 KiB, latin-1 decoded so any bytes survive
    JSON.
Neither changes KServe's answers.
"""

from __future__ import annotations

import collections
import threading
import time

from prometheus_client import Counter

REQUESTS = Counter(
    "model_server_requests_total",
    "Requests that reached this model server, by endpoint kind",
    ["endpoint"],
)
RECENT_LIMIT = 256
# KServe's OpenAI routes under the prefixes the tests use (KSERVE_OPENAI_ROUTE_PREFIX), by
# the endpoint after `/v1/`.
OPENAI_PREFIXES = ("/openai", "")
OPENAI_ENDPOINTS = {
    "chat/completions": "chat",
    "completions": "completions",
    "embeddings": "embeddings",
    "models": "models",
}
RECORDED_BODY_LIMIT = 64 * 1024


def endpoint_kind(method: str, path: str) -> str | None:
    """Classifies a request path for the request counter; None for our own endpoints."""
    if path in ("/metrics", "/debug/requests"):
        return None
    if path.startswith("/v1/models/"):
        if path.endswith(":predict"):
            return "v1_predict"
        if path.endswith(":explain"):
            return "v1_explain"
        return "v1_model"
    if path == "/v1/models":
        return "v1_models"
    for prefix in OPENAI_PREFIXES:
        if path.startswith(prefix + "/v1/"):
            return "openai_" + OPENAI_ENDPOINTS.get(path[len(prefix) + 4 :], "other")
    if path.startswith("/v2/models/") and path.endswith("/infer"):
        return "v2_infer"
    if path.startswith("/v2"):
        return "v2_other"
    return f"other_{method.lower()}"


class RecentRequests:
    """The last requests this server received, with their headers (thread-safe)."""

    def __init__(self, replica: str):
        self.replica = replica
        self.items: collections.deque = collections.deque(maxlen=RECENT_LIMIT)
        self.lock = threading.Lock()

    def add(self, item: dict) -> None:
        with self.lock:
            self.items.append(item)

    def snapshot(self) -> dict:
        with self.lock:
            return {"replica": self.replica, "requests": list(self.items)}


class RequestRecorder:
    """ASGI middleware: counts every request and records it with its headers and body."""

    def __init__(self, app, recent: RecentRequests):
        self.app = app
        self.recent = recent

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            kind = endpoint_kind(scope["method"], scope["path"])
            if kind is not None:
                REQUESTS.labels(endpoint=kind).inc()
                pairs = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]]
                item = {
                    "time": time.time(),
                    "method": scope["method"],
                    "path": scope["path"],
                    "endpoint": kind,
                    "headers": dict(pairs),
                    "header_list": pairs,
                    "body": "",
                    "response_status": None,
                    "response_body": "",
                }
                self.recent.add(item)
                receive = self._recording(receive, item)
                send = self._sending(send, item)
        await self.app(scope, receive, send)

    @staticmethod
    def _sending(send, item: dict):
        """Wraps `send` so the response's status and body bytes, as they leave the app (a
        stream's chunks in order), are kept in `item`."""

        async def wrapped(message):
            if message["type"] == "http.response.start":
                item["response_status"] = message["status"]
            elif message["type"] == "http.response.body":
                room = RECORDED_BODY_LIMIT - len(item["response_body"])
                if room > 0:
                    item["response_body"] += message.get("body", b"")[:room].decode("latin-1")
            await send(message)

        return wrapped

    @staticmethod
    def _recording(receive, item: dict):
        """Wraps `receive` so the body chunks the app reads are appended to `item`."""

        async def wrapped():
            message = await receive()
            if message["type"] == "http.request" and len(item["body"]) < RECORDED_BODY_LIMIT:
                room = RECORDED_BODY_LIMIT - len(item["body"])
                item["body"] += message.get("body", b"")[:room].decode("latin-1")
            return message

        return wrapped
