"""`make demo-llm`'s last step, run as a user would (`scripts/demo.sh --llm --exit`), on free
ports: the LLM walkthrough's chat, streamed chat, filtered model list and token-budget 429."""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import asdict

import stack as stack_mod


def test_demo_llm_walkthrough_runs_and_cleans_up(tmp_path):
    ports = stack_mod.free_ports()
    env = {**os.environ, **{f"MODELGATE_{k.upper()}_PORT": str(v) for k, v in asdict(ports).items()}}
    env.pop("MODELGATE_PORT_BASE", None)
    result = subprocess.run(
        [str(stack_mod.REPO / "scripts" / "demo.sh"), "--llm", "--exit", "--run-dir", str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    out = result.stdout
    assert result.returncode == 0, out[-3000:] + result.stderr[-3000:]
    assert "2 KServe OpenAI servers" in out
    # The model list as two tokens see it: both models, then markov-zen alone.
    lists = re.findall(r'^\{"data":\[.*"object":"list"\}$', out, re.MULTILINE)
    assert len(lists) == 2, out
    assert '"markov-docs"' in lists[0] and '"markov-zen"' in lists[0]
    assert '"markov-docs"' not in lists[1] and '"markov-zen"' in lists[1]
    assert '"object":"chat.completion"' in out
    assert "data: [DONE]" in out and '"object":"chat.completion.chunk"' in out
    assert re.search(r'"type":"BadRequestError".*\(400\)$', out, re.MULTILINE), out
    assert re.search(r"^200 remaining=\d+ retry-after=$", out, re.MULTILINE), out
    assert re.search(r"^429 remaining=\d+ retry-after=[1-9]\d*$", out, re.MULTILINE), out
    assert (tmp_path / "zen_token").read_text().count(".") == 2
    assert "demo: stopped every process it started" in out
    assert [p for p in ports.all(llm=True) if stack_mod.port_in_use(p)] == []
