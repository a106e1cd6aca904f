"""The demo configuration: the gateway's YAML (docs/host-config.md) and the filter's JSON
(docs/config.md), built from the ports and the freshly generated keys.

The demo and the end-to-end tests run this very configuration, so what the README shows is
what the tests prove. The policy it states:

  sklearn-iris  two replicas, round robin; explain goes to the explainer server.
                Needs scope `predict:sklearn-iris`. 50 requests/s per subject, burst 100.
                V1 rows of 4 numbers, at most 100 instances; V2 tensors [N, 4] of a
                numeric datatype, N at most 100.
  sklearn-wine  one replica. Needs scope `predict:sklearn-wine`.
                2 requests/s per subject, burst 5 (small, so a loop of curls shows 429).
                V1 rows of 13 numbers, at most 100 instances; V2 exactly the input the
                model server's metadata declares (`input-0`, FP64, [-1, 13]).
                KServe's model repository API (load, unload) with scope
                `admin:sklearn-wine` (adminScopes); iris has none, so the filter refuses it
                and no route sends it to iris's servers.
  every model   a JWT from the demo issuer, any of the 12 supported algorithms; bodies over
                64 KiB get 413; the token's `sub` goes upstream as `x-jwt-sub`.

With `llm` (`make demo-llm` and the LLM tests), two generative models behind KServe's OpenAI
data plane (openai_server.py, two replicas of one cluster), routed by the body's `model`
(the filter holds the headers for the body: `openai.holdHeadersForBody`, and the gateway's
`allowOnHeadersStopIteration`, as deploy/openai-body-routing sets Envoy's):

  markov-zen    needs scope `chat:markov-zen`; at most 256 tokens per completion; token
                budgets of 2,000 per minute and 50,000 per day per subject.
  markov-docs   needs scope `chat:markov-docs`; at most 64 tokens per completion; a budget of
                200 tokens per minute per subject (small, so the walkthrough shows 429).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

import keys

CLIENT_TRAFFIC_POLICY = Path(__file__).resolve().parents[2] / "deploy" / "gateway" / "clienttrafficpolicy.yaml"

IRIS = "sklearn-iris"
WINE = "sklearn-wine"
IRIS_SCOPE = f"predict:{IRIS}"
WINE_SCOPE = f"predict:{WINE}"
ROUTING_HEADER = "x-gateway-model-name"
# The EnvoyProxy deploy/ applies: the gateway reads its stats tag rules, so /metrics names the
# filter's metrics exactly as the cluster's Envoy does (`modelgate_requests{model,outcome}`).
ENVOY_PROXY_MANIFEST = Path(__file__).resolve().parents[2] / "deploy" / "gateway" / "envoyproxy.yaml"
SUBJECT_HEADER = "x-jwt-sub"
MAX_BODY_BYTES = 64 * 1024
IRIS_FEATURES = 4
WINE_FEATURES = 13
MAX_INSTANCES = 100
IRIS_QUOTA = {"requestsPerSecond": 50, "burst": 100}
WINE_QUOTA = {"requestsPerSecond": 2, "burst": 5}
WINE_ADMIN_SCOPE = f"admin:{WINE}"
# Models whose repository API (load, unload) is allowed, and the scopes it needs.
ADMIN_SCOPES = {WINE: [WINE_ADMIN_SCOPE]}

ZEN = "markov-zen"
DOCS = "markov-docs"
OPENAI_MODELS = (ZEN, DOCS)
OPENAI_CLUSTER = "openai"
OPENAI_PREFIX = "/openai"
CHAT_SCOPES = {ZEN: f"chat:{ZEN}", DOCS: f"chat:{DOCS}"}
OPENAI_POLICY = {
    ZEN: {
        "maxTokens": 256,
        "defaultMaxTokens": 64,
        "bytesPerToken": 4,
        "tokenBudgets": [{"tokens": 2000, "per": "minute"}, {"tokens": 50000, "per": "day"}],
    },
    DOCS: {
        "maxTokens": 64,
        "defaultMaxTokens": 32,
        "bytesPerToken": 4,
        "tokenBudgets": [{"tokens": 200, "per": "minute"}],
    },
}


@dataclass(frozen=True)
class Ports:
    gateway: int = 8000
    https: int = 8443
    admin: int = 9901
    iris1: int = 8081
    iris2: int = 8082
    wine: int = 8083
    explainer: int = 8084
    openai1: int = 8091
    openai2: int = 8092

    @classmethod
    def from_base(cls, base: int) -> "Ports":
        """Gateway base, HTTPS base+1, admin base+2, model servers base+11..14, the OpenAI
        servers (`llm`) base+21..22."""
        return cls(
            base, base + 1, base + 2, base + 11, base + 12, base + 13, base + 14, base + 21, base + 22
        )

    def all(self, llm: bool = False) -> list[int]:
        ports = [self.gateway, self.https, self.admin, self.iris1, self.iris2, self.wine, self.explainer]
        return ports + ([self.openai1, self.openai2] if llm else [])


def filter_config(keyset: keys.KeySet, llm: bool = False) -> dict:
    """The modelgate filter's plugin configuration (what EnvoyExtensionPolicy `config` holds);
    with `llm`, the OpenAI models too."""
    config = {
        "version": 1,
        "logLevel": "info",
        "failureMode": "deny",
        "routing": {
            "header": ROUTING_HEADER,
            "unknownModel": "reject",
            "listModels": True,
        },
        "jwt": {
            "issuer": keys.ISSUER,
            "audiences": [keys.AUDIENCE],
            "jwks": keyset.jwks(),
            "algorithms": list(keys.ALGORITHMS),
            "leewaySeconds": 5,
            "forwardClaims": {"sub": SUBJECT_HEADER},
        },
        "rateLimit": {"key": {"claim": "sub"}},
        "validation": {"maxBodyBytes": MAX_BODY_BYTES},
        "models": {
            IRIS: {
                "requiredScopes": [IRIS_SCOPE],
                "rateLimit": IRIS_QUOTA,
                "validation": {
                    "featureCount": IRIS_FEATURES,
                    "maxInstances": MAX_INSTANCES,
                    "elementType": "number",
                },
            },
            WINE: {
                "requiredScopes": [WINE_SCOPE],
                "adminScopes": ADMIN_SCOPES[WINE],
                "rateLimit": WINE_QUOTA,
                "validation": {
                    "featureCount": WINE_FEATURES,
                    "maxInstances": MAX_INSTANCES,
                    "elementType": "number",
                    # As the model server's V2 metadata declares it (model_server.py).
                    "v2Inputs": [{"name": "input-0", "datatype": "FP64", "shape": [-1, WINE_FEATURES]}],
                },
            },
        },
    }
    if llm:
        config["openai"] = {"prefix": OPENAI_PREFIX, "holdHeadersForBody": True}
        for model in OPENAI_MODELS:
            config["models"][model] = {
                "protocols": ["openai"],
                "requiredScopes": [CHAT_SCOPES[model]],
                "openai": OPENAI_POLICY[model],
            }
    return config


def model_routes(model: str, admin: bool) -> list[dict]:
    """A model's routes, matched on the routing header the filter sets: its V1 and V2 paths,
    and KServe's model repository API only for a model with `adminScopes` (the filter refuses
    it for the others, and no route would send it anywhere either)."""
    by_model = [{"name": ROUTING_HEADER, "exact": model}]
    prefixes = {"v1": "/v1/models/", "v2": "/v2/models/"}
    if admin:
        prefixes["repository"] = f"/v2/repository/models/{model}/"
    return [
        {"name": f"{model}-{kind}", "match": {"prefix": prefix, "headers": by_model}, "cluster": model, "timeout": "30s"}
        for kind, prefix in prefixes.items()
    ]


def host_config(
    ports: Ports,
    wasm_path: str,
    filter_config_path: str,
    cert_path: str,
    key_path: str,
    llm: bool = False,
) -> dict:
    """The gateway's configuration: listeners, clusters per model, routes by model header;
    with `llm`, the OpenAI cluster and its routes, and the filter allowed to hold the request
    headers while it reads the body (Envoy's `allow_on_headers_stop_iteration`)."""

    def endpoint(port: int) -> str:
        return f"127.0.0.1:{port}"

    def by_model(model: str) -> list[dict]:
        return [{"name": ROUTING_HEADER, "exact": model}]

    config = {
        "version": 1,
        "listeners": [
            {"name": "http", "address": endpoint(ports.gateway)},
            {
                "name": "https",
                "address": endpoint(ports.https),
                "tls": {"certFile": cert_path, "keyFile": key_path},
            },
        ],
        "admin": {"address": endpoint(ports.admin), "statsTagsFromEnvoyProxy": str(ENVOY_PROXY_MANIFEST)},
        "clusters": [
            {
                "name": IRIS,
                "endpoints": [endpoint(ports.iris1), endpoint(ports.iris2)],
                "lbPolicy": "roundRobin",
            },
            {"name": f"{IRIS}-explainer", "endpoints": [endpoint(ports.explainer)]},
            {"name": WINE, "endpoints": [endpoint(ports.wine)]},
        ],
        # As deploy/'s HTTPRoutes: `:explain` to the explainer, the model's V1 and V2 paths to
        # its predictor (and its repository API only where adminScopes allow it). The filter
        # names the model in the routing header.
        "routes": [
            {
                "name": f"{IRIS}-explain",
                "match": {"regex": r"/v1/models/[\w-]+:explain", "headers": by_model(IRIS)},
                "cluster": f"{IRIS}-explainer",
                "timeout": "30s",
            },
            *model_routes(IRIS, IRIS in ADMIN_SCOPES),
            *model_routes(WINE, WINE in ADMIN_SCOPES),
        ],
        "filters": [
            {
                "name": "modelgate",
                "wasm": wasm_path,
                "rootId": "modelgate",
                "configFile": filter_config_path,
                "vmCount": 2,
            }
        ],
        "bufferLimit": "1Mi",
        "reload": {"watch": False},
        "clientTraffic": client_traffic(),
    }
    if llm:
        config["clusters"].append(
            {
                "name": OPENAI_CLUSTER,
                "endpoints": [endpoint(ports.openai1), endpoint(ports.openai2)],
                "lbPolicy": "roundRobin",
            }
        )
        # KServe's OpenAI paths, sent to the cluster of the model the filter read from the body.
        config["routes"] += [
            {
                "name": f"{model}-openai",
                "match": {"prefix": f"{OPENAI_PREFIX}/v1/", "headers": by_model(model)},
                "cluster": OPENAI_CLUSTER,
                "timeout": "60s",
            }
            for model in OPENAI_MODELS
        ]
        config["filters"][0]["allowOnHeadersStopIteration"] = True
    return config


def client_traffic() -> dict:
    """The request-header settings of deploy/'s ClientTrafficPolicy, so the demo and the
    end-to-end suite treat a client's `X-Request-ID` as the cluster does (docs/host-config.md,
    `clientTraffic`)."""
    (policy,) = [
        d
        for d in yaml.safe_load_all(CLIENT_TRAFFIC_POLICY.read_text(encoding="utf-8"))
        if d and d.get("kind") == "ClientTrafficPolicy"
    ]
    return {"headers": {"requestID": policy["spec"]["headers"]["requestID"]}}
