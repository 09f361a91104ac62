"""Run the real infrastructure (Apache Kafka in KRaft mode and MinIO) as native processes.

No container engine is needed: ``scripts/provision.sh`` (``make provision``) puts the Kafka jars and
a MinIO binary in the cache folder (``.stack/``, or ``$LAB_STACK_HOME``), and this module starts
them through the launcher with their data, logs and pid files under one root folder. Pid files let
a different process (``lab infra down``) find and stop what ``lab infra up`` started; every server
runs in its own session so that stopping it never touches the caller and leaves no orphan behind.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import psutil

from archlab.core.settings import PROJECT_ROOT
from archlab.devstack import kafka_server, minio_server
from archlab.devstack.config import NotProvisionedError, StackConfig, StackError
from archlab.devstack.launcher import LaunchError, ManagedProcess, is_running, launch, port_open

__all__ = ["NativeStack", "NotProvisionedError", "StackConfig", "StackError", "watchdog"]
_SERVERS = ("kafka", "minio")


def _tail(path: Path, lines: int = 40) -> str:
    """The last lines of a log file, for error messages that explain why a server did not start."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"(no log at {path})"
    return "\n".join(text.splitlines()[-lines:]) or f"({path} is empty)"


class NativeStack:
    """Start, check and stop the Kafka broker and the MinIO server described by a ``StackConfig``."""

    KAFKA_START_TIMEOUT = 120.0
    MINIO_START_TIMEOUT = 60.0
    KAFKA_STOP_TIMEOUT = 30.0
    MINIO_STOP_TIMEOUT = 15.0

    def __init__(self, config: StackConfig, *, exit_with_owner: bool = False) -> None:
        """``exit_with_owner``: a watchdog stops the servers when this process dies, even by SIGKILL
        (for test sessions; ``lab infra up`` leaves it off so the servers outlive the command)."""
        self.config = config
        self.exit_with_owner = exit_with_owner
        # Servers started by this process, kept to reap them (no zombies).
        self._launched: dict[str, ManagedProcess] = {}
        self._watchdog: ManagedProcess | None = None

    # ------------------------------------------------------------------ whole stack
    def start(self) -> None:
        """Start Kafka and MinIO and wait until both are healthy; on failure stop both again."""
        try:
            self.start_minio()  # MinIO is quick: start it first so it is ready while the JVM warms up.
            self.start_kafka()
        except BaseException as exc:
            try:
                self.stop()
            except StackError as stop_error:
                exc.add_note(f"while cleaning up: {stop_error}")
            raise

    def stop(self) -> None:
        """Stop both servers (SIGTERM, then SIGKILL after a grace period). Safe to call repeatedly."""
        errors = []
        for stop in (self.stop_kafka, self.stop_minio):
            try:
                stop()
            except StackError as exc:
                errors.append(str(exc))
        if self._watchdog is not None:
            self._watchdog.stop(grace=10.0)
            self._watchdog = None
        if errors:
            raise StackError("; ".join(errors))

    def is_running(self) -> bool:
        """True when both server processes are alive (not necessarily healthy)."""
        return all(self.pid(name) is not None for name in _SERVERS)

    def pid(self, name: str) -> int | None:
        """Pid of the running ``kafka`` or ``minio`` server, or None (stale pid files are removed)."""
        server = self._server(name)
        return server.pid if server else None

    def status(self) -> dict[str, dict[str, Any]]:
        """Process and health state of each server, for ``lab infra status``."""
        result: dict[str, dict[str, Any]] = {}
        for name, healthy in (("kafka", self.kafka_healthy), ("minio", self.minio_healthy)):
            server = self._server(name)  # its ports, which may differ from this config's
            result[name] = {
                "running": server is not None,
                "pid": server.pid if server else None,
                "ports": server.ports if server else [],
                "healthy": server is not None and healthy(server.ports[0]),
            }
        return result

    # ------------------------------------------------------------------ Kafka
    def start_kafka(self, timeout: float | None = None) -> None:
        """Format the KRaft storage once, start the broker and wait for a metadata round-trip."""
        cfg = self.config
        log = cfg.logs_dir / "kafka.out"
        if self._server("kafka") is None:
            ports = [cfg.kafka_port, cfg.kafka_controller_port]
            self._check_ports_free("kafka", ports)
            command = kafka_server.prepare(cfg)
            self._launch("kafka", command, log, None, ports)
        self._wait_healthy("kafka", self.kafka_healthy, timeout or self.KAFKA_START_TIMEOUT, log)

    def stop_kafka(self) -> None:
        """Stop the broker cleanly (controlled shutdown), killing it if it does not exit in time."""
        self._stop("kafka", self.KAFKA_STOP_TIMEOUT)

    def kill_kafka(self) -> None:
        """Kill the broker with SIGKILL at once: a crash, for recovery tests."""
        self._stop("kafka", 0.0)

    def kafka_healthy(self, port: int | None = None) -> bool:
        """True when the port accepts connections and the metadata shows a leader for every partition."""
        return kafka_server.kafka_healthy(port or self.config.kafka_port)

    # ------------------------------------------------------------------ MinIO
    def start_minio(self, timeout: float | None = None) -> None:
        """Start the MinIO server and wait until ``/minio/health/ready`` answers 200."""
        cfg = self.config
        log = cfg.logs_dir / "minio.log"
        if self._server("minio") is None:
            ports = [cfg.minio_port, cfg.minio_console_port]
            self._check_ports_free("minio", ports)
            command, env = minio_server.prepare(cfg)
            self._launch("minio", command, log, env, ports)
        self._wait_healthy("minio", self.minio_healthy, timeout or self.MINIO_START_TIMEOUT, log)

    def stop_minio(self) -> None:
        """Stop the MinIO server (SIGTERM, then SIGKILL)."""
        self._stop("minio", self.MINIO_STOP_TIMEOUT)

    def minio_healthy(self, port: int | None = None) -> bool:
        """True when MinIO reports itself ready to serve requests."""
        return minio_server.minio_healthy(port or self.config.minio_port)

    # ------------------------------------------------------------------ processes
    def _pid_file(self, name: str) -> Path:
        return self.config.run_dir / f"{name}.pid"

    def _server(self, name: str) -> ManagedProcess | None:
        """The running server ``name`` (whoever started it), or None; reaps one of ours that died."""
        found = ManagedProcess.from_pid_file(self._pid_file(name))
        own = self._launched.get(name)
        if own is not None and (found is None or found.pid != own.pid):
            del self._launched[name]
            if own.wait(5.0):
                own.reap()
            own = None
        return own or found

    def _launch(self, name: str, command: list[str], log: Path, env: Mapping[str, str] | None,
                ports: list[int]) -> None:
        self._ensure_watchdog()
        self._launched[name] = launch(command, log=log, env=env, cwd=self.config.root,
                                      pid_file=self._pid_file(name), ports=ports, banner=f"starting {name}")

    def _ensure_watchdog(self) -> None:
        """Start (once) the process that stops the servers if this one disappears without stop()."""
        if not self.exit_with_owner or (self._watchdog is not None and self._watchdog.alive()):
            return
        owner = psutil.Process()
        code = ("import sys; from archlab.devstack.native import watchdog; "
                "watchdog(sys.argv[1], int(sys.argv[2]), float(sys.argv[3]))")
        # Its own session: it survives the owner's death, and its Ctrl-C.
        self._watchdog = launch(
            [sys.executable, "-c", code, str(self.config.root), str(owner.pid), repr(owner.create_time())],
            log=self.config.logs_dir / "watchdog.log", cwd=PROJECT_ROOT,
        )

    def _check_ports_free(self, name: str, ports: list[int]) -> None:
        busy = [port for port in ports if port_open(port)]
        if busy:
            raise StackError(f"cannot start {name}: port(s) {busy} on 127.0.0.1 already in use by another program")

    def _wait_healthy(self, name: str, check: Callable[[], bool], timeout: float, log: Path) -> None:
        """Poll ``check`` until it passes; a dead process or a timeout raises with the log's tail."""
        deadline = time.monotonic() + timeout
        while True:
            if self.pid(name) is None:
                raise StackError(f"{name} exited during start-up; last lines of {log}:\n{_tail(log)}")
            if check():
                return
            if time.monotonic() > deadline:
                self._stop(name, 5.0)
                raise StackError(f"{name} not healthy within {timeout:.0f}s; last lines of {log}:\n{_tail(log)}")
            time.sleep(0.25)

    def _stop(self, name: str, grace: float) -> None:
        """SIGTERM the server's process group, wait ``grace`` seconds, then SIGKILL; wait for its ports."""
        server = self._server(name)
        if server is None:
            return
        try:
            server.stop(grace)
        except LaunchError as exc:
            raise StackError(f"{name}: {exc}") from exc
        self._launched.pop(name, None)


def watchdog(root: str, owner_pid: int, owner_started: float) -> None:
    """Body of the watchdog process: once the owner is gone, stop whatever runs under ``root``."""
    stack = NativeStack(StackConfig(Path(root), access_key="", secret_key=""))
    try:
        owner = psutil.Process(owner_pid)
        # psutil's is_running then tells a reused pid from the owner by its start time.
        while abs(owner.create_time() - owner_started) < 0.01 and is_running(owner):
            time.sleep(1.0)
    except psutil.NoSuchProcess:
        pass
    if stack.pid("kafka") or stack.pid("minio"):
        print(f"owner {owner_pid} is gone without stopping the stack: stopping it", flush=True)
        stack.stop()
