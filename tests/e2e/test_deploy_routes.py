"""The suite's gateway runs deploy/ itself: a route removed from deploy/ is a request the
walkthrough no longer gets answered.

A scratch copy of deploy/ without deploy/kserve/httproute-sklearn-iris.yaml (dropped from its
kustomization, as a user deleting the route would), under the same local overlay the stack
uses, served by a second `modelgate serve --manifests` in front of the stack's own KServe
servers: the walkthrough's iris prediction, 200 through the stack, gets the fallback route's
404 (deploy/gateway/model-fallback.yaml) and reaches no model server.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import requests
import yaml

import demo_config
import stack as stack_mod
from helpers import total_requests

IRIS_ROUTE = "httproute-sklearn-iris.yaml"
BODY = {"instances": [[6.8, 2.8, 4.8, 1.4]]}


def deploy_without(tmp: Path, route_file: str) -> Path:
    """A copy of deploy/ whose kserve/ kustomization no longer lists `route_file`."""
    copy = tmp / "deploy"
    shutil.copytree(demo_config.DEPLOY, copy)
    kustomization = copy / "kserve" / "kustomization.yaml"
    doc = yaml.safe_load(kustomization.read_text())
    assert route_file in doc["resources"], doc
    doc["resources"].remove(route_file)
    kustomization.write_text(yaml.safe_dump(doc))
    (copy / "kserve" / route_file).unlink()
    return copy


@pytest.fixture(scope="module")
def gateway_without_iris_route(stack, tmp_path_factory):
    """The stack's overlay over deploy/ minus the iris route, on ports of its own."""
    tmp = tmp_path_factory.mktemp("no-iris-route")
    overlay = demo_config.local_overlay(
        tmp / "overlay",
        stack.keyset,
        stack.cert_path.read_text(),
        (stack.run_dir / "tls" / "server-key.pem").read_text(),
        deploy=deploy_without(tmp, IRIS_ROUTE),
    )
    spare = stack_mod.free_ports()
    ports = dataclasses.replace(stack.ports, gateway=spare.gateway, https=spare.https, admin=spare.admin)
    proc = stack_mod.Process("modelgate-no-iris-route", stack_mod.manifests_argv(overlay, ports), tmp / "modelgate.log")
    with stack_mod.serving(proc, f"http://127.0.0.1:{ports.admin}/ready", env={**os.environ, **stack.filter_env}):
        yield f"https://localhost:{ports.https}"


def test_removing_deploys_iris_route_breaks_the_walkthroughs_prediction(stack, gw, gateway_without_iris_route):
    path = f"/v1/models/{demo_config.IRIS}:predict"
    # Through the stack (deploy/ as it is): KServe's answer.
    r = gw.post(f"{stack.gateway}{path}", json=BODY, timeout=10)
    assert (r.status_code, r.json()) == (200, {"predictions": [1]}), r.text
    # Without the route: the filter still lets the request through (same policy), but no route
    # matches its model header, so deploy/'s fallback answers and no model server sees it.
    before = total_requests(stack)
    r = gw.post(f"{gateway_without_iris_route}{path}", json=BODY, timeout=10)
    assert r.status_code == 404, r.text
    fallback = demo_config.manifest(demo_config.DEPLOY / "gateway" / "model-fallback.yaml", "HTTPRouteFilter")
    assert r.json() == json.loads(fallback["spec"]["directResponse"]["body"]["inline"])
    assert total_requests(stack) == before
    # The other model's routes are still deploy/'s: wine (the overlay's) still answers.
    wine = gw.post(
        f"{gateway_without_iris_route}/v1/models/{demo_config.WINE}:predict",
        json={"instances": [[13.2, 1.78, 2.14, 11.2, 100.0, 2.65, 2.76, 0.26, 1.28, 4.38, 1.05, 3.4, 1050.0]]},
        timeout=10,
    )
    assert wine.status_code == 200, wine.text


def test_the_stacks_overlay_checks_ok_with_every_service_mapped(stack):
    argv = stack_mod.manifests_argv(stack.overlay_path, stack.ports)
    argv[1] = "check"
    result = subprocess.run(argv, env={**os.environ, **stack.filter_env}, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "OK", result.stdout
    # What is not emulated is listed; every Service a route sends to has its model server (the
    # tracing collector has none: the e2e stack exports no spans, tests/deploy/test_tracing.py does).
    assert any("not emulated" in line for line in lines[1:]), result.stdout
    assert not [line for line in lines if "Service " in line and "has no local address" in line], result.stdout
