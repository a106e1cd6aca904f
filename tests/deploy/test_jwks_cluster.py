"""deploy/identity-provider/: the cluster a remote JWKS is fetched through exists under Envoy
Gateway, and it is the one the documented `jwt.remoteJwks` names.

Envoy Gateway v1.9 makes clusters only for route and policy backends; an EnvoyPatchPolicy JSON
patch with `op: add` and no `path` adds its value as a whole xDS resource
(internal/xds/translator/jsonpatch.go). The validator checks the manifest's schema
(test_manifests.py); these tests check what a schema cannot: that the patch is that kind of
patch, that the cluster is consistent (names, SNI, SAN, Envoy Gateway's CA bundle path), and
that the policy the docs show compiles in the real filter with that cluster name.
"""

from __future__ import annotations

import copy
import json
import re

import yaml

from deploy_support import DEPLOY, REPO, load_docs, one, run
from test_policy_in_host import deployed_policy, from_policy, host_config, host_env

PATCH = DEPLOY / "identity-provider" / "envoypatchpolicy-jwks-cluster.yaml"
CLUSTER_TYPE = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
# The system trust store in Envoy Gateway's Envoy image (internal/utils/cert/cert.go).
EG_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
CONFIG_DOC = REPO / "docs" / "config.md"


def added_cluster() -> dict:
    (policy,) = load_docs(PATCH)
    (patch,) = policy["spec"]["jsonPatches"]
    assert patch["type"] == CLUSTER_TYPE
    operation = patch["operation"]
    # Only `add` without `path`/`jsonPath` creates a resource; anything else patches an
    # existing one, and there is no cluster of that name to patch.
    assert operation["op"] == "add" and "path" not in operation and "jsonPath" not in operation
    cluster = operation["value"]
    assert patch["name"] == cluster["name"] == cluster["load_assignment"]["cluster_name"]
    return cluster


def documented_jwt() -> dict:
    """The `jwt` example of docs/config.md's "Remote JWKS" section."""
    text = CONFIG_DOC.read_text()
    section = text[text.index("### Remote JWKS") :]
    block = re.search(r"```json\n(.*?)```", section, re.S).group(1)
    return json.loads("{" + block + "}")["jwt"]


def test_the_patch_adds_a_tls_cluster_to_the_gateway_deploy_defines():
    (policy,) = load_docs(PATCH)
    gateway = one("Gateway", "kserve-ingress-gateway")
    ref = policy["spec"]["targetRef"]
    assert (ref["kind"], ref["name"]) == ("Gateway", gateway["metadata"]["name"])
    # A policy attaches only to a Gateway in its own namespace.
    assert policy["metadata"]["namespace"] == gateway["metadata"]["namespace"]

    cluster = added_cluster()
    (locality,) = cluster["load_assignment"]["endpoints"]
    (endpoint,) = locality["lb_endpoints"]
    address = endpoint["endpoint"]["address"]["socket_address"]
    tls = cluster["transport_socket"]
    assert tls["name"] == "envoy.transport_sockets.tls"
    context = tls["typed_config"]
    assert context["@type"].endswith("UpstreamTlsContext")
    assert address["port_value"] == 443
    assert context["sni"] == address["address"]
    validation = context["common_tls_context"]["validation_context"]
    assert validation["trusted_ca"]["filename"] == EG_CA_BUNDLE
    (san,) = validation["match_typed_subject_alt_names"]
    assert san == {"san_type": "DNS", "matcher": {"exact": address["address"]}}


def test_the_documented_remote_jwks_uses_that_cluster_and_host():
    cluster = added_cluster()
    remote = documented_jwt()["remoteJwks"]
    host = cluster["transport_socket"]["typed_config"]["sni"]
    assert remote["cluster"] == cluster["name"]
    assert remote["authority"] == host


def test_the_filter_accepts_the_deployed_policy_with_the_documented_remote_jwks(host_bin, wasm_bytes, tmp_path):
    """`modelgate check` runs the filter's on_configure on the deployed policy whose inline keys
    are swapped for the documented remoteJwks, with a cluster of that name."""
    policy = copy.deepcopy(deployed_policy())
    jwt = policy["spec"]["wasm"][0]["config"]["jwt"]
    documented = documented_jwt()
    del jwt["jwks"]
    jwt["remoteJwks"] = documented["remoteJwks"]
    changed = tmp_path / "policy-remote-jwks.yaml"
    changed.write_text(yaml.safe_dump(policy))
    config_path = host_config(tmp_path, "remote-jwks", from_policy(changed), 18499, 18498, 18497)
    config = yaml.safe_load(config_path.read_text())
    # Nothing listens there: check only runs on_configure (the first fetch fails and is logged).
    config["clusters"].append({"name": documented["remoteJwks"]["cluster"], "endpoints": ["127.0.0.1:18496"]})
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    result = run([str(host_bin), "check", "--config", str(config_path)], env=host_env())
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "OK"

    # And a typo in it is refused with its field path: the filter really read it.
    jwt["remoteJwks"]["refreshIntervalSecond"] = 60
    changed.write_text(yaml.safe_dump(policy))
    result = run([str(host_bin), "check", "--config", str(config_path)], env=host_env())
    assert result.returncode != 0
    assert "jwt.remoteJwks" in result.stdout + result.stderr
