"""Run the whole lab natively in one foreground process: the engine behind ``lab up`` and ``lab down``.

``lab up`` starts Kafka and MinIO (``archlab.devstack.native``), then every registered service
(``archlab.devstack.services``) as a child process through the launcher, restarts a service that
dies, and on Ctrl-C or ``lab down`` stops the services before the infrastructure they write to.
Each child runs in its own session: the terminal's Ctrl-C reaches only the supervisor, which decides
the order, and signalling a child's process group also reaches any process that child started, so
nothing outlives the lab.
"""

from __future__ import annotations

import contextlib
import signal
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

import psutil
from pydantic import Field
from rich.console import Console
from rich.markup import escape

from archlab.core.settings import PROJECT_ROOT
from archlab.devstack.config import StackError, StackSettings
from archlab.devstack.launcher import (
    ManagedProcess,
    kill_group_or_process,
    launch,
    port_open,
    wait_exited,
    write_pid_file,
)
from archlab.devstack.services import SERVICES, Service

STOP_GRACE_S = 20.0  # how long services get to flush and commit after SIGTERM
BACKOFF_FIRST_S = 1.0
BACKOFF_MAX_S = 30.0
BACKOFF_RESET_AFTER_S = 60.0  # a service that ran this long before dying restarts quickly again
READY_TIMEOUT_S = 90.0  # announce the URLs anyway (with a warning) when a port stays closed this long
# Covers a supervisor's whole shutdown: services (20 s, then SIGKILL), Kafka (30 s) and MinIO (15 s).
SUPERVISOR_STOP_TIMEOUT_S = 120.0
_TICK_S = 0.2
_COLORS = ("cyan", "magenta", "green", "yellow", "blue", "bright_red")

console = Console(stderr=True, highlight=False, soft_wrap=True)


class SupervisorError(RuntimeError):
    """The supervisor cannot start (another one runs for the same root)."""


class _Interrupted(BaseException):
    """Raised by the signal handler to abandon the infrastructure start-up."""


class SupervisorSettings(StackSettings):
    """What ``lab up`` adds to the stack's settings: the ports of the services it runs."""

    api_port: int = Field(8000, ge=1, le=65535, description="Port of the query API")
    ui_port: int = Field(8501, ge=1, le=65535, description="Port of the dashboard")
    notebook_port: int = Field(8888, ge=1, le=65535, description="Port of JupyterLab (the notebooks)")
    metrics_base_port: int = Field(9101, ge=1, le=65535,
                                   description="Services get consecutive Prometheus metrics ports from here")


@dataclass(frozen=True)
class ServiceSpec:
    """One registered service as ``lab up`` runs it here: with the ports it gets on this machine."""

    service: Service
    http_port: int | None = None
    metrics_port: int | None = None

    @property
    def name(self) -> str:
        return self.service.name

    @property
    def argv(self) -> tuple[str, ...]:
        return tuple(self.service.command())

    @property
    def env(self) -> dict[str, str]:
        return self.service.env(metrics_port=self.metrics_port, http_port=self.http_port)

    @property
    def title(self) -> str:
        return self.service.http_title

    @property
    def url(self) -> str | None:
        """The address a person opens in a browser, when the service serves HTTP."""
        return None if self.http_port is None else f"http://localhost:{self.http_port}{self.service.http_path}"


def service_specs(
    api_port: int = 8000, ui_port: int = 8501, metrics_base_port: int = 9101, notebook_port: int = 8888
) -> list[ServiceSpec]:
    """Every service of the system, in start order; metrics ports count up from ``metrics_base_port``."""
    http_ports = {"api": api_port, "ui": ui_port, "notebooks": notebook_port}
    specs = []
    next_metrics_port = metrics_base_port
    for service in SERVICES:
        metrics_port = None
        if service.metrics:
            metrics_port, next_metrics_port = next_metrics_port, next_metrics_port + 1
        http_port = http_ports[service.name] if service.http_port_env else None
        specs.append(ServiceSpec(service, http_port=http_port, metrics_port=metrics_port))
    return specs


# ---------------------------------------------------------------------- pid file
def supervisor_pid_file(root: Path) -> Path:
    """Where a running supervisor records itself, next to the infrastructure's pid files."""
    return root / "run" / "supervisor.pid"


def service_log(root: Path, name: str) -> Path:
    """The log file of one service (appended to across restarts and runs)."""
    return root / "logs" / f"{name}.log"


@contextlib.contextmanager
def _pid_file(root: Path) -> Iterator[None]:
    """Hold the pid file for the lifetime of the supervisor so ``lab down`` can find it."""
    path = supervisor_pid_file(root)
    other = ManagedProcess.from_pid_file(path)
    if other is not None:
        raise SupervisorError(f"a supervisor already runs for {root} (pid {other.pid}): run `lab down` first")
    write_pid_file(path, psutil.Process())
    try:
        yield
    finally:
        path.unlink(missing_ok=True)


def stop_supervisor(root: Path, timeout: float = SUPERVISOR_STOP_TIMEOUT_S) -> bool:
    """SIGTERM the running supervisor and wait until it has exited; after ``timeout`` kill it and
    every process group its children lead. Returns False when no supervisor was running.
    Only the supervisor process is signalled, never its group: that may hold the user's shell or make."""
    supervisor = ManagedProcess.from_pid_file(supervisor_pid_file(root))
    if supervisor is None:
        return False
    proc = supervisor.proc
    with contextlib.suppress(psutil.NoSuchProcess):
        proc.send_signal(signal.SIGTERM)
    if not wait_exited([proc], timeout):
        # Collected before the kill: once the supervisor is gone its children are found by no parent.
        with contextlib.suppress(psutil.NoSuchProcess):
            descendants = proc.children(recursive=True)
            for child in descendants:
                kill_group_or_process(child)
            proc.kill()
            wait_exited([proc, *descendants], 10.0)
    supervisor_pid_file(root).unlink(missing_ok=True)
    return True


# ---------------------------------------------------------------------- supervisor
@dataclass
class _Child:
    """One supervised service and its restart state."""

    spec: ServiceSpec
    color: str
    proc: ManagedProcess | None = None
    started_at: float = 0.0
    backoff: float = BACKOFF_FIRST_S
    restart_at: float | None = None
    runs: int = 0


def _describe_exit(code: int | None) -> str:
    if code is not None and code < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-code).name}"
    return f"exit code {code}"


class _Supervisor:
    """Starts the services, restarts those that die and stops them all on the first signal."""

    def __init__(self, services: Sequence[ServiceSpec], env: Mapping[str, str], root: Path) -> None:
        self.env = dict(env)
        self.root = root
        self.children = [_Child(spec, _COLORS[i % len(_COLORS)]) for i, spec in enumerate(services)]
        self.signals: list[int] = []
        self.starting_infra = False

    # --------------------------------------------------------------- signals
    def on_signal(self, signum: int, _frame: FrameType | None) -> None:
        self.signals.append(signum)
        if self.starting_infra:  # blocking start-up code: interrupt it, it cleans up after itself
            self.starting_infra = False
            raise _Interrupted

    @contextlib.contextmanager
    def handling_signals(self) -> Iterator[None]:
        watched = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
        previous = {signum: signal.signal(signum, self.on_signal) for signum in watched}
        try:
            yield
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    # --------------------------------------------------------------- output
    def say(self, name: str, message: str, color: str = "white") -> None:
        console.print(f"[{color}]{name:>15}[/] | {escape(message)}")

    def announce(self, links: Sequence[tuple[str, str]], started: float) -> None:
        closed = [c.spec for c in self.children if c.spec.http_port and not port_open(c.spec.http_port)]
        for spec in closed:
            log = service_log(self.root, spec.name)
            self.say(spec.name, f"nothing answers on port {spec.http_port} yet; see {log}", "red")
        rows = [(c.spec.title, c.spec.url) for c in self.children if c.spec.url]
        rows += list(links)
        metrics = ", ".join(f"{c.spec.name} :{c.spec.metrics_port}"
                            for c in self.children if c.spec.metrics_port)
        if metrics:
            rows.append(("metrics", metrics))
        rows.append(("logs", str(self.root / "logs")))
        rows.append(("stop", "Ctrl-C here, or `make down` elsewhere"))
        elapsed = time.monotonic() - started
        self.say("supervisor", f"{len(self.children)} service(s) running, ready in {elapsed:.1f}s")
        for title, value in rows:
            console.print(f"  [bold]{escape(title or ''):<14}[/] {escape(value or '')}")

    # --------------------------------------------------------------- children
    def spawn(self, child: _Child) -> None:
        spec = child.spec
        log_path = service_log(self.root, spec.name)
        env = {**self.env, **spec.env, "PYTHONUNBUFFERED": "1"}
        child.runs += 1
        child.restart_at = None
        try:
            child.proc = launch(spec.argv, log=log_path, env=env, cwd=PROJECT_ROOT,
                                banner=f"starting {spec.name} (run {child.runs})")
        except OSError as exc:
            delay = self.schedule_restart(child, ran=0.0)
            self.say(spec.name, f"cannot start ({exc}); retrying in {delay:.0f}s", "red")
            return
        child.started_at = time.monotonic()
        verb = "started" if child.runs == 1 else "restarted"
        self.say(spec.name, f"{verb} (pid {child.proc.pid}), log {log_path}", child.color)

    def schedule_restart(self, child: _Child, ran: float) -> float:
        """Exponential backoff, so a service that fails at once does not spin; returns the delay."""
        # Not tenacity (core.retry): its waits are computed from the RetryCallState of its own
        # call-sleep-retry loop, while here one non-blocking loop watches every child and a restart is
        # no retried call; feeding wait_exponential a made-up call state would hide this plain doubling.
        if ran >= BACKOFF_RESET_AFTER_S:
            child.backoff = BACKOFF_FIRST_S
        delay = child.backoff
        child.restart_at = time.monotonic() + delay
        child.backoff = min(delay * 2, BACKOFF_MAX_S)
        return delay

    def reap(self, child: _Child) -> int | None:
        """Kill what the exited child left in its process group, then collect its exit code."""
        assert child.proc is not None
        code = child.proc.reap()
        child.proc = None
        return code

    def watch(self, child: _Child) -> None:
        """Notice an unexpected exit and schedule the restart; start it when it is due."""
        if child.proc is not None and child.proc.exited():
            ran = time.monotonic() - child.started_at
            code = self.reap(child)
            delay = self.schedule_restart(child, ran)
            self.say(child.spec.name, f"exited unexpectedly ({_describe_exit(code)}) after {ran:.1f}s, "
                     f"restarting in {delay:.0f}s; see {service_log(self.root, child.spec.name)}", "red")
        elif child.proc is None and child.restart_at is not None and time.monotonic() >= child.restart_at:
            self.spawn(child)

    def serve(self, links: Sequence[tuple[str, str]], started: float) -> None:
        """Start every service and keep them running until a signal arrives."""
        for child in self.children:
            if self.signals:
                return
            self.spawn(child)
        announced = False
        while not self.signals:
            for child in self.children:
                self.watch(child)
            if not announced:
                listening = all(port_open(c.spec.http_port) for c in self.children if c.spec.http_port)
                if listening or time.monotonic() - started > READY_TIMEOUT_S:
                    self.announce(links, started)
                    announced = True
            time.sleep(_TICK_S)

    def stop_children(self) -> None:
        """SIGTERM every service's process group, wait up to STOP_GRACE_S, then SIGKILL the rest.
        A further signal (a second Ctrl-C) kills them at once. All are signalled before any is
        waited for, so they shut down in parallel."""
        running = [c for c in self.children if c.proc is not None]
        if not running:
            return
        reason = signal.Signals(self.signals[0]).name if self.signals else "error"
        self.say("supervisor", f"{reason}: stopping {len(running)} service(s) "
                 f"(up to {STOP_GRACE_S:.0f}s; Ctrl-C again to kill them now)")
        for child in running:
            assert child.proc is not None
            child.proc.signal_group(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        killed = False
        while running:
            for child in list(running):
                assert child.proc is not None
                if child.proc.exited():
                    code = self.reap(child)
                    self.say(child.spec.name, f"stopped ({_describe_exit(code)})", child.color)
                    running.remove(child)
            if running and not killed and (len(self.signals) > 1 or time.monotonic() > deadline):
                self.say("supervisor", f"killing {', '.join(c.spec.name for c in running)}", "red")
                for child in running:
                    assert child.proc is not None
                    child.proc.signal_group(signal.SIGKILL)
                killed = True
            time.sleep(0.05)


def run_supervisor(
    services: Sequence[ServiceSpec],
    env: Mapping[str, str],
    stop_infra: Callable[[], None] | None = None,
    *,
    root: Path,
    start_infra: Callable[[], None] | None = None,
    links: Sequence[tuple[str, str]] = (),
) -> int:
    """Run ``services`` in the foreground until SIGINT/SIGTERM/SIGHUP, then stop them and call
    ``stop_infra``. ``start_infra`` runs first, inside the signal handling, so Ctrl-C during a slow
    Kafka start still cleans up. Logs go to ``<root>/logs``, the pid file to ``<root>/run``.
    ``links`` are extra (title, address) lines for the banner. Returns the exit code."""
    supervisor = _Supervisor(services, env, root)
    code = 0
    started = time.monotonic()
    with _pid_file(root), supervisor.handling_signals():
        try:
            if start_infra is not None:
                supervisor.starting_infra = True
                try:
                    start_infra()
                finally:
                    supervisor.starting_infra = False
            supervisor.serve(links, started)
        except _Interrupted:
            supervisor.say("supervisor", "interrupted while starting the infrastructure", "yellow")
        finally:
            supervisor.stop_children()
            if stop_infra is not None:
                supervisor.say("supervisor", "stopping Kafka and MinIO")
                try:
                    stop_infra()
                except StackError as exc:
                    supervisor.say("supervisor", f"stopping the infrastructure failed: {exc}", "red")
                    code = 1
    supervisor.say("supervisor", "everything stopped" if code == 0 else "stopped, with errors")
    return code
