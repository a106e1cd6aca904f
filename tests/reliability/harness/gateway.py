"""Start and watch the `modelgate` host: config files, readiness, admin metrics, RSS, reloads."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import yaml

from . import rawhttp

REPO = Path(__file__).resolve().parents[3]
HOST_BINARY = REPO / "target" / "release" / "modelgate"
FILTER_WASM = REPO / "target" / "modelgate.wasm"
BUILD_HINT = "build them with `make build` (cargo build --release -p modelgate-host and the wasm profile)"


def require_artifacts() -> None:
    """Fail (never skip) with the build command when the binaries under test are missing."""
    missing = [str(p) for p in (HOST_BINARY, FILTER_WASM) if not p.exists()]
    if missing:
        raise AssertionError(f"missing {', '.join(missing)}: {BUILD_HINT}")


class Gateway:
    """One `modelgate serve` process with its config written under `workdir`."""

    def __init__(self, workdir: Path, config: dict, port: int, admin_port: int, env: dict | None = None):
        self.workdir = workdir
        self.config = config
        self.port = port
        self.admin_port = admin_port
        self.config_path = workdir / "modelgate.yaml"
        self.log_path = workdir / "modelgate.log"
        self.env = env or {}
        self.proc: subprocess.Popen | None = None

    # -- lifecycle -------------------------------------------------------------------
    def write_config(self, config: dict | None = None) -> None:
        """Write the config atomically, so a watching gateway never reads half a file."""
        if config is not None:
            self.config = config
        tmp = self.config_path.with_suffix(".tmp")
        tmp.write_text(yaml.safe_dump(self.config, sort_keys=False))
        os.replace(tmp, self.config_path)

    def start(self, ready_timeout: float = 60.0) -> Gateway:
        require_artifacts()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.write_config()
        env = dict(os.environ)
        env.setdefault("RUST_LOG", "warn")
        env.update(self.env)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [str(HOST_BINARY), "serve", "--config", str(self.config_path)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        deadline = time.monotonic() + ready_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"modelgate exited with {self.proc.returncode} at start:\n{self.log_tail()}")
            if self.admin_get("/ready")[0] == 200:
                return self
            time.sleep(0.1)
        self.stop()
        raise AssertionError(f"modelgate not ready within {ready_timeout}s:\n{self.log_tail()}")

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM (the gateway drains and exits), SIGKILL if it does not; returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def reload_sighup(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGHUP)

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    # -- probes ----------------------------------------------------------------------
    def admin_get(self, path: str, timeout: float = 5.0) -> tuple[int, str]:
        """(status, body) from the admin listener; status 0 when it does not answer."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.admin_port}{path}", timeout=timeout) as resp:
                return resp.status, resp.read().decode(errors="replace")
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode(errors="replace")
        except (OSError, urllib.error.URLError):
            return 0, ""

    def health(self, timeout: float = 5.0) -> int:
        """Status of GET /health on the main listener (0 if it does not answer)."""
        try:
            response = rawhttp.exchange(self.port, rawhttp.request_bytes("GET", "/health"), timeout=timeout)
        except (OSError, AssertionError):
            return 0
        return response.status if response else 0

    def assert_serving(self) -> None:
        """The post-condition of every adversarial case: the process lives and still answers."""
        assert self.alive(), f"modelgate died (exit {self.proc.returncode if self.proc else None}):\n{self.log_tail()}"
        status = self.health()
        assert status == 200, f"/health answered {status} after the case:\n{self.log_tail()}"

    def metrics(self) -> str:
        status, body = self.admin_get("/metrics")
        assert status == 200, f"admin /metrics answered {status}"
        return body

    def metric_sum(self, name_pattern: str, label: str = "") -> float:
        """Sum of every Prometheus sample whose name matches `name_pattern` (a regex) and
        whose labels contain `label` (e.g. `result="success"`)."""
        regex = re.compile(name_pattern)
        total = 0.0
        for line in self.metrics().splitlines():
            if not line or line.startswith("#"):
                continue
            name = re.split(r"[{\s]", line, maxsplit=1)[0]
            if regex.fullmatch(name) and label in line:
                total += float(line.rsplit(" ", 1)[1])
        return total

    def vm_failures(self) -> float:
        return self.metric_sum(VM_FAILURES_METRIC)

    def config_dump_text(self) -> str:
        status, body = self.admin_get("/config_dump")
        assert status == 200, f"admin /config_dump answered {status}"
        return body

    def rss_kib(self) -> int:
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise AssertionError("no VmRSS line")


# The host's counter of VMs that failed at run time: a trap, the callback deadline or the memory
# limit (docs/host-config.md), one sample per plugin.
VM_FAILURES_METRIC = r"modelgate_wasm_vm_failures_total"
