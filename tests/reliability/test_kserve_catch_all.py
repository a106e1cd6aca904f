"""Behind the route KServe itself generates for an InferenceService (`^/.*$` to the
predictor, REFERENCE.md section 2), every path the filter forwards reaches the model server.
The stack's catch-all route (harness/stack.py) is that route.

KServe's server has endpoints outside `/v1/models/{m}` and `/v2/models/{m}` that act on a
model: `POST /v2/repository/models/{m}/load` and `.../unload` (checked against KServe 0.21
here: after `unload`, predicts answer 404 until the model is loaded again). If the filter
treats those paths as model-less, any caller with any valid token can unload any model; if
it treats them as ordinary model requests, any caller allowed to predict can. They need the
model's own `adminScopes`, and a model without them (as every model here) refuses them to
everyone. deploy/'s own HTTPRoutes send only `/v1/models` and `/v2/models` to predictors, so
the hole opens only where KServe's generated routes are in place; the filter closes it.
"""

from __future__ import annotations

import pytest

from reliability.harness import configs
from reliability.harness.rawhttp import exchange, request_bytes
from reliability.harness.stack import CATCH_ALL, Stack
from reliability.harness.tokens import KeySet

REPOSITORY_ACTIONS = [f"/v2/repository/models/{configs.IRIS}/unload", f"/v2/repository/models/{configs.IRIS}/load"]


def post(stack: Stack, path: str, token: str | None) -> int:
    headers = [("Authorization", f"Bearer {token}")] if token else []
    response = exchange(stack.port, request_bytes("POST", path, headers), "POST")
    assert response is not None, "closed without an answer"
    return response.status


def test_control_the_catch_all_route_forwards_model_less_paths(stack: Stack, keys: KeySet) -> None:
    """What makes the cases below matter: an authenticated model-less path goes upstream."""
    post(stack, "/v2/health/ready", keys.rs256(keys.claims(scope="models:wine")))
    assert stack.reached() == [(CATCH_ALL, "POST", "/v2/health/ready", None)]


def test_repository_action_with_the_models_admin_scope_reaches_the_models_cluster(stack: Stack, keys: KeySet) -> None:
    """The filter reads the model from the repository path: wine (the one model with
    `adminScopes` here) gets it on wine's cluster, with wine's routing header."""
    path = f"/v2/repository/models/{configs.WINE}/unload"
    post(stack, path, keys.rs256(keys.claims(scope=configs.WINE_ADMIN_SCOPE)))
    assert stack.reached() == [("wine", "POST", path, configs.WINE)]


def test_the_admin_scope_of_one_model_does_not_open_another(stack: Stack, keys: KeySet) -> None:
    path = REPOSITORY_ACTIONS[0]
    status = post(stack, path, keys.rs256(keys.claims(scope=f"{configs.WINE_ADMIN_SCOPE} models:iris")))
    assert status == 403, f"{path} with wine's admin scope answered {status}"
    stack.assert_upstream_saw_nothing(f"{path} with another model's admin scope")


@pytest.mark.parametrize("path", REPOSITORY_ACTIONS)
def test_repository_action_needs_the_models_authorization(stack: Stack, keys: KeySet, path: str) -> None:
    status = post(stack, path, keys.rs256(keys.claims(scope="models:wine")))
    assert status == 403, f"{path} with a token for another model answered {status}"
    stack.assert_upstream_saw_nothing(f"{path} with a token for another model")


@pytest.mark.parametrize("path", REPOSITORY_ACTIONS)
def test_repository_action_with_the_models_own_predict_scope_is_403(stack: Stack, keys: KeySet, path: str) -> None:
    status = post(stack, path, keys.rs256(keys.claims(scope="models:iris")))
    assert status == 403, f"{path} with a token that may predict on the model answered {status}"
    stack.assert_upstream_saw_nothing(f"{path} with a predict token")


@pytest.mark.parametrize("path", REPOSITORY_ACTIONS)
def test_repository_action_without_a_token_is_401(stack: Stack, path: str) -> None:
    assert post(stack, path, None) == 401
    stack.assert_upstream_saw_nothing(f"{path} without a token")
