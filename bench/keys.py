"""Make the benchmark's JWT material with PyJWT, independent of the filter's Rust code.

Writes an RS256 key pair's public half as a JWKS and prints one token valid for a
day, so the full-policy case verifies a real signature once and then hits the
filter's token cache, as a steady client would.

usage: keys.py OUT_DIR ISSUER AUDIENCE SUBJECT SCOPE
"""

import json
import sys
import time
from pathlib import Path

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

KID = "bench-rs256"


def main() -> None:
    out, issuer, audience, subject, scope = sys.argv[1:6]
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(RSAAlgorithm.to_jwk(key.public_key()))
    jwk.pop("key_ops", None)
    jwk.update({"kid": KID, "alg": "RS256", "use": "sig"})
    Path(out, "jwks.json").write_text(json.dumps({"keys": [jwk]}))
    now = int(time.time())
    claims = {
        "iss": issuer,
        "aud": audience,
        "sub": subject,
        "scope": scope,
        "iat": now,
        "nbf": now - 60,
        "exp": now + 86400,
    }
    print(jwt.encode(claims, key, algorithm="RS256", headers={"kid": KID}))


if __name__ == "__main__":
    main()
