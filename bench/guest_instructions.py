"""Instructions per request of the mg-full benchmark's request, in the guest and in all, under cachegrind.

The request is case 6's (bench/config/policy.json.in, the full policy): a one-instance KServe
V1 predict with an RS256 token that is already in the verified-token cache and a rate limit that
is not hit. It is sent N times in one `modelgate test` case (the real runtime and filter chain,
no sockets), once with N = 200 and once with N = 2,200, under
`valgrind --tool=cachegrind --cache-sim=no`; the difference over 2,000 cancels start-up and the
module's compilation. Code wasmtime compiled from the module has no symbols, so cachegrind books
it under `???`: that is the guest's share (the filter's own code); the total is the whole request
cycle in the host too (headers, body, response and log callbacks, the ABI work around them).

Run after `make build` (valgrind is a Debian package):
    .venv/bin/python bench/guest_instructions.py [--wasm FILE]...
With no --wasm: the artifact, target/modelgate.wasm. A benchmark: it asserts nothing but that
every request got the 200 it should.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
BINARY = REPO / "target" / "release" / "modelgate"
ARTIFACT = REPO / "target" / "modelgate.wasm"
DEMO = REPO / "examples" / "policy-tests" / "demo"
ISSUER = "https://issuer.modelgate.demo"
AUDIENCE = "modelgate-demo"
FEW, MANY = 200, 2200


def policy() -> str:
    """bench/config/policy.json.in with the demo's RS256 test key as its one JWKS key."""
    demo = json.loads((DEMO / "policy.json").read_text())
    keys = [key for key in demo["jwt"]["jwks"]["keys"] if key.get("kid") == "demo-rs256"]
    template = (REPO / "bench" / "config" / "policy.json.in").read_text()
    return (
        template.replace("@ISSUER@", ISSUER)
        .replace("@AUDIENCE@", AUDIENCE)
        .replace("@JWKS@", json.dumps({"keys": keys}))
    )


def suite(requests: int) -> dict:
    return {
        "policy": {"file": "policy.json"},
        "keys": {
            "rs256": {
                "algorithm": "RS256",
                "kid": "demo-rs256",
                "privateKeyFile": str(DEMO / "keys" / "demo-rs256.key"),
            }
        },
        "now": "2026-12-07T12:00:00Z",
        "tests": [
            {
                "name": "mg-full request",
                "request": {
                    "method": "POST",
                    "path": "/v1/models/sklearn-iris:predict",
                    "body": {"instances": [[5.1, 3.5, 1.4, 0.2]]},
                    "token": {
                        "key": "rs256",
                        "claims": {"iss": ISSUER, "aud": AUDIENCE, "sub": "bench", "scope": "predict",
                                   "iat": "now", "exp": "now+1h"},
                    },
                },
                "repeat": requests,
                "expect": {"status": 200},
            }
        ],
    }


def events_per_function(out_file: Path) -> dict[tuple[str, str], list[int]]:
    """Each (file, function)'s events of a cachegrind output file, summed over its lines, in the
    file's `events:` order (Ir first)."""
    per_function: dict[tuple[str, str], list[int]] = {}
    file = function = ""
    for line in out_file.read_text().splitlines():
        if line.startswith("fl="):
            file = line[3:]
        elif line.startswith("fn="):
            function = line[3:]
        elif line[:1].isdigit():
            counts = [int(v) for v in line.split()[1:]]
            sums = per_function.setdefault((file, function), [0] * len(counts))
            for i, count in enumerate(counts):
                sums[i] += count
    return per_function


def instructions(out_file: Path) -> tuple[int, int]:
    """(instructions in code without symbols, all instructions) of a cachegrind output file."""
    per_function = events_per_function(out_file)
    return per_function.get(("???", "???"), [0])[0], sum(counts[0] for counts in per_function.values())


def measure(wasm: Path, work: Path) -> tuple[float, float]:
    counts = {}
    for requests in (FEW, MANY):
        test_file = work / f"cost-{requests}.test.yaml"
        test_file.write_text(yaml.safe_dump(suite(requests), sort_keys=False))
        out = work / f"cachegrind-{requests}.out"
        run = subprocess.run(
            ["valgrind", "--tool=cachegrind", "--cache-sim=no", f"--cachegrind-out-file={out}",
             str(BINARY), "test", "--wasm", str(wasm), str(test_file)],
            capture_output=True, text=True,
        )
        if run.returncode != 0:
            raise SystemExit(f"modelgate test failed under cachegrind:\n{run.stdout[-2000:]}\n{run.stderr[-2000:]}")
        counts[requests] = instructions(out)
    span = MANY - FEW
    guest = (counts[MANY][0] - counts[FEW][0]) / span
    total = (counts[MANY][1] - counts[FEW][1]) / span
    return guest, total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--wasm", type=Path, action="append", help="a module to measure (repeatable)")
    parser.add_argument("--out", type=Path, help="append a JSON line per module here (for bench/report.py)")
    args = parser.parse_args()
    if not BINARY.exists():
        raise SystemExit(f"{BINARY} is missing: run `make build`")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "policy.json").write_text(policy())
        for wasm in args.wasm or [ARTIFACT]:
            guest, total = measure(wasm.resolve(), work)
            print(f"{wasm} ({wasm.stat().st_size} bytes): {guest:,.0f} guest instructions per request, "
                  f"{total:,.0f} in all")
            if args.out:
                with args.out.open("a") as out:
                    record = {"type": "guest_instructions", "wasm": str(wasm), "bytes": wasm.stat().st_size,
                              "guest": guest, "total": total}
                    out.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
