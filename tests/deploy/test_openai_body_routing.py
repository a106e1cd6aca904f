"""deploy/openai-body-routing/: the EnvoyPatchPolicy that sets the Wasm PluginConfig's
`allow_on_headers_stop_iteration` names exactly what Envoy Gateway generates for deploy/'s own
policy and Gateway, and sets nothing else.

Envoy Gateway names the Wasm HTTP filter `envoy.filters.http.wasm/<kind>/<ns>/<name>/wasm/<i>`
(internal/xds/translator/wasm.go `wasmFilterName`) and each listener
`<gateway ns>/<gateway name>/<listener name>`; a patch that names anything else matches nothing.
Envoy reads the field from the Wasm filter's PluginConfig (`typed_config.config`,
source/extensions/common/wasm/context.cc); false, its default, would stall a filter that
holds the request headers to read the body (proxy-wasm-cpp-host src/context.cc).
"""

from __future__ import annotations

import re

from deploy_support import DEPLOY, load_docs, objects_of, one

PATCH = DEPLOY / "openai-body-routing" / "envoypatchpolicy.yaml"
FILTER_IN_PATH = re.compile(r"@\.name=='(?P<name>[^']+)'")


def patch_policy() -> dict:
    (policy,) = load_docs(PATCH)
    return policy


def test_the_patch_sets_allow_on_headers_stop_iteration_on_the_modelgate_wasm_filter():
    (eep,) = [d for p, d in objects_of("EnvoyExtensionPolicy") if p.name == "envoyextensionpolicy.yaml"]
    (index,) = [i for i, w in enumerate(eep["spec"]["wasm"]) if w["name"] == "modelgate"]
    expected = (
        f"envoy.filters.http.wasm/envoyextensionpolicy/{eep['metadata']['namespace']}/"
        f"{eep['metadata']['name']}/wasm/{index}"
    )
    patches = patch_policy()["spec"]["jsonPatches"]
    assert patches
    for patch in patches:
        assert patch["type"] == "type.googleapis.com/envoy.config.listener.v3.Listener"
        operation = patch["operation"]
        match = FILTER_IN_PATH.search(operation["jsonPath"])
        assert match and match["name"] == expected, patch
        assert operation["jsonPath"].endswith(".typed_config.config"), patch
        assert (operation["op"], operation["path"], operation["value"]) == (
            "add",
            "/allow_on_headers_stop_iteration",
            True,
        )


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
    assert {p["name"] for p in policy["spec"]["jsonPatches"]} == listeners
