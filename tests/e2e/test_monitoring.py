"""The cluster's alerts and dashboard work on the series the gateway exports.

deploy/monitoring/ holds a PrometheusRule and a Grafana dashboard written against the names
Envoy's /stats/prometheus gives the filter's metrics and Envoy's own; the gateway exports the
same names (it reads the tag rules from deploy/gateway/envoyproxy.yaml). Here:

1. every metric name the rules and the dashboard use is in the gateways' /metrics after a
   walkthrough of every outcome (and, for the GenAI panels, chats through the LLM stack);
2. a real Prometheus (the Debian package's binary, started here on a free port with a
   temporary config scraping the stack's admin /metrics every second) returns a series for
   every dashboard query and every alert expression: the alerts the walkthrough provokes
   (401s, 403s, 429s, 400s, a model server's 5xx) fire, and the two that need a failed Wasm VM
   or a filter fault evaluate to 0 ("no alert").
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
import requests
import yaml

import demo_config
from demo_config import IRIS, IRIS_SCOPE, WINE, WINE_SCOPE
from helpers import gateway_metrics

MONITORING = Path(__file__).resolve().parents[2] / "deploy" / "monitoring"
IRIS_ROW = [5.1, 3.5, 1.4, 0.2]
WINE_ROW = [13.2, 1.78, 2.14, 11.2, 100.0, 2.65, 2.76, 0.26, 1.28, 4.38, 1.05, 3.4, 1050.0]
# Alerts that need a failure the e2e stack does not have (a failed Wasm VM, a filter fault):
# their expressions are evaluated with `bool`, and must say 0.
QUIET = {"ModelgateWasmVmFailure", "ModelgateFilterInternalErrors"}
COMPARISON = re.compile(r"^(?P<signal>.+?)\s+(?P<op>>|<|>=|<=|==|!=)\s+(?P<threshold>[0-9.eE+-]+)$", re.S)
PROMQL_WORDS = {"by", "without", "bool", "on", "ignoring", "group_left", "group_right", "offset", "and", "or", "unless"}


def alerts() -> dict[str, str]:
    (rule,) = [d for d in yaml.safe_load_all((MONITORING / "prometheusrule.yaml").read_text()) if d]
    return {r["alert"]: r["expr"] for g in rule["spec"]["groups"] for r in g["rules"] if "alert" in r}


def dashboard_queries() -> list[str]:
    (config_map,) = [d for d in yaml.safe_load_all((MONITORING / "grafana-dashboard.yaml").read_text()) if d]
    dashboard = json.loads(config_map["data"]["modelgate.json"])
    return [t["expr"] for p in dashboard["panels"] for t in p["targets"]]


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects: identifiers that are not functions,
    keywords, label names (inside {} or by/without lists) or parts of strings and durations."""
    text = re.sub(r'"[^"]*"', "", expr)
    text = re.sub(r"\{[^}]*\}", "", text)
    text = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", "", text)
    text = re.sub(r"\[[^\]]*\]", "", text)
    names = set()
    for match in re.finditer(r"[a-zA-Z_:][a-zA-Z0-9_:]*", text):
        rest = text[match.end():].lstrip()
        if rest.startswith("(") or match.group() in PROMQL_WORDS:
            continue
        names.add(match.group())
    return names


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def prometheus(stack, llm_stack, tmp_path_factory):
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail("prometheus is missing: apt-get install -y prometheus (scripts/setup.sh does)")
    # Every series the rules and the dashboard read exists before the first scrape.
    one_of_each(stack, rounds=1)
    llm_chats(llm_stack, rounds=1)
    run = tmp_path_factory.mktemp("prometheus")
    # Both gateways as one job: the dashboard's GenAI panels read the LLM stack's.
    admins = [s.admin.removeprefix("http://") for s in (stack, llm_stack)]
    (run / "prometheus.yml").write_text(
        yaml.safe_dump(
            {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "scrape_configs": [{"job_name": "modelgate", "metrics_path": "/metrics", "static_configs": [{"targets": admins}]}],
            }
        )
    )
    port = free_port()
    log = (run / "prometheus.log").open("w")
    proc = subprocess.Popen(
        [
            binary,
            f"--config.file={run / 'prometheus.yml'}",
            f"--storage.tsdb.path={run / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, (run / "prometheus.log").read_text()
            try:
                if requests.get(f"{url}/-/ready", timeout=1).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            assert time.monotonic() < deadline, "prometheus did not become ready"
            time.sleep(0.2)
        # Two scrapes before the measured traffic, so every rate() has a sample from before it.
        for admin in admins:
            wait_for(url, f'count_over_time(up{{job="modelgate",instance="{admin}"}}[1m]) >= 2')
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()


def query(url: str, expr: str) -> list[dict]:
    r = requests.get(f"{url}/api/v1/query", params={"query": expr}, timeout=10)
    assert r.status_code == 200, f"{expr}: {r.text}"
    body = r.json()
    assert body["status"] == "success", f"{expr}: {body}"
    return body["data"]["result"]


def wait_for(url: str, expr: str, timeout: float = 20.0) -> list[dict]:
    deadline = time.monotonic() + timeout
    while True:
        result = query(url, expr)
        if result:
            return result
        assert time.monotonic() < deadline, f"no series for {expr}"
        time.sleep(0.25)


def one_of_each(stack, rounds: int) -> list[int]:
    """Every outcome the alerts watch, `rounds` times over: allowed, unauthenticated,
    forbidden, invalid, a model server's 5xx (wine has no explainer: its predictor answers
    `:explain` 501), then a burst past wine's quota (rate limited). Returns the statuses."""
    both = stack.token("RS256", sub=f"monitoring-both-{rounds}", scope=f"{IRIS_SCOPE} {WINE_SCOPE}")
    iris_only = stack.token("RS256", sub=f"monitoring-iris-{rounds}", scope=IRIS_SCOPE)
    burst = stack.token("RS256", sub=f"monitoring-burst-{rounds}", scope=WINE_SCOPE)
    gw = stack.gateway
    predict = f"{gw}/v1/models/{IRIS}:predict"

    def post(url: str, body: dict, token: str | None) -> int:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return requests.post(url, json=body, headers=headers, timeout=10).status_code

    statuses = []
    for _ in range(rounds):
        statuses.append(post(predict, {"instances": [IRIS_ROW]}, both))
        statuses.append(post(predict, {"instances": [IRIS_ROW]}, None))
        statuses.append(post(f"{gw}/v1/models/{WINE}:predict", {"instances": [WINE_ROW]}, iris_only))
        statuses.append(post(predict, {"instances": [IRIS_ROW[:3]]}, both))
        statuses.append(post(f"{gw}/v1/models/{WINE}:explain", {"instances": [WINE_ROW]}, both))
    quota = demo_config.WINE_QUOTA["burst"]
    statuses += [post(f"{gw}/v1/models/{WINE}:predict", {"instances": [WINE_ROW]}, burst) for _ in range(quota + 4)]
    for status in (200, 401, 403, 400, 501, 429):
        assert status in statuses, statuses
    return statuses


def llm_chats(llm_stack, rounds: int) -> None:
    """`rounds` chats and streamed chats to an OpenAI model through the LLM stack: token usage,
    request duration and time to first token for the GenAI panels."""
    token = llm_stack.token("RS256", sub=f"monitoring-llm-{rounds}", scope=demo_config.CHAT_SCOPES[demo_config.ZEN])
    url = f"{llm_stack.gateway}{demo_config.OPENAI_PREFIX}/v1/chat/completions"
    body = {"model": demo_config.ZEN, "messages": [{"role": "user", "content": "Is flat better than nested?"}], "max_tokens": 8}
    headers = {"Authorization": f"Bearer {token}"}
    for _ in range(rounds):
        for stream in (False, True):
            answer = requests.post(url, json={**body, "stream": stream}, headers=headers, timeout=30)
            assert answer.status_code == 200, answer.text


@pytest.fixture(scope="module")
def walkthrough(stack, llm_stack, prometheus):
    """The measured traffic, after Prometheus has scraped every series' starting value (the
    `prometheus` fixture sends one round first: a series born between two scrapes has no
    earlier sample, and rate() sees no increase)."""
    statuses = one_of_each(stack, rounds=4)
    llm_chats(llm_stack, rounds=2)
    # Two more scrapes, so every rate() sees the increase.
    time.sleep(2.5)
    return statuses


def test_every_metric_the_rules_and_dashboard_use_is_exported(stack, llm_stack, walkthrough):
    exported = {name for s in (stack, llm_stack) for name, _, _ in gateway_metrics(s)}
    used = set()
    for expr in [*alerts().values(), *dashboard_queries()]:
        used |= metric_names(expr)
    assert used >= {
        "modelgate_requests",
        "envoy_cluster_upstream_rq_xx",
        "modelgate_request_duration_ms_bucket",
        "gen_ai_client_token_usage_sum",
        "gen_ai_server_time_to_first_token_ms_bucket",
        "gen_ai_server_request_duration_ms_bucket",
    }
    assert used <= exported, f"missing from the gateways' /metrics: {sorted(used - exported)}"


def test_prometheus_returns_a_series_for_every_dashboard_query(prometheus, walkthrough):
    for expr in dashboard_queries():
        result = query(prometheus, expr)
        assert result, f"no series for the dashboard query {expr}"
        assert any(v["value"][1] not in ("NaN", "0") for v in result), f"{expr}: {result}"


def test_prometheus_evaluates_every_alert(prometheus, walkthrough):
    for name, expr in alerts().items():
        match = COMPARISON.match(expr.strip())
        assert match, f"{name}: not `<signal> <op> <threshold>`: {expr}"
        if name in QUIET:
            result = query(prometheus, f"{match['signal']} {match['op']} bool {match['threshold']}")
            assert result, f"{name}: no series for {expr}"
            assert all(float(v["value"][1]) == 0 for v in result), f"{name} would fire: {result}"
        else:
            assert query(prometheus, expr), f"{name} does not fire after the walkthrough: {expr}"
