"""The demo configuration: deploy/ itself, plus the small local overlay a laptop needs.

`make demo` and the end-to-end suite run `modelgate serve --manifests <overlay>` (stack.py),
where the overlay (`local_overlay`, written into the run directory) is deploy/ plus only what
a cluster has elsewhere or what deploy/ does not state:

  keys          the e2e signing keys (keys.py, 12 algorithms) instead of deploy/'s sample
                identity provider (whose private halves were discarded), with the e2e issuer
                and audience: the block deploy/ tells a user to replace with their own. HMAC
                secrets reach the filter through `kFromEnv` and the policy's `env.hostKeys`,
                as deploy/'s envoyproxy.yaml hands the cluster's Envoy its Secret.
  TLS Secret    `kserve/modelgate-tls` with a self-signed certificate (cert-manager makes it
                in the cluster).
  sklearn-wine  a third model with what deploy/'s models do not configure: KServe's model
                repository API allowed by `adminScopes`, exact V2 inputs (`v2Inputs`), and a
                small quota (2/s, burst 5) so a loop of curls shows 429.
  backends      where each Service runs on this machine (`--backend`, `backends`): two
                sklearn-iris predictor replicas (deploy/ asks for at least 2), sklearn-mnist's
                predictor and ART-shaped explainer, sklearn-wine's predictor.

Every other value (routes, listeners, buffer limit, quotas, feature counts, body limit,
scopes, headers) is deploy/'s, and the test constants below are read from its manifests.

The host's own YAML (`host_config`, docs/host-config.md) stays for what deploy/ cannot
express here: the LLM stack (`llm`: OpenAI models routed by the body's `model`, which needs
deploy/openai-body-routing's EnvoyPatchPolicy, not emulated by the host), the gRPC and
CloudEvents gateways some suites start beside the stack, and examples/policy-tests/demo. Its
policy (`filter_config`):

  sklearn-iris  as deploy/ states it; explain goes to an iris explainer server.
  sklearn-wine  as in the overlay.
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

import json
import os
from dataclasses import dataclass
from pathlib import Path

import yaml

import keys

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
CLIENT_TRAFFIC_POLICY = DEPLOY / "gateway" / "clienttrafficpolicy.yaml"
# The EnvoyProxy deploy/ applies: the gateway reads its stats tag rules, so /metrics names the
# filter's metrics exactly as the cluster's Envoy does (`modelgate_requests{model,outcome}`).
ENVOY_PROXY_MANIFEST = DEPLOY / "gateway" / "envoyproxy.yaml"
POLICY_MANIFEST = DEPLOY / "modelgate" / "envoyextensionpolicy.yaml"


def manifest(path: Path, kind: str) -> dict:
    """The one object of `kind` in a manifest file of deploy/."""
    (doc,) = [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d and d.get("kind") == kind]
    return doc


def quantity(text: str) -> int:
    """A Kubernetes byte quantity (`2Mi`, `32Ki`, `1048576`)."""
    units = {"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30}
    for suffix, factor in units.items():
        if text.endswith(suffix):
            return int(text[: -len(suffix)]) * factor
    return int(text)


# deploy/'s filter configuration (its EnvoyExtensionPolicy's `config`) and client policy.
DEPLOY_POLICY = manifest(POLICY_MANIFEST, "EnvoyExtensionPolicy")["spec"]["wasm"][0]["config"]
BUFFER_LIMIT = quantity(manifest(CLIENT_TRAFFIC_POLICY, "ClientTrafficPolicy")["spec"]["connection"]["bufferLimit"])

IRIS = "sklearn-iris"
MNIST = "sklearn-mnist"
WINE = "sklearn-wine"
ROUTING_HEADER = DEPLOY_POLICY["routing"]["header"]
SUBJECT_HEADER = DEPLOY_POLICY["jwt"]["forwardClaims"]["sub"]
MAX_BODY_BYTES = DEPLOY_POLICY["validation"]["maxBodyBytes"]
(IRIS_SCOPE,) = DEPLOY_POLICY["models"][IRIS]["requiredScopes"]
(MNIST_SCOPE,) = DEPLOY_POLICY["models"][MNIST]["requiredScopes"]
IRIS_FEATURES = DEPLOY_POLICY["models"][IRIS]["validation"]["featureCount"]
MNIST_FEATURES = DEPLOY_POLICY["models"][MNIST]["validation"]["featureCount"]
MAX_INSTANCES = DEPLOY_POLICY["models"][IRIS]["validation"]["maxInstances"]
IRIS_QUOTA = DEPLOY_POLICY["models"][IRIS]["rateLimit"]

# sklearn-wine: the overlay's model (see above), the one place its policy is stated.
WINE_SCOPE = f"predict:{WINE}"
WINE_ADMIN_SCOPE = f"admin:{WINE}"
WINE_FEATURES = 13
WINE_QUOTA = {"requestsPerSecond": 2, "burst": 5}
WINE_POLICY = {
    "protocols": ["v1", "v2"],
    "requiredScopes": [WINE_SCOPE],
    "adminScopes": [WINE_ADMIN_SCOPE],
    "rateLimit": WINE_QUOTA,
    "validation": {
        "featureCount": WINE_FEATURES,
        "maxInstances": MAX_INSTANCES,
        "elementType": "number",
        # As the model server's V2 metadata declares it (model_server.py).
        "v2Inputs": [{"name": "input-0", "datatype": "FP64", "shape": [-1, WINE_FEATURES]}],
    },
}
# Models whose repository API (load, unload) is allowed, and the scopes it needs.
ADMIN_SCOPES = {WINE: [WINE_ADMIN_SCOPE]}
# The body limit of the host-YAML policy (filter_config; examples/policy-tests/demo tests it).
HOST_YAML_MAX_BODY_BYTES = 64 * 1024

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
    mnist: int = 8085
    mnist_explainer: int = 8086
    iris1_grpc: int = 8087
    iris2_grpc: int = 8088

    @classmethod
    def from_base(cls, base: int) -> "Ports":
        """Gateway base, HTTPS base+1, admin base+2, model servers base+11..18, the OpenAI
        servers (`llm`) base+21..22."""
        return cls(
            base, base + 1, base + 2, base + 11, base + 12, base + 13, base + 14, base + 21, base + 22,
            base + 15, base + 16, base + 17, base + 18,
        )  # fmt: skip

    def all(self, llm: bool = False) -> list[int]:
        """The ports a stack listens on: deploy/'s (`llm` false) or the host-YAML LLM stack's."""
        ports = [self.gateway, self.https, self.admin, self.iris1, self.iris2, self.wine]
        if llm:
            return ports + [self.explainer, self.openai1, self.openai2]
        return ports + [self.mnist, self.mnist_explainer, self.iris1_grpc, self.iris2_grpc]


# The overlay ---------------------------------------------------------------------------------
# Environment variables of the gateway holding the e2e HMAC secrets (`kFromEnv`): HS256 uses the
# one deploy/'s policy already lets through (`env.hostKeys`), the overlay adds the other two.
HMAC_ENV = {"HS256": "MODELGATE_JWT_HMAC_KEY", "HS384": "MODELGATE_JWT_HS384_KEY", "HS512": "MODELGATE_JWT_HS512_KEY"}
POLICY_TARGET = {"group": "gateway.envoyproxy.io", "kind": "EnvoyExtensionPolicy", "name": "modelgate", "namespace": "kserve"}


def overlay_jwks(keyset: keys.KeySet) -> dict:
    """The e2e keys as the policy's `jwt.jwks`: public JWKs, HMAC keys by `kFromEnv`."""
    out = []
    for alg, key in keyset.keys.items():
        jwk = dict(key.public_jwk)
        if alg in HMAC_ENV:
            del jwk["k"]
            jwk["kFromEnv"] = HMAC_ENV[alg]
        out.append(jwk)
    return {"keys": out}


def hmac_env(keyset: keys.KeySet) -> dict[str, str]:
    """The gateway's environment for `overlay_jwks`' HMAC keys."""
    return {var: keyset.keys[alg].private.decode() for alg, var in HMAC_ENV.items()}


def policy_patch(keyset: keys.KeySet) -> list[dict]:
    """JSON 6902 operations on deploy/'s EnvoyExtensionPolicy: the e2e identity provider in
    place of deploy/'s sample one, and the sklearn-wine model."""
    config = "/spec/wasm/0/config"
    deploy_host_keys = manifest(POLICY_MANIFEST, "EnvoyExtensionPolicy")["spec"]["wasm"][0]["env"]["hostKeys"]
    return [
        {"op": "replace", "path": f"{config}/jwt/issuer", "value": keys.ISSUER},
        {"op": "replace", "path": f"{config}/jwt/audiences", "value": [keys.AUDIENCE]},
        {"op": "replace", "path": f"{config}/jwt/algorithms", "value": list(keys.ALGORITHMS)},
        {"op": "replace", "path": f"{config}/jwt/jwks", "value": overlay_jwks(keyset)},
        *(
            {"op": "add", "path": "/spec/wasm/0/env/hostKeys/-", "value": var}
            for var in HMAC_ENV.values()
            if var not in deploy_host_keys
        ),
        {"op": "add", "path": f"{config}/models/{WINE}", "value": WINE_POLICY},
    ]


def local_policy(keyset: keys.KeySet) -> dict:
    """The filter configuration the overlay gives the gateway: deploy/'s policy with
    `policy_patch` applied (RFC 6902 `add` and `replace`, all it uses), for the suites that run
    the same policy offline (`modelgate test`, with `hmac_env` as its `env`)."""
    policy = json.loads(json.dumps(manifest(POLICY_MANIFEST, "EnvoyExtensionPolicy")))
    for op in policy_patch(keyset):
        *parents, last = [part.replace("~1", "/").replace("~0", "~") for part in op["path"].split("/")[1:]]
        node = policy
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        if isinstance(node, list) and last == "-":
            node.append(op["value"])
        elif isinstance(node, list):
            node[int(last)] = op["value"]
        else:
            node[last] = op["value"]
    return policy["spec"]["wasm"][0]["config"]


def wine_manifests() -> list[dict]:
    """sklearn-wine's InferenceService and HTTPRoute, shaped as deploy/kserve/'s: the V1/V2
    model paths and KServe's repository API (which only wine's `adminScopes` allow) on the
    HTTPS listener, matched on the header the filter sets."""
    header = [{"type": "Exact", "name": ROUTING_HEADER, "value": WINE}]
    parent = {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "kserve-ingress-gateway",
              "namespace": "kserve", "sectionName": "https"}  # fmt: skip
    prefixes = ["/v1/models", "/v2/models", f"/v2/repository/models/{WINE}"]
    return [
        {
            "apiVersion": "serving.kserve.io/v1beta1",
            "kind": "InferenceService",
            "metadata": {"name": WINE, "namespace": "ml-models"},
            "spec": {"predictor": {"sklearn": {"protocolVersion": "v1"}}},
        },
        {
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "HTTPRoute",
            "metadata": {"name": WINE, "namespace": "ml-models"},
            "spec": {
                "parentRefs": [parent],
                "rules": [
                    {
                        "name": "predict",
                        "matches": [{"path": {"type": "PathPrefix", "value": p}, "headers": header} for p in prefixes],
                        "backendRefs": [{"kind": "Service", "name": f"{WINE}-predictor", "port": 80}],
                        "timeouts": {"request": "60s"},
                    }
                ],
            },
        },
    ]


def tls_secret(cert_pem: str, key_pem: str) -> dict:
    """The HTTPS listener's Secret, which cert-manager makes in the cluster."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "kubernetes.io/tls",
        "metadata": {"name": "modelgate-tls", "namespace": "kserve"},
        "stringData": {"tls.crt": cert_pem, "tls.key": key_pem},
    }


OVERLAY_HEADER = """\
# Written by tests/e2e/stack.py for this run (tests/e2e/demo_config.py, local_overlay): deploy/
# as `kubectl apply -k deploy/` applies it, plus what a laptop lacks: the e2e identity
# provider's keys, issuer and audience in place of deploy/'s sample ones (HMAC secrets through
# kFromEnv and env.hostKeys), the HTTPS listener's Secret (cert-manager's job in a cluster), and
# sklearn-wine, a model with the repository API, V2 inputs and a small quota the suites need.
# Where each Service runs is given by --backend. Served with
#   modelgate serve --manifests THIS_DIR --backend ... (docs/manifests.md)
"""


def local_overlay(directory: Path, keyset: keys.KeySet, cert_pem: str, key_pem: str, deploy: Path = DEPLOY) -> Path:
    """Writes the overlay (a kustomization over `deploy`) into `directory`; returns it."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "tls-secret.yaml").write_text(yaml.dump(tls_secret(cert_pem, key_pem), Dumper=_BlockDumper))
    (directory / "sklearn-wine.yaml").write_text(yaml.safe_dump_all(wine_manifests(), sort_keys=False))
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [os.path.relpath(deploy, directory), "tls-secret.yaml", "sklearn-wine.yaml"],
        "patches": [{"target": POLICY_TARGET, "patch": yaml.safe_dump(policy_patch(keyset), sort_keys=False)}],
    }
    (directory / "kustomization.yaml").write_text(OVERLAY_HEADER + yaml.dump(kustomization, Dumper=_BlockDumper, sort_keys=False))
    return directory


class _BlockDumper(yaml.SafeDumper):
    """Writes multi-line strings (the patch) as `|` blocks, readable in the run directory."""


_BlockDumper.add_representer(
    str,
    lambda dumper, text: dumper.represent_scalar("tag:yaml.org,2002:str", text, style="|" if "\n" in text else None),
)


def backends(ports: Ports) -> list[str]:
    """`--backend` mappings: every Service the overlay's routes send to, on this machine."""

    def at(port: int) -> str:
        return f"127.0.0.1:{port}"

    return [
        f"sklearn-iris-predictor.ml-models:80={at(ports.iris1)}",
        f"sklearn-iris-predictor.ml-models:80={at(ports.iris2)}",
        # deploy/kserve/grpcroute-sklearn-iris.yaml: KServe's gRPC port of the same replicas.
        f"sklearn-iris-predictor.ml-models:8081={at(ports.iris1_grpc)}",
        f"sklearn-iris-predictor.ml-models:8081={at(ports.iris2_grpc)}",
        f"sklearn-mnist-predictor.ml-models={at(ports.mnist)}",
        f"sklearn-mnist-explainer.ml-models={at(ports.mnist_explainer)}",
        f"{WINE}-predictor.ml-models={at(ports.wine)}",
    ]


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
        "validation": {"maxBodyBytes": HOST_YAML_MAX_BODY_BYTES},
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
            WINE: {k: v for k, v in WINE_POLICY.items() if k != "protocols"},
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
