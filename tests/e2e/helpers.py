"""Reading counters: the model servers' own request counters and the gateway's /metrics."""

from __future__ import annotations

import http.client
import os
import re
import ssl
import urllib.parse

import requests

from stack import Stack

SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([^}]*)\})?\s+(\S+)")
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_prometheus(text: str) -> list[tuple[str, dict[str, str], float]]:
    """(name, labels, value) for every sample line of a Prometheus text exposition."""
    samples = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = SAMPLE.match(line)
        if m:
            labels = dict(LABEL.findall(m.group(3) or ""))
            samples.append((m.group(1), labels, float(m.group(4))))
    return samples


def model_server_requests(stack: Stack, server: str) -> dict[str, float]:
    """`model_server_requests_total` by endpoint kind, as the named model server counts them.

    Raises (and so fails the test) when the server is unreachable: the suite never skips a
    check because a model server is down.
    """
    r = requests.get(f"{stack.model_server_url(server)}/metrics", timeout=5)
    r.raise_for_status()
    return {
        labels["endpoint"]: value
        for name, labels, value in parse_prometheus(r.text)
        if name == "model_server_requests_total"
    }


def total_requests(stack: Stack, servers: list[str] | None = None) -> float:
    """Every request that reached the given model servers (all four by default)."""
    names = servers or [s.name for s in stack.model_servers()]
    return sum(sum(model_server_requests(stack, n).values()) for n in names)


def recent_requests(stack: Stack, server: str) -> list[dict]:
    r = requests.get(f"{stack.model_server_url(server)}/debug/requests", timeout=5)
    r.raise_for_status()
    return r.json()["requests"]


def recorded(stack: Stack, header: str, value: str, servers: tuple[str, ...] = ("iris-1", "iris-2")) -> list[tuple[str, dict]]:
    """(server, recorded request) for every request the model servers recorded whose `header`
    is `value`.

    What a model server received is the check that matters for forwarding: the filter's and
    the gateway's header edits are right only if they arrive. Mark the request with a unique
    value (an `x-request-id`, a header of your own) and expect exactly one entry. Looks at the
    sklearn-iris replicas by default, since the gateway balances between them.
    """
    return [
        (server, item)
        for server in servers
        for item in recent_requests(stack, server)
        if item["headers"].get(header) == value
    ]


def received_headers(stack: Stack, header: str, value: str, servers: tuple[str, ...] = ("iris-1", "iris-2")) -> list[dict]:
    """The headers of each request `recorded` finds."""
    return [item["headers"] for _, item in recorded(stack, header, value, servers)]


def gateway_metrics(stack: Stack) -> list[tuple[str, dict[str, str], float]]:
    r = requests.get(f"{stack.admin}/metrics", timeout=5)
    r.raise_for_status()
    return parse_prometheus(r.text)


def filter_outcome(stack: Stack, model: str, outcome: str) -> float:
    """The filter's request counter for `model` and `outcome`, as the gateway exports it.

    The filter names it `modelgate.requests.model.<model>.outcome.<outcome>`; with the stats
    tag rules of deploy/gateway/envoyproxy.yaml the gateway exports it as Envoy's
    /stats/prometheus does: `modelgate_requests{model="..",outcome=".."}`.
    """
    found = [
        value
        for name, labels, value in gateway_metrics(stack)
        if name == "modelgate_requests" and labels == {"model": model, "outcome": outcome}
    ]
    assert len(found) == 1, f"no modelgate_requests{{model={model!r},outcome={outcome!r}}} on {stack.admin}/metrics"
    return found[0]


def post_raw(base: str, path: str, body: bytes, headers: list[tuple[str, str]]) -> tuple[int, bytes]:
    """A POST with exactly these header lines, repeats kept (requests folds them into a dict);
    only `Host` and `Content-Length` are added."""
    url = urllib.parse.urlsplit(base)
    if url.scheme == "https":
        # deploy/'s HTTPS listener, with the run's certificate (conftest sets the bundle).
        context = ssl.create_default_context(cafile=os.environ.get("REQUESTS_CA_BUNDLE"))
        conn = http.client.HTTPSConnection(url.hostname, url.port, timeout=15, context=context)
    else:
        conn = http.client.HTTPConnection(url.hostname, url.port, timeout=15)
    try:
        conn.putrequest("POST", path, skip_accept_encoding=True)
        for name, value in headers:
            conn.putheader(name, value)
        conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()
