"""Starts and stops the demo stack: real KServe model servers and the `modelgate` gateway.

Used by both `scripts/demo.sh` (through demo.py) and the pytest suite (conftest.py), so the
demo and the tests run the same processes with the same configuration. The gateway serves
deploy/ itself: `modelgate serve --manifests <run dir>/overlay --backend ...`, the overlay
being deploy/ plus the few local things demo_config.local_overlay states (test keys, the TLS
Secret, sklearn-wine). Its processes:

  iris-1, iris-2   KServe servers for sklearn-iris (the two predictor replicas deploy/ asks
                   for), each with KServe's gRPC port for deploy/'s GRPCRoute
  mnist            a KServe server for sklearn-mnist (784 features, digits upsampled to 28x28)
  mnist-explainer  a KServe server answering sklearn-mnist `:explain` as KServe's ART explainer
  wine             a KServe server for sklearn-wine (the overlay's model)
  modelgate        target/release/modelgate with target/modelgate.wasm

With `llm` (`make demo-llm`, the LLM tests) the gateway runs the host's own YAML instead
(demo_config.host_config; deploy/ cannot state body routing here, see demo_config), in front
of iris-1, iris-2, wine, an iris explainer (`iris-explainer`) and:

  openai-1, -2     KServe OpenAI servers (llm_stack.py, in .venv-llm), each serving
                   markov-zen and markov-docs (the two replicas of one cluster)

It builds nothing (`make build` does). Each process runs in its own process group with its
output in `<run dir>/logs/<name>.log`; `stop()` sends SIGTERM to each group, then SIGKILL
to what is still alive after a grace period, so no model server outlives the stack.

Ports: defaults in demo_config.Ports; `MODELGATE_PORT_BASE=N` moves them all (see
Ports.from_base), and MODELGATE_<FIELD>_PORT (e.g. MODELGATE_GATEWAY_PORT,
MODELGATE_MNIST_EXPLAINER_PORT) sets one.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, fields, replace
from pathlib import Path

import requests
import yaml

import demo_config
import keys

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
HOST_BINARY = REPO / "target" / "release" / "modelgate"
WASM = REPO / "target" / "modelgate.wasm"
MODEL_SERVER = HERE / "model_server.py"
START_TIMEOUT = 90.0  # seconds; four KServe servers starting at once on two cores take ~10 s


class StackError(RuntimeError):
    """A part of the stack could not start; the message says which and shows its log."""


def ports_from_env(default: demo_config.Ports | None = None) -> demo_config.Ports:
    ports = default or demo_config.Ports()
    base = os.environ.get("MODELGATE_PORT_BASE")
    if base:
        ports = demo_config.Ports.from_base(int(base))
    overrides = {}
    for f in fields(ports):
        value = os.environ.get(f"MODELGATE_{f.name.upper()}_PORT")
        if value:
            overrides[f.name] = int(value)
    return replace(ports, **overrides)


def free_ports() -> demo_config.Ports:
    """Seven ports the kernel says are free now (for tests running beside a demo)."""
    sockets = []
    try:
        for _ in fields(demo_config.Ports):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return demo_config.Ports(*(s.getsockname()[1] for s in sockets))
    finally:
        for s in sockets:
            s.close()


def port_in_use(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _die_with_parent() -> None:
    """Runs in the child before exec: SIGTERM it if the launcher dies, even by SIGKILL."""
    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


@dataclass
class Process:
    name: str
    argv: list[str]
    log_path: Path
    popen: subprocess.Popen | None = None

    def start(self, env: dict | None = None) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "wb")
        self.popen = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # own process group: Ctrl-C in the terminal reaches us only
            env=env,
            cwd=REPO,
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,
        )
        log.close()

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def log_tail(self, lines: int = 25) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        return "\n".join(text[-lines:])

    def signal_group(self, sig: int) -> None:
        if self.popen is None:
            return
        try:
            os.killpg(self.popen.pid, sig)
        except ProcessLookupError:
            pass

    def wait(self, timeout: float) -> bool:
        if self.popen is None:
            return True
        try:
            self.popen.wait(timeout=timeout)
            return True
        except subprocess.TimeoutExpired:
            return False

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM the process group, then SIGKILL it if it still runs after `grace`."""
        self.signal_group(signal.SIGTERM)
        if not self.wait(grace):
            self.signal_group(signal.SIGKILL)
            self.wait(5.0)


@contextlib.contextmanager
def serving(proc: Process, ready_url: str, env: dict | None = None) -> Iterator[None]:
    """Starts `proc`, waits until `ready_url` answers, and stops it on the way out: a
    gateway a test starts beside the stack."""
    proc.start(env=env)
    try:
        wait_http(proc, ready_url)
        yield
    finally:
        proc.stop()


def wait_http(proc: Process, url: str, timeout: float = START_TIMEOUT) -> None:
    """Waits until `url` answers 200, or fails with the process's log if it exits first."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if not proc.alive():
            raise StackError(
                f"{proc.name} exited with status {proc.popen.returncode} before {url} "
                f"answered; last lines of {proc.log_path}:\n{proc.log_tail()}"
            )
        try:
            r = requests.get(url, timeout=1.0)
            if r.status_code == 200:
                return
            last = f"status {r.status_code}"
        except requests.RequestException as e:
            last = type(e).__name__
        time.sleep(0.2)
    raise StackError(
        f"{proc.name}: {url} not ready after {timeout:.0f}s ({last}); "
        f"last lines of {proc.log_path}:\n{proc.log_tail()}"
    )


def manifests_argv(overlay: Path, ports: demo_config.Ports) -> list[str]:
    """`modelgate serve --manifests overlay`, its listeners and admin on `ports`, its Services
    on the model servers' ports (demo_config.backends)."""
    argv = [
        str(HOST_BINARY), "serve", "--manifests", str(overlay), "--wasm", str(WASM),
        "--listener", f"http=127.0.0.1:{ports.gateway}", "--listener", f"https=127.0.0.1:{ports.https}",
        "--admin", f"127.0.0.1:{ports.admin}",
    ]  # fmt: skip
    for mapping in demo_config.backends(ports):
        argv += ["--backend", mapping]
    return argv


@dataclass(frozen=True)
class ModelServerSpec:
    name: str  # process name, e.g. iris-1
    model: str  # iris | wine | mnist
    model_name: str  # name on the URL path
    port: int
    role: str = "predictor"
    grpc_port: int = 0


class Stack:
    """The demo stack. `with Stack(...) as stack:` starts it and always stops it."""

    def __init__(
        self, ports: demo_config.Ports, run_dir: Path, verbose_models: bool = False, llm: bool = False
    ):
        self.ports = ports
        self.llm = llm
        self.run_dir = Path(run_dir)
        self.verbose_models = verbose_models
        self.processes: list[Process] = []
        self.keyset: keys.KeySet | None = None
        self.host_config_path = self.run_dir / "modelgate.yaml"
        self.filter_config_path = self.run_dir / "filter-config.json"
        self.overlay_path = self.run_dir / "overlay"
        self.cert_path: Path | None = None
        # deploy/ through the local overlay, or (the LLM stack) the host's own YAML.
        self.manifests = not llm

    # Addresses -------------------------------------------------------------------------
    @property
    def gateway(self) -> str:
        """Where clients send model requests: deploy/'s HTTPS listener (its HTTP listener only
        redirects), or the LLM stack's plain HTTP listener."""
        return self.gateway_tls if self.manifests else self.gateway_http

    @property
    def gateway_http(self) -> str:
        return f"http://127.0.0.1:{self.ports.gateway}"

    @property
    def gateway_tls(self) -> str:
        return f"https://localhost:{self.ports.https}"

    @property
    def admin(self) -> str:
        return f"http://127.0.0.1:{self.ports.admin}"

    def model_servers(self) -> list[ModelServerSpec]:
        p = self.ports
        if not self.manifests:
            return [
                ModelServerSpec("iris-1", "iris", demo_config.IRIS, p.iris1),
                ModelServerSpec("iris-2", "iris", demo_config.IRIS, p.iris2),
                ModelServerSpec("wine", "wine", demo_config.WINE, p.wine),
                ModelServerSpec("iris-explainer", "iris", demo_config.IRIS, p.explainer, "explainer"),
            ]
        mnist = demo_config.MNIST
        return [
            ModelServerSpec("iris-1", "iris", demo_config.IRIS, p.iris1, grpc_port=p.iris1_grpc),
            ModelServerSpec("iris-2", "iris", demo_config.IRIS, p.iris2, grpc_port=p.iris2_grpc),
            ModelServerSpec("mnist", "mnist", mnist, p.mnist),
            ModelServerSpec("mnist-explainer", "mnist", mnist, p.mnist_explainer, "explainer"),
            ModelServerSpec("wine", "wine", demo_config.WINE, p.wine),
        ]

    def model_server_url(self, name: str) -> str:
        spec = next(s for s in self.model_servers() if s.name == name)
        return f"http://127.0.0.1:{spec.port}"

    # Lifecycle -------------------------------------------------------------------------
    def __enter__(self) -> "Stack":
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self, host: bool = True) -> None:
        if host:
            self.check_built()
        busy = [p for p in self.ports.all(self.llm) if port_in_use(p)]
        if busy:
            raise StackError(
                f"ports already in use: {busy}; stop what holds them or move the stack "
                "with MODELGATE_PORT_BASE=N"
            )
        self.write_config()
        self.start_model_servers()
        if host:
            self.start_gateway()

    def write_config(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.keyset = keys.KeySet.generate()
        self.keyset.save(str(self.run_dir / "keys"))
        cert, key = keys.self_signed_cert(str(self.run_dir / "tls"))
        self.cert_path = Path(cert)
        if self.manifests:
            demo_config.local_overlay(
                self.overlay_path, self.keyset, Path(cert).read_text(), Path(key).read_text()
            )
            # The same policy as a file, for `modelgate test` (with `filter_env`).
            self.filter_config_path.write_text(json.dumps(demo_config.local_policy(self.keyset), indent=2) + "\n")
            return
        with open(self.filter_config_path, "w") as f:
            json.dump(demo_config.filter_config(self.keyset, self.llm), f, indent=2)
            f.write("\n")
        host = demo_config.host_config(
            self.ports, str(WASM), str(self.filter_config_path), cert, key, self.llm
        )
        with open(self.host_config_path, "w") as f:
            f.write("# Generated by tests/e2e/stack.py for this run; format: docs/host-config.md\n")
            yaml.safe_dump(host, f, sort_keys=False)

    def start_model_servers(self) -> None:
        python = sys.executable
        for spec in self.model_servers():
            argv = [
                python, str(MODEL_SERVER),
                "--model", spec.model, "--name", spec.model_name,
                "--port", str(spec.port), "--role", spec.role, "--replica", spec.name,
            ]  # fmt: skip
            if spec.grpc_port:
                argv += ["--grpc-port", str(spec.grpc_port)]
            if self.verbose_models:
                argv.append("--verbose")
            proc = Process(spec.name, argv, self.run_dir / "logs" / f"{spec.name}.log")
            proc.start()
            self.processes.append(proc)
        if self.llm:
            # Imported here: only the LLM stack needs it (and its .venv-llm).
            import llm_stack

            llm_stack.start_openai_servers(self.openai_servers(), self.run_dir, self.processes)
        for spec in self.model_servers():
            self._wait_http(
                self._process(spec.name),
                f"http://127.0.0.1:{spec.port}/v1/models/{spec.model_name}",
            )

    def openai_servers(self) -> list:
        """With `llm`: the OpenAI servers (llm_stack.OpenAIServerSpec), else none."""
        import llm_stack

        if not self.llm:
            return []
        delay = llm_stack.TOKEN_DELAY_MS
        return [
            llm_stack.OpenAIServerSpec("openai-1", self.ports.openai1, delay),
            llm_stack.OpenAIServerSpec("openai-2", self.ports.openai2, delay),
        ]

    @staticmethod
    def check_built() -> None:
        missing = [str(p) for p in (HOST_BINARY, WASM) if not p.exists()]
        if missing:
            raise StackError(f"not built: {', '.join(missing)}; run `make build` first")

    def gateway_argv(self) -> list[str]:
        """The gateway's command line: deploy/ through the overlay, or the host's YAML."""
        if not self.manifests:
            return [str(HOST_BINARY), "serve", "--config", str(self.host_config_path)]
        return manifests_argv(self.overlay_path, self.ports)

    def start_gateway(self) -> None:
        self.check_built()
        env = {**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "info")}
        env.update(self.filter_env)
        proc = Process("modelgate", self.gateway_argv(), self.run_dir / "logs" / "modelgate.log")
        proc.start(env=env)
        self.processes.append(proc)
        self._wait_http(proc, f"{self.admin}/ready")

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM every process group, then SIGKILL the ones still running after `grace`."""
        for proc in reversed(self.processes):
            proc.signal_group(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for proc in reversed(self.processes):
            if not proc.wait(max(0.0, deadline - time.monotonic())):
                proc.signal_group(signal.SIGKILL)
                proc.wait(5.0)
        self.processes.clear()

    def _process(self, name: str) -> Process:
        return next(p for p in self.processes if p.name == name)

    def _wait_http(self, proc: Process, url: str) -> None:
        wait_http(proc, url)

    @property
    def filter_env(self) -> dict[str, str]:
        """The filter VM's environment: the HMAC secrets the overlay's keys read (`kFromEnv`)."""
        return demo_config.hmac_env(self.keyset) if self.manifests else {}

    # Tokens ----------------------------------------------------------------------------
    def token(self, alg: str = "RS256", **claim_args) -> str:
        assert self.keyset is not None, "stack not started"
        return keys.mint(self.keyset, alg, **claim_args)
