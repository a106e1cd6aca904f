"""How long `modelgate test` takes for 200 cases (a benchmark, not a test: it asserts nothing).

The cases are the demo suite's (examples/policy-tests/demo/demo.test.yaml), repeated until
there are 200, in one file: routing, every JWT failure, scopes, quotas over time (including
one case of 101 requests and one of 30), validation and body limits. Each run is the whole
command: start, compiling the module once, a fresh plugin per case, every request.

Run after `make build`: .venv/bin/python bench/policy_tests.py [--runs N] [--cases N] [--binary FILE]
Each run is timed twice, interleaved: cold (an empty compiled-module cache, as the first run on
a machine or after a new modelgate.wasm) and warm (wasmtime's cache holds the compiled module,
as every later run). Wall time is what the target is about; CPU time (user + system, every
thread) is printed too, since on this shared 2-core machine it says what the run cost whatever
else was running. Results: bench/results/policy_tests.md.
"""

from __future__ import annotations

import argparse
import os
import resource
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


def run_once(binary: Path, path: Path, cache_home: Path) -> tuple[float, float, str]:
    """One whole `modelgate test` run with wasmtime's cache under `cache_home`: wall and CPU
    seconds (user + system, every thread), and its summary line."""
    env = {**os.environ, "XDG_CACHE_HOME": str(cache_home)}
    cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    run = subprocess.run([str(binary), "test", str(path)], capture_output=True, text=True, env=env)
    wall = time.perf_counter() - start
    cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = cpu_after.ru_utime - cpu_before.ru_utime + cpu_after.ru_stime - cpu_before.ru_stime
    if run.returncode != 0:
        raise SystemExit(f"modelgate test failed:\n{run.stdout[-2000:]}\n{run.stderr[-2000:]}")
    return wall, cpu, run.stdout.splitlines()[-1]


def report(label: str, runs: list[tuple[float, float, str]], cases: int) -> None:
    walls = [r[0] for r in runs]
    cpus = [r[1] for r in runs]
    print(f"  {label}:")
    print(f"    wall time: best {min(walls):.2f} s, median {statistics.median(walls):.2f} s, worst {max(walls):.2f} s")
    print(f"    CPU time: best {min(cpus):.2f} s, median {statistics.median(cpus):.2f} s")
    print(f"    per case (median wall): {statistics.median(walls) / cases * 1000:.2f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--cases", type=int, default=200)
    parser.add_argument("--binary", type=Path, default=BINARY, help="the modelgate to run (default: the release build)")
    args = parser.parse_args()
    if not args.binary.exists():
        raise SystemExit(f"{args.binary} is missing: run `make build`")
    suite = suite_of(args.cases)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.test.yaml"
        path.write_text(yaml.safe_dump(suite, sort_keys=False))
        warm_cache = Path(tmp) / "warm-cache"
        run_once(args.binary, path, warm_cache)  # fills the cache the warm runs read
        cold, warm = [], []
        for i in range(args.runs):
            # Interleaved, so both see the same machine.
            cold.append(run_once(args.binary, path, Path(tmp) / f"cold-cache-{i}"))
            warm.append(run_once(args.binary, path, warm_cache))
    print(f"modelgate test: {args.cases} cases ({requests_in(suite)} requests), {args.runs} runs each")
    report("cold (first run on a machine: the module is compiled)", cold, args.cases)
    report("warm (the compiled module read from wasmtime's cache)", warm, args.cases)
    print(f"  last run: {warm[-1][2]}")
    print(f"  load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
