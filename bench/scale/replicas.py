"""Replicas (issue 19): what a per-proxy limit becomes with N Envoy replicas, and how the
cluster-wide option keeps one budget. Called by bench/scale/scale.py.

N `modelgate serve` processes (one worker each, standing for N Envoy replicas) behind a
round-robin haproxy on loopback. One caller sends requests one after another, each on a new
connection, faster than the quota refills (6 a minute, burst 10):
- per-proxy limit only: every replica keeps its own GCRA state in its own shared data, so the
  caller is admitted about N × burst times;
- with the cluster-wide option: the same replicas, whose upstream passes one shared counter
  keyed on the headers modelgate sets (rateLimit.keyHeader and the routing header), as Envoy
  Gateway's global rate limit is (deploy/ratelimit-global/); haproxy's stick table stands in
  for Envoy's rate limit service and Redis (haproxy-global.cfg.in says why).
"""

import http.client
import time

from scale import SCALE, Point, free_port, loadavg, log, render

BURST = 10
REQUESTS = 40
QUOTA = {"requestsPerMinute": 6, "burst": BURST}
# The global rule's budget: as deploy/ratelimit-global/'s `limit`, requests per unit.
GLOBAL_LIMIT = BURST


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


def trial(bench, replicas, global_limit):
    backend = bench.upstream_port
    limiter = None
    if global_limit:
        backend, limiter = start_haproxy(bench, f"global-{replicas}", "haproxy-global.cfg.in",
                                         BACKEND_PORT=bench.upstream_port, LIMIT=GLOBAL_LIMIT, WINDOW="60s")
    points = [Point("replicas", f"{replicas}-{i}", models=1, quota=QUOTA) for i in range(replicas)]
    for p in points:
        bench.start(p, concurrency=1, backend_port=backend)
    for p in points:
        bench.ready(p)
    servers = "\n".join(f"    server r{i} 127.0.0.1:{p.port}" for i, p in enumerate(points))
    front, proc = start_haproxy(bench, f"front-{replicas}-{int(global_limit)}", "haproxy-front.cfg.in", SERVERS=servers)
    time.sleep(0.5)  # haproxy binds after parsing its config
    token = bench.keys.token(1, "alice")
    statuses = send(front, token, REQUESTS)
    admitted = statuses.count(200)
    record = {"type": "replicas", "replicas": replicas, "global_limit": global_limit, "requests": REQUESTS,
              "admitted": admitted, "limited": statuses.count(429),
              "other": len(statuses) - admitted - statuses.count(429), "burst": BURST,
              "quota": QUOTA, "global_budget": GLOBAL_LIMIT if global_limit else None, "loadavg": loadavg()}
    bench.emit(record)
    log(f"replicas {replicas}, {'with' if global_limit else 'without'} the global limit: "
        f"{admitted} of {REQUESTS} admitted")
    for p in points:
        bench.procs.stop(p.proc)
    bench.procs.stop(proc)
    if limiter:
        bench.procs.stop(limiter)


def replicas(bench):
    for global_limit in (False, True):
        for n in (1, 2, 4):
            trial(bench, n, global_limit)
