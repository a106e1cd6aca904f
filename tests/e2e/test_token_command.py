"""`modelgate token` (docs/config.md, "Test tokens"): the tokens it mints verify with PyJWT, an
implementation independent of the one that signs them, for every key format it reads; and the
gateway in front of the real KServe servers accepts one minted from the demo's own key file.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import jwt
import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

import demo_config
import keys
from stack import HOST_BINARY

PEM = serialization.Encoding.PEM
NO_PASSWORD = serialization.NoEncryption()


def modelgate_token(*args: str) -> subprocess.CompletedProcess:
    if not HOST_BINARY.exists():
        pytest.fail(f"{HOST_BINARY} is missing: build it with `make build`")
    return subprocess.run([str(HOST_BINARY), "token", *args], capture_output=True, text=True, timeout=30)


def mint(*args: str) -> str:
    result = modelgate_token(*args)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def write(path: Path, data: bytes | str) -> str:
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return str(path)


def b64url_uint(n: int, size: int | None = None) -> str:
    return keys.b64url(n.to_bytes(size or (n.bit_length() + 7) // 8, "big"))


CLAIMS = ["--claim", "sub=alice", "--claim", "aud=modelgate", "--claim", "scope=models:iris models:wine"]


def check(token: str, public: object, alg: str, kid: str | None = None) -> dict:
    """Verify with PyJWT and return the claims; the header must carry `alg` and `kid`."""
    header = jwt.get_unverified_header(token)
    assert header["alg"] == alg
    assert header.get("kid") == kid
    claims = jwt.decode(token, public, algorithms=[alg], audience="modelgate")
    assert claims["sub"] == "alice"
    assert claims["scope"] == "models:iris models:wine"
    now = time.time()
    assert now - 60 <= claims["iat"] <= now + 1
    assert claims["exp"] == claims["iat"] + 3600, "one hour by default"
    return claims


def test_pem_keys_of_every_family_and_layout(tmp_path: Path) -> None:
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    for layout, fmt in (("pkcs1", serialization.PrivateFormat.TraditionalOpenSSL), ("pkcs8", serialization.PrivateFormat.PKCS8)):
        path = write(tmp_path / f"rsa-{layout}.pem", rsa_key.private_bytes(PEM, fmt, NO_PASSWORD))
        check(mint("--key", path, "--kid", "rsa-1", *CLAIMS), rsa_key.public_key(), "RS256", "rsa-1")
        check(mint("--key", path, "--alg", "PS512", *CLAIMS), rsa_key.public_key(), "PS512")

    for curve, alg in ((ec.SECP256R1(), "ES256"), (ec.SECP384R1(), "ES384")):
        key = ec.generate_private_key(curve)
        # `openssl ecparam -genkey` writes SEC1 ("EC PRIVATE KEY"); `openssl genpkey` PKCS#8.
        for layout, fmt in (("sec1", serialization.PrivateFormat.TraditionalOpenSSL), ("pkcs8", serialization.PrivateFormat.PKCS8)):
            path = write(tmp_path / f"{alg}-{layout}.pem", key.private_bytes(PEM, fmt, NO_PASSWORD))
            check(mint("--key", path, *CLAIMS), key.public_key(), alg)

    ed = ed25519.Ed25519PrivateKey.generate()
    path = write(tmp_path / "ed.pem", ed.private_bytes(PEM, serialization.PrivateFormat.PKCS8, NO_PASSWORD))
    check(mint("--key", path, *CLAIMS), ed.public_key(), "EdDSA")


def test_private_jwks_and_hmac_secrets(tmp_path: Path) -> None:
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    p = rsa_key.private_numbers()
    rsa_jwk = {
        "kty": "RSA", "kid": "rsa-jwk", "n": b64url_uint(p.public_numbers.n), "e": b64url_uint(p.public_numbers.e),
        "d": b64url_uint(p.d), "p": b64url_uint(p.p), "q": b64url_uint(p.q),
        "dp": b64url_uint(p.dmp1), "dq": b64url_uint(p.dmq1), "qi": b64url_uint(p.iqmp),
    }  # fmt: skip
    path = write(tmp_path / "rsa.jwk", json.dumps(rsa_jwk))
    check(mint("--key", path, *CLAIMS), rsa_key.public_key(), "RS256", "rsa-jwk")

    ec_key = ec.generate_private_key(ec.SECP256R1())
    numbers = ec_key.private_numbers()
    ec_jwk = {
        "kty": "EC", "crv": "P-256", "kid": "ec-jwk", "d": b64url_uint(numbers.private_value, 32),
        "x": b64url_uint(numbers.public_numbers.x, 32), "y": b64url_uint(numbers.public_numbers.y, 32),
    }  # fmt: skip
    path = write(tmp_path / "ec.jwk", json.dumps(ec_jwk))
    check(mint("--key", path, *CLAIMS), ec_key.public_key(), "ES256", "ec-jwk")

    ed = ed25519.Ed25519PrivateKey.generate()
    seed = ed.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw, NO_PASSWORD)
    path = write(tmp_path / "ed.jwk", json.dumps({"kty": "OKP", "crv": "Ed25519", "d": keys.b64url(seed), "x": ""}))
    check(mint("--key", path, *CLAIMS), ed.public_key(), "EdDSA")

    secret = b"0123456789abcdef0123456789abcdef-raw\n"
    path = write(tmp_path / "oct.jwk", json.dumps({"kty": "oct", "kid": "hs", "k": keys.b64url(secret)}))
    check(mint("--key", path, "--alg", "HS512", *CLAIMS), secret, "HS512", "hs")
    # The secret file's bytes, newline included, as `kFromEnv` reads a variable.
    path = write(tmp_path / "secret", secret)
    check(mint("--hmac-secret-file", path, *CLAIMS), secret, "HS256")


def test_claims_from_json_and_expiry(tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    path = write(tmp_path / "k.pem", key.private_bytes(PEM, serialization.PrivateFormat.PKCS8, NO_PASSWORD))
    claims_file = write(tmp_path / "claims.json", json.dumps({"sub": "bob", "aud": "modelgate", "tenant": "acme"}))
    token = mint("--key", path, "--claims", f"@{claims_file}", "--claim", "n=3", "--expires-in", "15m")
    claims = jwt.decode(token, key.public_key(), algorithms=["ES256"], audience="modelgate")
    assert (claims["sub"], claims["tenant"], claims["n"]) == ("bob", "acme", 3)
    assert claims["exp"] - claims["iat"] == 900


def test_bad_input_exits_non_zero_with_the_reason(tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    path = write(tmp_path / "k.pem", key.private_bytes(PEM, serialization.PrivateFormat.PKCS8, NO_PASSWORD))
    public = write(tmp_path / "pub.pem", key.public_key().public_bytes(PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    for args, reason in [
        (["--key", path, "--alg", "RS256"], "this key cannot sign RS256"),
        (["--key", public], "not a private key"),
        (["--key", str(tmp_path / "missing.pem")], "cannot read"),
        (["--key", path, "--claims", "[1]"], "not a JSON object"),
        (["--claim", "sub=a"], "one of --key and --hmac-secret-file is required"),
    ]:
        result = modelgate_token(*args)
        assert result.returncode != 0 and not result.stdout, args
        assert reason in result.stderr, (args, result.stderr)


def test_the_gateway_accepts_a_token_minted_from_the_demo_key_file(stack) -> None:
    """The docs' "test with curl" step: the demo writes its private keys beside the stack."""
    key_file = stack.run_dir / "keys" / f"{keys.kid_for('ES256')}.key"
    token = mint(
        "--key", str(key_file),
        "--kid", keys.kid_for("ES256"),
        "--claim", f"iss={keys.ISSUER}",
        "--claim", f"aud={keys.AUDIENCE}",
        "--claim", "sub=token-command",
        "--claim", f"scope={demo_config.IRIS_SCOPE}",
    )  # fmt: skip
    body = {"instances": [[6.8, 2.8, 4.8, 1.4]]}
    r = requests.post(
        f"{stack.gateway}/v1/models/sklearn-iris:predict", json=body, headers={"Authorization": f"Bearer {token}"}, timeout=10
    )
    assert r.status_code == 200, r.text
    assert "predictions" in r.json()
