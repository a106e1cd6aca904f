"""One stack for the whole session: four real KServe servers and the modelgate gateway.

If any part cannot start (a model server dies, the gateway is not built, a port is taken),
every test errors with the reason and the part's log: the suite fails, it never skips.
Ports: MODELGATE_PORT_BASE=N pins them (see stack.py); by default free ports are picked so
the suite can run beside `make demo`.
"""

from __future__ import annotations

import itertools
import os
import signal
import socket
from pathlib import Path

import pytest
import requests

import demo_config
import llm_stack
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
def openai_servers(tmp_path_factory) -> list:
    """Two KServe OpenAI model servers (llm_stack.py; each serves both generative models),
    the replicas of one cluster. Like the stack, a server that cannot start fails every test
    that uses them, with its log."""
    sockets = [socket.socket() for _ in range(2)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    specs = [llm_stack.OpenAIServerSpec(f"openai-{i + 1}", port) for i, port in enumerate(ports)]
    processes: list = []
    failure = None
    try:
        llm_stack.start_openai_servers(specs, tmp_path_factory.mktemp("openai"), processes)
    except stack_mod.StackError as e:
        failure = str(e)
    if failure is not None:
        for proc in processes:
            proc.signal_group(signal.SIGKILL)
        pytest.fail(f"the KServe OpenAI servers did not start: {failure}", pytrace=False)
    yield specs
    dead = [f"{p.name}:\n{p.log_tail()}" for p in processes if not p.alive()]
    for proc in processes:
        proc.signal_group(signal.SIGTERM)
    for proc in processes:
        if not proc.wait(10.0):
            proc.signal_group(signal.SIGKILL)
    assert not dead, "exited during the suite: " + "\n".join(dead)
