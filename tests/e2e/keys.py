"""Demo key material and tokens, made by an implementation independent of modelgate's.

Keys come from `cryptography`, tokens from PyJWT, so a token the gateway accepts was not
shaped by the code that checks it. One signing key per JWS algorithm the filter supports,
each published in an inline JWKS under its own `kid` with its `alg`:

    RS256/384/512, PS256/384/512  RSA 2048 (one key for RS*, another for PS*)
    ES256, ES384                  P-256, P-384
    EdDSA                         Ed25519
    HS256/384/512                 random 32/48/64-byte secrets (a `k` JWK)

Also a self-signed TLS certificate for the HTTPS listener.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import ipaddress
import json
import os
import secrets
import time
from dataclasses import dataclass, field

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID

ISSUER = "https://issuer.modelgate.demo"
AUDIENCE = "modelgate-demo"

ALGORITHMS = [
    "RS256", "RS384", "RS512",
    "PS256", "PS384", "PS512",
    "ES256", "ES384",
    "EdDSA",
    "HS256", "HS384", "HS512",
]  # fmt: skip


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_uint(n: int) -> str:
    return b64url(n.to_bytes((n.bit_length() + 7) // 8, "big"))


def kid_for(alg: str) -> str:
    return f"demo-{alg.lower()}"


@dataclass
class SigningKey:
    alg: str
    kid: str
    private: object  # a cryptography private key, or bytes for HMAC
    public_jwk: dict

    def pyjwt_key(self):
        return self.private


def _rsa_jwk(key: rsa.RSAPrivateKey) -> dict:
    numbers = key.public_key().public_numbers()
    return {"kty": "RSA", "n": b64url_uint(numbers.n), "e": b64url_uint(numbers.e)}


def _ec_jwk(key: ec.EllipticCurvePrivateKey, crv: str, size: int) -> dict:
    numbers = key.public_key().public_numbers()
    return {
        "kty": "EC",
        "crv": crv,
        "x": b64url(numbers.x.to_bytes(size, "big")),
        "y": b64url(numbers.y.to_bytes(size, "big")),
    }


def _okp_jwk(key: ed25519.Ed25519PrivateKey) -> dict:
    raw = key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    return {"kty": "OKP", "crv": "Ed25519", "x": b64url(raw)}


@dataclass
class KeySet:
    """Every demo signing key, by algorithm."""

    keys: dict[str, SigningKey] = field(default_factory=dict)

    @classmethod
    def generate(cls) -> "KeySet":
        rs = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        ps = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        p256 = ec.generate_private_key(ec.SECP256R1())
        p384 = ec.generate_private_key(ec.SECP384R1())
        ed = ed25519.Ed25519PrivateKey.generate()
        material: dict[str, tuple[object, dict]] = {}
        for alg in ("RS256", "RS384", "RS512"):
            material[alg] = (rs, _rsa_jwk(rs))
        for alg in ("PS256", "PS384", "PS512"):
            material[alg] = (ps, _rsa_jwk(ps))
        material["ES256"] = (p256, _ec_jwk(p256, "P-256", 32))
        material["ES384"] = (p384, _ec_jwk(p384, "P-384", 48))
        material["EdDSA"] = (ed, _okp_jwk(ed))
        for alg, size in (("HS256", 32), ("HS384", 48), ("HS512", 64)):
            # Printable, so a gateway can take it from an environment variable (`kFromEnv`,
            # as deploy/'s Envoy gets its HMAC key from a Secret): `size` base64url characters.
            secret = secrets.token_urlsafe(size)[:size].encode()
            material[alg] = (secret, {"kty": "oct", "k": b64url(secret)})
        keys = {}
        for alg, (private, jwk) in material.items():
            kid = kid_for(alg)
            keys[alg] = SigningKey(alg, kid, private, {**jwk, "kid": kid, "alg": alg, "use": "sig"})
        return cls(keys)

    @classmethod
    def load(cls, directory: str) -> "KeySet":
        """The key set `save` wrote to `directory` (test keys checked in as examples)."""
        keys = {}
        for alg in ALGORITHMS:
            kid = kid_for(alg)
            with open(os.path.join(directory, f"{kid}.key"), "rb") as f:
                data = f.read()
            if alg.startswith("HS"):
                private = bytes.fromhex(data.decode())
                jwk = {"kty": "oct", "k": b64url(private)}
            else:
                private = serialization.load_pem_private_key(data, password=None)
                if alg.startswith(("RS", "PS")):
                    jwk = _rsa_jwk(private)
                elif alg == "ES256":
                    jwk = _ec_jwk(private, "P-256", 32)
                elif alg == "ES384":
                    jwk = _ec_jwk(private, "P-384", 48)
                else:
                    jwk = _okp_jwk(private)
            keys[alg] = SigningKey(alg, kid, private, {**jwk, "kid": kid, "alg": alg, "use": "sig"})
        return cls(keys)

    def jwks(self) -> dict:
        return {"keys": [k.public_jwk for k in self.keys.values()]}

    def rsa_public_pem(self) -> bytes:
        return (
            self.keys["RS256"]
            .private.public_key()
            .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        )

    def save(self, directory: str) -> None:
        """Writes the JWKS and the private keys (PEM, or raw secrets) for curl users."""
        os.makedirs(directory, exist_ok=True)
        with open(os.path.join(directory, "jwks.json"), "w") as f:
            json.dump(self.jwks(), f, indent=2)
        for key in self.keys.values():
            path = os.path.join(directory, f"{key.kid}.key")
            if isinstance(key.private, bytes):
                data = key.private.hex().encode()
            else:
                data = key.private.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                )
            with open(path, "wb") as f:
                f.write(data)
            os.chmod(path, 0o600)


def claims(
    sub: str = "demo-user",
    scope: str | None = None,
    lifetime: int = 3600,
    **extra,
) -> dict:
    now = int(time.time())
    body = {"iss": ISSUER, "aud": AUDIENCE, "sub": sub, "iat": now, "exp": now + lifetime}
    if scope is not None:
        body["scope"] = scope
    body.update(extra)
    return {k: v for k, v in body.items() if v is not None}


def mint(keyset: KeySet, alg: str = "RS256", headers: dict | None = None, **claim_args) -> str:
    """A token signed by PyJWT with the demo key for `alg`."""
    key = keyset.keys[alg]
    payload = claim_args.pop("payload", None) or claims(**claim_args)
    return jwt.encode(payload, key.pyjwt_key(), algorithm=alg, headers={"kid": key.kid, **(headers or {})})


def _segments(header: dict, payload: dict) -> str:
    h = b64url(json.dumps(header, separators=(",", ":")).encode())
    p = b64url(json.dumps(payload, separators=(",", ":")).encode())
    return f"{h}.{p}"


def unsigned_token(payload: dict, kid: str | None = None) -> str:
    """`alg: none`, hand-made: PyJWT rightly refuses to help."""
    header = {"alg": "none", "typ": "JWT"}
    if kid:
        header["kid"] = kid
    return _segments(header, payload) + "."


def hs_confusion_token(keyset: KeySet, payload: dict) -> str:
    """HS256 keyed with the RSA public key's PEM, under the RSA key's kid.

    The classic algorithm-confusion attack: a verifier that feeds "the key for this kid" to
    whatever `alg` the token names would accept it. Made by hand, as PyJWT refuses a PEM as
    an HMAC secret.
    """
    header = {"alg": "HS256", "typ": "JWT", "kid": keyset.keys["RS256"].kid}
    signing_input = _segments(header, payload)
    mac = hmac.new(keyset.rsa_public_pem(), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(mac)}"


def tamper_payload(token: str, **changes) -> str:
    """The same signature over a payload with `changes` applied."""
    header, payload, signature = token.split(".")
    body = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    body.update(changes)
    new_payload = b64url(json.dumps(body, separators=(",", ":")).encode())
    return f"{header}.{new_payload}.{signature}"


def self_signed_cert(directory: str, hostname: str = "localhost") -> tuple[str, str]:
    """A P-256 certificate for `hostname` and 127.0.0.1; returns (cert path, key path)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName(hostname), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    os.makedirs(directory, exist_ok=True)
    cert_path = os.path.join(directory, "server.pem")
    key_path = os.path.join(directory, "server-key.pem")
    with open(cert_path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(key_path, "wb") as f:
        f.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    os.chmod(key_path, 0o600)
    return cert_path, key_path
