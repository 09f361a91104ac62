"""Processes for tests and benchmarks: free ports for throw-away servers, and services started as
real processes (the registry's command, through the launcher) that can be killed and restarted."""

from __future__ import annotations

import random
import socket
from collections.abc import Mapping
from pathlib import Path

from archlab.devstack.launcher import launch
from archlab.devstack.services import service

_SERVER_PORTS = range(20_000, 32_768)
"""Below Linux's ephemeral range (32768-60999): a port chosen here cannot be taken meanwhile as the
local end of some outgoing connection (seen: a service's metrics port taken by a Kafka client)."""


def free_ports(count: int) -> list[int]:
    """``count`` distinct TCP ports free on 127.0.0.1; all are held open while choosing so none repeats."""
    rng = random.SystemRandom()
    sockets: list[socket.socket] = []
    try:
        while len(sockets) < count:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                sock.bind(("127.0.0.1", rng.choice(_SERVER_PORTS)))
            except OSError:  # taken (or already chosen): try another
                sock.close()
                continue
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def free_port() -> int:
    """One TCP port free on 127.0.0.1 (for tests that start servers on random ports)."""
    return free_ports(1)[0]


class ServiceProcess:
    """One run of a registered service (``archlab.devstack.services``) in its own process group,
    its output in a fresh log file kept for failure messages."""

    def __init__(self, name: str, env: Mapping[str, str], log_path: Path) -> None:
        self.name = name
        self.log_path = log_path
        log_path.unlink(missing_ok=True)  # a fresh log per run
        self.process = launch(service(name).command(), log=log_path, env=env)

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.alive()

    def wait(self, timeout: float) -> int | None:
        """Its exit code once it has exited by itself; TimeoutError while it still runs after ``timeout``."""
        if not self.process.wait(timeout):
            raise TimeoutError(f"{self.name} still runs after {timeout:.0f} s")
        return self.process.reap()

    def kill9(self) -> None:
        """SIGKILL its whole process group at once: a crash."""
        self.process.kill()

    def terminate(self, timeout: float = 30) -> int | None:
        """SIGTERM, SIGKILL after ``timeout`` seconds; returns its exit code (0: a clean shutdown)."""
        return self.process.stop(timeout)

    def close(self) -> None:
        self.kill9()

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
