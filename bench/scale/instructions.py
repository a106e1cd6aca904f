"""Instructions and cache misses per request as the policy grows (issue 19), counted by
cachegrind: figures the machine's load cannot move, beside the CPU times of scale.py.

The request is bench/guest_instructions.py's (a one-instance KServe V1 predict with an RS256
token already in the verified-token cache, a rate limit not hit), run through `modelgate test`
(the real runtime and filter chain, no sockets) N = 200 and N = 2,200 times; the difference
over 2,000 cancels start-up, compilation and on_configure. The points are scale.py's: models
shaped like deploy/'s sklearn-iris, the request to the last model of the policy and its token
signed by the last key of the JWKS, so a lookup that scanned would show here. `--cache-sim=yes`
simulates the machine's first-level data cache and last-level cache, so the misses that a
larger working set costs are counted too (cachegrind's defaults: the host's cache sizes).

    .venv/bin/python bench/scale/instructions.py [--out bench/results/scale-instructions.md]

Callers are not a point here: a policy test sends one request repeatedly, so a million
distinct callers stay scale.py's (CPU per request under wrk).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jwt
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import guest_instructions  # noqa: E402  (its cachegrind reading)
import scale  # noqa: E402  (the scale benchmark's policy, so both measure the same points)

REPO = Path(__file__).resolve().parents[2]
BINARY = REPO / "target" / "release" / "modelgate"
WASM = REPO / "target" / "modelgate.wasm"
FEW, MANY = 200, 2200
# The policy-test clock stands still between repeats: a quota no request here reaches.
UNLIMITED = {"requestsPerSecond": 1_000_000_000, "burst": 1_000_000_000}
POINTS = [
    ("base", {"models": 2, "keys": 1, "quota": UNLIMITED}),
    ("1,000 models", {"models": 1000, "keys": 1, "quota": UNLIMITED}),
    ("100 keys", {"models": 2, "keys": 100, "quota": UNLIMITED}),
    ("1,000 models + 100 keys", {"models": 1000, "keys": 100, "quota": UNLIMITED}),
]
# cachegrind's events with --cache-sim=yes, in its output's column order.
EVENTS = ["Ir", "I1mr", "ILmr", "Dr", "D1mr", "DLmr", "Dw", "D1mw", "DLmw"]


def keys(count: int) -> tuple[list[dict], Path]:
    """`count` public JWKs and the last one's private key in PEM (the token's signer)."""
    private = [rsa.generate_private_key(public_exponent=65537, key_size=2048) for _ in range(count)]
    jwks = []
    for i, key in enumerate(private):
        jwk = json.loads(RSAAlgorithm.to_jwk(key.public_key()))
        jwk.pop("key_ops", None)
        jwk.update({"kid": f"bench-rs256-{i:03d}", "alg": "RS256", "use": "sig"})
        jwks.append(jwk)
    pem = private[-1].private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return jwks, pem


def suite(point: dict, kid: str, requests: int) -> dict:
    model = scale.model_names(point)[-1]
    return {
        "policy": {"file": "policy.json"},
        "keys": {"signer": {"algorithm": "RS256", "kid": kid, "privateKeyFile": "signer.pem"}},
        "now": "2026-12-07T12:00:00Z",
        "tests": [
            {
                "name": f"{point['models']} models, {point['keys']} keys",
                "request": {
                    "method": "POST",
                    "path": f"/v1/models/{model}:predict",
                    "headers": {"x-caller": "caller-1"},
                    "body": {"instances": [[5.1, 3.5, 1.4, 0.2]]},
                    "token": {
                        "key": "signer",
                        "claims": {"iss": scale.ISSUER, "aud": scale.AUDIENCE, "sub": "bench", "scope": "predict",
                                   "iat": "now", "exp": "now+1h"},  # fmt: skip
                    },
                },
                "repeat": requests,
                "expect": {"status": 200},
            }
        ],
    }


def totals(out_file: Path) -> tuple[dict[str, int], int]:
    """(every event summed, Ir in code without symbols: the guest's share)."""
    per_function = guest_instructions.events_per_function(out_file)
    sums = {event: sum(counts[i] for counts in per_function.values()) for i, event in enumerate(EVENTS)}
    return sums, per_function.get(("???", "???"), [0])[0]


def measure(work: Path, point: dict, jwks: list[dict], pem: bytes) -> dict[str, float]:
    point_dir = work / f"{point['models']}-{point['keys']}"
    point_dir.mkdir()
    (point_dir / "policy.json").write_text(json.dumps(scale.policy(point, jwks[-point["keys"]:])))
    (point_dir / "signer.pem").write_bytes(pem)
    runs = {}
    for requests in (FEW, MANY):
        test_file = point_dir / f"scale-{requests}.test.yaml"
        test_file.write_text(yaml.safe_dump(suite(point, jwks[-1]["kid"], requests), sort_keys=False))
        out = point_dir / f"cachegrind-{requests}.out"
        run = subprocess.run(
            ["valgrind", "--tool=cachegrind", "--cache-sim=yes", f"--cachegrind-out-file={out}",
             str(BINARY), "test", "--wasm", str(WASM), str(test_file)],  # fmt: skip
            capture_output=True,
            text=True,
        )
        if run.returncode != 0:
            raise SystemExit(f"modelgate test failed under cachegrind:\n{run.stdout[-2000:]}\n{run.stderr[-2000:]}")
        runs[requests] = totals(out)
    span = MANY - FEW
    (many, guest_many), (few, guest_few) = runs[MANY], runs[FEW]
    figures = {event: (many[event] - few[event]) / span for event in EVENTS}
    figures["guest"] = (guest_many - guest_few) / span
    return figures


def table(rows: list[tuple[str, dict, dict]]) -> str:
    base = rows[0][2]
    lines = [
        "| point | policy JSON bytes | guest instr/req | all instr/req | vs base | D1 misses/req | LL misses/req |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, point, f in rows:
        d1 = f["D1mr"] + f["D1mw"]
        # A difference of two runs: start-up's own misses can leave it a hair below zero.
        ll = max(f["DLmr"] + f["DLmw"] + f["ILmr"], 0.0)
        lines.append(
            f"| {name} | {point['bytes']:,} | {f['guest']:,.0f} | {f['Ir']:,.0f} | {f['Ir'] / base['Ir']:.3f}× "
            f"| {d1:,.0f} | {ll:,.1f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, help="write the table (Markdown) here too")
    args = parser.parse_args()
    for needed in (BINARY, WASM):
        if not needed.exists():
            raise SystemExit(f"{needed} is missing: run `make build`")
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is missing: `apt-get install valgrind` (`make bench-scale` installs it)")
    started = time.monotonic()
    jwks, pem = keys(max(p["keys"] for _, p in POINTS))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, point in POINTS:
            point = dict(point)
            point["bytes"] = len(json.dumps(scale.policy(point, jwks[-point["keys"]:])))
            figures = measure(Path(tmp), point, jwks, pem)
            print(f"{name}: {figures['Ir']:,.0f} instructions/request ({figures['guest']:,.0f} in the guest)", flush=True)
            rows.append((name, point, figures))
    report = (
        f"# Instructions per request as the policy grows ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})\n\n"
        "`.venv/bin/python bench/scale/instructions.py` (cachegrind `--cache-sim=yes`, per request over "
        f"{MANY - FEW:,} requests; took {time.monotonic() - started:.0f} s). Counts, not times: the machine's "
        "load does not move them. The request names the policy's last model and its token the JWKS's last key.\n\n"
        + table(rows)
        + "\n"
    )
    print(report)
    if args.out:
        args.out.write_text(report)


if __name__ == "__main__":
    main()
