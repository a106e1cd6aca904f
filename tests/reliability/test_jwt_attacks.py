"""JWT attacks through the host: every forged, stale or malformed token gets 401 with
`WWW-Authenticate: Bearer`, and its request never reaches an upstream.

Tokens come from PyJWT + cryptography (an implementation independent of the filter's
jsonwebtoken); the attack shapes PyJWT refuses to produce are assembled by hand.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import time
from collections.abc import Callable

import pytest

from reliability.harness import configs
from reliability.harness.rawhttp import RawConnection
from reliability.harness.stack import Stack
from reliability.harness.tokens import EC_KID, RSA_KID, KeySet, b64url, b64url_json


class Forge:
    """Material for one case's tokens, minted when the case runs (times are relative to now)."""

    def __init__(self, keys: KeySet):
        self.keys = keys
        self.now = int(time.time())
        self.claims = keys.claims()
        self.valid = keys.rs256(self.claims)
        self.header_b64, self.payload_b64, self.sig_b64 = self.valid.split(".")
        self.rs_header = {"alg": "RS256", "typ": "JWT", "kid": RSA_KID}
        self.attacker = keys.attacker_rsa
        self.attacker_jwk = KeySet.rsa_jwk(self.attacker, "attacker")
        self.modulus = keys.rsa_key.public_key().public_numbers().n


ATTACKS: dict[str, Callable[[Forge], str]] = {
    # alg none, in every spelling, with and without the real signature kept
    "alg-none": lambda f: KeySet.unsigned({"alg": "none", "typ": "JWT"}, f.claims),
    "alg-none-with-kid": lambda f: KeySet.unsigned({"alg": "none", "kid": RSA_KID}, f.claims),
    "alg-None": lambda f: KeySet.unsigned({"alg": "None", "kid": RSA_KID}, f.claims),
    "alg-NONE": lambda f: KeySet.unsigned({"alg": "NONE", "kid": RSA_KID}, f.claims),
    "alg-none-keeping-valid-signature": lambda f: f"{b64url_json({'alg': 'none', 'kid': RSA_KID})}.{f.payload_b64}.{f.sig_b64}",
    "alg-empty": lambda f: KeySet.unsigned({"alg": "", "kid": RSA_KID}, f.claims),
    # signature games
    "signature-stripped": lambda f: f"{f.header_b64}.{f.payload_b64}.",
    "signature-from-another-payload": lambda f: f"{f.header_b64}.{b64url_json({**f.claims, 'sub': 'admin'})}.{f.sig_b64}",
    "signature-truncated": lambda f: f"{f.header_b64}.{f.payload_b64}.{f.sig_b64[:-8]}",
    "signed-by-attacker-with-trusted-kid": lambda f: f.keys.rs256(f.claims, kid=RSA_KID, key=f.attacker),
    # HS/RSA confusion: HMAC keyed with the public key the gateway trusts
    "hs256-keyed-with-rsa-public-pem": lambda f: KeySet.hmac_signed({"alg": "HS256", "typ": "JWT", "kid": RSA_KID}, f.claims, f.keys.rsa_public_pem()),
    "hs256-keyed-with-rsa-public-der": lambda f: KeySet.hmac_signed({"alg": "HS256", "kid": RSA_KID}, f.claims, f.keys.rsa_public_der()),
    "hs256-keyed-with-rsa-modulus": lambda f: KeySet.hmac_signed({"alg": "HS256", "kid": RSA_KID}, f.claims, f.modulus.to_bytes(256, "big")),
    "hs256-no-kid-keyed-with-pem": lambda f: KeySet.hmac_signed({"alg": "HS256"}, f.claims, f.keys.rsa_public_pem()),
    "hs512-keyed-with-rsa-public-pem": lambda f: KeySet.hmac_signed({"alg": "HS512", "kid": RSA_KID}, f.claims, f.keys.rsa_public_pem(), hashlib.sha512),
    "hs256-keyed-with-ec-kid": lambda f: KeySet.hmac_signed({"alg": "HS256", "kid": EC_KID}, f.claims, f.keys.ec_jwk()["x"].encode()),
    # key type / algorithm mismatches
    "es256-alg-with-rsa-kid": lambda f: KeySet.unsigned({"alg": "ES256", "kid": RSA_KID}, f.claims, b"\x01" * 64),
    "rs256-alg-with-ec-kid": lambda f: KeySet.rsa_signed({"alg": "RS256", "kid": EC_KID}, f.claims, f.keys.rsa_key),
    # kid tricks
    "kid-path-traversal-empty-hmac": lambda f: KeySet.hmac_signed({"alg": "HS256", "kid": "../../../../../../dev/null"}, f.claims, b""),
    "kid-path-traversal-attacker-rsa": lambda f: f.keys.rs256(f.claims, kid="../../../../etc/passwd", key=f.attacker),
    "kid-sql-injection": lambda f: KeySet.hmac_signed({"alg": "HS256", "kid": "x' UNION SELECT 'k' -- "}, f.claims, b"k"),
    "kid-unknown-right-key": lambda f: f.keys.rs256(f.claims, kid="no-such-key"),
    "kid-unknown-attacker-key": lambda f: f.keys.rs256(f.claims, kid="no-such-key", key=f.attacker),
    "kid-missing-attacker-key": lambda f: f.keys.rs256(f.claims, kid=None, key=f.attacker),
    "kid-with-nul": lambda f: KeySet.rsa_signed({**f.rs_header, "kid": RSA_KID + "\x00evil"}, f.claims, f.attacker),
    "kid-as-number": lambda f: KeySet.rsa_signed({**f.rs_header, "kid": 1}, f.claims, f.attacker),
    "kid-as-object": lambda f: KeySet.rsa_signed({**f.rs_header, "kid": {"$ne": ""}}, f.claims, f.attacker),
    "kid-trusted-prefix": lambda f: f.keys.rs256(f.claims, kid=RSA_KID + "x", key=f.attacker),
    # keys offered by the token itself must never be trusted
    "embedded-jwk": lambda f: KeySet.rsa_signed({"alg": "RS256", "kid": "attacker", "jwk": f.attacker_jwk}, f.claims, f.attacker),
    "embedded-jwk-with-trusted-kid": lambda f: KeySet.rsa_signed({"alg": "RS256", "kid": RSA_KID, "jwk": f.attacker_jwk}, f.claims, f.attacker),
    "jku-to-attacker": lambda f: KeySet.rsa_signed({"alg": "RS256", "kid": "attacker", "jku": "http://127.0.0.1:18699/jwks.json"}, f.claims, f.attacker),
    "x5u-to-attacker": lambda f: KeySet.rsa_signed({"alg": "RS256", "kid": "attacker", "x5u": "http://127.0.0.1:18699/cert.pem"}, f.claims, f.attacker),
    # time and audience claims
    "expired-an-hour-ago": lambda f: f.keys.rs256(f.keys.claims(lifetime=-3600)),
    "expired-past-leeway": lambda f: f.keys.rs256(f.keys.claims(exp=f.now - 30)),
    "nbf-in-an-hour": lambda f: f.keys.rs256(f.keys.claims(nbf=f.now + 3600)),
    "nbf-past-leeway": lambda f: f.keys.rs256(f.keys.claims(nbf=f.now + 30)),
    "exp-missing": lambda f: f.keys.rs256(f.keys.claims(exp=None)),
    "exp-as-string": lambda f: f.keys.rs256(f.keys.claims(exp=str(f.now + 600))),
    "exp-negative": lambda f: f.keys.rs256(f.keys.claims(exp=-1)),
    "wrong-issuer": lambda f: f.keys.rs256(f.keys.claims(iss="https://evil.example")),
    "issuer-prefix": lambda f: f.keys.rs256(f.keys.claims(iss=f.claims["iss"] + ".evil.example")),
    "wrong-audience": lambda f: f.keys.rs256(f.keys.claims(aud="someone-else")),
    "audience-missing": lambda f: f.keys.rs256(f.keys.claims(aud=None)),
    # malformed
    "two-parts": lambda f: f"{f.header_b64}.{f.payload_b64}",
    "four-parts": lambda f: f.valid + ".x",
    "not-base64url": lambda f: "!!!.@@@.###",
    "padded-base64": lambda f: f"{f.header_b64}==.{f.payload_b64}.{f.sig_b64}",
    "header-not-json": lambda f: f"{b64url(b'not json')}.{f.payload_b64}.{f.sig_b64}",
    "header-json-array": lambda f: KeySet.rsa_signed([f.rs_header], f.claims, f.keys.rsa_key),
    "claims-json-string": lambda f: KeySet.rsa_signed(f.rs_header, "sub", f.keys.rsa_key),
    "claims-deeply-nested": lambda f: KeySet.rsa_signed(f.rs_header, {**f.claims, "x": _nested(500)}, f.keys.rsa_key),
    "crit-unknown-extension": lambda f: KeySet.rsa_signed({**f.rs_header, "crit": ["x-unknown"], "x-unknown": 1}, f.claims, f.keys.rsa_key),
    "unicode-in-token": lambda f: f.valid[:20] + "\u00e9" + f.valid[21:],
    # oversized (the filter's maxTokenBytes is 8 KiB; these stay below the host's head limit)
    "huge-claims-16KiB": lambda f: f.keys.rs256(f.keys.claims(pad="x" * 16_000)),
    "huge-claims-64KiB": lambda f: f.keys.rs256(f.keys.claims(pad="x" * 64_000)),
    "huge-kid-12KiB": lambda f: f.keys.rs256(f.claims, kid="k" * 12_000, key=f.attacker),
    "huge-garbage-48KiB": lambda f: "a" * 16_000 + "." + "b" * 16_000 + "." + "c" * 16_000,
}


# Why the filter refuses each attack: the `error_description` of its RFC 6750 challenge
# (policies/src/jwt.rs). A bare 401 would not tell which check refused, and several attacks
# are also refused by jsonwebtoken's own checks further in: the HS/RSA confusion cases must
# be stopped by the filter's key-family check ("algorithm not allowed for this key"), which
# is what keeps the key, not the token, deciding the algorithm.
NOT_FOR_THIS_KEY = "algorithm not allowed for this key"
REASONS: dict[str, str] = {
    "alg-none": "unsigned tokens are not accepted",
    "alg-none-with-kid": "unsigned tokens are not accepted",
    "alg-None": "unsigned tokens are not accepted",
    "alg-NONE": "unsigned tokens are not accepted",
    "alg-none-keeping-valid-signature": "unsigned tokens are not accepted",
    "alg-empty": "unsupported algorithm",
    "signature-stripped": "invalid signature",
    "signature-from-another-payload": "invalid signature",
    "signature-truncated": "invalid signature",
    "signed-by-attacker-with-trusted-kid": "invalid signature",
    "hs256-keyed-with-rsa-public-pem": NOT_FOR_THIS_KEY,
    "hs256-keyed-with-rsa-public-der": NOT_FOR_THIS_KEY,
    "hs256-keyed-with-rsa-modulus": NOT_FOR_THIS_KEY,
    # Two keys are trusted, so a token without a kid names none of them.
    "hs256-no-kid-keyed-with-pem": "token has no key id",
    "hs512-keyed-with-rsa-public-pem": NOT_FOR_THIS_KEY,
    "hs256-keyed-with-ec-kid": NOT_FOR_THIS_KEY,
    "es256-alg-with-rsa-kid": NOT_FOR_THIS_KEY,
    "rs256-alg-with-ec-kid": NOT_FOR_THIS_KEY,
    "kid-path-traversal-empty-hmac": "unknown key id",
    "kid-path-traversal-attacker-rsa": "unknown key id",
    "kid-sql-injection": "unknown key id",
    "kid-unknown-right-key": "unknown key id",
    "kid-unknown-attacker-key": "unknown key id",
    "kid-missing-attacker-key": "token has no key id",
    "kid-with-nul": "unknown key id",
    "kid-as-number": "malformed token header",
    "kid-as-object": "malformed token header",
    "kid-trusted-prefix": "unknown key id",
    "embedded-jwk": "unknown key id",
    "embedded-jwk-with-trusted-kid": "invalid signature",
    "jku-to-attacker": "unknown key id",
    "x5u-to-attacker": "unknown key id",
    "expired-an-hour-ago": "token expired",
    "expired-past-leeway": "token expired",
    "nbf-in-an-hour": "token not yet valid",
    "nbf-past-leeway": "token not yet valid",
    "exp-missing": "missing or invalid exp",
    "exp-as-string": "missing or invalid exp",
    "exp-negative": "token expired",
    "wrong-issuer": "wrong issuer",
    "issuer-prefix": "wrong issuer",
    "wrong-audience": "wrong audience",
    "audience-missing": "wrong audience",
    "two-parts": "malformed token",
    "four-parts": "malformed token",
    "not-base64url": "malformed token header",
    "padded-base64": "malformed token header",
    "header-not-json": "malformed token header",
    "header-json-array": "malformed token header",
    "claims-json-string": "malformed token claims",
    "claims-deeply-nested": "malformed token claims",
    "crit-unknown-extension": "unsupported critical header parameters",
    "unicode-in-token": "malformed token header",
    "huge-claims-16KiB": "token too large",
    "huge-claims-64KiB": "token too large",
    "huge-kid-12KiB": "token too large",
    "huge-garbage-48KiB": "token too large",
}
ERROR_DESCRIPTION = re.compile(r'error_description="([^"]*)"')


def _nested(depth: int) -> object:
    value: object = 0
    for _ in range(depth):
        value = [value]
    return value


def send_with_authorization(stack: Stack, value: bytes) -> tuple[int, str | None, bytes]:
    body = b'{"instances": [[5.1, 3.5, 1.4, 0.2]]}'
    data = (
        f"POST /v1/models/{configs.IRIS}:predict HTTP/1.1\r\nHost: gateway.test\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    ).encode() + b"Authorization: " + value + b"\r\n\r\n" + body
    with RawConnection("127.0.0.1", stack.port) as conn:
        conn.send(data)
        response = conn.read_response("POST")
    assert response is not None, "connection closed without an answer"
    return response.status, response.header("www-authenticate"), response.body


def test_control_valid_tokens_pass(stack: Stack, keys: KeySet) -> None:
    for token in (keys.rs256(), keys.es256()):
        status, _, _ = send_with_authorization(stack, f"Bearer {token}".encode())
        assert status == 200
    assert sorted((upstream in ("iris-a", "iris-b"), routed) for upstream, _, _, routed in stack.reached()) == [(True, configs.IRIS)] * 2


def test_every_attack_has_a_reason() -> None:
    assert REASONS.keys() == ATTACKS.keys()


@pytest.mark.parametrize("name", ATTACKS.keys())
def test_attack_token_is_401_for_its_reason(stack: Stack, keys: KeySet, name: str) -> None:
    token = ATTACKS[name](Forge(keys))
    status, challenge, body = send_with_authorization(stack, b"Bearer " + token.encode("utf-8"))
    assert status == 401, f"{name}: answered {status}"
    assert challenge is not None and challenge.startswith("Bearer") and 'error="invalid_token"' in challenge, f"{name}: WWW-Authenticate {challenge!r}"
    described = ERROR_DESCRIPTION.search(challenge)
    assert described is not None and described.group(1) == REASONS[name], f"{name}: refused for {challenge!r}"
    assert json.loads(body) == {"error": f"invalid token: {REASONS[name]}"}, body
    stack.assert_upstream_saw_nothing(name)


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(b"Bearer", id="scheme-only"),
        pytest.param(b"Bearer ", id="empty-token"),
        pytest.param(b"Basic YWRtaW46YWRtaW4=", id="basic-scheme"),
        pytest.param(b"Bearer \xff\xfe\xfd", id="non-utf8-token"),
        pytest.param(b"Bearer " + base64.b64encode(b"\x00" * 30), id="binary-token"),
    ],
)
def test_malformed_authorization_is_401_not_a_fault(stack: Stack, value: bytes) -> None:
    """Bytes the SDK's string accessors would panic on must be refused, not trap the VM."""
    failures = stack.gateway.vm_failures()
    status, challenge, _ = send_with_authorization(stack, value)
    assert status == 401, f"answered {status}"
    assert challenge is not None and challenge.startswith("Bearer")
    assert stack.gateway.vm_failures() == failures, "a malformed Authorization header failed a VM"
    stack.assert_upstream_saw_nothing("malformed authorization")


def test_missing_token_is_401(stack: Stack) -> None:
    body = b'{"instances": [[5.1, 3.5, 1.4, 0.2]]}'
    data = (
        f"POST /v1/models/{configs.IRIS}:predict HTTP/1.1\r\nHost: gateway.test\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    with RawConnection("127.0.0.1", stack.port) as conn:
        conn.send(data)
        response = conn.read_response("POST")
    assert response is not None and response.status == 401, response
    stack.assert_upstream_saw_nothing("missing token")


def test_token_scoped_for_another_model_is_403(stack: Stack, keys: KeySet) -> None:
    token = keys.rs256(keys.claims(scope="models:wine"))
    status, challenge, _ = send_with_authorization(stack, f"Bearer {token}".encode())
    assert status == 403
    assert challenge is not None and 'error="insufficient_scope"' in challenge, challenge
    stack.assert_upstream_saw_nothing("wrong scope")


def test_token_larger_than_the_host_head_limit_is_431(stack: Stack, keys: KeySet) -> None:
    token = keys.rs256(keys.claims(pad="x" * (1 << 20)))
    status, _, _ = send_with_authorization(stack, f"Bearer {token}".encode())
    assert status == 431
    stack.assert_upstream_saw_nothing("1 MiB token")
