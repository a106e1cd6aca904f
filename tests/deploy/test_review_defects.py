"""One test per defect the deploy review found (issue 14), each reading deploy/ and
docs/deploy.md as the upstream project would act on them. No cluster runs here, so each test
applies the upstream rule, cited from its source, to the manifests or the documented commands.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from deploy_support import DEPLOY, REPO, load_docs, objects_of, one, run

DOCS = REPO / "docs" / "deploy.md"
OCI_EEP = DEPLOY / "modelgate" / "envoyextensionpolicy.yaml"
IMAGE_DIGEST = DEPLOY / "oci" / "image-digest.py"
BUILD_IMAGE = DEPLOY / "oci" / "build-image.py"


def filter_config() -> dict:
    (policy,) = load_docs(OCI_EEP)
    return policy["spec"]["wasm"][0]["config"]


def shell_commands(markdown: str) -> list[str]:
    """Every command in the ```bash blocks of a page, continuation lines joined."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", markdown, re.S):
        for command in re.sub(r"\\\n\s*", " ", block).splitlines():
            command = command.strip()
            if command and not command.startswith("#"):
                commands.append(command)
    return commands


# --- 1. the sklearn runtime is installed -----------------------------------------------------


def test_runtime_configs_chart_installs_the_serving_runtimes():
    """KServe v0.20's kserve-runtime-configs chart renders its ClusterServingRuntimes only when
    `kserve.servingruntime.enabled` is true (charts/kserve-runtime-configs/values.yaml: false;
    templates/runtimes/resources.yaml is wrapped in `if .Values.kserve.servingruntime.enabled`).
    Without it no sklearn runtime exists and no InferenceService becomes Ready."""
    installs = [c for c in shell_commands(DOCS.read_text()) if re.match(r"helm (install|upgrade)\S* kserve-runtime-configs ", c)]
    assert installs, "docs/deploy.md never installs kserve-runtime-configs"
    for command in installs:
        assert "--set kserve.servingruntime.enabled=true" in command, command
        assert "--version v0.20.0" in command, command


# --- 2. every model can be pulled --------------------------------------------------------------

# KServe's public example models (gs://kfserving-examples is world-readable), each with the
# model format KServe serves it with and its feature count, from KServe v0.20's own samples.
PUBLIC_EXAMPLES = {
    # docs/samples/v1beta1/sklearn/v1 and the quick-start: iris, 4 features.
    "gs://kfserving-examples/models/sklearn/1.0/model": ("sklearn", 4),
    # docs/samples/explanation/art/mnist/art.yaml: MNIST digits, 28x28 = 784 features.
    "gs://kfserving-examples/models/sklearn/mnist/art": ("sklearn", 784),
    # docs/samples/v1beta1/xgboost/xgboost.yaml and lightgbm/lightgbm.yaml: iris, 4 features.
    "gs://kfserving-examples/models/xgboost/iris": ("xgboost", 4),
    "gs://kfserving-examples/models/lightgbm/iris": ("lightgbm", 4),
}


def predictor_format(predictor: dict) -> tuple[str, str]:
    if "model" in predictor:
        return predictor["model"]["modelFormat"]["name"], predictor["model"]["storageUri"]
    (fmt,) = [k for k in ("sklearn", "xgboost", "lightgbm", "tensorflow", "pytorch", "onnx") if k in predictor]
    return fmt, predictor[fmt]["storageUri"]


def test_every_model_is_a_public_kserve_example_and_validated_as_it_is_shaped():
    config = filter_config()
    services = objects_of("InferenceService")
    assert services
    for path, isvc in services:
        name = isvc["metadata"]["name"]
        fmt, uri = predictor_format(isvc["spec"]["predictor"])
        assert uri in PUBLIC_EXAMPLES, f"{path}: {uri} is not a public KServe example model"
        want_format, features = PUBLIC_EXAMPLES[uri]
        assert fmt == want_format, f"{path}: {uri} is a {want_format} model, served as {fmt}"
        assert config["models"][name]["validation"]["featureCount"] == features, name


# --- 3. bodies up to maxBodyBytes reach the filter ----------------------------------------------

QUANTITY = re.compile(r"^([1-9][0-9]*)([EPTGMK]i|[EPTGMk])?$")
UNITS = {None: 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18,
         "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}


def quantity(value: str | int) -> int:
    match = QUANTITY.match(str(value))
    assert match, f"not a resource quantity Envoy Gateway accepts: {value!r}"
    return int(match.group(1)) * UNITS[match.group(2)]


# Envoy Gateway v1.9 defaults without a ClientTrafficPolicy: internal/xds/translator/listener.go
# (tcpListenerPerConnectionBufferLimitBytes, http2InitialStreamWindowSize).
EG_DEFAULT_BUFFER_LIMIT = 32768
EG_DEFAULT_H2_STREAM_WINDOW = 65536


def test_client_buffer_limits_let_every_body_the_filter_accepts_reach_it():
    """Past the stream's buffer limit Envoy answers a plain-text 413 before the filter sees
    the body; the limit must be at least the filter's largest `maxBodyBytes`."""
    config = filter_config()
    largest = max(
        [config["validation"]["maxBodyBytes"]]
        + [m.get("validation", {}).get("maxBodyBytes", 0) for m in config["models"].values()]
    )
    buffer_limit, window = EG_DEFAULT_BUFFER_LIMIT, EG_DEFAULT_H2_STREAM_WINDOW
    for _, policy in objects_of("ClientTrafficPolicy"):
        targets = {(t["kind"], t["name"]) for t in policy["spec"].get("targetRefs", [])}
        if ("Gateway", "kserve-ingress-gateway") in targets:
            buffer_limit = quantity(policy["spec"].get("connection", {}).get("bufferLimit", buffer_limit))
            window = quantity(policy["spec"].get("http2", {}).get("initialStreamWindowSize", window))
    assert buffer_limit >= largest, f"HTTP/1.1 bodies over {buffer_limit} bytes get Envoy's 413, not the filter's"
    assert window >= largest, f"HTTP/2 bodies over {window} bytes get Envoy's 413, not the filter's"


# --- 4. metric names as Envoy exports them -------------------------------------------------------


def test_no_page_or_manifest_promises_a_metric_name_envoy_does_not_export():
    """Envoy's /stats/prometheus strips the `wasmcustom` namespace of Wasm metrics and adds no
    `envoy_` prefix (PrometheusStatsFormatter::metricName, source/server/admin/prometheus_stats.cc):
    `envoy_wasmcustom_…` and `wasmcustom_…` series never exist."""
    pages = [DOCS, REPO / "filter" / "README.md", REPO / "README.md", REPO / "docs" / "host-config.md"]
    pages += sorted(p for p in DEPLOY.rglob("*") if p.suffix in (".yaml", ".json", ".md"))
    wrong = re.compile(r"\b(envoy_wasmcustom_\w+|wasmcustom_\w+)")
    found = {str(p.relative_to(REPO)): wrong.findall(p.read_text()) for p in pages}
    assert not {p: names for p, names in found.items() if names}


# --- 5. :explain with the ART explainer ----------------------------------------------------------


def documented_body(commands: list[str], command: str) -> dict:
    """The JSON a documented curl sends: inline (`-d '{...}'`) or from a file the page writes
    with a `python3 -c '...' > FILE` command (run here to get the very bytes)."""
    inline = re.search(r"-d '(\{.*?\})'", command)
    if inline:
        return json.loads(inline.group(1))
    file = re.search(r"-d @(\S+)", command)
    assert file, command
    (writer,) = [c for c in commands if c.endswith(f"> {file.group(1)}")]
    code = re.match(r"python3 -c '(.*)' > ", writer).group(1)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True)
    return json.loads(result.stdout)


def test_the_documented_explain_request_is_what_the_art_explainer_reads():
    commands = shell_commands(DOCS.read_text())
    config = filter_config()
    explained = {d["metadata"]["name"] for _, d in objects_of("InferenceService") if "explainer" in d["spec"]}
    assert explained
    # The model with an explainer tells the filter that its `:explain` bodies are ART's shape.
    for model in explained:
        assert config["models"][model]["validation"].get("explain") == "art", model
    explains = [c for c in commands if re.search(r"curl .*:explain", c) and "-o /dev/null" not in c]
    served = [c for c in explains if any(f"/v1/models/{m}:explain" in c for m in explained)]
    assert served, "docs/deploy.md shows no :explain request for a model with an explainer"
    payloads = [(c, documented_body(commands, c)) for c in served]
    # The guide's tabular body may be shown only as what the filter refuses (400).
    accepted = [(c, p) for c, p in payloads if not ("-sik" in c and len(p["instances"]) != 2)]
    assert accepted, "docs/deploy.md shows no :explain request the explainer can serve"
    for command, payload in accepted:
        features = config["models"][next(m for m in explained if m in command)]["validation"]["featureCount"]
        instances = payload["instances"]
        assert len(instances) == 2, f"ART reads [inputs, labels]: {command}"
        inputs, labels = instances
        assert len(labels) == len(inputs) and all(isinstance(label, int) for label in labels), labels

        def count(value) -> int:
            return sum(count(v) for v in value) if isinstance(value, list) else 1

        assert all(count(x) == features for x in inputs), "each input must hold the model's featureCount values"


# --- 6. :explain reaches the explainer under Envoy Gateway and Istio ---------------------------


def rules_for(model: str, header: str) -> list[tuple[str, str, str]]:
    """(path match type, value, backend) of every rule that matches `model`'s header."""
    out = []
    for _, route in objects_of("HTTPRoute"):
        for rule in route["spec"]["rules"]:
            for match in rule.get("matches", []):
                if any(h["name"] == header and h["value"] == model for h in match.get("headers", [])):
                    out.append((match["path"]["type"], match["path"]["value"], rule["backendRefs"][0]["name"]))
    return out


def path_matches(kind: str, value: str, path: str) -> bool:
    if kind == "Exact":
        return path == value
    if kind == "PathPrefix":
        return path == value or path.startswith(value.rstrip("/") + "/")
    # RE2 (both implementations) and Python agree on these patterns; ^…$ anchors either way.
    return re.fullmatch(value, path) is not None


# Envoy Gateway: internal/gatewayapi/sort.go, Exact > RegularExpression > PathPrefix.
# Istio: pilot/pkg/config/kube/gateway/conversion.go getURIRank, Exact 3 > Prefix 2 > Regex 1.
RANKS = {
    "envoy-gateway": {"Exact": 3, "RegularExpression": 2, "PathPrefix": 1},
    "istio": {"Exact": 3, "PathPrefix": 2, "RegularExpression": 1},
}


@pytest.mark.parametrize("implementation", sorted(RANKS))
def test_explain_requests_reach_the_explainer(implementation):
    header = filter_config()["routing"]["header"]
    explained = {d["metadata"]["name"] for _, d in objects_of("InferenceService") if "explainer" in d["spec"]}
    assert explained
    for model in explained:
        path = f"/v1/models/{model}:explain"
        candidates = [r for r in rules_for(model, header) if path_matches(r[0], r[1], path)]
        assert candidates, path
        # Stable sort by rank, longer values first within a rank (both do that for prefixes).
        chosen = max(candidates, key=lambda r: (RANKS[implementation][r[0]], len(r[1])))
        assert chosen[2] == f"{model}-explainer", f"{implementation} sends {path} to {chosen[2]}"
        predict = f"/v1/models/{model}:predict"
        candidates = [r for r in rules_for(model, header) if path_matches(r[0], r[1], predict)]
        chosen = max(candidates, key=lambda r: (RANKS[implementation][r[0]], len(r[1])))
        assert chosen[2] == f"{model}-predictor"


# --- 7. the image digest Envoy Gateway compares ------------------------------------------------


def digest_tool(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(IMAGE_DIGEST), *args], input=stdin, capture_output=True, timeout=60, check=False)


def test_image_digest_is_the_linux_amd64_manifest_of_an_index(tmp_path, wasm_bytes):
    """A BuildKit or multi-arch push makes the tag an index; Envoy Gateway resolves it to the
    linux/amd64 image (go-containerregistry desc.Image()) and compares that manifest's digest."""
    wasm = tmp_path / "plugin.wasm"
    wasm.write_bytes(wasm_bytes)
    layout = tmp_path / "layout"
    built = run([sys.executable, str(BUILD_IMAGE), "--wasm", str(wasm), "--out", str(layout), "--tag", "t"])
    assert built.returncode == 0, built.stderr
    image_digest = built.stdout.strip()
    (entry,) = json.loads((layout / "index.json").read_bytes())["manifests"]
    manifest = (layout / "blobs" / "sha256" / image_digest).read_bytes()
    # The tag as BuildKit pushes it: an index with an arm64 image, the amd64 image and an
    # attestation manifest (platform unknown/unknown).
    other = {"mediaType": entry["mediaType"], "digest": "sha256:" + "a" * 64, "size": 1}
    index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {**other, "platform": {"architecture": "arm64", "os": "linux"}},
            {**other, "digest": "sha256:" + "b" * 64, "platform": {"architecture": "unknown", "os": "unknown"},
             "annotations": {"vnd.docker.reference.type": "attestation-manifest"}},
            {"mediaType": entry["mediaType"], "digest": entry["digest"], "size": entry["size"],
             "platform": {"architecture": "amd64", "os": "linux"}},
        ],
    }
    raw_index = json.dumps(index).encode()
    resolved = digest_tool(stdin=raw_index)
    assert resolved.returncode == 0, resolved.stderr
    assert resolved.stdout.decode().strip() == image_digest
    # A tag that is one image: its digest is the manifest bytes' sha256, build-image's output.
    single = digest_tool(stdin=manifest)
    assert single.stdout.decode().strip() == image_digest
    assert digest_tool("--layout", str(layout), "--tag", "t").stdout.decode().strip() == image_digest
    # An index without linux/amd64 cannot be fetched at all: said, not guessed.
    index["manifests"] = index["manifests"][:2]
    refused = digest_tool(stdin=json.dumps(index).encode())
    assert refused.returncode == 1 and b"no linux/amd64 image" in refused.stderr
    # The guide resolves the digest of a pushed tag with this tool, not with the tag's digest.
    commands = " ".join(shell_commands(DOCS.read_text()))
    assert "deploy/oci/image-digest.py" in commands
    assert not re.search(r"crane digest \"?\$IMAGE\"?(?! --platform)", commands), "crane digest of the tag is the index's"


# --- 8. hardening ------------------------------------------------------------------------------


def test_no_listener_admits_routes_from_every_namespace():
    gateway = one("Gateway", "kserve-ingress-gateway")
    for listener in gateway["spec"]["listeners"]:
        namespaces = listener.get("allowedRoutes", {}).get("namespaces", {"from": "Same"})
        assert namespaces.get("from", "Same") != "All", listener["name"]


def test_plain_http_only_redirects_to_https():
    gateway = one("Gateway", "kserve-ingress-gateway")
    http = [listener["name"] for listener in gateway["spec"]["listeners"] if listener["protocol"] == "HTTP"]
    for path, route in objects_of("HTTPRoute"):
        for ref in route["spec"]["parentRefs"]:
            # A parentRef without sectionName attaches to every listener, the HTTP one included.
            if ref.get("sectionName") in (None, *http):
                for rule in route["spec"]["rules"]:
                    assert "backendRefs" not in rule, f"{path} serves over plain HTTP"
                    kinds = [f["type"] for f in rule.get("filters", [])]
                    assert kinds == ["RequestRedirect"], f"{path}: {kinds}"
                    assert rule["filters"][0]["requestRedirect"]["scheme"] == "https"


def selects(selector: dict | None, labels: dict[str, str]) -> bool:
    """A Kubernetes LabelSelector; `{}` selects everything."""
    if selector is None:
        return True
    for key, value in selector.get("matchLabels", {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions", []):
        present, value = expr["key"] in labels, labels.get(expr["key"])
        op = expr["operator"]
        if (op == "In" and value not in expr["values"]) or (op == "NotIn" and value in expr.get("values", [])):
            return False
        if (op == "Exists" and not present) or (op == "DoesNotExist" and present):
            return False
    return True


def ingress_allowed(pod_ns: str, pod_labels: dict, peer_ns: str, peer_labels: dict, port: int) -> bool:
    """NetworkPolicy semantics: with no policy selecting the pod, everything is allowed; with
    some, a connection is allowed when one of their ingress rules admits the peer and port.
    A peer with namespaceSelector and podSelector needs both; a podSelector alone means the
    policy's own namespace."""
    policies = [
        d for _, d in objects_of("NetworkPolicy")
        if d["metadata"]["namespace"] == pod_ns and selects(d["spec"]["podSelector"], pod_labels)
        and "Ingress" in d["spec"].get("policyTypes", ["Ingress"])
    ]
    if not policies:
        return True
    ns_labels = {"kubernetes.io/metadata.name": peer_ns}
    for policy in policies:
        for rule in policy["spec"].get("ingress", []):
            ports = rule.get("ports")
            if ports and not any(p.get("port") == port for p in ports):
                continue
            for peer in rule.get("from", [{}]):
                if "ipBlock" in peer:
                    continue
                if "namespaceSelector" in peer:
                    ns_ok = selects(peer["namespaceSelector"], ns_labels)
                else:
                    ns_ok = peer_ns == pod_ns
                if ns_ok and selects(peer.get("podSelector"), peer_labels):
                    return True
    return False


# Labels Envoy Gateway v1.9 puts on the Gateway's Envoy pods: EnvoyAppLabel plus the owning
# Gateway labels (internal/infrastructure/kubernetes/proxy/resource.go, resource_provider.go).
ENVOY_POD = {
    "app.kubernetes.io/name": "envoy",
    "app.kubernetes.io/component": "proxy",
    "app.kubernetes.io/managed-by": "envoy-gateway",
    "gateway.envoyproxy.io/owning-gateway-name": "kserve-ingress-gateway",
    "gateway.envoyproxy.io/owning-gateway-namespace": "kserve",
}


def test_only_the_gateways_envoy_pods_can_call_the_model_servers():
    models_ns = {d["metadata"]["namespace"] for _, d in objects_of("InferenceService")}
    assert models_ns == {"ml-models"}
    # KServe labels its pods `component: predictor|explainer` (pkg/constants) and serves 8080.
    predictor = {"component": "predictor", "serving.kserve.io/inferenceservice": "sklearn-iris"}
    assert ingress_allowed("ml-models", predictor, "envoy-gateway-system", ENVOY_POD, 8080)
    assert ingress_allowed("ml-models", predictor, "ml-models", {"component": "explainer"}, 8080)
    # Anyone else is refused: another namespace, an Envoy of another Gateway, a pod beside the
    # models, the right pod on another port.
    assert not ingress_allowed("ml-models", predictor, "default", {"app": "curl"}, 8080)
    assert not ingress_allowed("ml-models", predictor, "default", ENVOY_POD, 8080)
    other_gateway = {**ENVOY_POD, "gateway.envoyproxy.io/owning-gateway-name": "other"}
    assert not ingress_allowed("ml-models", predictor, "envoy-gateway-system", other_gateway, 8080)
    assert not ingress_allowed("ml-models", predictor, "ml-models", {"app": "debug"}, 8080)
    assert not ingress_allowed("ml-models", {"component": "explainer"}, "envoy-gateway-system", ENVOY_POD, 9000)
