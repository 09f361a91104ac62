"""Run the whole lab natively in one foreground process: ``lab up`` and ``lab down``.

``lab up`` starts Kafka and MinIO (``archlab.devstack.native``), then every service that exists as a child
process, restarts a service that dies, and on Ctrl-C or ``lab down`` stops the services before the
infrastructure they write to. Each child runs in its own session: the terminal's Ctrl-C reaches only
the supervisor, which decides the order, and signalling a child's process group also reaches any
process that child started, so nothing outlives the lab.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from types import FrameType
from typing import Annotated

import psutil
import typer
from dotenv import dotenv_values
from rich.console import Console
from rich.markup import escape

from archlab.core.settings import PROJECT_ROOT
from archlab.devstack import native as stack
from archlab.devstack.native import NativeStack, StackConfig, StackError, port_open

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


@dataclass(frozen=True)
class ServiceSpec:
    """How to run one service: its command, and the ports to announce and check."""

    name: str
    argv: tuple[str, ...]
    http_port: int | None = None
    metrics_port: int | None = None
    title: str = ""  # what its URL shows, e.g. "API docs"
    http_path: str = ""

    @property
    def url(self) -> str | None:
        """The address a person opens in a browser, when the service serves HTTP."""
        return None if self.http_port is None else f"http://localhost:{self.http_port}{self.http_path}"

    def available(self) -> bool:
        """True when its ``-m`` module and every ``.py`` script exist (later work adds missing services)."""
        scripts = [arg for arg in self.argv[1:] if arg.endswith(".py")]
        if not all((PROJECT_ROOT / script).is_file() for script in scripts):
            return False
        if "-m" in self.argv:
            return _runnable_module(self.argv[self.argv.index("-m") + 1])
        return True


def _runnable_module(name: str) -> bool:
    """Whether ``python -m name`` can run: a module, or a package with a ``__main__`` (an empty
    folder is a namespace package that ``find_spec`` accepts but ``-m`` cannot run)."""
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return False
    if spec is None:
        return False
    if spec.submodule_search_locations is None:
        return True
    return any((Path(folder) / "__main__.py").is_file() for folder in spec.submodule_search_locations)


def service_specs(
    api_port: int = 8000, ui_port: int = 8501, metrics_base_port: int = 9101
) -> list[ServiceSpec]:
    """Every service of the system, in start order; metrics ports are ``metrics_base_port + index``."""
    python = sys.executable  # this environment's interpreter, not whichever `python` is first on PATH
    specs = [
        ServiceSpec("producer", (python, "-m", "services.producer")),
        ServiceSpec("bronze_sink", (python, "-m", "services.bronze_sink")),
        ServiceSpec("silver_refiner", (python, "-m", "services.silver_refiner")),
        ServiceSpec("gold_aggregator", (python, "-m", "services.gold_aggregator")),
        ServiceSpec("api", (python, "-m", "services.api"),
                    http_port=api_port, title="API docs", http_path="/docs"),
    ]
    specs = [replace(spec, metrics_port=metrics_base_port + index) for index, spec in enumerate(specs)]
    # Streamlit serves no Prometheus metrics of its own, so the UI gets no metrics port.
    ui_argv = (python, "-m", "streamlit", "run", "ui/app.py", "--server.port", str(ui_port),
               "--server.headless", "true", "--server.address", "127.0.0.1")
    return [*specs, ServiceSpec("ui", ui_argv, http_port=ui_port, title="dashboard")]




# ---------------------------------------------------------------------- pid file
def supervisor_pid_file(root: Path) -> Path:
    """Where a running supervisor records itself, next to the infrastructure's pid files."""
    return root / "run" / "supervisor.pid"


def service_log(root: Path, name: str) -> Path:
    """The log file of one service (appended to across restarts and runs)."""
    return root / "logs" / f"{name}.log"


def live_supervisor(root: Path) -> psutil.Process | None:
    """The supervisor named by the pid file when it is still running; a stale pid file is removed."""
    path = supervisor_pid_file(root)
    try:
        info = json.loads(path.read_text())
        proc = psutil.Process(info["pid"])
        # The start time tells a reused pid from ours; a zombie has already finished its shutdown.
        if abs(proc.create_time() - info["create_time"]) < 0.01 and proc.status() != psutil.STATUS_ZOMBIE:
            return proc
    except (OSError, ValueError, KeyError, TypeError, psutil.Error):
        pass
    path.unlink(missing_ok=True)
    return None


@contextlib.contextmanager
def _pid_file(root: Path) -> Iterator[None]:
    """Hold the pid file for the lifetime of the supervisor so ``lab down`` can find it."""
    other = live_supervisor(root)
    if other is not None:
        raise SupervisorError(f"a supervisor already runs for {root} (pid {other.pid}): run `lab down` first")
    path = supervisor_pid_file(root)
    path.parent.mkdir(parents=True, exist_ok=True)
    me = psutil.Process()
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps({"pid": me.pid, "create_time": me.create_time()}))
    temporary.replace(path)  # atomic: a concurrent `lab down` never reads half a file
    try:
        yield
    finally:
        path.unlink(missing_ok=True)


def stop_supervisor(root: Path, timeout: float = SUPERVISOR_STOP_TIMEOUT_S) -> bool:
    """SIGTERM the running supervisor and wait until it has exited; after ``timeout`` kill it and
    every process group its children lead. Returns False when no supervisor was running."""
    proc = live_supervisor(root)
    if proc is None:
        return False
    with contextlib.suppress(psutil.NoSuchProcess):
        proc.send_signal(signal.SIGTERM)
    if not _wait_exited([proc], timeout):
        # Collected before the kill: once the supervisor is gone its children are found by no parent.
        with contextlib.suppress(psutil.NoSuchProcess):
            descendants = proc.children(recursive=True)
            for child in descendants:
                _kill_tree_member(child)
            proc.kill()
            _wait_exited([proc, *descendants], 10.0)
    supervisor_pid_file(root).unlink(missing_ok=True)
    return True


def _kill_tree_member(proc: psutil.Process) -> None:
    """SIGKILL a process's group when it leads one (services and servers do), else just the process.
    Never the supervisor's own group: that may hold the user's shell or make."""
    with contextlib.suppress(ProcessLookupError, psutil.NoSuchProcess):
        if os.getpgid(proc.pid) == proc.pid:
            os.killpg(proc.pid, signal.SIGKILL)
        else:
            proc.kill()


def _wait_exited(procs: Sequence[psutil.Process], timeout: float) -> bool:
    """Wait until every process has exited; a zombie counts (its parent, not us, must reap it)."""
    deadline = time.monotonic() + timeout
    while True:
        alive = []
        for proc in procs:
            with contextlib.suppress(psutil.NoSuchProcess):
                if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                    alive.append(proc)
        if not alive:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)


# ---------------------------------------------------------------------- supervisor
@dataclass
class _Child:
    """One supervised service and its restart state."""

    spec: ServiceSpec
    color: str
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    backoff: float = BACKOFF_FIRST_S
    restart_at: float | None = None
    runs: int = 0


def _describe_exit(code: int) -> str:
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-code).name}"
    return f"exit code {code}"


def _exited(proc: subprocess.Popen[bytes]) -> bool:
    """True once the child has exited, without reaping it: while it is an unreaped zombie its pid
    cannot be reused, so signalling its process group afterwards cannot hit a stranger."""
    if proc.returncode is not None:
        return True
    try:
        return os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)


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
        log_path.parent.mkdir(parents=True, exist_ok=True)
        env = {**self.env, "LAB_METRICS_PORT": str(spec.metrics_port or 0), "PYTHONUNBUFFERED": "1"}
        child.runs += 1
        child.restart_at = None
        with log_path.open("ab") as log:
            moment = time.strftime("%Y-%m-%d %H:%M:%S")
            log.write(f"\n=== {moment} starting {spec.name} (run {child.runs})\n".encode())
            log.flush()
            try:
                child.proc = subprocess.Popen(  # noqa: S603 - commands come from the registry
                    spec.argv, cwd=PROJECT_ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log,
                    stderr=subprocess.STDOUT, start_new_session=True,
                )
            except OSError as exc:
                delay = self.schedule_restart(child, ran=0.0)
                self.say(spec.name, f"cannot start ({exc}); retrying in {delay:.0f}s", "red")
                return
        child.started_at = time.monotonic()
        verb = "started" if child.runs == 1 else "restarted"
        self.say(spec.name, f"{verb} (pid {child.proc.pid}), log {log_path}", child.color)

    def schedule_restart(self, child: _Child, ran: float) -> float:
        """Exponential backoff, so a service that fails at once does not spin; returns the delay."""
        if ran >= BACKOFF_RESET_AFTER_S:
            child.backoff = BACKOFF_FIRST_S
        delay = child.backoff
        child.restart_at = time.monotonic() + delay
        child.backoff = min(delay * 2, BACKOFF_MAX_S)
        return delay

    def reap(self, child: _Child) -> int:
        """Kill what the exited child left in its process group, then collect its exit code."""
        assert child.proc is not None
        _signal_group(child.proc.pid, signal.SIGKILL)
        code = child.proc.wait()
        child.proc = None
        return code

    def watch(self, child: _Child) -> None:
        """Notice an unexpected exit and schedule the restart; start it when it is due."""
        if child.proc is not None and _exited(child.proc):
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
        A further signal (a second Ctrl-C) kills them at once."""
        running = [c for c in self.children if c.proc is not None]
        if not running:
            return
        reason = signal.Signals(self.signals[0]).name if self.signals else "error"
        self.say("supervisor", f"{reason}: stopping {len(running)} service(s) "
                 f"(up to {STOP_GRACE_S:.0f}s; Ctrl-C again to kill them now)")
        for child in running:
            assert child.proc is not None
            _signal_group(child.proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        killed = False
        while running:
            for child in list(running):
                assert child.proc is not None
                if _exited(child.proc):
                    code = self.reap(child)
                    self.say(child.spec.name, f"stopped ({_describe_exit(code)})", child.color)
                    running.remove(child)
            if running and not killed and (len(self.signals) > 1 or time.monotonic() > deadline):
                self.say("supervisor", f"killing {', '.join(c.spec.name for c in running)}", "red")
                for child in running:
                    assert child.proc is not None
                    _signal_group(child.proc.pid, signal.SIGKILL)
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
    """Run the available ``services`` in the foreground until SIGINT/SIGTERM/SIGHUP, then stop them
    and call ``stop_infra``. ``start_infra`` runs first, inside the signal handling, so Ctrl-C during
    a slow Kafka start still cleans up. Logs go to ``<root>/logs``, the pid file to ``<root>/run``.
    ``links`` are extra (title, address) lines for the banner. Returns the exit code."""
    ready = [spec for spec in services if spec.available()]
    skipped = [spec.name for spec in services if spec not in ready]
    supervisor = _Supervisor(ready, env, root)
    if skipped:
        supervisor.say("supervisor", f"not started (not written yet): {', '.join(skipped)}", "yellow")
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


# ---------------------------------------------------------------------- CLI: `lab up` / `lab down`
_Root = Annotated[Path | None, typer.Option(
    "--root", envvar="LAB_STACK_ROOT",
    help="Folder for data, logs and pid files (default: <stack home>/native)")]


def _load_dotenv() -> None:
    """Add the project's ``.env`` to this process's environment (variables already set win), so that
    a bare ``lab up`` finds the credentials just like ``make up``, and the services inherit them."""
    env_file = PROJECT_ROOT / ".env"
    if env_file.is_file():
        for key, value in dotenv_values(env_file).items():
            if value is not None:
                os.environ.setdefault(key, value)


def up(
    root: _Root = None,
    kafka_port: Annotated[int, typer.Option(envvar="LAB_KAFKA_PORT")] = 9092,
    kafka_controller_port: Annotated[int, typer.Option(envvar="LAB_KAFKA_CONTROLLER_PORT")] = 9093,
    minio_port: Annotated[int, typer.Option(envvar="LAB_MINIO_PORT")] = 9000,
    minio_console_port: Annotated[int, typer.Option(envvar="LAB_MINIO_CONSOLE_PORT")] = 9001,
    kafka_heap: Annotated[str, typer.Option(envvar="LAB_KAFKA_HEAP")] = "512m",
    advertised_host: Annotated[str, typer.Option(envvar="LAB_KAFKA_ADVERTISED_HOST")] = "127.0.0.1",
    api_port: Annotated[int, typer.Option(envvar="LAB_API_PORT")] = 8000,
    ui_port: Annotated[int, typer.Option(envvar="LAB_UI_PORT")] = 8501,
    metrics_base_port: Annotated[int, typer.Option(
        envvar="LAB_METRICS_BASE_PORT", help="Services get consecutive metrics ports from here")] = 9101,
) -> None:
    """Start Kafka, MinIO and every service in the foreground; Ctrl-C (or `make down`) stops them all."""
    _load_dotenv()
    folder = stack._default_root(root)
    config = StackConfig(
        folder, kafka_port=kafka_port, kafka_controller_port=kafka_controller_port, minio_port=minio_port,
        minio_console_port=minio_console_port, access_key=os.environ.get("LAB_S3_ACCESS_KEY", ""),
        secret_key=os.environ.get("LAB_S3_SECRET_KEY", ""), kafka_heap=kafka_heap,
        kafka_advertised_host=advertised_host,
    )
    # The services must reach the servers started here, whatever .env says about other ports.
    env = {
        **os.environ,
        "LAB_KAFKA_BOOTSTRAP": config.bootstrap,
        "LAB_S3_ENDPOINT": config.s3_endpoint,
        "LAB_API_PORT": str(api_port),
        "LAB_API_URL": f"http://127.0.0.1:{api_port}",
    }

    def start_infra() -> None:
        stack.up(root=folder, kafka_port=kafka_port, kafka_controller_port=kafka_controller_port,
                 minio_port=minio_port, minio_console_port=minio_console_port, kafka_heap=kafka_heap,
                 advertised_host=advertised_host, bootstrap=True)

    links = [("MinIO console", f"http://localhost:{minio_console_port}"), ("Kafka", config.bootstrap),
             ("S3 endpoint", config.s3_endpoint)]
    try:
        code = run_supervisor(service_specs(api_port, ui_port, metrics_base_port), env,
                              NativeStack(config).stop, root=folder, start_infra=start_infra, links=links)
    except SupervisorError as exc:
        console.print(f"[red]{escape(str(exc))}[/red]")
        raise typer.Exit(1) from exc
    raise typer.Exit(code)


def down(root: _Root = None) -> None:
    """Stop the services `lab up` runs, then Kafka and MinIO (data is kept)."""
    folder = stack._default_root(root)
    if stop_supervisor(folder):
        console.print("supervisor and services stopped")
    try:
        NativeStack(StackConfig(folder, access_key="", secret_key="")).stop()
    except StackError as exc:
        console.print(f"[red]{escape(str(exc))}[/red]")
        raise typer.Exit(1) from exc
    console.print("Kafka and MinIO stopped")
