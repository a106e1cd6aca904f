"""deploy/failure-policy-reload/: the EnvoyPatchPolicy that selects Envoy's FAIL_RELOAD names
exactly what Envoy Gateway generates for deploy/'s own policy and Gateway.

Envoy Gateway names the Wasm HTTP filter `envoy.filters.http.wasm/<kind>/<ns>/<name>/wasm/<i>`
(internal/xds/translator/wasm.go `wasmFilterName`, internal/gatewayapi/envoyextensionpolicy.go
`irConfigNameForWasm`, helpers.go `irConfigName`) and each listener
`<gateway ns>/<gateway name>/<listener name>`; a patch that names anything else matches nothing
and Envoy Gateway reports the policy as not applied. Envoy rejects a PluginConfig with both
`fail_open` and `failure_policy` (source/extensions/common/wasm/wasm.cc, `PluginConfig`).
"""

from __future__ import annotations

import re

from deploy_support import DEPLOY, load_docs, objects_of, one

PATCH = DEPLOY / "failure-policy-reload" / "envoypatchpolicy.yaml"
FILTER_IN_PATH = re.compile(r"@\.name=='(?P<name>[^']+)'")


def patch_policy() -> dict:
    (policy,) = load_docs(PATCH)
    return policy


def test_the_patch_targets_the_wasm_filter_envoy_gateway_names_for_the_modelgate_policy():
    (eep,) = [d for p, d in objects_of("EnvoyExtensionPolicy") if p.name == "envoyextensionpolicy.yaml"]
    (index, entry), = [(i, w) for i, w in enumerate(eep["spec"]["wasm"]) if w["name"] == "modelgate"]
    expected = (
        f"envoy.filters.http.wasm/envoyextensionpolicy/{eep['metadata']['namespace']}/"
        f"{eep['metadata']['name']}/wasm/{index}"
    )
    patches = patch_policy()["spec"]["jsonPatches"]
    assert patches
    for patch in patches:
        match = FILTER_IN_PATH.search(patch["operation"]["jsonPath"])
        assert match and match["name"] == expected, patch
        assert patch["operation"]["jsonPath"].endswith(".typed_config.config"), patch
    # Both fields of Envoy's PluginConfig, and fail_open left false as Envoy requires.
    values = {p["operation"]["path"]: p["operation"]["value"] for p in patches}
    assert values["/failure_policy"] == "FAIL_RELOAD"
    assert values["/reload_config"]["backoff"]["base_interval"].endswith("s")
    assert entry.get("failOpen", False) is False


def test_the_patch_covers_every_listener_of_the_gateway_it_targets():
    policy = patch_policy()
    ref = policy["spec"]["targetRef"]
    assert (ref["kind"], ref["name"]) == ("Gateway", "kserve-ingress-gateway")
    gateway = one("Gateway", ref["name"])
    assert gateway["metadata"]["namespace"] == policy["metadata"]["namespace"]
    listeners = {
        f"{gateway['metadata']['namespace']}/{gateway['metadata']['name']}/{listener['name']}"
        for listener in gateway["spec"]["listeners"]
    }
    for path in ("/failure_policy", "/reload_config"):
        patched = {p["name"] for p in policy["spec"]["jsonPatches"] if p["operation"]["path"] == path}
        assert patched == listeners, path
