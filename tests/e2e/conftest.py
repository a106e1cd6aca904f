"""One stack for the whole session: five real KServe servers and the modelgate gateway
serving deploy/ (stack.py).

The gateway's model routes are on deploy/'s HTTPS listener, with a certificate made for the
run: the session trusts it for `requests` (REQUESTS_CA_BUNDLE) once the stack is up, so a
test sends to `stack.gateway` as a client of the cluster would.

If any part cannot start (a model server dies, the gateway is not built, a port is taken),
every test errors with the reason and the part's log: the suite fails, it never skips.
Ports: MODELGATE_PORT_BASE=N pins them (see stack.py); by default free ports are picked so
the suite can run beside `make demo`.
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import pytest
import requests

import demo_config
import llm_stack as llm_stack_mod
import stack as stack_mod

BOTH_SCOPES = f"{demo_config.IRIS_SCOPE} {demo_config.WINE_SCOPE}"
_subjects = itertools.count(1)


@pytest.fixture(scope="session")
def stack(tmp_path_factory) -> stack_mod.Stack:
    if os.environ.get("MODELGATE_PORT_BASE"):
        ports = stack_mod.ports_from_env()
    else:
        ports = stack_mod.free_ports()
    run_dir = Path(os.environ.get("MODELGATE_E2E_RUN_DIR") or tmp_path_factory.mktemp("stack"))
    s = stack_mod.Stack(ports, run_dir)
    failure = None
    try:
        s.start()
    except stack_mod.StackError as e:
        failure = str(e)
    if failure is not None:
        s.stop()
        pytest.fail(f"the e2e stack did not start: {failure}", pytrace=False)
    os.environ["REQUESTS_CA_BUNDLE"] = str(s.cert_path)
    yield s
    # A part that died mid-suite (a crash under hostile input) fails the run at teardown.
    dead = [f"{p.name}:\n{p.log_tail()}" for p in s.processes if not p.alive()]
    s.stop()
    assert not dead, "exited during the suite: " + "\n".join(dead)


@pytest.fixture
def subject(request) -> str:
    """A subject of its own for each test, so per-subject quotas never couple two tests."""
    return f"{request.node.name[:40]}-{next(_subjects)}"


@pytest.fixture
def token(stack, subject) -> str:
    """An RS256 token allowed to call both models."""
    return stack.token("RS256", sub=subject, scope=BOTH_SCOPES)


@pytest.fixture
def gw(stack, token) -> requests.Session:
    """A session to the gateway carrying a valid token for both models."""
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {token}"
    yield session
    session.close()


@pytest.fixture(scope="session")
def llm_stack(tmp_path_factory) -> stack_mod.Stack:
    """The LLM stack (`make demo-llm`'s): the stack's servers plus two KServe OpenAI servers,
    behind a gateway whose filter serves the OpenAI models too (demo_config, `llm`). Like
    `stack`, a part that cannot start fails every test that uses it, with its log."""
    run_dir = Path(tmp_path_factory.mktemp("llm-stack"))
    s = stack_mod.Stack(stack_mod.free_ports(), run_dir, llm=True)
    failure = None
    try:
        s.start()
    except stack_mod.StackError as e:
        failure = str(e)
    if failure is not None:
        s.stop()
        pytest.fail(f"the LLM stack did not start: {failure}", pytrace=False)
    yield s
    dead = [f"{p.name}:\n{p.log_tail()}" for p in s.processes if not p.alive()]
    s.stop()
    assert not dead, "exited during the suite: " + "\n".join(dead)


@pytest.fixture(scope="session")
def openai_servers(llm_stack) -> list[llm_stack_mod.OpenAIServerSpec]:
    """The LLM stack's two KServe OpenAI servers, the replicas of one cluster."""
    return llm_stack.openai_servers()
