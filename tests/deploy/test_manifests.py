"""The manifests in deploy/ validate against the real CRDs and agree with each other.

The validator (../shared/tools/validate_manifests.py) checks each document against the CRD's
OpenAPI schema and CEL rules as kube-apiserver would on `kubectl apply`; the consistency tests
check what no schema can: that the names one manifest uses are the ones another defines.
"""

from __future__ import annotations

import copy
import re
import sys
from pathlib import Path

import yaml

from deploy_support import DEPLOY, REPO, VALIDATOR, all_objects, load_docs, manifest_files, objects_of, one, run

SUMMARY = re.compile(
    r"SUMMARY: (?P<docs>\d+) documents, (?P<errors>\d+) errors, (?P<warnings>\d+) warnings; "
    r"built-in kinds validated (?P<core>\d+), not validated (?P<core_skipped>\d+); "
    r"CEL: evaluated (?P<cel>\d+) \(passed \d+, failed (?P<cel_failed>\d+)\), skipped (?P<cel_skipped>\d+)"
)

OCI_EEP = DEPLOY / "modelgate" / "envoyextensionpolicy.yaml"
HTTP_EEP = DEPLOY / "modelgate" / "envoyextensionpolicy-http.yaml"
WASMPLUGIN = DEPLOY / "istio" / "wasmplugin.yaml"


def validate(*paths: Path) -> tuple[int, str, dict[str, int]]:
    assert VALIDATOR.is_file(), f"{VALIDATOR} is missing: the repository must sit beside shared/"
    result = run([sys.executable, str(VALIDATOR), *map(str, paths)], cwd=REPO)
    match = SUMMARY.search(result.stdout)
    assert match, f"no summary from the validator:\n{result.stdout}\n{result.stderr}"
    return result.returncode, result.stdout, {k: int(v) for k, v in match.groupdict().items()}


def wasm_entry(path: Path) -> dict:
    (policy,) = load_docs(path)
    (entry,) = policy["spec"]["wasm"]
    return entry


def filter_config() -> dict:
    return wasm_entry(OCI_EEP)["config"]


# --- the validator -------------------------------------------------------------------------


def test_every_manifest_validates_with_zero_errors():
    code, out, summary = validate(DEPLOY)
    assert code == 0, out
    assert summary["errors"] == 0 and summary["warnings"] == 0, out
    # Built-in kinds were checked too, and CEL rules were evaluated rather than skipped
    # (the one skipped rule is GatewayClass's `self == oldSelf`, which needs an update).
    assert summary["core_skipped"] == 0, out
    assert summary["cel"] > 100 and summary["cel_failed"] == 0, out
    assert summary["cel_skipped"] <= 1, out
    documents = sum(len(load_docs(p)) for p in manifest_files())
    assert summary["docs"] == documents
    ok_lines = [line for line in out.splitlines() if line.endswith(": OK")]
    assert len(ok_lines) == documents, out


def test_validator_catches_a_policy_that_the_api_server_would_reject(tmp_path):
    """A live check that CEL rules are evaluated here: type Image without `image` is refused."""
    (policy,) = load_docs(OCI_EEP)
    broken = copy.deepcopy(policy)
    code = broken["spec"]["wasm"][0]["code"]
    code["http"] = {"url": "https://artifacts.example.com/m.wasm"}
    del code["image"]
    (tmp_path / "broken.yaml").write_text(yaml.safe_dump(broken))
    exit_code, out, summary = validate(tmp_path / "broken.yaml")
    assert exit_code == 1
    assert summary["errors"] == 2, out
    assert "If type is Image, image field needs to be set." in out
    assert "If type is HTTP, http field needs to be set." in out


def test_validator_catches_an_unknown_field(tmp_path):
    (route,) = load_docs(DEPLOY / "kserve" / "httproute-sklearn-iris.yaml")
    route["spec"]["rules"][0]["matches"][0]["header"] = route["spec"]["rules"][0]["matches"][0].pop("headers")
    (tmp_path / "route.yaml").write_text(yaml.safe_dump(route))
    exit_code, out, _ = validate(tmp_path / "route.yaml")
    assert exit_code == 1
    assert 'unknown field "spec.rules[0].matches[0].header"' in out


# --- the filter configuration --------------------------------------------------------------


def test_every_copy_of_the_filter_config_is_the_same():
    config = filter_config()
    assert wasm_entry(HTTP_EEP)["config"] == config
    (plugin,) = load_docs(WASMPLUGIN)
    assert plugin["spec"]["pluginConfig"] == config


def test_both_policies_differ_only_in_where_the_code_comes_from():
    oci, http = load_docs(OCI_EEP)[0], load_docs(HTTP_EEP)[0]
    assert oci["metadata"] == http["metadata"], "same name, so applying one replaces the other"
    oci_entry, http_entry = oci["spec"]["wasm"][0], http["spec"]["wasm"][0]
    assert oci_entry["code"]["type"] == "Image" and http_entry["code"]["type"] == "HTTP"
    for entry in (oci_entry, http_entry):
        del entry["code"]
    assert oci == http


def test_config_carries_no_secret():
    """Secrets go through env.hostKeys: the config holds public JWKs only."""
    for key in filter_config()["jwt"]["jwks"]["keys"]:
        assert key["kty"] in ("RSA", "EC", "OKP"), key
        assert not {"d", "p", "q", "dp", "dq", "qi", "k"} & key.keys(), key


def test_secrets_reach_the_vm_through_host_keys():
    host_keys = wasm_entry(OCI_EEP)["env"]["hostKeys"]
    proxy = one("EnvoyProxy", "modelgate-proxy")
    container_env = proxy["spec"]["provider"]["kubernetes"]["envoyDeployment"]["container"]["env"]
    from_secrets = {e["name"] for e in container_env if "secretKeyRef" in e.get("valueFrom", {})}
    assert set(host_keys) <= from_secrets
    (plugin,) = load_docs(WASMPLUGIN)
    istio_host = {e["name"] for e in plugin["spec"]["vmConfig"]["env"] if e.get("valueFrom") == "HOST"}
    assert istio_host == set(host_keys)


def test_digest_placeholders_agree_where_they_name_the_same_thing():
    """`sed` on the marker comment pins every copy; the image digest is one value everywhere."""
    values: dict[str, set[str]] = {}
    for path in manifest_files():
        for line in path.read_text().splitlines():
            found = re.search(r'sha256: "?([0-9a-f]{64})"? # (modelgate-[a-z0-9-]+)$', line)
            if found:
                values.setdefault(found.group(2), set()).add(found.group(1))
    assert set(values) == {"modelgate-image-digest", "modelgate-wasm-sha256"}
    assert all(len(v) == 1 for v in values.values()), values


# --- names that must line up ---------------------------------------------------------------


def gateway_ref(ref: dict, default_namespace: str) -> tuple[str, str]:
    assert ref.get("group", "gateway.networking.k8s.io") == "gateway.networking.k8s.io"
    assert ref.get("kind", "Gateway") == "Gateway"
    return ref.get("namespace", default_namespace), ref["name"]


def test_policies_and_routes_attach_to_the_gateway_deploy_defines():
    gateways = {(d["metadata"]["namespace"], d["metadata"]["name"]) for _, d in objects_of("Gateway")}
    assert gateways == {("kserve", "kserve-ingress-gateway")}
    for kind in ("EnvoyExtensionPolicy", "BackendTrafficPolicy", "WasmPlugin"):
        for path, doc in objects_of(kind):
            for ref in doc["spec"]["targetRefs"]:
                # Policy target references are local: the policy lives beside its Gateway.
                assert "namespace" not in ref, path
                assert gateway_ref(ref, doc["metadata"]["namespace"]) in gateways, path
    for path, route in objects_of("HTTPRoute") + objects_of("GRPCRoute"):
        for ref in route["spec"]["parentRefs"]:
            assert gateway_ref(ref, route["metadata"]["namespace"]) in gateways, path


def test_gateway_has_http_and_https_listeners_with_a_tls_secret():
    gateway = one("Gateway", "kserve-ingress-gateway")
    listeners = {listener["protocol"]: listener for listener in gateway["spec"]["listeners"]}
    assert set(listeners) == {"HTTP", "HTTPS"}
    tls = listeners["HTTPS"]["tls"]
    assert tls["mode"] == "Terminate"
    assert [ref.get("kind", "Secret") for ref in tls["certificateRefs"]] == ["Secret"]
    gateway_class = one("GatewayClass", gateway["spec"]["gatewayClassName"])
    params = gateway_class["spec"]["parametersRef"]
    proxy = one("EnvoyProxy", params["name"])
    assert proxy["metadata"]["namespace"] == params["namespace"]


def test_every_model_has_an_inference_service_and_a_route_on_the_routing_header():
    config = filter_config()
    header = config["routing"]["header"]
    assert header == "x-gateway-model-name"
    services = {d["metadata"]["name"]: d for _, d in objects_of("InferenceService")}
    assert set(config["models"]) == set(services) == {"sklearn-iris", "sklearn-mnist"}
    routed: dict[str, set[str]] = {}
    for _, route in objects_of("HTTPRoute"):
        for rule in route["spec"]["rules"]:
            for match in rule.get("matches", []):
                models = {h["value"] for h in match.get("headers", []) if h["name"] == header}
                for model in models:
                    assert route["metadata"]["namespace"] == services[model]["metadata"]["namespace"]
                    routed.setdefault(model, set()).update(b["name"] for b in rule["backendRefs"])
    assert routed == {
        "sklearn-iris": {"sklearn-iris-predictor"},
        "sklearn-mnist": {"sklearn-mnist-predictor", "sklearn-mnist-explainer"},
    }
    assert "explainer" in services["sklearn-mnist"]["spec"]


def test_model_routes_cover_the_v1_and_v2_paths():
    for model in ("sklearn-iris", "sklearn-mnist"):
        route = one("HTTPRoute", model)
        prefixes = {
            m["path"]["value"] for r in route["spec"]["rules"] for m in r["matches"] if m["path"]["type"] == "PathPrefix"
        }
        assert prefixes == {"/v1/models", "/v2/models"}


def kserve_service_ports(inference_service: dict) -> dict[int, int]:
    """The predictor Service's ports (port -> container port) as KServe's Standard mode makes
    them: the first container port as 80, every further one under its own number
    (pkg/controller/v1beta1/inferenceservice/reconcilers/service/service_reconciler.go,
    `createDefaultSvc`); no ports declared is 80 -> 8080."""
    ports = inference_service["spec"]["predictor"]["sklearn"].get("ports", [])
    if not ports:
        return {80: 8080}
    return {80: ports[0]["containerPort"], **{p["containerPort"]: p["containerPort"] for p in ports[1:]}}


def test_the_grpc_route_reaches_kserves_grpc_port_on_the_https_listener():
    from kserve.model_server import parser as kserve_args

    route = one("GRPCRoute", "sklearn-iris-grpc")
    (parent,) = route["spec"]["parentRefs"]
    assert (parent["namespace"], parent["name"], parent["sectionName"]) == ("kserve", "kserve-ingress-gateway", "https")
    (rule,) = route["spec"]["rules"]
    assert [m["method"] for m in rule["matches"]] == [{"type": "Exact", "service": "inference.GRPCInferenceService"}]
    # By host: the model is in the message, which Envoy has not read when it routes.
    assert route["spec"]["hostnames"] and all("headers" not in m for m in rule["matches"])
    (backend,) = rule["backendRefs"]
    assert backend["name"] == "sklearn-iris-predictor"
    ports = kserve_service_ports(one("InferenceService", "sklearn-iris"))
    # The container port behind it is where KServe's model server serves gRPC by default.
    assert ports[backend["port"]] == kserve_args.parse_args([]).grpc_port == 8081
    # The REST route still reaches the REST port (the server's --http_port default).
    (http_backend,) = one("HTTPRoute", "sklearn-iris")["spec"]["rules"][0]["backendRefs"]
    assert ports[http_backend["port"]] == kserve_args.parse_args([]).http_port
    policy = one("NetworkPolicy", "model-servers-from-gateway-only")
    admitted = {p["port"] for rule in policy["spec"]["ingress"] for p in rule["ports"]}
    assert set(ports.values()) <= admitted


def test_fallback_route_catches_model_paths_before_the_filter_names_the_model():
    route = one("HTTPRoute", "model-fallback")
    (rule,) = route["spec"]["rules"]
    assert all("headers" not in m for m in rule["matches"])
    assert {m["path"]["value"] for m in rule["matches"]} == {"/v1", "/v2"}
    (ext,) = [f["extensionRef"] for f in rule["filters"] if f["type"] == "ExtensionRef"]
    response = one(ext["kind"], ext["name"])
    assert response["metadata"]["namespace"] == route["metadata"]["namespace"]
    assert response["spec"]["directResponse"]["statusCode"] == 404


def test_global_limit_keys_on_the_headers_the_filter_sets():
    config = filter_config()
    set_by_filter = {config["routing"]["header"], config["rateLimit"]["keyHeader"]}
    (_, policy), = objects_of("BackendTrafficPolicy")
    for rule in policy["spec"]["rateLimit"]["global"]["rules"]:
        (selector,) = rule["clientSelectors"]
        names = {h["name"]: h for h in selector["headers"]}
        assert set(names) == set_by_filter
        assert names[config["rateLimit"]["keyHeader"]]["type"] == "Distinct"
        assert names[config["routing"]["header"]]["value"] in config["models"]


def test_every_manifest_is_applied_by_a_kustomization_or_is_a_named_alternative():
    alternatives = {HTTP_EEP}
    listed: set[Path] = set()
    for kustomization in DEPLOY.rglob("kustomization.yaml"):
        (doc,) = load_docs(kustomization)
        for resource in doc["resources"]:
            target = (kustomization.parent / resource).resolve()
            assert target.exists(), f"{kustomization}: {resource} does not exist"
            if target.is_file():
                listed.add(target)
    assert set(manifest_files()) - listed == alternatives
    assert not [d for _, d in all_objects() if "namespace" not in d["metadata"] and d["kind"] not in ("Namespace", "GatewayClass")]


def test_istio_plugin_loads_the_same_image_as_the_policy():
    (plugin,) = load_docs(WASMPLUGIN)
    image = wasm_entry(OCI_EEP)["code"]["image"]
    assert plugin["spec"]["url"] == f"oci://{image['url']}"
    assert plugin["spec"]["sha256"] == image["sha256"]
    assert plugin["spec"]["pluginName"] == wasm_entry(OCI_EEP)["rootID"]


def envoy_tags(name: str, extractors: list[dict]) -> tuple[str, dict[str, str]]:
    """Envoy's regex tag extraction: each extractor matches the original name; its first group
    is cut from the name and its second group is the tag's value."""
    cuts, tags = [], {}
    for extractor in extractors:
        match = re.search(extractor["regex"], name)
        if match:
            cuts.append(match.span(1))
            tags[extractor["tag_name"]] = match.group(2)
    for start, end in sorted(cuts, reverse=True):
        name = name[:start] + name[end:]
    return name, tags


def prometheus_name(tag_extracted: str) -> str | None:
    """Envoy's PrometheusStatsFormatter::metricName for a Wasm metric: strip the `wasmcustom`
    namespace, sanitise, add no `envoy_` prefix, drop a name that starts with a digit."""
    assert tag_extracted.startswith("wasmcustom.")
    name = re.sub(r"[^a-zA-Z0-9_]", "_", tag_extracted.removeprefix("wasmcustom."))
    return None if not name or name[0].isdigit() else name


def test_stats_tags_turn_the_filter_metric_names_into_model_and_outcome_labels():
    proxy = one("EnvoyProxy", "modelgate-proxy")
    patches = proxy["spec"]["bootstrap"]["jsonPatches"]
    assert {p["path"] for p in patches} == {"/stats_config/stats_tags/-"}
    extractors = [p["value"] for p in patches]
    # Metric names as filter/src/metrics.rs defines them, as Envoy stores them (`wasmcustom.`).
    outcomes = ["allowed", "unauthenticated", "forbidden", "rate_limited", "invalid", "unknown_model", "internal_error"]
    for model in [*filter_config()["models"], "_none"]:
        for outcome in outcomes:
            name, tags = envoy_tags(f"wasmcustom.modelgate.requests.model.{model}.outcome.{outcome}", extractors)
            assert (prometheus_name(name), tags) == ("modelgate_requests", {"model": model, "outcome": outcome})
        name, tags = envoy_tags(f"wasmcustom.modelgate.shadow_rate_limited.model.{model}", extractors)
        assert (prometheus_name(name), tags) == ("modelgate_shadow_rate_limited", {"model": model})
    name, tags = envoy_tags("wasmcustom.modelgate.request.duration_ms", extractors)
    assert (prometheus_name(name), tags) == ("modelgate_request_duration_ms", {})


def test_stats_tags_give_the_gen_ai_histograms_their_opentelemetry_names_and_labels():
    """The names docs/config.md ("Metrics") gives the filter's GenAI histograms
    (filter/src/gen_ai.rs) are what Envoy exports under the EnvoyProxy's rules, and the
    rules of the two families leave each other's metrics alone."""
    extractors = [p["value"] for p in one("EnvoyProxy", "modelgate-proxy")["spec"]["bootstrap"]["jsonPatches"]]
    # Model names as the filter writes them in metric names (dots become `_`).
    for model in ["markov-zen", "llama_3_1-8b", "m"]:
        for caller_class in ["free", "other", "authenticated", "anonymous"]:
            for token_type in ["input", "output"]:
                name, tags = envoy_tags(
                    f"wasmcustom.gen_ai.client.token.usage.model.{model}.caller_class.{caller_class}.token_type.{token_type}",
                    extractors,
                )
                assert (prometheus_name(name), tags) == (
                    "gen_ai_client_token_usage",
                    {"gen_ai_request_model": model, "caller_class": caller_class, "gen_ai_token_type": token_type},
                )
        for histogram in ["gen_ai.server.request.duration_ms", "gen_ai.server.time_to_first_token_ms"]:
            name, tags = envoy_tags(f"wasmcustom.{histogram}.model.{model}", extractors)
            assert (prometheus_name(name), tags) == (histogram.replace(".", "_"), {"gen_ai_request_model": model})
        # The request counter of a model named like a GenAI label keeps its own labels only.
        name, tags = envoy_tags(f"wasmcustom.modelgate.requests.model.{model}.outcome.allowed", extractors)
        assert (prometheus_name(name), tags) == ("modelgate_requests", {"model": model, "outcome": "allowed"})
