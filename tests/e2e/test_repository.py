"""KServe's model repository extension (`POST /v2/repository/models/{m}/load|unload`) through
the gateway, against the real KServe servers.

An `unload` takes the model off that server until it restarts (every later predict gets 404,
and `load` answers 503), so it needs its own permission: `adminScopes` on the model, refused
for every caller otherwise. The demo policy gives sklearn-wine `adminScopes`
(`admin:sklearn-wine`) and sklearn-iris none. The model servers' own request counters
(`model_server_requests_total`, kind `v2_other` for these paths) prove what reached them,
and each server's `/v2/models/{m}/ready`, asked directly, proves the model is still loaded.
`unload` with the admin scope is never sent here: it would take wine away from the rest of
the suite; `load` of a loaded model reaches the same permission and answers 200.
"""

from __future__ import annotations

import pytest
import requests

import demo_config
from helpers import model_server_requests

IRIS, WINE = demo_config.IRIS, demo_config.WINE
SERVERS = {IRIS: ["iris-1", "iris-2"], WINE: ["wine"]}


def repository_counts(stack) -> dict[str, float]:
    """`v2_other` (the repository paths among them) as each predictor counts it."""
    return {s: model_server_requests(stack, s).get("v2_other", 0) for s in ("iris-1", "iris-2", "wine")}


def repository_action(stack, model: str, action: str, token: str | None) -> requests.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return requests.post(f"{stack.gateway}/v2/repository/models/{model}/{action}", headers=headers, timeout=10)


def assert_still_loaded(stack, model: str) -> None:
    for server in SERVERS[model]:
        r = requests.get(f"{stack.model_server_url(server)}/v2/models/{model}/ready", timeout=5)
        assert r.status_code == 200, f"{model} is no longer loaded on {server}: {r.status_code} {r.text}"


@pytest.mark.parametrize("action", ["unload", "load"])
@pytest.mark.parametrize(
    "model,scope",
    [(IRIS, demo_config.IRIS_SCOPE), (WINE, demo_config.WINE_SCOPE)],
    ids=["iris", "wine"],
)
def test_a_predict_token_cannot_use_the_repository_api(stack, subject, model, scope, action):
    token = stack.token("RS256", sub=subject, scope=scope)
    before = repository_counts(stack)
    r = repository_action(stack, model, action, token)
    assert r.status_code == 403, r.text
    assert r.headers["content-type"] == "application/json"
    if model == IRIS:
        # No adminScopes: no token can do it, so the answer names the switch, not a scope.
        assert r.json() == {
            "error": f"forbidden: the model repository API (load, unload) is not enabled for model {model}"
        }
    else:
        assert r.json()["error"] == f"forbidden: missing scope {demo_config.WINE_ADMIN_SCOPE} for model {model}"
        assert f'scope="{demo_config.WINE_ADMIN_SCOPE}"' in r.headers["www-authenticate"]
    assert repository_counts(stack) == before, "a refused repository action reached a model server"
    assert_still_loaded(stack, model)
    # And the token still does what it may: predict.
    features = demo_config.IRIS_FEATURES if model == IRIS else demo_config.WINE_FEATURES
    predict = requests.post(
        f"{stack.gateway}/v1/models/{model}:predict",
        json={"instances": [[1.0] * features]},
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert predict.status_code == 200, predict.text


def test_without_a_token_the_repository_api_is_401(stack):
    before = repository_counts(stack)
    for model in (IRIS, WINE):
        assert repository_action(stack, model, "unload", None).status_code == 401
    assert repository_counts(stack) == before


def test_the_admin_scope_of_one_model_does_not_reach_another(stack, subject):
    token = stack.token("RS256", sub=subject, scope=f"{demo_config.WINE_ADMIN_SCOPE} {demo_config.IRIS_SCOPE}")
    before = repository_counts(stack)
    r = repository_action(stack, IRIS, "unload", token)
    assert r.status_code == 403, r.text
    assert repository_counts(stack) == before
    assert_still_loaded(stack, IRIS)


def test_the_models_admin_scope_reaches_kserve(stack, subject):
    """With `admin:sklearn-wine` (and no predict scope), `load` reaches wine's server and
    KServe answers it; only wine's server counts it."""
    token = stack.token("RS256", sub=subject, scope=demo_config.WINE_ADMIN_SCOPE)
    before = repository_counts(stack)
    r = repository_action(stack, WINE, "load", token)
    assert r.status_code == 200, r.text
    assert r.json() == {"name": WINE, "load": True}
    after = repository_counts(stack)
    assert after["wine"] == before["wine"] + 1
    assert (after["iris-1"], after["iris-2"]) == (before["iris-1"], before["iris-2"])
    assert_still_loaded(stack, WINE)
