"""The KServe OpenAI model servers (openai_server.py) for the LLM tests and the LLM demo.

They run in the `.venv-llm` venv (`scripts/setup.sh --llm`: kserve[llm], vLLM), apart from
the rest of the stack, which runs in `.venv`. Each replica serves both generative models
(`MODELS`); the tests and the demo run two replicas of one cluster, so a test can add up the
usage both servers report.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import requests

import stack as stack_mod

LLM_PYTHON = stack_mod.REPO / ".venv-llm" / "bin" / "python"
OPENAI_SERVER = stack_mod.HERE / "openai_server.py"
MODELS = ("markov-zen", "markov-docs")
PREFIX = "/openai"  # KServe's default KSERVE_OPENAI_ROUTE_PREFIX
# As openai_server.TOKEN: what the servers count as one token.
TOKEN = re.compile(r"\w+|[^\w\s]")
# Each token takes this long to "generate", so a stream arrives as a stream and parallel
# requests overlap at the server, as they do in front of a real LLM.
TOKEN_DELAY_MS = 10.0
START_TIMEOUT = 240.0  # seconds: each server imports vLLM and torch (10-30 s alone, on 2 cores)


def count_tokens(text: str) -> int:
    return len(TOKEN.findall(text))


@dataclass(frozen=True)
class OpenAIServerSpec:
    name: str  # process name, e.g. openai-1
    port: int
    token_delay_ms: float = 0.0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def check_venv() -> None:
    if not LLM_PYTHON.exists():
        raise stack_mod.StackError(
            f"{LLM_PYTHON} is missing: the KServe OpenAI server needs kserve[llm]; "
            "run `scripts/setup.sh --llm` (make test and make demo-llm do)"
        )


def start_openai_servers(
    specs: list[OpenAIServerSpec], run_dir: Path, processes: list[stack_mod.Process]
) -> None:
    """Starts every server (appending its Process to `processes`, so the caller stops it) and
    waits until each lists its models. Importing vLLM takes 10-30 s per process."""
    check_venv()
    started = []
    for spec in specs:
        argv = [
            str(LLM_PYTHON), str(OPENAI_SERVER), "--port", str(spec.port),
            "--replica", spec.name, "--token-delay-ms", str(spec.token_delay_ms),
        ]  # fmt: skip
        proc = stack_mod.Process(spec.name, argv, Path(run_dir) / "logs" / f"{spec.name}.log")
        proc.start()
        processes.append(proc)
        started.append((spec, proc))
    for spec, proc in started:
        stack_mod.wait_http(proc, f"{spec.url}{PREFIX}/v1/models", START_TIMEOUT)


def server_tokens(url: str) -> dict[tuple[str, str], float]:
    """`model_server_openai_tokens_total` of one server: (model, type) -> tokens."""
    text = requests.get(f"{url}/metrics", timeout=5).text
    out = {}
    for m in re.finditer(
        r'^model_server_openai_tokens_total\{model="([^"]+)",type="([^"]+)"\} (\S+)$', text, re.M
    ):
        out[(m[1], m[2])] = float(m[3])
    return out


def server_requests(url: str) -> dict[str, float]:
    """`model_server_requests_total` of one server: endpoint kind -> requests."""
    text = requests.get(f"{url}/metrics", timeout=5).text
    return {
        m[1]: float(m[2])
        for m in re.finditer(r'^model_server_requests_total\{endpoint="([^"]+)"\} (\S+)$', text, re.M)
    }
