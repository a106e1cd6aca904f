"""Scale benchmark (issue 19): how modelgate's cost grows with models, JWKS keys, callers,
tokens and body size, and what a per-proxy limit becomes behind N replicas.

`make bench-scale` runs it; it writes bench/results/scale.{md,csv,jsonl} and scale-*.png
(bench/scale/report.py turns the JSON lines into tables and plots).

Every point is one `modelgate serve` process (release, workers = CPUs, one VM each) with
modelgate.wasm reading its policy from an EnvoyExtensionPolicy manifest built from
deploy/modelgate/envoyextensionpolicy.yaml, in front of bench/'s static nginx upstream; wrk
sends a KServe V1 predict at c=32 (bench/scale/request.lua). A sweep changes one dimension
from the base point (2 models, 1 key, 10 callers, 1 token, 1 instance); its points run side by
side, interleaved round by round (every other round in reverse order), and the base point is in
every sweep, so each ratio compares figures taken in the same minutes of this shared machine.

Per point: CPU per request (the process's utime + stime from /proc over the requests served),
p50/p99, `on_configure` time and the VM's linear memory after it (when the host's runtime logs
them for every VM it starts; empty otherwise), the process's VmRSS/VmHWM after the rounds, the manifest's size as
JSON, and the load average beside the figures.

Settings (environment): SCALE_DURATION seconds per measurement (4), SCALE_ROUNDS (4: with 2, points of a sweep at load 20 differed by up to 1.4x from noise alone),
SCALE_FLOOD seconds of new callers sent to the largest callers point before its rounds (30),
SCALE_SWEEPS subset of "models keys callers tokens body combined configure replicas",
SCALE_OUT results directory (bench/results).
Needs wrk, nginx, haproxy and redis-server (Debian packages; bench/run.sh and scripts/setup.sh
install them), PyJWT and matplotlib. Ports are picked free. Every process started here is stopped on exit.
"""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import jwt
import yaml
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "bench"
SCALE = BENCH / "scale"
MODELGATE = Path(os.environ.get("MODELGATE", ROOT / "target/release/modelgate"))
WASM = Path(os.environ.get("MODELGATE_WASM", ROOT / "target/modelgate.wasm"))
DURATION = int(os.environ.get("SCALE_DURATION", "4"))
ROUNDS = int(os.environ.get("SCALE_ROUNDS", "4"))
FLOOD = int(os.environ.get("SCALE_FLOOD", "30"))
SWEEPS = os.environ.get("SCALE_SWEEPS", "models keys callers tokens body combined configure replicas").split()
OUT = Path(os.environ.get("SCALE_OUT", BENCH / "results"))
CONNS = 32
ISSUER = "https://issuer.bench.modelgate.local"
AUDIENCE = "modelgate-bench"
# docs/config.md's default validation.maxBodyBytes, which the body sweep goes up to.
MAX_BODY = 1048576
INSTANCE = "[6.8,2.8,4.8,1.4]"
TICK_HZ = os.sysconf("SC_CLK_TCK")
# The line a host's runtime logs per VM it starts, when it does.
CONFIGURE_LINE = re.compile(
    r"wasm vm \S+: on_configure took (\d+) us for (\d+) bytes of plugin config; linear memory (\d+) bytes"
)

BASE = {"models": 2, "keys": 1, "callers": 10, "tokens": 1, "instances": 1}
# Per caller and model: far above what one caller sends here, so no point measures 429s.
QUOTA = {"requestsPerSecond": 1000, "burst": 1000}


def log(msg):
    print(f"[scale {time.strftime('%H:%M:%S', time.gmtime())}] {msg}", file=sys.stderr, flush=True)


def loadavg():
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def render(template, out, **values):
    text = Path(template).read_text()
    for key, value in values.items():
        text = text.replace(f"@{key}@", str(value))
    if re.search(r"@[A-Z_]+@", text):
        raise SystemExit(f"unfilled placeholder in {out}")
    Path(out).write_text(text)


class Processes:
    """Every server started here, stopped on exit."""

    def __init__(self, run):
        self.run = run
        self.procs = []

    def spawn(self, name, argv, env=None):
        out = open(self.run / f"{name}.log", "wb")
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        self.procs.append(proc)
        return proc

    def stop(self, proc):
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()

    def stop_all(self):
        for proc in self.procs:
            self.stop(proc)


def wait_http(url, proc, seconds=60):
    deadline = time.monotonic() + seconds
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except (urllib.error.URLError, OSError):
            pass
        if proc.poll() is not None:
            raise SystemExit(f"process for {url} exited ({proc.returncode})")
        if time.monotonic() > deadline:
            raise SystemExit(f"{url} not answering after {seconds} s")
        time.sleep(0.2)


def proc_status_kib(pid, field):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def cpu_seconds(pid):
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK_HZ


# --- JWT material (PyJWT, independent of the filter's Rust code) -----------------------------


class Keys:
    """RS256 key pairs; the JWKS of a point lists its first n public halves."""

    def __init__(self, count):
        t = time.monotonic()
        self.private = [rsa.generate_private_key(public_exponent=65537, key_size=2048) for _ in range(count)]
        self.jwks = []
        for i, key in enumerate(self.private):
            jwk = json.loads(RSAAlgorithm.to_jwk(key.public_key()))
            jwk.pop("key_ops", None)
            jwk.update({"kid": f"bench-rs256-{i:03d}", "alg": "RS256", "use": "sig"})
            self.jwks.append(jwk)
        log(f"{count} RSA-2048 keys in {time.monotonic() - t:.1f} s")

    def token(self, n_keys, subject):
        """A token signed with the last key of a JWKS of n_keys keys (found last by a scan)."""
        now = int(time.time())
        claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": subject, "scope": "predict",
                  "iat": now, "nbf": now - 60, "exp": now + 86400}
        kid = self.jwks[n_keys - 1]["kid"]
        return jwt.encode(claims, self.private[n_keys - 1], algorithm="RS256", headers={"kid": kid})


# --- the policy and its manifest --------------------------------------------------------------


def model_names(point):
    return [f"model-{i:04d}" for i in range(point["models"])]


def policy(point, jwks):
    """The filter's config (docs/config.md), each model shaped like deploy/'s sklearn-iris."""
    models = {
        name: {
            "protocols": ["v1", "v2"],
            "requiredScopes": ["predict"],
            "rateLimit": point.get("quota", QUOTA),
            "validation": {"featureCount": 4, "maxInstances": 100000, "elementType": "number"},
        }
        for name in model_names(point)
    }
    return {
        "version": 1,
        "logLevel": "warn",
        "failureMode": "deny",
        "jwt": {
            "issuer": ISSUER,
            "audiences": [AUDIENCE],
            "algorithms": ["RS256"],
            "jwks": {"keys": jwks[: point["keys"]]},
            "forwardClaims": {"sub": "x-jwt-sub"},
            "stripAuthorization": True,
        },
        # Keyed by a header so a million callers need no million signatures; the limiter does
        # the same work for a claim once the key is read (policies/src/ratelimit.rs).
        "rateLimit": {"key": {"header": "x-caller"}, "keyHeader": "x-modelgate-ratelimit-key"},
        "validation": {"maxBodyBytes": MAX_BODY},
        "models": models,
    }


def manifest(config):
    """deploy/'s EnvoyExtensionPolicy with `config` replaced: what a cluster stores in etcd."""
    doc = yaml.safe_load((ROOT / "deploy/modelgate/envoyextensionpolicy.yaml").read_text())
    doc["spec"]["wasm"][0]["config"] = config
    return json.dumps(doc, separators=(",", ":"))


def body(instances):
    return '{"instances":[' + ",".join([INSTANCE] * instances) + "]}"


def max_instances():
    """Most instances whose V1 body fits the body limit."""
    return (MAX_BODY - len(body(0))) // (len(INSTANCE) + 1)


# --- points ------------------------------------------------------------------------------------


class Point:
    def __init__(self, sweep, name, **dims):
        self.sweep = sweep
        self.name = name
        self.dims = {**BASE, **dims}
        self.proc = None
        self.caller_start = 0
        self.sent_callers = 0


class Bench:
    def __init__(self, run, results):
        self.run = run
        self.results = results
        self.procs = Processes(run)
        self.upstream_port = free_port()
        self.keys = None
        self.tokens = {}

    def emit(self, record):
        with open(self.results, "a") as f:
            f.write(json.dumps(record) + "\n")

    def start_upstream(self):
        conf = self.run / "upstream.conf"
        render(BENCH / "config/nginx-upstream.conf.in", conf, UPSTREAM_PORT=self.upstream_port, RUN=self.run)
        (self.run / "upstream").mkdir()
        proc = self.procs.spawn("upstream", ["nginx", "-p", str(self.run / "upstream"), "-c", str(conf), "-g", "daemon off;"])
        wait_http(f"http://127.0.0.1:{self.upstream_port}/", proc)

    def token_file(self, point):
        """The tokens a point sends: `tokens` distinct subjects, each its own signature."""
        key = (point.dims["keys"], point.dims["tokens"])
        if key not in self.tokens:
            path = self.run / f"tokens-{key[0]}-{key[1]}.txt"
            path.write_text("\n".join(self.keys.token(key[0], f"client-{i}") for i in range(key[1])) + "\n")
            self.tokens[key] = path
        return self.tokens[key]

    def start(self, point, concurrency=0, global_rate_limit=""):
        d = point.dims
        label = f"{point.sweep}-{point.name}"
        config = policy(d, self.keys.jwks)
        text = manifest(config)
        mpath = self.run / f"{label}.eep.json"
        mpath.write_text(text)
        point.port, point.admin = free_port(), free_port()
        render(SCALE / "modelgate.yaml.in", self.run / f"{label}.yaml", CONCURRENCY=concurrency,
               LISTEN_PORT=point.port, ADMIN_PORT=point.admin, BACKEND_PORT=self.upstream_port,
               WASM=WASM, MANIFEST=mpath, GLOBAL_RATE_LIMIT=global_rate_limit)
        env = {**os.environ, "RUST_LOG": "warn,modelgate_runtime::vm=info"}
        point.started = time.monotonic()
        point.proc = self.procs.spawn(label, [str(MODELGATE), "serve", "--config", str(self.run / f"{label}.yaml")], env)
        point.log = self.run / f"{label}.log"
        point.manifest_bytes = len(text.encode())
        point.config_bytes = len(json.dumps(config, separators=(",", ":")).encode())
        if d["instances"] > 1:
            point.body = self.run / f"body-{d['instances']}.json"
            point.body.write_text(body(d["instances"]))
        else:
            point.body = None
        point.token_file = self.token_file(point)

    def ready(self, point):
        """Wait for a started point's admin listener: every VM is configured by then."""
        wait_http(f"http://127.0.0.1:{point.admin}/ready", point.proc)
        if not hasattr(point, "ready_s"):  # the base point is in every sweep: its first start
            point.ready_s = time.monotonic() - point.started
            point.rss_start_kib = proc_status_kib(point.proc.pid, "VmRSS")

    def configure_figures(self, point):
        vms = [tuple(map(int, m.groups())) for m in CONFIGURE_LINE.finditer(point.log.read_text())]
        if not vms:
            # A host built before the runtime logged this: the figures are missing, not zero.
            log(f"no on_configure line in {point.log}: on_configure and VM memory not measured")
            return {"vms": 0, "on_configure_us": [], "plugin_config_bytes": None, "vm_memory_bytes": []}
        return {
            "vms": len(vms),
            "on_configure_us": [v[0] for v in vms],
            "plugin_config_bytes": vms[0][1],
            "vm_memory_bytes": [v[2] for v in vms],
        }

    def wrk(self, point, secs, conns=CONNS):
        d = point.dims
        env = {**os.environ, "SCALE_THREADS": "2", "SCALE_TOKENS": str(point.token_file),
               "SCALE_CALLERS": str(d["callers"]), "SCALE_CALLER_START": str(point.caller_start),
               "SCALE_MODELS": str(d["models"]), "SCALE_BODY": str(point.body or "")}
        out = subprocess.run(["wrk", "-t2", f"-c{conns}", f"-d{secs}s", "--timeout", "5s",
                              "-s", str(SCALE / "request.lua"), f"http://127.0.0.1:{point.port}"],
                             env=env, capture_output=True, text=True, check=True)
        lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
        if not lines:
            raise SystemExit(f"wrk printed no summary for {point.name}: {out.stdout} {out.stderr}")
        summary = json.loads(lines[-1])
        # The next run sends callers this one did not (each request names a new caller until
        # the point's caller count wraps).
        point.caller_start += summary["requests"] + CONNS
        point.sent_callers = min(d["callers"], point.sent_callers + summary["requests"])
        return summary

    def check(self, point):
        """The point answers the benchmark request with 200 before it is measured."""
        headers = {"Content-Type": "application/json",
                   "Authorization": "Bearer " + point.token_file.read_text().split("\n", 1)[0],
                   "x-caller": "check"}
        data = point.body.read_bytes() if point.body else body(1).encode()
        req = urllib.request.Request(f"http://127.0.0.1:{point.port}/v1/models/model-0000:predict",
                                     data=data, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                status = resp.status
        except urllib.error.HTTPError as e:
            raise SystemExit(f"{point.sweep}/{point.name} answered {e.code}: {e.read()[:300]!r}")
        if status != 200:
            raise SystemExit(f"{point.sweep}/{point.name} answered {status}")

    def sweep(self, name, points, flood=None):
        """Measure points side by side: warm-up, then interleaved rounds."""
        log(f"sweep {name}: {', '.join(p.name for p in points)} (load {loadavg()})")
        # Started together: each process compiles the module (Cranelift) before it serves.
        for p in points:
            if p.proc is None:
                self.start(p)
        for p in points:
            self.ready(p)
            self.check(p)
        if flood:
            log(f"flood: new callers to {flood.name} for {FLOOD} s")
            summary = self.wrk(flood, FLOOD)
            self.emit({"type": "flood", "sweep": name, "point": flood.name, "requests": summary["requests"],
                       "seconds": FLOOD, "loadavg": loadavg()})
        for p in points:
            self.wrk(p, 1)
        for rnd in range(1, ROUNDS + 1):
            order = points if rnd % 2 else list(reversed(points))
            for p in order:
                before = cpu_seconds(p.proc.pid)
                summary = self.wrk(p, DURATION)
                cpu = cpu_seconds(p.proc.pid) - before
                self.emit({"type": "sample", "sweep": name, "point": p.name, "round": rnd,
                           "cpu_s": cpu, "wrk": summary, "loadavg": loadavg()})
                log(f"{name:8} {p.name:>10} round {rnd}: {summary['requests']} req, "
                    f"{cpu / max(summary['requests'], 1) * 1e6:.1f} us CPU/req, p99 {summary['p99_us']} us")
        for p in points:
            self.emit({"type": "point", "sweep": name, "point": p.name, "dims": p.dims,
                       "manifest_bytes": p.manifest_bytes, "config_bytes": p.config_bytes,
                       "ready_s": round(p.ready_s, 3), "rss_start_kib": p.rss_start_kib,
                       "vmrss_kib": proc_status_kib(p.proc.pid, "VmRSS"),
                       "vmhwm_kib": proc_status_kib(p.proc.pid, "VmHWM"),
                       "callers_sent": p.sent_callers, **self.configure_figures(p)})

    def configure_only(self, counts):
        """Models past the load sweep: start, read the configure figures and memory, stop."""
        for n in counts:
            p = Point("configure", str(n), models=n)
            config = policy(p.dims, self.keys.jwks)
            size = len(manifest(config).encode())
            try:
                self.start(p)
                self.ready(p)
            except SystemExit as e:
                self.emit({"type": "configure", "models": n, "manifest_bytes": size, "error": str(e),
                           "log_tail": p.log.read_text()[-600:] if hasattr(p, "log") else ""})
                log(f"configure-only {n} models: failed ({e})")
                continue
            figures = self.configure_figures(p)
            self.emit({"type": "configure", "models": n, "manifest_bytes": size, "ready_s": round(p.ready_s, 3),
                       "vmrss_kib": proc_status_kib(p.proc.pid, "VmRSS"), "loadavg": loadavg(), **figures})
            log(f"configure-only {n} models: on_configure {figures['on_configure_us']} us, "
                f"linear memory {figures['vm_memory_bytes']} bytes, manifest {size} bytes")
            self.procs.stop(p.proc)


def main():
    for tool in ("wrk", "nginx", "haproxy", "redis-server"):
        if not any(Path(d, tool).exists() for d in os.environ.get("PATH", "").split(":") + ["/usr/sbin"]):
            raise SystemExit(f"{tool} missing: apt-get install wrk nginx haproxy redis-server")
    os.environ["PATH"] += ":/usr/sbin"
    for path, how in ((MODELGATE, "make build"), (WASM, "make wasm")):
        if not path.exists():
            raise SystemExit(f"{path} missing: run '{how}'")
    run = Path(tempfile.mkdtemp(prefix="modelgate-scale."))
    results = run / "scale.jsonl"
    log(f"run directory {run}")
    started = time.monotonic()
    bench = Bench(run, results)
    bench.emit({"type": "meta", "nproc": os.cpu_count(), "loadavg": loadavg(),
                "started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "duration_s": DURATION,
                "rounds": ROUNDS, "conns": CONNS, "wasm_bytes": WASM.stat().st_size,
                "cpu_model": next((line.split(": ", 1)[1] for line in Path("/proc/cpuinfo").read_text().splitlines()
                                   if line.startswith("model name")), "")})
    try:
        bench.start_upstream()
        bench.keys = Keys(100)
        base = Point("base", "base")
        sweeps = {
            "models": [Point("models", str(n), models=n) for n in (10, 100, 1000)],
            "keys": [Point("keys", str(n), keys=n) for n in (10, 100)],
            "callers": [Point("callers", str(n), callers=n) for n in (1000, 100000, 1000000)],
            "tokens": [Point("tokens", str(n), tokens=n) for n in (100, 1000, 4000)],
            "body": [Point("body", str(n), instances=n) for n in (100, 1000, 10000, max_instances())],
            "combined": [Point("combined", "1000m-100k-1Mc", models=1000, keys=100, callers=1000000)],
        }
        for name, points in sweeps.items():
            if name not in SWEEPS:
                continue
            flood = points[-1] if name == "callers" and FLOOD > 0 else None
            bench.sweep(name, [base, *points], flood)
            for p in points:
                bench.procs.stop(p.proc)
        if "configure" in SWEEPS:
            bench.configure_only([2, 1000, 2000, 5000, 10000])
        if "replicas" in SWEEPS:
            from replicas import replicas  # noqa: PLC0415 (a sibling module, needed only here)

            replicas(bench)
        bench.emit({"type": "end", "loadavg": loadavg(), "elapsed_s": round(time.monotonic() - started)})
    finally:
        bench.procs.stop_all()
        log(f"logs and configs kept in {run}")
    OUT.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, str(SCALE / "report.py"), str(results), str(OUT)], check=True)
    (OUT / "scale.jsonl").write_text(results.read_text())
    log(f"done in {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
