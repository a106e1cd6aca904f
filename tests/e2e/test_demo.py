"""`make demo`'s last step, run as a user would (`scripts/demo.sh --exit`), on free ports.

It starts its own stack beside the suite's, so this also shows two stacks do not collide.
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import asdict

import stack as stack_mod


def test_demo_walkthrough_runs_and_cleans_up(tmp_path):
    ports = stack_mod.free_ports()
    env = {**os.environ, **{f"MODELGATE_{k.upper()}_PORT": str(v) for k, v in asdict(ports).items()}}
    env.pop("MODELGATE_PORT_BASE", None)
    result = subprocess.run(
        [str(stack_mod.REPO / "scripts" / "demo.sh"), "--exit", "--run-dir", str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    out = result.stdout
    assert result.returncode == 0, out[-3000:] + result.stderr[-3000:]
    assert "demo: ready in" in out
    assert "on deploy/ plus the local overlay" in out
    assert "\nready\n" in out  # the admin listener's /ready
    assert '{"predictions":[0]}' in out
    # sklearn-mnist, deploy/'s own second model: the digit 0 predicted, then explained by the
    # ART-shaped explainer through deploy/'s Exact explain rule.
    assert re.search(r'^"prediction": *0$', out, re.MULTILINE), out
    assert re.search(r'^"adversarial_prediction": *[1-9]$', out, re.MULTILINE), out
    assert re.search(r"^301 https://127\.0\.0\.1:\d+/v1/models/sklearn-iris:predict$", out, re.MULTILINE), out
    assert '"x-request-id":"req-456"' in out
    assert "(403)" in out and "(400)" in out
    assert "200 retry-after=\n" in out
    assert re.search(r"^429 retry-after=[1-3]$", out, re.MULTILINE), out
    assert 'modelgate_requests{model="sklearn-iris",outcome="invalid"} 1' in out
    assert '"keys": "[redacted]"' in out
    assert f"export RUN={tmp_path}" in out
    assert (tmp_path / "token").read_text().count(".") == 2
    assert "demo: stopped every process it started" in out
    still_listening = [p for p in ports.all() if stack_mod.port_in_use(p)]
    assert still_listening == []
