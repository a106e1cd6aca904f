"""Waiting for a condition with a deadline: how the suites wait, instead of fixed sleeps."""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_until(condition: Callable[[], bool], message: str, timeout: float = 15.0, interval: float = 0.05) -> None:
    """Return once `condition()` holds; fail with `message` if it does not within `timeout`."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{message} (waited {timeout}s)"
        time.sleep(interval)
