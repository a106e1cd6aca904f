"""Turn one scale run (bench/scale/scale.py's JSON lines) into bench/results/scale.md, scale.csv
and one PNG per sweep (scale-<sweep>.png).

Records: "meta" (machine, settings), "sample" (one wrk run of a point: sweep, point, round,
CPU seconds of the process, wrk's summary, load average), "point" (per point of a sweep: its
dimensions, manifest size, on_configure time and linear memory of each VM, RSS), "flood",
"configure" (models past the load sweep: configure figures only), "replicas" and "end".

Rounds of a point are pooled as bench/report.py pools them: throughput and CPU per request
over the successful responses (wrk counts error statuses in `requests`), p50/p99 the median
over rounds. Any error (socket, timeout, error status) marks the point and makes the script
exit 1 after writing. Ratios compare a point with the base point of the same sweep, measured
in the same interleaved rounds.

usage: report.py RESULTS.jsonl OUT_DIR
"""

import csv
import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path

ERROR_KINDS = ("err_connect", "err_read", "err_write", "err_status", "err_timeout")
# What each sweep changes, and how its points are labelled.
SWEEPS = {
    "models": ("models", "models in the policy"),
    "keys": ("keys", "JWKS keys (token signed by the last)"),
    "callers": ("callers", "distinct callers (rate-limit keys)"),
    "tokens": ("tokens", "distinct tokens (cache: 1,024)"),
    "body": ("instances", "V1 instances per body"),
    "combined": ("models", "1,000 models + 100 keys + 1,000,000 callers"),
}
# The bound on per-request CPU against the 2-model base, and the points it applies to.
CPU_BOUND = 1.2
FLAT_POINTS = {("models", "1000"), ("keys", "100"), ("callers", "1000000"), ("combined", "1000m-100k-1Mc")}
# etcd's default request limit (--max-request-bytes, 1.5 MiB) and the API server's limit on
# all annotations of an object (256 KiB), which client-side `kubectl apply` fills with a copy.
ETCD_LIMIT = 1572864
ANNOTATIONS_LIMIT = 262144
MIB = 1024 * 1024


def load(path):
    data = defaultdict(list)
    for line in Path(path).read_text().splitlines():
        if line.strip():
            rec = json.loads(line)
            data[rec.pop("type")].append(rec)
    return data


def pool(samples):
    """(sweep, point) -> pooled figures over rounds."""
    groups = defaultdict(list)
    for s in samples:
        groups[(s["sweep"], s["point"])].append(s)
    out = {}
    for key, runs in groups.items():
        ok = sum(r["wrk"]["requests"] - r["wrk"]["err_status"] for r in runs)
        secs = sum(r["wrk"]["duration_us"] for r in runs) / 1e6
        cpu = sum(r["cpu_s"] for r in runs)
        out[key] = {
            "rps": ok / secs if secs else 0.0,
            "cpu_us": cpu / ok * 1e6 if ok else float("nan"),
            "p50_ms": statistics.median(r["wrk"]["p50_us"] for r in runs) / 1000,
            "p99_ms": statistics.median(r["wrk"]["p99_us"] for r in runs) / 1000,
            "errors": sum(r["wrk"][k] for r in runs for k in ERROR_KINDS),
            "rounds": len(runs),
            "load": [r["loadavg"].split()[0] for r in runs],
        }
    return out


def rows(data):
    """One row per measured point, in sweep order, the base first."""
    pooled = pool(data["sample"])
    info = {(p["sweep"], p["point"]): p for p in data["point"]}
    out = []
    for sweep, (dim, _) in SWEEPS.items():
        base = pooled.get((sweep, "base"))
        points = [k for k in info if k[0] == sweep]
        points.sort(key=lambda k: (k[1] != "base", info[k]["dims"][dim]))
        for key in points:
            p, m = info[key], pooled.get(key)
            if m is None:
                continue
            out.append({
                "sweep": sweep,
                "point": key[1],
                "x": p["dims"][dim],
                "models": p["dims"]["models"],
                "keys": p["dims"]["keys"],
                "callers": p["dims"]["callers"],
                "tokens": p["dims"]["tokens"],
                "instances": p["dims"]["instances"],
                "req_s": round(m["rps"]),
                "cpu_us_per_req": round(m["cpu_us"], 1),
                "cpu_vs_base": round(m["cpu_us"] / base["cpu_us"], 3) if base else None,
                "p50_ms": round(m["p50_ms"], 3),
                "p99_ms": round(m["p99_ms"], 3),
                "on_configure_ms": top(p["on_configure_us"], 1000),
                "vm_memory_mib": top(p["vm_memory_bytes"], MIB),
                "vms": p["vms"],
                "rss_mib": round(p["vmrss_kib"] / 1024, 1),
                "hwm_mib": round(p["vmhwm_kib"] / 1024, 1),
                "manifest_bytes": p["manifest_bytes"],
                "callers_sent": p["callers_sent"],
                "errors": m["errors"],
                "rounds": m["rounds"],
                "load_1min": "–".join(sorted({m["load"][0], m["load"][-1]}, key=float)),
            })
    return out


def top(values, unit):
    """The largest of the VMs' figures in `unit`; None when the host did not log them."""
    return round(max(values) / unit, 2) if values else None


def dash(value):
    return "–" if value is None else value


def fmt(n):
    return f"{n:,}"


def table(lines, header, body):
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|")
    lines.extend("| " + " | ".join(str(c) for c in row) + " |" for row in body)
    lines.append("")


def markdown(data, points):
    meta = data["meta"][0] if data["meta"] else {}
    end = data["end"][0] if data["end"] else {}
    lines = [
        f"# modelgate at scale ({meta.get('started', '?')})",
        "",
        f"`make bench-scale` (bench/scale/scale.py): {meta.get('nproc', '?')} CPUs ({meta.get('cpu_model', '?')}), "
        f"shared with other work: load average {meta.get('loadavg', '?')} at the start, {end.get('loadavg', '?')} "
        f"at the end; the whole run took {end.get('elapsed_s', '?')} s. Each point is one `modelgate serve` "
        f"(workers = CPUs, one VM each; modelgate.wasm {fmt(meta.get('wasm_bytes', 0))} bytes) reading its policy "
        f"from an EnvoyExtensionPolicy manifest, wrk at c={meta.get('conns', 32)} for {meta.get('duration_s', '?')} s "
        f"× {meta.get('rounds', '?')} rounds, the points of a sweep interleaved (every other round reversed) with "
        "the base point (2 models, 1 key, 10 callers, 1 token, 1 instance) in every sweep: compare ratios "
        "within a sweep, not absolute figures across sweeps. Load average is the 1-minute figure when "
        "each point's first and last rounds ended.",
        "",
        "CPU/req: the process's user + system CPU over the successful responses. on_configure and VM "
        "memory: per VM, as the host's runtime logs them when it starts a VM (the largest of the VMs); "
        "VM memory is the linear memory after on_configure. RSS: the whole process after the rounds "
        "(VmRSS; VmHWM its peak). Manifest: the EnvoyExtensionPolicy with this config as compact JSON.",
        "",
    ]
    flat = []
    for sweep, (_, title) in SWEEPS.items():
        sub = [p for p in points if p["sweep"] == sweep]
        if not sub:
            continue
        lines += [f"## {sweep}: {title}", ""]
        body = []
        for p in sub:
            mark = " **errors: %d**" % p["errors"] if p["errors"] else ""
            body.append([p["point"] + mark, fmt(p["req_s"]), p["cpu_us_per_req"], f"{p['cpu_vs_base']:.2f}×",
                         p["p50_ms"], p["p99_ms"], dash(p["on_configure_ms"]), dash(p["vm_memory_mib"]),
                         f"{p['rss_mib']} ({p['hwm_mib']})", fmt(p["manifest_bytes"]), p["load_1min"]]
                        + ([fmt(p["callers_sent"])] if sweep in ("callers", "combined") else []))
            if (sweep, p["point"]) in FLAT_POINTS:
                flat.append(p)
        header = ["point", "req/s", "CPU µs/req", "CPU vs base", "p50 ms", "p99 ms", "on_configure ms",
                  "VM memory MiB", "RSS MiB (peak)", "manifest bytes", "load"]
        if sweep in ("callers", "combined"):
            header.append("callers sent")
        table(lines, header, body)
        lines += [f"![{sweep}](scale-{sweep}.png)", ""]
        for f in data["flood"]:
            if f["sweep"] == sweep:
                lines += [f"Before the rounds, {fmt(f['requests'])} requests each with a new caller went to point "
                          f"{f['point']} in {f['seconds']} s (load {f['loadavg']}).", ""]
    if data["configure"]:
        lines += ["## configure only: models past the load sweep", "",
                  "Started, configured and stopped without load (on_configure time and memory per VM). "
                  "Ready: from the process's start to its admin listener's /ready, which includes compiling "
                  "the module (Cranelift, in a child process) and starting every VM.", ""]
        body = []
        for c in data["configure"]:
            if "error" in c:
                body.append([fmt(c["models"]), fmt(c["manifest_bytes"]), "failed: " + c["error"], "", "", ""])
            else:
                body.append([fmt(c["models"]), fmt(c["manifest_bytes"]), dash(top(c["on_configure_us"], 1000)),
                             dash(top(c["vm_memory_bytes"], MIB)), c.get("ready_s", "–"), round(c["vmrss_kib"] / 1024, 1),
                             c["loadavg"]])
        table(lines, ["models", "manifest bytes", "on_configure ms", "VM memory MiB", "ready s", "RSS MiB", "load"],
              body)
    lines += limits(data, points)
    if flat:
        lines += ["## per-request CPU against the base (issue 19: within 1.2×)", ""]
        table(lines, ["point", "CPU µs/req", "base µs/req (same sweep)", "ratio", "within 1.2×"],
              [[f"{p['sweep']} {p['point']}", p["cpu_us_per_req"],
                round(p["cpu_us_per_req"] / p["cpu_vs_base"], 1), f"{p['cpu_vs_base']:.2f}×",
                "yes" if p["cpu_vs_base"] <= CPU_BOUND else "**no**"] for p in flat])
    if data["replicas"]:
        lines += ["## replicas: a per-proxy limit behind N replicas", "",
                  "N `modelgate serve` processes (one worker each) behind a round-robin haproxy; one caller sends "
                  "requests one after another, each on a new connection, faster than its quota refills "
                  f"({json.dumps(data['replicas'][0]['quota'])}). With the cluster-wide option every replica also runs "
                  "the host's `globalRateLimit` (Envoy Gateway's global rate limit as its Envoy runs it, "
                  "host/src/global_ratelimit.rs) against one redis-server, with deploy/ratelimit-global/'s rule: "
                  "the headers modelgate sets (`x-gateway-model-name` Exact, `x-modelgate-ratelimit-key` "
                  "Distinct).", ""]
        table(lines, ["replicas", "limit", "requests", "admitted", "429", "other", "expected", "load"],
              [[r["replicas"], "per-proxy + global" if r["global_limit"] else "per-proxy only", r["requests"],
                r["admitted"], r["limited"], r["other"],
                (f"{r['global_budget']} (one budget)" if r["global_limit"] else f"{r['replicas']} × {r['burst']}"),
                r["loadavg"]] for r in data["replicas"]])
    return "\n".join(lines) + "\n"


def limits(data, points):
    """Manifest bytes per model and what fits the API server's limits, from measured points."""
    sizes = {p["models"]: p["manifest_bytes"] for p in points if p["sweep"] == "models"}
    sizes.update({c["models"]: c["manifest_bytes"] for c in data["configure"]})
    if len(sizes) < 2:
        return []
    lo, hi = min(sizes), max(sizes)
    per_model = (sizes[hi] - sizes[lo]) / (hi - lo)
    fixed = sizes[lo] - per_model * lo
    fits = lambda limit: int((limit - fixed) // per_model)  # noqa: E731
    out = ["## what fits one EnvoyExtensionPolicy", "",
           f"Measured manifest sizes: {', '.join(f'{fmt(n)} models {fmt(b)} bytes' for n, b in sorted(sizes.items()))}: "
           f"{per_model:.0f} bytes per model (this benchmark's model entry) plus {fixed:.0f} bytes.",
           f"- etcd's 1.5 MiB request limit ({fmt(ETCD_LIMIT)} bytes): about {fmt(fits(ETCD_LIMIT))} models.",
           f"- client-side `kubectl apply` copies the object into an annotation, and all annotations share "
           f"{fmt(ANNOTATIONS_LIMIT)} bytes: about {fmt(fits(ANNOTATIONS_LIMIT))} models; past that use "
           "`kubectl apply --server-side` (or create/replace).", ""]
    return out


def plot(points, data, out_dir):
    import matplotlib  # noqa: PLC0415 (only the plots need it)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    written = []
    for sweep, (dim, title) in SWEEPS.items():
        sub = [p for p in points if p["sweep"] == sweep]
        if not sub:
            continue
        fig, axes = plt.subplots(1, 4, figsize=(16, 3.6))
        categorical = sweep == "combined"
        xs = [p["point"] if categorical else p["x"] for p in sub]
        series = [
            ("CPU µs per request", [p["cpu_us_per_req"] for p in sub]),
            ("latency ms at c=32 (p50, p99)", None),
            ("on_configure ms per VM", [p["on_configure_ms"] if p["on_configure_ms"] is not None else float("nan") for p in sub]),
            ("memory MiB (VM linear, process RSS)", None),
        ]
        for ax, (label, ys) in zip(axes, series):
            if ys is not None:
                ax.plot(xs, ys, "o-")
            ax.set_title(label, fontsize=9)
            if not categorical:
                ax.set_xscale("log")
                ax.set_xlabel(dim)
            ax.grid(alpha=0.3)
        base_cpu = sub[0]["cpu_us_per_req"] if sub[0]["point"] == "base" else None
        if base_cpu:
            axes[0].axhline(base_cpu * CPU_BOUND, color="red", linestyle=":", linewidth=1, label="1.2× base")
            axes[0].legend(fontsize=8)
        axes[1].plot(xs, [p["p50_ms"] for p in sub], "o-", label="p50")
        axes[1].plot(xs, [p["p99_ms"] for p in sub], "s-", label="p99")
        axes[1].legend(fontsize=8)
        axes[3].plot(xs, [float("nan") if p["vm_memory_mib"] is None else p["vm_memory_mib"] for p in sub], "o-",
                     label="VM linear memory")
        axes[3].plot(xs, [p["rss_mib"] for p in sub], "s-", label="process RSS")
        axes[3].legend(fontsize=8)
        for ax in axes:
            ax.set_ylim(bottom=0)  # after every series, so each axis fits its data
        fig.suptitle(f"{sweep}: {title}", fontsize=10)
        fig.tight_layout()
        path = Path(out_dir) / f"scale-{sweep}.png"
        fig.savefig(path, dpi=90)
        plt.close(fig)
        written.append(path)
    return written


def main():
    results, out_dir = sys.argv[1], Path(sys.argv[2])
    data = load(results)
    points = rows(data)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "scale.md").write_text(markdown(data, points))
    if points:
        with open(out_dir / "scale.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(points[0]))
            writer.writeheader()
            writer.writerows(points)
    plot(points, data, out_dir)
    failed = [f"{p['sweep']}/{p['point']}" for p in points if p["errors"]]
    failed += [f"replicas {r['replicas']}" for r in data["replicas"] if r["other"]]
    if failed:
        print(f"errors at: {', '.join(failed)}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
