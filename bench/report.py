"""Turn one benchmark run into bench/results/latest.md and latest.png.

Input is the JSON-lines file bench/run.sh writes: one "meta" record (machine,
settings, wasm size), one "sample" record per wrk run (case, concurrency,
round, wrk's done() figures, CPU ticks of the proxy's processes), one "rss"
record per proxy, a "conn1000" record per case given the keep-alive RSS check,
and an "end" record (load average when the run finished).

Rounds of the same (case, concurrency) are pooled: throughput is total successful
requests over total time, latency percentiles are the median over rounds, CPU is total
CPU seconds over total requests. wrk counts every response in `requests` and the
ones with a status of 400 or more in `errors.status` (its own rule; the cases here
never answer 1xx or 3xx), so those are taken out of throughput: a proxy that answers
errors fast must not look fast. Any error (a socket error, a timeout, an error status)
fails the case: the report marks it and the script exits 1 after writing it.

The criterion micro-benchmarks of the policies and the runtime (`cargo bench`)
are listed beside the load figures when their results are in target/criterion.

usage: report.py RESULTS.jsonl OUT_DIR [CRITERION_DIR]
"""

import json
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

# Display order and labels; cases missing from a run are simply left out.
CASES = [
    ("direct", "1. direct (static nginx)"),
    ("nginx", "2. nginx proxy"),
    ("haproxy", "3. haproxy"),
    ("mg-nofilter", "4. modelgate, no filter"),
    ("mg-noop", "5. modelgate, no-op wasm"),
    ("mg-full", "6. modelgate, full policy"),
    ("ks-direct", "7a. direct → KServe"),
    ("ks-nginx", "7b. nginx → KServe"),
    ("ks-mg-full", "7c. modelgate full → KServe"),
]
LABEL = dict(CASES)
# Which peer each case is compared against (same upstream).
DIRECT_OF = {c: ("ks-direct" if c.startswith("ks-") else "direct") for c, _ in CASES}
NGINX_OF = {c: ("ks-nginx" if c.startswith("ks-") else "nginx") for c, _ in CASES}
MIB = 1024 * 1024


def load(path):
    meta, samples, rss, conn1000 = {}, [], {}, {}
    for line in Path(path).read_text().splitlines():
        if not line.strip():
            continue
        rec = json.loads(line)
        kind = rec.pop("type")
        if kind == "meta":
            meta = rec
        elif kind == "sample":
            samples.append(rec)
        elif kind == "rss":
            rss[rec["case"]] = rec
        elif kind == "conn1000":
            conn1000[rec["case"]] = rec
        elif kind == "filter_cost":
            meta.setdefault("filter_cost", []).append(rec)
        elif kind == "guest_instructions":
            meta["guest_instructions"] = rec
        elif kind == "llm_stream":
            meta.setdefault("llm_stream", {})[rec["path"]] = rec
        elif kind == "end":
            meta["loadavg_end"] = rec["loadavg"]
    return meta, samples, rss, conn1000


ERROR_KINDS = ("err_connect", "err_read", "err_write", "err_status", "err_timeout")


def pool(samples):
    """(case, conc) -> pooled figures over rounds."""
    groups = defaultdict(list)
    for s in samples:
        groups[(s["case"], s["c"])].append(s)
    out = {}
    for key, runs in groups.items():
        reqs = sum(r["wrk"]["requests"] for r in runs)
        # Responses with an error status are in wrk's `requests` too: not throughput.
        ok = reqs - sum(r["wrk"]["err_status"] for r in runs)
        secs = sum(r["wrk"]["duration_us"] for r in runs) / 1e6
        errors = sum(r["wrk"][k] for r in runs for k in ERROR_KINDS)
        cpu = sum(r["cpu_s"] for r in runs)
        rps_rounds = [(r["wrk"]["requests"] - r["wrk"]["err_status"]) / (r["wrk"]["duration_us"] / 1e6) for r in runs]
        out[key] = {
            "rps": ok / secs if secs else 0.0,
            "rps_min": min(rps_rounds),
            "rps_max": max(rps_rounds),
            "p50_ms": statistics.median(r["wrk"]["p50_us"] for r in runs) / 1000,
            "p99_ms": statistics.median(r["wrk"]["p99_us"] for r in runs) / 1000,
            "cpu_per_10k": cpu / reqs * 10_000 if reqs else float("nan"),
            "errors": errors,
            "errors_by_kind": {k[4:]: sum(r["wrk"][k] for r in runs) for k in ERROR_KINDS},
            "requests": reqs,
            "rounds": len(runs),
        }
    return out


def failures(figs):
    """(case, conc, errors by kind) for every pooled run that saw any error."""
    return [
        (case, conc, {k: n for k, n in f["errors_by_kind"].items() if n})
        for (case, conc), f in sorted(figs.items())
        if f["errors"]
    ]


def ratio(figs, case, other, conc, field="rps"):
    a, b = figs.get((case, conc)), figs.get((other, conc))
    if not a or not b or not b[field] or case == other:
        return None
    return a[field] / b[field]


def fmt_ratio(x):
    return "–" if x is None else f"{x:.2f}×"


def targets(figs, meta, conn1000):
    """Each issue-7 target as (name, measured text, met: bool | None)."""
    rows = []
    r = ratio(figs, "mg-full", "nginx", 32)
    rows.append(("full policy ≥ 1.0× nginx throughput at c=32", fmt_ratio(r), None if r is None else r >= 1.0))

    d, n, m = (figs.get((c, 1)) for c in ("direct", "nginx", "mg-full"))
    if d and n and m:
        add_mg, add_ng = m["p50_ms"] - d["p50_ms"], n["p50_ms"] - d["p50_ms"]
        text = f"modelgate +{add_mg * 1000:.0f} µs, nginx +{add_ng * 1000:.0f} µs"
        rows.append(("added p50 over direct at c=1 ≤ nginx's", text, add_mg <= add_ng))
    else:
        rows.append(("added p50 over direct at c=1 ≤ nginx's", "not measured", None))

    ks = [ratio(figs, "ks-mg-full", "ks-direct", c) for c in (1, 8, 32, 128)]
    ks_c32 = ks[2]
    text = ", ".join(f"c={c}: {fmt_ratio(x)}" for c, x in zip((1, 8, 32, 128), ks))
    rows.append(("in front of KServe ≥ 0.95× direct (c=32)", text, None if ks_c32 is None else ks_c32 >= 0.95))

    full = conn1000.get("mg-full")
    if full:
        hwm = full["vmhwm_kib"] * 1024 / MIB
        text = f"VmHWM {hwm:.1f} MiB ({full['connected']} connections open)"
        rows.append(("RSS ≤ 64 MiB with 1,000 keep-alive connections", text, hwm <= 64))
    else:
        rows.append(("RSS ≤ 64 MiB with 1,000 keep-alive connections", "not measured", None))

    rows += filter_targets(meta)

    size = meta.get("wasm_bytes")
    if size:
        rows.append(("modelgate.wasm ≤ 1 MiB", f"{size / 1024:.0f} KiB ({size} bytes)", size <= MIB))
    else:
        rows.append(("modelgate.wasm ≤ 1 MiB", "not built", None))
    return rows


# The filter's own targets (issue 18), for the full-policy one-instance V1 request.
MAX_GUEST_INSTRUCTIONS = 20_000
MAX_HOST_CALLS = 8


def filter_targets(meta):
    """The filter-cost targets: guest instructions, host calls, and its V8 time beside the floor."""
    rows = []
    guest = meta.get("guest_instructions")
    name = f"filter ≤ {MAX_GUEST_INSTRUCTIONS:,} guest instructions (full-policy 1-instance V1)"
    if guest:
        rows.append((name, f"{guest['guest']:,.0f} (cachegrind, wasmtime)", guest["guest"] <= MAX_GUEST_INSTRUCTIONS))
    else:
        rows.append((name, "not measured", None))
    costs = {(r["runtime"], r["case"]): r for r in meta.get("filter_cost", [])}
    name = f"filter ≤ {MAX_HOST_CALLS} host calls (full-policy 1-instance V1)"
    cached = costs.get(("v8", "v1-cached"))
    if cached:
        rows.append((name, f"{cached['host_calls']:.0f} (counted in the V8 shim)", cached["host_calls"] <= MAX_HOST_CALLS))
    else:
        rows.append((name, "not measured", None))
    name = "filter's time under V8 beside wasmtime's and the floor filter's"
    wasmtime = costs.get(("wasmtime", "v1-cached"))
    if cached and wasmtime:
        text = (f"V8 {cached['ns_per_request'] / 1000:.1f} µs ({cached['x_floor']:.1f}× floor),"
                f" wasmtime {wasmtime['ns_per_request'] / 1000:.1f} µs ({wasmtime['x_floor']:.1f}× floor)")
        rows.append((name, text, True))
    else:
        rows.append((name, "not measured", None))
    return rows


def filter_cost_section(meta):
    """bench/filter_cost.py's figures: every case under V8 and wasmtime, as time and × floor."""
    results = meta.get("filter_cost", [])
    if not results:
        return []
    cases = list(dict.fromkeys(r["case"] for r in results))
    by = {(r["runtime"], r["case"]): r for r in results}
    out = [
        "",
        "## The filter's own cost (bench/filter_cost.py)",
        "",
        "Time per request of the filter alone (no sockets): V8 (Node.js, TurboFan only as in Envoy, through the"
        " Proxy-Wasm shim bench/v8/shim.mjs) and wasmtime (the modelgate runtime), each also as a ratio to a"
        " filter that reads one header and sets one (floor). Host calls are counted in the V8 shim."
        f" Load average at its start: {results[0].get('loadavg', '?')}.",
        "",
        "| case | V8 µs | V8 × floor | wasmtime µs | wasmtime × floor | host calls |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for case in cases:
        v8, wt = by.get(("v8", case)), by.get(("wasmtime", case))
        cells = []
        for r in (v8, wt):
            cells += [f"{r['ns_per_request'] / 1000:.1f}", f"{r['x_floor']:.1f}×"] if r else ["–", "–"]
        cells.append(f"{v8['host_calls']:.0f}" if v8 and "host_calls" in v8 else "–")
        out.append(f"| {case} | " + " | ".join(cells) + " |")
    guest = meta.get("guest_instructions")
    if guest:
        out += ["", f"Guest instructions per full-policy 1-instance V1 request (bench/guest_instructions.py,"
                f" cachegrind over the modelgate runtime): {guest['guest']:,.0f}."]
    return out


def criterion_rows(criterion_dir):
    """(benchmark id, median, time measured) for every criterion result under the directory."""
    rows = []
    if not criterion_dir or not Path(criterion_dir).is_dir():
        return rows
    for bench in sorted(Path(criterion_dir).glob("**/new/benchmark.json")):
        estimates = bench.with_name("estimates.json")
        if not estimates.exists():
            continue
        name = json.loads(bench.read_text())["full_id"]
        median_ns = json.loads(estimates.read_text())["median"]["point_estimate"]
        when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(estimates.stat().st_mtime))
        rows.append((name, median_ns, when))
    return rows


def fmt_ns(ns):
    if ns >= 1e6:
        return f"{ns / 1e6:.2f} ms"
    if ns >= 1e3:
        return f"{ns / 1e3:.2f} µs"
    return f"{ns:.0f} ns"


def summary(figs, rss, concs, cases):
    """One row per case: throughput at each concurrency, latency at c=1 and c=32, CPU, RSS."""
    head = " | ".join(f"req/s c={c}" for c in concs)
    out = [
        f"| case | {head} | p50 ms c=1 | p99 ms c=32 | CPU s / 10k req c=32 | peak RSS |",
        "|---|" + "---:|" * (len(concs) + 4),
    ]
    for case in cases:
        cells = [f"{figs[(case, c)]['rps']:,.0f}" if (case, c) in figs else "–" for c in concs]
        one, c32 = figs.get((case, 1)), figs.get((case, 32))
        cells += [
            f"{one['p50_ms']:.3f}" if one else "–",
            f"{c32['p99_ms']:.3f}" if c32 else "–",
            f"{c32['cpu_per_10k']:.2f}" if c32 else "–",
            f"{rss[case]['vmhwm_kib'] / 1024:.0f} MiB" if case in rss else "–",
        ]
        out.append(f"| {LABEL[case]} | " + " | ".join(cells) + " |")
    return out


def markdown(meta, figs, rss, conn1000, criterion):
    concs = sorted({c for _, c in figs})
    cases = [c for c, _ in CASES if any((c, k) in figs for k in concs)]
    out = [
        "# modelgate benchmark: latest run",
        "",
        f"Machine: {meta['nproc']} CPUs, {meta['cpu_model']}, Linux {meta['kernel']}"
        f" (shared with other work: load average {meta['loadavg']} at start,"
        f" {meta.get('loadavg_end', '?')} at the end).",
        f"Run: {meta['started']}, {meta['rounds']} round(s) of {meta['duration_s']} s per case and"
        f" concurrency, cases interleaved (order reversed every other round); wrk {meta['wrk_threads']},"
        f" {meta['pinning']}. Request: POST `/v1/models/sklearn-iris:predict`, one-instance V1 body,"
        " RS256 bearer token, keep-alive.",
        "",
        *summary(figs, rss, concs, cases),
        "",
        "## All figures",
        "",
        "| c | case | req/s | p50 ms | p99 ms | × direct | × nginx | CPU s / 10k req | errors |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for conc in concs:
        for case in cases:
            f = figs.get((case, conc))
            if not f:
                continue
            out.append(
                f"| {conc} | {LABEL[case]} | {f['rps']:,.0f} | {f['p50_ms']:.3f} | {f['p99_ms']:.3f}"
                f" | {fmt_ratio(ratio(figs, case, DIRECT_OF[case], conc))}"
                f" | {fmt_ratio(ratio(figs, case, NGINX_OF[case], conc))}"
                f" | {f['cpu_per_10k']:.2f} | {f['errors']} |"
            )
    out += [
        "",
        "× direct and × nginx are throughput ratios against the same upstream (static nginx or KServe)."
        " CPU is utime+stime of the proxy's own processes (for direct: the upstream itself) from /proc/<pid>/stat.",
        "",
        "| case | peak RSS (VmHWM) | processes |",
        "|---|---:|---:|",
    ]
    for case in cases:
        if case in rss:
            r = rss[case]
            out.append(f"| {LABEL[case]} | {r['vmhwm_kib'] / 1024:.1f} MiB | {r['processes']} |")
    out += llm_stream_section(meta.get("llm_stream", {}))
    out += filter_cost_section(meta)
    failed = failures(figs)
    if failed:
        out += ["", "## Failed cases", "", "These runs saw errors; their figures are not comparable.", ""]
        out += [
            f"- **{LABEL[case]}, c={conc}**: " + ", ".join(f"{n} {kind}" for kind, n in kinds.items())
            for case, conc, kinds in failed
        ]
    out += ["", "## Targets (issue 7)", "", "| target | measured | met |", "|---|---|---|"]
    for name, text, met in targets(figs, meta, conn1000):
        out.append(f"| {name} | {text} | {'–' if met is None else ('yes' if met else '**no**')} |")
    for check in conn1000.values():
        out += [
            "",
            f"Keep-alive check: wrk -c{check['connections']} for {check['duration_s']} s against"
            f" {LABEL[check['case']]}: RSS {check['vmrss_kib'] / 1024:.1f} MiB while the connections were open"
            f" ({check['connected']} established), peak {check['vmhwm_kib'] / 1024:.1f} MiB"
            f" (before: {rss[check['case']]['vmhwm_kib'] / 1024:.1f} MiB),"
            f" {check['rps']:,.0f} req/s, {check['errors']} errors.",
        ]
    if criterion:
        out += [
            "",
            "## Micro-benchmarks (criterion, from `cargo bench -p modelgate-policies -p modelgate-runtime`)",
            "",
            "| benchmark | median | measured |",
            "|---|---:|---|",
        ]
        out += [f"| {name} | {fmt_ns(ns)} | {when} |" for name, ns, when in criterion]
    return "\n".join(out) + "\n"


def llm_stream_section(runs):
    """Case llm-stream (bench/llm_stream.py): streamed chats direct and through modelgate."""
    direct, gateway = runs.get("direct"), runs.get("modelgate")
    if not (direct and gateway):
        return []
    ms = 1000.0
    out = [
        "",
        f"## Streamed chat (llm-stream): KServe's OpenAI server, {gateway['max_tokens']} tokens,"
        " full policy",
        "",
        f"{gateway['requests']} streamed chat completions each, one at a time, direct and through modelgate"
        " alternately (JWT, the body's model with the headers held for it, request shape, token budget"
        " reserved and settled from the stream's usage, which the filter asks for and strips).",
        "",
        "| path | events | first byte p50 ms | whole stream p50 ms | p99 ms | gap between events p50 ms | p99 ms |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for label, r in (("direct", direct), ("modelgate, full policy", gateway)):
        out.append(
            f"| {label} | {'/'.join(map(str, r['events']))} | {r['ttfb_p50_us'] / ms:.3f}"
            f" | {r['total_p50_us'] / ms:.3f} | {r['total_p99_us'] / ms:.3f}"
            f" | {r['gap_p50_us'] / ms:.3f} | {r['gap_p99_us'] / ms:.3f} |"
        )
    out += [
        "",
        f"Added by modelgate: {(gateway['total_p50_us'] - direct['total_p50_us']) / ms:.3f} ms per request"
        f" (p50 of the whole stream; {(gateway['ttfb_p50_us'] - direct['ttfb_p50_us']) / ms:.3f} ms to the first byte),"
        f" {(gateway['gap_p50_us'] - direct['gap_p50_us']) / ms:.3f} ms per chunk (p50 gap between events).",
    ]
    return out


def plot(meta, figs, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import ticker

    concs = sorted({c for _, c in figs})
    fig, axes = plt.subplots(1, 3, figsize=(16, 5))
    for case, label in CASES:
        pts = [(c, figs[(case, c)]) for c in concs if (case, c) in figs]
        if not pts:
            continue
        style = "--" if case.startswith("ks-") else "-"
        xs = [c for c, _ in pts]
        for ax, field in zip(axes, ("rps", "p50_ms", "p99_ms")):
            ax.plot(xs, [f[field] for _, f in pts], style, marker="o", label=label)
    for ax, title in zip(axes, ("throughput (req/s)", "p50 latency (ms)", "p99 latency (ms)")):
        ax.set_xscale("log", base=2)
        ax.set_xticks(concs, [str(c) for c in concs])
        ax.set_xlabel("concurrent connections")
        ax.set_title(title)
        ax.grid(True, alpha=0.3)
    for ax in axes[1:]:
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(ticker.FormatStrFormatter("%g"))
        ax.yaxis.set_minor_formatter(ticker.NullFormatter())
    fig.legend(*axes[0].get_legend_handles_labels(), loc="lower center", ncol=5, fontsize=8)
    fig.suptitle(f"modelgate vs peers — {meta['nproc']} CPUs, {meta['cpu_model']}, {meta['started']}")
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    fig.savefig(path, dpi=90)


def main():
    results, out_dir = sys.argv[1], Path(sys.argv[2])
    criterion_dir = sys.argv[3] if len(sys.argv) > 3 else None
    meta, samples, rss, conn1000 = load(results)
    figs = pool(samples)
    md = markdown(meta, figs, rss, conn1000, criterion_rows(criterion_dir))
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "latest.md").write_text(md)
    plot(meta, figs, out_dir / "latest.png")
    print(md)
    failed = failures(figs)
    if failed:
        sys.exit("bench: cases saw errors: " + "; ".join(f"{case} c={conc} {kinds}" for case, conc, kinds in failed))


if __name__ == "__main__":
    main()
