"""Authentication, authorization and rate limiting through the gateway, with tokens minted by
PyJWT + cryptography (an implementation independent of the filter's jsonwebtoken).

Every denied request is also checked on the model servers' own counters: it never arrived.
"""

from __future__ import annotations

import base64
import json
import time

import jwt
import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import rsa

import demo_config
import keys
from conftest import BOTH_SCOPES
from helpers import model_server_requests, received_headers, total_requests

IRIS = demo_config.IRIS
WINE = demo_config.WINE
IRIS_BODY = {"instances": [[5.1, 3.5, 1.4, 0.2]]}
WINE_BODY = {"instances": [[13.2, 1.78, 2.14, 11.2, 100.0, 2.65, 2.76, 0.26, 1.28, 4.38, 1.05, 3.4, 1050.0]]}


def predict(stack, model: str, token: str | None, body: dict | None = None) -> requests.Response:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    body = body or (IRIS_BODY if model == IRIS else WINE_BODY)
    return requests.post(f"{stack.gateway}/v1/models/{model}:predict", json=body, headers=headers, timeout=10)


@pytest.mark.parametrize("alg", keys.ALGORITHMS)
def test_accepts_a_valid_token_of_every_algorithm(stack, subject, alg):
    r = predict(stack, IRIS, stack.token(alg, sub=subject, scope=BOTH_SCOPES))
    assert r.status_code == 200, r.text
    assert r.json() == {"predictions": [0]}


def test_accepts_the_token_from_the_https_listener(stack, token):
    r = requests.post(
        f"{stack.gateway_tls}/v1/models/{IRIS}:predict",
        json=IRIS_BODY,
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
        verify=str(stack.cert_path),
    )
    assert r.status_code == 200, r.text


def _other_rsa_key_token(stack, subject) -> str:
    """Signed by a key the JWKS does not hold, under a kid it does hold."""
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return jwt.encode(
        keys.claims(sub=subject, scope=BOTH_SCOPES),
        stranger,
        algorithm="RS256",
        headers={"kid": stack.keyset.keys["RS256"].kid},
    )


def _alg_swapped_token(stack, subject) -> str:
    """An ES256 signature presented under the RS256 key's kid: key type and alg disagree."""
    token = stack.token("ES256", sub=subject, scope=BOTH_SCOPES)
    header, payload, signature = token.split(".")
    new_header = keys.b64url(
        json.dumps({"alg": "ES256", "typ": "JWT", "kid": stack.keyset.keys["RS256"].kid}).encode()
    )
    return f"{new_header}.{payload}.{signature}"


ATTACKS = {
    "alg none": lambda s, sub: keys.unsigned_token(keys.claims(sub=sub, scope=BOTH_SCOPES)),
    "alg none with a known kid": lambda s, sub: keys.unsigned_token(
        keys.claims(sub=sub, scope=BOTH_SCOPES), kid=s.keyset.keys["RS256"].kid
    ),
    "HS256 keyed with the RSA public key": lambda s, sub: keys.hs_confusion_token(
        s.keyset, keys.claims(sub=sub, scope=BOTH_SCOPES)
    ),
    "unknown kid": lambda s, sub: s.token("RS256", sub=sub, scope=BOTH_SCOPES, headers={"kid": "no-such-key"}),
    "signed by a stranger's key": _other_rsa_key_token,
    "key type and alg disagree": _alg_swapped_token,
    "expired": lambda s, sub: s.token(
        "RS256", payload=keys.claims(sub=sub, scope=BOTH_SCOPES, exp=int(time.time()) - 3600)
    ),
    "not yet valid (nbf in the future)": lambda s, sub: s.token(
        "ES384", payload=keys.claims(sub=sub, scope=BOTH_SCOPES, nbf=int(time.time()) + 3600)
    ),
    "no exp": lambda s, sub: s.token("RS256", payload=keys.claims(sub=sub, scope=BOTH_SCOPES, exp=None)),
    "wrong audience": lambda s, sub: s.token("PS256", payload=keys.claims(sub=sub, scope=BOTH_SCOPES, aud="someone-else")),
    "wrong issuer": lambda s, sub: s.token(
        "EdDSA", payload=keys.claims(sub=sub, scope=BOTH_SCOPES, iss="https://evil.example")
    ),
    "tampered payload": lambda s, sub: keys.tamper_payload(
        s.token("RS256", sub=sub, scope=demo_config.WINE_SCOPE), scope=BOTH_SCOPES
    ),
    "tampered HMAC payload": lambda s, sub: keys.tamper_payload(
        s.token("HS256", sub=sub, scope=demo_config.WINE_SCOPE), scope=BOTH_SCOPES
    ),
    "truncated signature": lambda s, sub: s.token("RS256", sub=sub, scope=BOTH_SCOPES)[:-10],
    "huge token": lambda s, sub: s.token("HS256", sub=sub, scope=BOTH_SCOPES, padding="x" * 12000),
    "not a JWT": lambda s, sub: "not-a-jwt",
    "garbage segments": lambda s, sub: "a.b.c",
    "empty": lambda s, sub: "",
}


@pytest.mark.parametrize("attack", list(ATTACKS))
def test_rejects_attack_tokens_with_401_before_the_model_server(stack, subject, attack):
    token = ATTACKS[attack](stack, subject)
    before = total_requests(stack)
    r = predict(stack, IRIS, token)
    assert r.status_code == 401, r.text
    challenge = r.headers.get("www-authenticate", "")
    assert challenge.startswith("Bearer"), r.headers
    assert "error" in r.json()
    assert total_requests(stack) == before


def test_rejects_a_missing_token_with_a_bare_challenge(stack):
    before = total_requests(stack)
    r = predict(stack, IRIS, None)
    assert r.status_code == 401
    challenge = r.headers.get("www-authenticate", "")
    assert challenge.startswith("Bearer"), r.headers
    # RFC 6750 3.1: no error code when the request carried no credentials at all.
    assert "invalid_token" not in challenge
    assert total_requests(stack) == before


def test_invalid_token_challenge_names_the_error(stack, subject):
    r = predict(stack, IRIS, ATTACKS["expired"](stack, subject))
    assert r.status_code == 401
    assert 'error="invalid_token"' in r.headers["www-authenticate"]


def test_the_token_is_verified_at_every_request_not_cached_as_valid_forever(stack, subject):
    # The cache must key on the whole token: a tampered copy of a cached good token fails.
    good = stack.token("RS256", sub=subject, scope=BOTH_SCOPES)
    assert predict(stack, IRIS, good).status_code == 200
    header, payload, signature = good.split(".")
    flipped = signature[:-2] + ("A" if signature[-2] != "A" else "B") + signature[-1]
    assert predict(stack, IRIS, f"{header}.{payload}.{flipped}").status_code == 401


@pytest.mark.parametrize(
    ("scope", "model"),
    [(demo_config.WINE_SCOPE, IRIS), (demo_config.IRIS_SCOPE, WINE), ("", IRIS), ("predict:other", WINE)],
)
def test_a_scope_for_another_model_is_forbidden(stack, subject, scope, model):
    token = stack.token("ES256", sub=subject, scope=scope)
    before = total_requests(stack)
    r = predict(stack, model, token)
    assert r.status_code == 403, r.text
    assert "error" in r.json()
    assert total_requests(stack) == before


def test_scopes_as_a_list_claim_are_honoured(stack, subject):
    token = stack.token("RS384", sub=subject, scp=[demo_config.IRIS_SCOPE])
    assert predict(stack, IRIS, token).status_code == 200
    assert predict(stack, WINE, token).status_code == 403


def exhaust_wine_quota(stack, token) -> tuple[list[int], requests.Response]:
    """Wine predicts until the first 429: the statuses, and the 429 response.

    Bounded: the refill (2/s) could keep up only if each request took longer than 0.5 s.
    """
    statuses = []
    for _ in range(demo_config.WINE_QUOTA["burst"] + 5):
        r = predict(stack, WINE, token)
        statuses.append(r.status_code)
        if r.status_code != 200:
            return statuses, r
    raise AssertionError(f"no 429 after {statuses}")


def test_past_the_quota_429_with_retry_after_then_allowed_after_the_window(stack, subject):
    token = stack.token("RS256", sub=subject, scope=BOTH_SCOPES)
    burst = demo_config.WINE_QUOTA["burst"]
    before = model_server_requests(stack, "wine").get("v1_predict", 0)
    statuses, limited = exhaust_wine_quota(stack, token)
    assert statuses[:burst] == [200] * burst
    assert limited.status_code == 429, limited.text
    # Only the allowed requests reached the model server.
    assert model_server_requests(stack, "wine").get("v1_predict", 0) == before + len(statuses) - 1
    retry_after = int(limited.headers["retry-after"])
    assert 1 <= retry_after <= 3, limited.headers
    assert limited.headers["ratelimit-limit"] == str(burst)
    assert limited.headers["ratelimit-remaining"] == "0"
    assert int(limited.headers["ratelimit-reset"]) >= 1
    assert "rate limit" in limited.json()["error"]

    # Another caller is not affected by this caller's quota.
    other = stack.token("RS256", sub=f"{subject}-other", scope=BOTH_SCOPES)
    assert predict(stack, WINE, other).status_code == 200

    # Real time, since this is end to end: after Retry-After the caller passes again.
    time.sleep(retry_after)
    assert predict(stack, WINE, token).status_code == 200


def test_quota_is_per_model(stack, subject):
    token = stack.token("RS256", sub=subject, scope=BOTH_SCOPES)
    _, limited = exhaust_wine_quota(stack, token)
    assert limited.status_code == 429
    assert predict(stack, IRIS, token).status_code == 200


def test_token_in_a_tampered_header_segment_is_rejected(stack, subject):
    token = stack.token("RS256", sub=subject, scope=BOTH_SCOPES)
    header, payload, signature = token.split(".")
    decoded = json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))
    decoded["alg"] = "HS256"
    forged_header = keys.b64url(json.dumps(decoded).encode())
    assert predict(stack, IRIS, f"{forged_header}.{payload}.{signature}").status_code == 401


def test_a_client_cannot_pick_the_route_with_the_routing_header(stack, subject):
    # The routing header is the filter's: a client copy naming another model is replaced, so
    # a token for iris cannot reach wine's server through an iris path.
    token = stack.token("RS256", sub=subject, scope=demo_config.IRIS_SCOPE)
    wine_before = model_server_requests(stack, "wine").get("v1_predict", 0)
    r = requests.post(
        f"{stack.gateway}/v1/models/{IRIS}:predict",
        json=IRIS_BODY,
        headers={"Authorization": f"Bearer {token}", demo_config.ROUTING_HEADER: WINE},
        timeout=10,
    )
    assert r.status_code == 200, r.text
    assert r.json() == {"predictions": [0]}
    assert model_server_requests(stack, "wine").get("v1_predict", 0) == wine_before


def test_a_client_cannot_spoof_a_forwarded_claim(stack, subject):
    token = stack.token("RS256", sub=subject, scope=BOTH_SCOPES)
    request_id = f"spoof-{subject}"
    r = requests.post(
        f"{stack.gateway}/v1/models/{IRIS}:predict",
        json=IRIS_BODY,
        headers={
            "Authorization": f"Bearer {token}",
            demo_config.SUBJECT_HEADER: "admin",
            "x-request-id": request_id,
        },
        timeout=10,
    )
    assert r.status_code == 200, r.text
    seen = received_headers(stack, "x-request-id", request_id)
    assert len(seen) == 1
    assert seen[0][demo_config.SUBJECT_HEADER] == subject


@pytest.mark.parametrize(
    "forged",
    [
        [("x_jwt_sub", "admin")],
        [("X_Jwt_Sub", "admin")],
        [("x-jwt_sub", "admin"), ("x_jwt-sub", "root")],
        [("x_gateway_model_name", WINE)],
    ],
    ids=["underscores", "mixed-case", "two-spellings", "routing-header"],
)
def test_a_lookalike_of_a_gateway_header_never_reaches_the_model_server(stack, subject, forged):
    """A backend that maps header names the CGI way (`HTTP_X_JWT_SUB`) cannot tell
    `x_jwt_sub` from the `x-jwt-sub` the filter sets: the filter drops every spelling that
    folds to one of its own headers (lookalikeHeaders: drop, the default)."""
    token = stack.token("RS256", sub=subject, scope=BOTH_SCOPES)
    request_id = f"lookalike-{subject}"
    r = requests.post(
        f"{stack.gateway}/v1/models/{IRIS}:predict",
        json=IRIS_BODY,
        headers={"Authorization": f"Bearer {token}", "x-request-id": request_id, **dict(forged)},
        timeout=10,
    )
    assert r.status_code == 200, r.text
    seen = received_headers(stack, "x-request-id", request_id)
    assert len(seen) == 1, seen
    folded = {}
    for name, value in seen[0].items():
        folded.setdefault(name.lower().replace("_", "-"), []).append((name, value))
    assert folded[demo_config.SUBJECT_HEADER] == [(demo_config.SUBJECT_HEADER, subject)]
    assert folded[demo_config.ROUTING_HEADER] == [(demo_config.ROUTING_HEADER, IRIS)]
