"""Behind the route KServe itself generates for an InferenceService (`^/.*$` to the
predictor, REFERENCE.md section 2), every path the filter forwards reaches the model server.

KServe's server has endpoints outside `/v1/models/{m}` and `/v2/models/{m}` that act on a
model: `POST /v2/repository/models/{m}/load` and `.../unload` (checked against KServe 0.21
here: after `unload`, predicts answer 404 until the model is loaded again). If the filter
treats those paths as model-less, any caller with any valid token can unload any model.
deploy/'s own HTTPRoutes send only `/v1/models` and `/v2/models` to predictors, so the hole
opens only where KServe's generated routes are in place; the filter should still close it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from reliability.harness import configs
from reliability.harness.ports import suite_ports
from reliability.harness.rawhttp import exchange, request_bytes
from reliability.harness.stack import Stack
from reliability.harness.tokens import KeySet

REPOSITORY_ACTIONS = [f"/v2/repository/models/{configs.IRIS}/unload", f"/v2/repository/models/{configs.IRIS}/load"]


@pytest.fixture(scope="module")
def module_stack(tmp_path_factory: pytest.TempPathFactory, keys: KeySet) -> Iterator[Stack]:
    stack = Stack(Path(tmp_path_factory.mktemp("catch-all")), keys, suite_ports, kserve_catch_all=True).start()
    yield stack
    stack.stop()


def post(stack: Stack, path: str, token: str | None) -> int:
    headers = [("Authorization", f"Bearer {token}")] if token else []
    response = exchange(stack.port, request_bytes("POST", path, headers), "POST")
    assert response is not None, "closed without an answer"
    return response.status


def test_control_the_catch_all_route_forwards_model_less_paths(stack: Stack, keys: KeySet) -> None:
    """What makes the cases below matter: an authenticated model-less path goes upstream."""
    post(stack, "/v2/health/ready", keys.rs256(keys.claims(scope="models:wine")))
    assert [r.target for r in stack.seen()] == ["/v2/health/ready"]


@pytest.mark.parametrize("path", REPOSITORY_ACTIONS)
def test_repository_action_needs_the_models_authorization(stack: Stack, keys: KeySet, path: str) -> None:
    status = post(stack, path, keys.rs256(keys.claims(scope="models:wine")))
    assert status in (403, 404), f"{path} with a token for another model answered {status}"
    stack.assert_upstream_saw_nothing(f"{path} with a token for another model")


@pytest.mark.parametrize("path", REPOSITORY_ACTIONS)
def test_repository_action_without_a_token_is_401(stack: Stack, path: str) -> None:
    assert post(stack, path, None) == 401
    stack.assert_upstream_saw_nothing(f"{path} without a token")
