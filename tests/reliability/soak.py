"""Soak: SOAK_SECONDS (default 600) at SOAK_CONCURRENCY (default 64) keep-alive clients
through the full policy, with one of the two model replicas restarted halfway.

Run with `make soak` (or tests/reliability/soak.sh). Settings, all environment variables:
  SOAK_SECONDS           duration of the load (default 600)
  SOAK_CONCURRENCY       concurrent keep-alive clients (default 64)
  SOAK_UPSTREAM          `kserve` (two real KServe servers from tests/e2e/model_server.py,
                         the default) or `recording` (two of this suite's fast KServe-like
                         upstreams, when KServe is not installed)
  SOAK_BASELINE_SECONDS  when the RSS baseline is taken (default 120, "minute 2"; capped at a
                         fifth of SOAK_SECONDS so short runs still have a baseline to compare)
  SOAK_MAX_RSS_GROWTH    allowed RSS growth from the baseline to the end (default 0.10)

The load mixes in requests the policy must refuse (1 in 20 without a token: 401; 1 in 20
with a malformed body: 400). Those are the policy's own answers; every other outcome that
is not the expected status (a 5xx, a reset, a timeout, a 200 where a 401 was due) is an
error. Exit status 0 only when there were no errors and RSS grew less than allowed.
A JSON summary goes to stdout and to target/reliability/soak-summary.json.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from reliability.harness import configs
from reliability.harness.gateway import REPO, Gateway
from reliability.harness.load import LoadGenerator
from reliability.harness.ports import soak_ports
from reliability.harness.rawhttp import request_bytes
from reliability.harness.tokens import KeySet
from reliability.harness.upstream import ReplicaProcess

SAMPLE_EVERY = 5.0
MODEL_SERVER = REPO / "tests" / "e2e" / "model_server.py"


class KServeReplica:
    """One real KServe model server serving sklearn-iris (tests/e2e/model_server.py)."""

    def __init__(self, port: int, name: str, log: Path):
        self.port = port
        self.name = name
        self.log = log
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 90.0) -> KServeReplica:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, str(MODEL_SERVER), "--model", "iris", "--name", configs.IRIS, "--port", str(self.port), "--replica", self.name],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"soak: KServe replica {self.name} exited with {self.proc.returncode}; see {self.log}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/v1/models/{configs.IRIS}", timeout=2) as resp:
                    if resp.status == 200:
                        return self
            except OSError:
                pass
            time.sleep(0.2)
        raise SystemExit(f"soak: KServe replica {self.name} not ready in {timeout}s; see {self.log}")

    def stop(self) -> None:
        """SIGTERM, as Kubernetes does in a rolling restart: uvicorn drains, then exits."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def kserve_available() -> bool:
    probe = subprocess.run([sys.executable, "-c", "import kserve, sklearn"], capture_output=True, check=False)
    return probe.returncode == 0


def host_config(port: int, admin: int, replica_ports: list[int], keys: KeySet) -> dict:
    config = configs.host_config(
        port,
        admin,
        {"iris": replica_ports},
        [configs.modelgate_filter(keys, vmCount=0)],
        {configs.IRIS: "iris"},
        reload_poll="1s",
    )
    # A rolling restart closes the replica's pooled connections under the host's feet; a
    # production route retries resets as well as connect failures.
    config["routes"][0]["retry"] = {"on": ["connect-failure", "reset"], "numRetries": 2}
    return config


def request_mix(keys: KeySet):
    token = keys.rs256(keys.claims(lifetime=24 * 3600))
    valid = json.dumps({"instances": [[5.1, 3.5, 1.4, 0.2], [6.2, 3.4, 5.4, 2.3]]}).encode()
    ragged = json.dumps({"instances": [[5.1, 3.5, 1.4]]}).encode()
    path = f"/v1/models/{configs.IRIS}:predict"
    json_type = ("Content-Type", "application/json")
    bearer = ("Authorization", f"Bearer {token}")
    ok = request_bytes("POST", path, [json_type, bearer], valid)
    unauthenticated = request_bytes("POST", path, [json_type], valid)
    invalid = request_bytes("POST", path, [json_type, bearer], ragged)
    cycle = itertools.cycle([(ok, 200)] * 9 + [(unauthenticated, 401)] + [(ok, 200)] * 9 + [(invalid, 400)])
    return lambda: next(cycle)


def main() -> int:
    seconds = float(os.environ.get("SOAK_SECONDS", "600"))
    concurrency = int(os.environ.get("SOAK_CONCURRENCY", "64"))
    baseline_at = min(float(os.environ.get("SOAK_BASELINE_SECONDS", "120")), seconds / 5)
    max_growth = float(os.environ.get("SOAK_MAX_RSS_GROWTH", "0.10"))
    upstream_kind = os.environ.get("SOAK_UPSTREAM", "kserve")
    if upstream_kind == "kserve" and not kserve_available():
        raise SystemExit("soak: KServe is not installed in this Python; run `make setup`, or SOAK_UPSTREAM=recording")

    out_dir = REPO / "target" / "reliability"
    out_dir.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="soak-", dir=out_dir))
    keys = KeySet.generate()
    replica_ports = [soak_ports.take(), soak_ports.take()]
    if upstream_kind == "kserve":
        replicas = [KServeReplica(p, f"soak-{i}", workdir / f"replica-{i}.log") for i, p in enumerate(replica_ports)]
    else:
        replicas = [ReplicaProcess(p, f"soak-{i}", [configs.IRIS]) for i, p in enumerate(replica_ports)]
    port, admin = soak_ports.take(), soak_ports.take()
    gateway = Gateway(workdir, host_config(port, admin, replica_ports, keys), port, admin, env={"RUST_LOG": "warn"})

    log(f"{upstream_kind} upstreams on {replica_ports}, gateway on {port} (admin {admin}), work dir {workdir}")
    for replica in replicas:
        replica.start()
    samples: list[dict] = []
    restart: dict = {}
    try:
        gateway.start()
        started = time.monotonic()
        with LoadGenerator(port, request_mix(keys), concurrency) as load:
            next_sample = 0.0
            restarted = False
            while (elapsed := time.monotonic() - started) < seconds:
                if elapsed >= next_sample:
                    samples.append({"t": round(elapsed, 1), "rss_kib": gateway.rss_kib(), "requests": load.result.total})
                    log(f"t={elapsed:5.0f}s rss={samples[-1]['rss_kib'] / 1024:.1f} MiB requests={load.result.total} errors={errors(load.result)}")
                    next_sample += SAMPLE_EVERY
                if not restarted and elapsed >= seconds / 2:
                    restarted = True
                    restart = restart_replica(replicas[1], load, started)
                assert gateway.alive(), f"modelgate died:\n{gateway.log_tail()}"
                time.sleep(0.2)
            result = load.stop()
        samples.append({"t": round(time.monotonic() - started, 1), "rss_kib": gateway.rss_kib(), "requests": result.total})
    finally:
        gateway.stop()
        for replica in replicas:
            replica.stop()

    baseline = next(s for s in samples if s["t"] >= baseline_at)
    end = samples[-1]
    growth = (end["rss_kib"] - baseline["rss_kib"]) / baseline["rss_kib"]
    summary = {
        "upstream": upstream_kind,
        "seconds": seconds,
        "concurrency": concurrency,
        "requests": result.total,
        "requests_per_second": round(result.total / max(result.ended - result.started, 1e-9)),
        "statuses": {str(k): v for k, v in sorted(result.statuses.items())},
        "policy_answers": {"401": result.statuses[401], "400": result.statuses[400]},
        "errors": errors(result),
        "client_failures": dict(result.failures),
        "unexpected_statuses": {f"{e}->{g}": n for (e, g), n in result.mismatches.items()},
        "p50_ms": round(result.percentile(50) * 1000, 2),
        "p99_ms": round(result.percentile(99) * 1000, 2),
        "replica_restart": restart,
        "rss_baseline": {"t": baseline["t"], "mib": round(baseline["rss_kib"] / 1024, 1)},
        "rss_end": {"t": end["t"], "mib": round(end["rss_kib"] / 1024, 1)},
        "rss_growth": round(growth, 4),
        "rss_max_growth": max_growth,
        "passed": errors(result) == 0 and growth < max_growth,
    }
    text = json.dumps(summary, indent=2)
    (out_dir / "soak-summary.json").write_text(text + "\n")
    print(text)
    return 0 if summary["passed"] else 1


def errors(result) -> int:
    """Outcomes that were not the expected status: failures, not the policy's own answers."""
    return sum(result.mismatches.values()) + sum(result.failures.values())


def restart_replica(replica, load: LoadGenerator, started: float) -> dict:
    errors_before = errors(load.result)
    at = time.monotonic() - started
    log(f"t={at:5.0f}s restarting replica {replica.name}")
    replica.stop()
    down = time.monotonic() - started
    replica.start()
    up = time.monotonic() - started
    log(f"t={up:5.0f}s replica {replica.name} back (down for {up - down:.1f}s)")
    return {"at_s": round(at, 1), "down_s": round(up - down, 1), "errors_during": errors(load.result) - errors_before}


def log(message: str) -> None:
    print(f"soak: {message}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
