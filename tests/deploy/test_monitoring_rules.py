"""deploy/monitoring/prometheusrule.yaml passes Prometheus's own checks: `promtool check rules`
and the `promtool test rules` unit test in prometheus/alerts_test.yaml (firing and quiet cases
for every alert). promtool comes with the Debian package `prometheus`, which
scripts/test-deploy.sh installs when it is missing.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from deploy_support import DEPLOY, load_docs, run

RULE = DEPLOY / "monitoring" / "prometheusrule.yaml"
UNIT_TEST = Path(__file__).parent / "prometheus" / "alerts_test.yaml"


@pytest.fixture(scope="module")
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool is missing: apt-get install -y prometheus (scripts/test-deploy.sh does)")
    return path


@pytest.fixture
def rules_dir(tmp_path) -> Path:
    """The PrometheusRule's spec as a plain rules file, with the unit test beside it."""
    (rule,) = load_docs(RULE)
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(rule["spec"], sort_keys=False))
    shutil.copy(UNIT_TEST, tmp_path / "alerts_test.yaml")
    return tmp_path


def test_promtool_accepts_the_rules(promtool, rules_dir):
    result = run([promtool, "check", "rules", str(rules_dir / "rules.yaml")])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 7 rules found" in result.stdout + result.stderr


def test_alerts_fire_and_stay_quiet_as_the_unit_test_says(promtool, rules_dir):
    result = run([promtool, "test", "rules", str(rules_dir / "alerts_test.yaml")])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout + result.stderr


def test_the_unit_test_covers_every_alert_firing():
    (rule,) = load_docs(RULE)
    alerts = {r["alert"] for g in rule["spec"]["groups"] for r in g["rules"] if "alert" in r}
    (unit,) = load_docs(UNIT_TEST)
    fired = {
        case["alertname"]
        for test in unit["tests"]
        for case in test["alert_rule_test"]
        if case["exp_alerts"]
    }
    assert fired == alerts, "every alert has a firing case"
    quiet = {case["alertname"] for test in unit["tests"] for case in test["alert_rule_test"] if not case["exp_alerts"]}
    assert quiet >= alerts
