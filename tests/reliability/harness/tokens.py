"""JWT keys and tokens made by an independent implementation (PyJWT + cryptography).

Honest tokens come from PyJWT. Attack tokens are assembled by hand, because PyJWT
refuses to make most of them (it will not HMAC with a PEM public key, for instance).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from dataclasses import dataclass

import jwt
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

ISSUER = "https://issuer.reliability.test"
AUDIENCE = "modelgate"
RSA_KID = "rsa-1"
EC_KID = "ec-1"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_json(value: object) -> str:
    return b64url(json.dumps(value, separators=(",", ":")).encode())


def _uint_b64(n: int) -> str:
    return b64url(n.to_bytes((n.bit_length() + 7) // 8, "big"))


@dataclass
class KeySet:
    """The gateway's trusted keys (published as inline JWKS) and an attacker's keys."""

    rsa_key: rsa.RSAPrivateKey
    ec_key: ec.EllipticCurvePrivateKey
    attacker_rsa: rsa.RSAPrivateKey

    @classmethod
    def generate(cls) -> KeySet:
        return cls(
            rsa_key=rsa.generate_private_key(public_exponent=65537, key_size=2048),
            ec_key=ec.generate_private_key(ec.SECP256R1()),
            attacker_rsa=rsa.generate_private_key(public_exponent=65537, key_size=2048),
        )

    # -- what the gateway trusts -----------------------------------------------------
    def jwks(self) -> dict:
        return {"keys": [self.rsa_jwk(self.rsa_key, RSA_KID), self.ec_jwk()]}

    @staticmethod
    def rsa_jwk(key: rsa.RSAPrivateKey, kid: str) -> dict:
        numbers = key.public_key().public_numbers()
        return {"kty": "RSA", "kid": kid, "alg": "RS256", "use": "sig", "n": _uint_b64(numbers.n), "e": _uint_b64(numbers.e)}

    def ec_jwk(self) -> dict:
        numbers = self.ec_key.public_key().public_numbers()
        return {
            "kty": "EC",
            "kid": EC_KID,
            "alg": "ES256",
            "use": "sig",
            "crv": "P-256",
            "x": b64url(numbers.x.to_bytes(32, "big")),
            "y": b64url(numbers.y.to_bytes(32, "big")),
        }

    def rsa_public_pem(self) -> bytes:
        return self.rsa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def rsa_public_der(self) -> bytes:
        return self.rsa_key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    # -- honest tokens ---------------------------------------------------------------
    @staticmethod
    def claims(sub: str = "alice", scope: str = "models:iris models:wine", lifetime: int = 600, **extra: object) -> dict:
        now = int(time.time())
        doc = {"iss": ISSUER, "aud": AUDIENCE, "sub": sub, "scope": scope, "iat": now, "nbf": now - 5, "exp": now + lifetime}
        doc.update(extra)
        return {k: v for k, v in doc.items() if v is not None}

    def rs256(self, claims: dict | None = None, kid: str | None = RSA_KID, key: rsa.RSAPrivateKey | None = None, headers: dict | None = None) -> str:
        hdr = dict(headers or {})
        if kid is not None:
            hdr["kid"] = kid
        return jwt.encode(claims or self.claims(), key or self.rsa_key, algorithm="RS256", headers=hdr)

    def es256(self, claims: dict | None = None) -> str:
        return jwt.encode(claims or self.claims(), self.ec_key, algorithm="ES256", headers={"kid": EC_KID})

    # -- hand-made attack tokens -----------------------------------------------------
    @staticmethod
    def unsigned(header: dict, claims: dict, signature: bytes = b"") -> str:
        return f"{b64url_json(header)}.{b64url_json(claims)}.{b64url(signature)}"

    @staticmethod
    def hmac_signed(header: dict, claims: dict, secret: bytes, digest=hashlib.sha256) -> str:
        signing_input = f"{b64url_json(header)}.{b64url_json(claims)}"
        sig = hmac.new(secret, signing_input.encode(), digest).digest()
        return f"{signing_input}.{b64url(sig)}"

    @staticmethod
    def rsa_signed(header: object, claims: object, key: rsa.RSAPrivateKey) -> str:
        """RS256 over any JSON header and payload, including shapes PyJWT will not encode."""
        signing_input = f"{b64url_json(header)}.{b64url_json(claims)}"
        sig = key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        return f"{signing_input}.{b64url(sig)}"
