"""Unit check of report.py's pooling: error responses are not throughput, and a case that saw
errors fails the report. Run: .venv/bin/pytest bench/test_report.py (make test does)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import report  # noqa: E402


def wrk(requests: int, seconds: float = 1.0, **errors: int) -> dict:
    figures = {"requests": requests, "duration_us": int(seconds * 1e6), "bytes": 0, "p50_us": 500, "p90_us": 800,
               "p99_us": 900, "max_us": 1000, "mean_us": 550.0}
    figures.update({k: errors.get(k[4:], 0) for k in report.ERROR_KINDS})
    return figures


def sample(case: str, conc: int, round_: int, figures: dict) -> dict:
    return {"type": "sample", "case": case, "c": conc, "round": round_, "cpu_s": 1.0, "wrk": figures}


def test_error_statuses_are_not_throughput() -> None:
    figs = report.pool([sample("mg-full", 32, 1, wrk(10_000, status=4_000)), sample("mg-full", 32, 2, wrk(10_000))])
    pooled = figs[("mg-full", 32)]
    assert pooled["rps"] == pytest.approx(16_000 / 2)
    assert (pooled["rps_min"], pooled["rps_max"]) == (6_000, 10_000)
    assert pooled["errors"] == 4_000


def test_clean_runs_are_not_failures_and_errors_are() -> None:
    figs = report.pool([
        sample("nginx", 1, 1, wrk(5_000)),
        sample("mg-full", 1, 1, wrk(5_000, timeout=3)),
        sample("mg-full", 32, 1, wrk(5_000, status=7, read=1)),
    ])
    assert report.failures(figs) == [("mg-full", 1, {"timeout": 3}), ("mg-full", 32, {"status": 7, "read": 1})]


def test_a_run_with_errors_writes_its_report_and_exits_1(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    meta = {"type": "meta", "nproc": 2, "cpu_model": "test", "kernel": "6", "loadavg": "0 0 0", "started": "now",
            "duration_s": 1, "rounds": 1, "wrk_threads": "1-2", "pinning": "none", "wasm_bytes": 1}
    lines = [meta, sample("nginx", 1, 1, wrk(100)), sample("mg-full", 1, 1, wrk(100, status=100))]
    results = tmp_path / "results.jsonl"
    results.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    monkeypatch.setattr(report, "plot", lambda *args: None)
    monkeypatch.setattr(sys, "argv", ["report.py", str(results), str(tmp_path / "out")])
    with pytest.raises(SystemExit) as exited:
        report.main()
    assert "mg-full c=1" in str(exited.value.code)
    md = (tmp_path / "out" / "latest.md").read_text()
    assert "**6. modelgate, full policy, c=1**: 100 status" in md
    # All 100 answers were errors: no throughput at all.
    assert "| 1 | 6. modelgate, full policy | 0 |" in md


def test_the_streamed_chat_case_reports_what_modelgate_adds_per_request_and_per_chunk() -> None:
    def run(path: str, ttfb: int, total: int, gap: int) -> dict:
        return {"type": "llm_stream", "path": path, "requests": 10, "max_tokens": 32, "events": [34],
                "ttfb_p50_us": ttfb, "total_p50_us": total, "total_p99_us": total + 500,
                "gap_p50_us": gap, "gap_p99_us": gap + 100}

    lines = report.llm_stream_section({"direct": run("direct", 2_000, 70_000, 2_100),
                                       "modelgate": run("modelgate", 2_900, 75_400, 2_250)})
    text = "\n".join(lines)
    assert "| modelgate, full policy | 34 | 2.900 | 75.400 | 75.900 | 2.250 | 2.350 |" in text
    assert "5.400 ms per request" in text and "0.900 ms to the first byte" in text
    assert "0.150 ms per chunk" in text
    assert report.llm_stream_section({"direct": run("direct", 1, 2, 3)}) == []


def test_the_filter_targets_come_from_the_guest_count_and_the_v8_shims_host_calls() -> None:
    meta = {
        "guest_instructions": {"guest": 19_500.0},
        "filter_cost": [
            {"runtime": "v8", "case": "v1-cached", "ns_per_request": 30_000, "x_floor": 6.0, "host_calls": 13},
            {"runtime": "wasmtime", "case": "v1-cached", "ns_per_request": 12_000, "x_floor": 4.0},
        ],
    }
    rows = {name: (text, met) for name, text, met in report.filter_targets(meta)}
    assert rows["filter ≤ 20,000 guest instructions (full-policy 1-instance V1)"] == ("19,500 (cachegrind, wasmtime)", True)
    assert rows["filter ≤ 8 host calls (full-policy 1-instance V1)"] == ("13 (counted in the V8 shim)", False)
    assert rows["filter's time under V8 beside wasmtime's and the floor filter's"][1] is True
    assert "| v1-cached | 30.0 | 6.0× | 12.0 | 4.0× | 13 |" in report.filter_cost_section(meta)


def test_filter_targets_without_a_filter_run_are_not_measured() -> None:
    assert all(met is None and text == "not measured" for _, text, met in report.filter_targets({}))
