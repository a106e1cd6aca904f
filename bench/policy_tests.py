"""How long `modelgate test` takes for 200 cases (a benchmark, not a test: it asserts nothing).

The cases are the demo suite's (examples/policy-tests/demo/demo.test.yaml), repeated until
there are 200, in one file: routing, every JWT failure, scopes, quotas over time (including
one case of 101 requests and one of 30), validation and body limits. Each run is the whole
command: start, compiling the module once, a fresh plugin per case, every request.

Run after `make build`: .venv/bin/python bench/policy_tests.py [--runs N] [--cases N]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
BINARY = REPO / "target" / "release" / "modelgate"
DEMO = REPO / "examples" / "policy-tests" / "demo"


def absolute(block: dict, field: str) -> None:
    if field in block:
        block[field] = str(DEMO / block[field])


def suite_of(cases: int) -> dict:
    suite = yaml.safe_load((DEMO / "demo.test.yaml").read_text())
    # PyYAML reads `now` as a datetime; write it back in the runner's UTC form.
    suite["now"] = suite["now"].strftime("%Y-%m-%dT%H:%M:%SZ")
    absolute(suite["policy"], "file")
    for key in suite["keys"].values():
        absolute(key, "privateKeyFile")
    demo_cases = suite["tests"]
    for case in demo_cases:
        for block in [case.get("request", {})] + [s.get("request", {}) for s in case.get("steps", [])]:
            absolute(block, "bodyFile")
    suite["tests"] = [
        {**demo_cases[i % len(demo_cases)], "name": f"{i:03d} {demo_cases[i % len(demo_cases)]['name']}"}
        for i in range(cases)
    ]
    return suite


def requests_in(suite: dict) -> int:
    total = 0
    for case in suite["tests"]:
        steps = case.get("steps") or [case]
        total += sum(step.get("repeat", 1) for step in steps)
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--cases", type=int, default=200)
    args = parser.parse_args()
    if not BINARY.exists():
        raise SystemExit(f"{BINARY} is missing: run `make build`")
    suite = suite_of(args.cases)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.test.yaml"
        path.write_text(yaml.safe_dump(suite, sort_keys=False))
        times = []
        for _ in range(args.runs):
            start = time.perf_counter()
            run = subprocess.run([str(BINARY), "test", str(path)], capture_output=True, text=True)
            times.append(time.perf_counter() - start)
            last = run.stdout.splitlines()[-1] if run.stdout else run.stderr
            if run.returncode != 0:
                raise SystemExit(f"modelgate test failed:\n{run.stdout[-2000:]}\n{run.stderr[-2000:]}")
    print(f"modelgate test: {args.cases} cases ({requests_in(suite)} requests), {args.runs} runs")
    print(f"  wall time: best {min(times):.2f} s, median {statistics.median(times):.2f} s, worst {max(times):.2f} s")
    print(f"  per case (median): {statistics.median(times) / args.cases * 1000:.2f} ms")
    print(f"  last run: {last}")


if __name__ == "__main__":
    main()
