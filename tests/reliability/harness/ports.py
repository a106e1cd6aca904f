"""Loopback ports from the range this suite owns (18600-18699).

18600-18679 serve the pytest suites, 18680-18699 the soak, so a soak can run beside them.
Ports are handed out round-robin and checked free, so a port a previous case left in
TIME_WAIT or a crashed process still holds is skipped rather than clashed with.
"""

from __future__ import annotations

import itertools
import socket

SUITE_RANGE = range(18600, 18680)
SOAK_RANGE = range(18680, 18700)


class PortPool:
    def __init__(self, ports: range):
        self._cycle = itertools.cycle(ports)
        self._size = len(ports)

    def take(self) -> int:
        for _ in range(self._size):
            port = next(self._cycle)
            if _free(port):
                return port
        raise AssertionError("no free port left in the reliability range")


def _free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


suite_ports = PortPool(SUITE_RANGE)
soak_ports = PortPool(SOAK_RANGE)
