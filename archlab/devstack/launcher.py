"""The one way this project starts and stops a process it does not run in-line.

Servers (Kafka, MinIO), services under ``lab up``, and the services tests and benchmarks start all
go through ``launch``: the process gets its own session, so its process group holds it and whatever
it starts, and signalling that group stops all of it without touching the caller; its output goes
to a log file; an optional pid file lets another process (``lab infra down``, ``lab down``) find it.
``ManagedProcess.stop`` sends SIGTERM to the group, SIGKILL after a grace period, and waits until
the process has exited and its ports are closed.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import psutil

from archlab.core.settings import PROJECT_ROOT

_POLL_S = 0.05
KILL_TIMEOUT_S = 10.0  # a process that survives SIGKILL this long is stuck in the kernel
PORTS_CLOSE_TIMEOUT_S = 10.0


class LaunchError(RuntimeError):
    """A process could not be signalled, or did not go away."""


def port_open(port: int, host: str = "127.0.0.1", timeout: float = 0.5) -> bool:
    """True when something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def is_running(proc: psutil.Process) -> bool:
    """True while ``proc`` runs: a reused pid (psutil compares start times) or a zombie is not running."""
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def wait_exited(procs: Sequence[psutil.Process], timeout: float) -> bool:
    """Wait until every process has exited; a zombie counts (its parent, maybe not us, reaps it)."""
    deadline = time.monotonic() + timeout
    while any(is_running(proc) for proc in procs):
        if time.monotonic() >= deadline:
            return False
        time.sleep(_POLL_S)
    return True


def kill_group_or_process(proc: psutil.Process) -> None:
    """SIGKILL the process group ``proc`` leads (launched processes do), else only ``proc``: never a
    group it merely belongs to, which may hold the user's shell or ``make``."""
    with contextlib.suppress(ProcessLookupError, psutil.NoSuchProcess):
        if os.getpgid(proc.pid) == proc.pid:
            os.killpg(proc.pid, signal.SIGKILL)
        else:
            proc.kill()


def write_pid_file(path: Path, proc: psutil.Process, ports: Sequence[int] = ()) -> None:
    """Record ``proc`` (pid, start time, ports) atomically, so a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps({"pid": proc.pid, "create_time": proc.create_time(), "ports": list(ports)}))
    temporary.replace(path)


class ManagedProcess:
    """A process that leads its own process group: started by ``launch`` here, or found through
    its pid file (``from_pid_file``) when another process started it."""

    def __init__(self, proc: psutil.Process, *, popen: subprocess.Popen[bytes] | None = None,
                 pid_file: Path | None = None, ports: Sequence[int] = ()) -> None:
        self.proc = proc
        self.popen = popen  # set when this process is the parent: then it reaps the child
        self.pid_file = pid_file
        self.ports = list(ports)

    @classmethod
    def from_pid_file(cls, path: Path) -> ManagedProcess | None:
        """The process a pid file names while it still runs; a stale pid file is removed."""
        try:
            info = json.loads(path.read_text())
            proc = psutil.Process(info["pid"])
            # The start time tells a reused pid from ours; a zombie has already finished its work.
            if abs(proc.create_time() - info["create_time"]) < 0.01 and proc.status() != psutil.STATUS_ZOMBIE:
                return cls(proc, pid_file=path, ports=info.get("ports", []))
        except (OSError, ValueError, KeyError, TypeError, psutil.Error):
            pass
        path.unlink(missing_ok=True)
        return None

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def returncode(self) -> int | None:
        """The exit code once reaped by ``reap``/``stop`` (None for a process another one started)."""
        return None if self.popen is None else self.popen.returncode

    def exited(self) -> bool:
        """True once the process has exited. A child of ours is not reaped here: while it is an
        unreaped zombie its pid cannot be reused, so signalling its group afterwards cannot hit a stranger."""
        if self.popen is None:
            return not is_running(self.proc)
        if self.popen.returncode is not None:
            return True
        try:
            return os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
        except ChildProcessError:
            return True

    def alive(self) -> bool:
        return not self.exited()

    def signal_group(self, sig: signal.Signals) -> None:
        """Send ``sig`` to the process's group (its pgid is its pid: it leads its own session)."""
        try:
            os.killpg(self.pid, sig)
        except ProcessLookupError:
            pass
        except PermissionError as exc:
            raise LaunchError(f"not allowed to signal process group {self.pid}: {exc}") from exc

    def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds until the process has exited; True when it has."""
        deadline = time.monotonic() + timeout
        while not self.exited():
            if time.monotonic() >= deadline:
                return False
            time.sleep(_POLL_S)
        return True

    def reap(self) -> int | None:
        """Once exited: kill what a child of ours left in its process group (its unreaped pid still
        holds the group's id), collect its exit code, and drop the pid file."""
        if self.popen is not None and self.popen.returncode is None:
            self.signal_group(signal.SIGKILL)
            self.popen.wait()
        if self.pid_file is not None:
            self.pid_file.unlink(missing_ok=True)
        return self.returncode

    def stop(self, grace: float) -> int | None:
        """SIGTERM the group, SIGKILL it after ``grace`` seconds (at once when ``grace`` is 0), wait
        until the process has exited and its ports are closed; returns its exit code when ours."""
        if not self.exited():
            self.signal_group(signal.SIGTERM if grace > 0 else signal.SIGKILL)
            if not self.wait(grace):
                self.signal_group(signal.SIGKILL)
                if not self.wait(KILL_TIMEOUT_S):
                    raise LaunchError(f"pid {self.pid} survived SIGKILL")
        code = self.reap()
        deadline = time.monotonic() + PORTS_CLOSE_TIMEOUT_S
        while any(port_open(port) for port in self.ports):
            if time.monotonic() > deadline:
                raise LaunchError(f"pid {self.pid} stopped but port(s) {self.ports} are still open")
            time.sleep(_POLL_S)
        return code

    def kill(self) -> int | None:
        """SIGKILL the group at once: a crash, for recovery tests and chaos."""
        return self.stop(0.0)


def launch(command: Sequence[str], *, log: Path, env: Mapping[str, str] | None = None,
           cwd: Path = PROJECT_ROOT, pid_file: Path | None = None, ports: Sequence[int] = (),
           banner: str | None = None) -> ManagedProcess:
    """Start ``command`` in its own session with stdout and stderr appended to ``log`` (after a
    ``=== <time> <banner>`` line when given). ``pid_file`` records it for other processes; ``ports``
    are those it will listen on, which ``stop`` waits to see closed."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        if banner:
            out.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {banner}\n".encode())
            out.flush()
        popen = subprocess.Popen(  # noqa: S603 - commands are built by this project, never from input
            list(command), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            env=None if env is None else dict(env), cwd=cwd, start_new_session=True,
        )
    proc = psutil.Process(popen.pid)
    if pid_file is not None:
        write_pid_file(pid_file, proc, ports)
    return ManagedProcess(proc, popen=popen, pid_file=pid_file, ports=ports)
