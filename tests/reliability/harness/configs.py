"""Configs for the stack under test: the filter's JSON (docs/config.md) and the host's YAML
(docs/host-config.md)."""

from __future__ import annotations

from . import tokens
from .gateway import FILTER_WASM

ROUTING_HEADER = "x-gateway-model-name"
IRIS = "sklearn-iris"
WINE = "sklearn-wine"
# Models whose clusters misbehave on purpose (see upstream.Behaviour).
RESET_MODEL = "reset-model"
MIDBODY_MODEL = "midbody-model"
BAD_RESPONSE_MODEL = "bad-response-model"
WINE_ADMIN_SCOPE = "admin:wine"
# The header the filter fills from the token's `sub` (client-sent copies must be dropped).
FORWARDED_SUB_HEADER = "x-user-id"

# Small enough that oversize cases are cheap to send, large enough for every valid body here.
MAX_BODY_BYTES = 64 * 1024
# A generous quota: these suites test everything but the limiter, which must never fire.
OPEN_QUOTA = {"requestsPerSecond": 100000, "burst": 100000}


def filter_config(keys: tokens.KeySet) -> dict:
    """The full policy: JWT (RS256 + ES256 keys by kid), scopes per model, quotas, V1 validation."""

    def model(scope: str, features: int) -> dict:
        return {
            "protocols": ["v1", "v2"],
            "requiredScopes": [scope],
            "rateLimit": OPEN_QUOTA,
            "validation": {"featureCount": features, "maxInstances": 64},
        }

    return {
        "version": 1,
        "logLevel": "warn",
        "failureMode": "deny",
        "routing": {"header": ROUTING_HEADER, "unknownModel": "reject"},
        "jwt": {
            "issuer": tokens.ISSUER,
            "audiences": [tokens.AUDIENCE],
            "jwks": keys.jwks(),
            "leewaySeconds": 5,
            "maxTokenBytes": 8192,
            "forwardClaims": {"sub": FORWARDED_SUB_HEADER},
        },
        "rateLimit": {"key": {"claim": "sub"}},
        "validation": {"maxBodyBytes": MAX_BODY_BYTES},
        "models": {
            IRIS: model("models:iris", 4),
            # The one model whose repository API (load, unload) is allowed, to holders of
            # WINE_ADMIN_SCOPE; every other model refuses it to everyone.
            WINE: {**model("models:wine", 13), "adminScopes": [WINE_ADMIN_SCOPE]},
            RESET_MODEL: model("models:iris", 4),
            MIDBODY_MODEL: model("models:iris", 4),
            BAD_RESPONSE_MODEL: model("models:iris", 4),
        },
    }


def modelgate_filter(keys: tokens.KeySet, **overrides: object) -> dict:
    entry = {
        "name": "modelgate",
        "wasm": str(FILTER_WASM),
        "rootId": "modelgate",
        "failOpen": False,
        "vmCount": 2,
        "config": filter_config(keys),
    }
    entry.update(overrides)
    return entry


def host_config(
    port: int,
    admin_port: int,
    clusters: dict[str, list[int]],
    filters: list[dict],
    model_clusters: dict[str, str],
    reload_poll: str = "200ms",
    never_eject: frozenset[str] = frozenset(),
) -> dict:
    """One listener, the admin listener, a cluster per entry and a header route per model.

    `model_clusters` maps a model name (the value the filter puts in the routing header)
    to a cluster. The stack appends a catch-all route after these (stack.CATCH_ALL), so a
    request the filter lets through without naming a model reaches a recording upstream.
    Clusters in `never_eject` keep their endpoint however often it fails, so that each
    fault case reaches the faulty upstream instead of the host's "no healthy upstream".
    """
    return {
        "version": 1,
        "listeners": [{"name": "main", "address": f"127.0.0.1:{port}", "healthPath": "/health"}],
        "admin": {"address": f"127.0.0.1:{admin_port}"},
        "clusters": [
            {
                "name": name,
                "endpoints": [f"127.0.0.1:{p}" for p in ports],
                "lbPolicy": "roundRobin",
                "connectTimeout": "1s",
                "outlierDetection": {"consecutiveErrors": 0 if name in never_eject else 3, "baseEjectionTime": "5s"},
            }
            for name, ports in clusters.items()
        ],
        "routes": [
            {
                "name": f"{model}-by-header",
                "match": {"prefix": "/", "headers": [{"name": ROUTING_HEADER, "exact": model}]},
                "cluster": cluster,
                "timeout": "10s",
                "retry": {"on": ["connect-failure"], "numRetries": 1},
            }
            for model, cluster in model_clusters.items()
        ],
        "filters": filters,
        "accessLog": {"enabled": False},
        "bufferLimit": "1Mi",
        "drainTimeout": "5s",
        "reload": {"watch": True, "pollInterval": reload_poll},
    }

