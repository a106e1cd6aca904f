"""Replicas (issue 19): what a per-proxy limit becomes with N Envoy replicas, and how the
cluster-wide option keeps one budget. Called by bench/scale/scale.py.

N `modelgate serve` processes (one worker each, standing for N Envoy replicas) behind a
round-robin haproxy on loopback. One caller sends requests one after another, each on a new
connection, faster than the quota refills (6 a minute, burst 10):
- per-proxy limit only: every replica keeps its own GCRA state in its own shared data, so the
  caller is admitted about N × burst times;
- with the cluster-wide option: the same replicas with the host's `globalRateLimit`
  (host/src/global_ratelimit.rs), Envoy Gateway's global rate limit as its Envoy runs it,
  counting in one real redis-server as envoyproxy/ratelimit does. Its rule is
  deploy/ratelimit-global/'s: the model header modelgate sets (`x-gateway-model-name`, Exact)
  and the caller key it sets (`x-modelgate-ratelimit-key` from rateLimit.keyHeader, Distinct),
  `GLOBAL_LIMIT` requests a minute.
"""

import http.client
import time

from scale import SCALE, Point, free_port, loadavg, log, render

BURST = 10
REQUESTS = 40
QUOTA = {"requestsPerMinute": 6, "burst": BURST}
# The global rule's budget: as deploy/ratelimit-global/'s `limit`, requests per minute.
GLOBAL_LIMIT = BURST
# Envoy's rate limit filter waits 20 ms for the service, then lets the request through (Envoy
# Gateway's default, fail open). On this shared 2-CPU machine a replica may miss 20 ms under
# load, and a request let through that way would count as the limit failing: 500 ms here.
GLOBAL_TIMEOUT = "500ms"


def global_rate_limit(redis_port):
    """The `globalRateLimit` section of each replica's config."""
    return f"""globalRateLimit:
  redis: 127.0.0.1:{redis_port}
  timeout: {GLOBAL_TIMEOUT}
  rules:
    - clientSelectors:
        - headers:
            - {{type: Exact, name: x-gateway-model-name, value: model-0000}}
            - {{type: Distinct, name: x-modelgate-ratelimit-key}}
      limit: {{requests: {GLOBAL_LIMIT}, unit: Minute}}
"""


def send(port, token, count):
    """Statuses of `count` requests by one caller, each on a new connection."""
    statuses = []
    body = '{"instances":[[6.8,2.8,4.8,1.4]]}'
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}", "x-caller": "alice"}
    for _ in range(count):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("POST", "/v1/models/model-0000:predict", body=body, headers=headers)
        resp = conn.getresponse()
        resp.read()
        statuses.append(resp.status)
        conn.close()
    return statuses


def start_haproxy(bench, name, template, **values):
    port = free_port()
    render(SCALE / template, bench.run / f"{name}.cfg", NAME=name, RUN=bench.run, LISTEN_PORT=port, **values)
    proc = bench.procs.spawn(name, ["haproxy", "-db", "-f", str(bench.run / f"{name}.cfg")])
    return port, proc


def start_redis(bench, name):
    """A redis-server on a free loopback port, nothing saved to disk."""
    port = free_port()
    proc = bench.procs.spawn(name, ["redis-server", "--bind", "127.0.0.1", "--port", str(port),
                                    "--save", "", "--appendonly", "no"])
    deadline = time.monotonic() + 10
    while True:
        try:
            http.client.HTTPConnection("127.0.0.1", port, timeout=1).connect()
            return port, proc
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise SystemExit(f"redis-server on {port} did not start")
            time.sleep(0.1)


def away_from_a_window_edge(seconds_needed=20):
    """The minute's window resets on the minute: a trial that might cross it waits for the next."""
    left = 60 - time.time() % 60
    if left < seconds_needed:
        time.sleep(left + 0.5)


def trial(bench, replicas, global_limit):
    section, redis = "", None
    if global_limit:
        redis_port, redis = start_redis(bench, f"redis-{replicas}")
        section = global_rate_limit(redis_port)
    points = [Point("replicas", f"{replicas}-{i}", models=1, quota=QUOTA) for i in range(replicas)]
    for p in points:
        bench.start(p, concurrency=1, global_rate_limit=section)
    for p in points:
        bench.ready(p)
    servers = "\n".join(f"    server r{i} 127.0.0.1:{p.port}" for i, p in enumerate(points))
    front, proc = start_haproxy(bench, f"front-{replicas}-{int(global_limit)}", "haproxy-front.cfg.in", SERVERS=servers)
    time.sleep(0.5)  # haproxy binds after parsing its config
    token = bench.keys.token(1, "alice")
    away_from_a_window_edge()
    started = time.monotonic()
    statuses = send(front, token, REQUESTS)
    elapsed = time.monotonic() - started
    admitted = statuses.count(200)
    record = {"type": "replicas", "replicas": replicas, "global_limit": global_limit, "requests": REQUESTS,
              "admitted": admitted, "limited": statuses.count(429),
              "other": len(statuses) - admitted - statuses.count(429), "burst": BURST,
              "quota": QUOTA, "global_budget": GLOBAL_LIMIT if global_limit else None,
              "global_store": "redis-server" if global_limit else None,
              "seconds": round(elapsed, 2), "loadavg": loadavg()}
    bench.emit(record)
    log(f"replicas {replicas}, {'with' if global_limit else 'without'} the global limit: "
        f"{admitted} of {REQUESTS} admitted in {elapsed:.1f} s")
    for p in points:
        bench.procs.stop(p.proc)
    bench.procs.stop(proc)
    if redis:
        bench.procs.stop(redis)


def replicas(bench):
    for global_limit in (False, True):
        for n in (1, 2, 4):
            trial(bench, n, global_limit)
