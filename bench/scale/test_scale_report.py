"""bench/scale/report.py: the tables it writes from a run's records (make test-bench-report)."""

import csv
import json
import subprocess
import sys
from pathlib import Path

REPORT = Path(__file__).with_name("report.py")


def sample(sweep, point, rnd, requests, cpu_s, err_status=0, p99=2000):
    return {"type": "sample", "sweep": sweep, "point": point, "round": rnd, "cpu_s": cpu_s,
            "loadavg": "3.10 2.00 1.00",
            "wrk": {"requests": requests, "duration_us": 4_000_000, "bytes": 0, "p50_us": 500, "p90_us": 900,
                    "p99_us": p99, "max_us": 5000, "mean_us": 600.0, "err_connect": 0, "err_read": 0,
                    "err_write": 0, "err_status": err_status, "err_timeout": 0}}


def point(sweep, name, models, manifest_bytes, configure_us):
    return {"type": "point", "sweep": sweep, "point": name,
            "dims": {"models": models, "keys": 1, "callers": 10, "tokens": 1, "instances": 1},
            "manifest_bytes": manifest_bytes, "config_bytes": manifest_bytes - 600, "ready_s": 0.5,
            "rss_start_kib": 20000, "vmrss_kib": 25600, "vmhwm_kib": 30720, "callers_sent": 10, "vms": 2,
            "on_configure_us": [configure_us, configure_us // 2], "plugin_config_bytes": 100,
            "vm_memory_bytes": [2 * 1048576, 1048576]}


def run(tmp_path, records):
    results = tmp_path / "scale.jsonl"
    results.write_text("".join(json.dumps(r) + "\n" for r in records))
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, str(REPORT), str(results), str(out)], capture_output=True, text=True)
    return proc, out


def test_ratios_limits_and_acceptance_come_from_the_same_sweep(tmp_path):
    records = [
        {"type": "meta", "nproc": 2, "loadavg": "1 1 1", "started": "now", "duration_s": 4, "rounds": 2,
         "conns": 32, "wasm_bytes": 1000, "cpu_model": "test"},
        # base: 20,000 requests for 1.0 CPU s = 50 µs; 1,000 models: 10,000 for 0.65 s = 65 µs.
        sample("models", "base", 1, 10000, 0.5), sample("models", "base", 2, 10000, 0.5),
        sample("models", "1000", 1, 5000, 0.3), sample("models", "1000", 2, 5000, 0.35),
        point("models", "base", 2, 1400, 3000), point("models", "1000", 1000, 198400, 90000),
        {"type": "end", "loadavg": "2 2 2", "elapsed_s": 60},
    ]
    proc, out = run(tmp_path, records)
    assert proc.returncode == 0, proc.stderr
    md = (out / "scale.md").read_text()
    assert "| 1000 | 1,250 | 65.0 | 1.30× | 0.5 | 2.0 | 90.0 | 2.0 | 25.0 (30.0) | 198,400 |" in md
    assert "| models 1000 | 65.0 | 50.0 | 1.30× | **no** |" in md
    # (198,400 - 1,400) / 998 = 197.4 bytes a model above 1,005: etcd's 1,572,864 bytes hold 7,963.
    assert "197 bytes per model" in md and "about 7,963 models" in md
    rows = list(csv.DictReader(open(out / "scale.csv")))
    assert [(r["point"], r["cpu_us_per_req"], r["cpu_vs_base"]) for r in rows] == [
        ("base", "50.0", "1.0"), ("1000", "65.0", "1.3")]
    assert (out / "scale-models.png").stat().st_size > 0


def test_error_statuses_are_not_throughput_and_fail_the_run(tmp_path):
    records = [
        sample("keys", "base", 1, 10000, 0.5),
        sample("keys", "100", 1, 10000, 0.5, err_status=4000),
        point("keys", "base", 2, 1400, 3000), point("keys", "100", 2, 1400, 3000),
    ]
    proc, out = run(tmp_path, records)
    assert proc.returncode == 1
    assert "keys/100" in proc.stderr
    md = (out / "scale.md").read_text()
    # 6,000 good responses in 4 s, 0.5 CPU s over them.
    assert "| 100 **errors: 4000** | 1,500 | 83.3 | 1.67× |" in md
