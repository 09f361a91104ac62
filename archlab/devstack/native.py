"""Run the real infrastructure (Apache Kafka in KRaft mode and MinIO) as native processes.

No container engine is needed: ``scripts/provision.sh`` (``make provision``) puts the Kafka jars and
a MinIO binary in the cache folder (``.stack/``, or ``$LAB_STACK_HOME``), and this module starts
them with their data, logs and pid files under one root folder. Pid files let a different process
(``lab infra down``) find and stop what ``lab infra up`` started; every server runs in its own
session so that stopping it never touches the caller and leaves no orphan behind.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import contextlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Coroutine
from dataclasses import KW_ONLY, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import psutil
import typer

from archlab.core.settings import PROJECT_ROOT

KAFKA_LOG4J_CONFIG = PROJECT_ROOT / "infra" / "kafka" / "log4j2.properties"
_T = TypeVar("_T")


class StackError(RuntimeError):
    """A native server could not be started, checked or stopped."""


class NotProvisionedError(StackError):
    """The jars or binaries are missing: ``make provision`` has not been run."""


def stack_home() -> Path:
    """The cache folder filled by ``scripts/provision.sh`` (``$LAB_STACK_HOME`` overrides it)."""
    return Path(os.environ.get("LAB_STACK_HOME") or PROJECT_ROOT / ".stack").resolve()


def kafka_libs() -> Path:
    """Folder of the Kafka jars (class path ``libs/*``)."""
    return stack_home() / "kafka" / "libs"


def minio_binary() -> Path:
    """The MinIO server binary built by ``go install``."""
    return stack_home() / "bin" / "minio"


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


def port_open(port: int, host: str = "127.0.0.1", timeout: float = 0.5) -> bool:
    """True when something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _run_sync(coro: Coroutine[Any, Any, _T]) -> _T:
    """Run a coroutine to completion, also when called from code that already runs an event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()


def _tail(path: Path, lines: int = 40) -> str:
    """The last lines of a log file, for error messages that explain why a server did not start."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"(no log at {path})"
    return "\n".join(text.splitlines()[-lines:]) or f"({path} is empty)"


@dataclass
class StackConfig:
    """Where the native stack keeps its state and which ports it listens on (all on 127.0.0.1)."""

    root: Path
    _: KW_ONLY
    kafka_port: int = 9092
    kafka_controller_port: int = 9093
    minio_port: int = 9000
    minio_console_port: int = 9001
    access_key: str = field(repr=False)
    secret_key: str = field(repr=False)
    kafka_heap: str = "512m"
    kafka_advertised_host: str = "127.0.0.1"

    def __post_init__(self) -> None:
        self.root = Path(self.root).expanduser().resolve()

    @property
    def bootstrap(self) -> str:
        """Kafka bootstrap servers for clients."""
        return f"{self.kafka_advertised_host}:{self.kafka_port}"

    @property
    def s3_endpoint(self) -> str:
        """MinIO S3 endpoint URL."""
        return f"http://127.0.0.1:{self.minio_port}"

    @property
    def kafka_data(self) -> Path:
        return self.root / "kafka-data"

    @property
    def minio_data(self) -> Path:
        return self.root / "minio-data"

    @property
    def logs_dir(self) -> Path:
        return self.root / "logs"

    @property
    def run_dir(self) -> Path:
        return self.root / "run"

    @property
    def kafka_properties(self) -> Path:
        return self.root / "server.properties"


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
        # Popen objects of servers started by this process, kept to reap them (no zombies).
        self._children: dict[str, subprocess.Popen[bytes]] = {}
        self._watchdog: subprocess.Popen[bytes] | None = None

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
            self._watchdog.terminate()
            self._watchdog.wait(timeout=10)
            self._watchdog = None
        if errors:
            raise StackError("; ".join(errors))

    def is_running(self) -> bool:
        """True when both server processes are alive (not necessarily healthy)."""
        return self.pid("kafka") is not None and self.pid("minio") is not None

    def pid(self, name: str) -> int | None:
        """Pid of the running ``kafka`` or ``minio`` server, or None (stale pid files are removed)."""
        info = self._read_pid_file(name)
        return info["pid"] if info else None

    def status(self) -> dict[str, dict[str, Any]]:
        """Process and health state of each server, for ``lab infra status``."""
        result: dict[str, dict[str, Any]] = {}
        for name, healthy in (("kafka", self.kafka_healthy), ("minio", self.minio_healthy)):
            info = self._read_pid_file(name)  # its ports, which may differ from this config's
            result[name] = {
                "running": info is not None,
                "pid": info["pid"] if info else None,
                "ports": info["ports"] if info else [],
                "healthy": info is not None and healthy(info["ports"][0]),
            }
        return result

    # ------------------------------------------------------------------ Kafka
    def start_kafka(self, timeout: float | None = None) -> None:
        """Format the KRaft storage once, start the broker and wait for a metadata round-trip."""
        cfg = self.config
        libs = kafka_libs()
        if not any(libs.glob("kafka_2.13-*.jar")):
            raise NotProvisionedError(f"Kafka jars not found in {libs}: run `make provision` first")
        java = shutil.which("java")
        if java is None:
            raise NotProvisionedError("java not found on PATH: install Java >= 17, then run `make provision`")
        if self.pid("kafka") is None:
            self._check_ports_free("kafka", [cfg.kafka_port, cfg.kafka_controller_port])
            for folder in (cfg.kafka_data, cfg.logs_dir, cfg.run_dir):
                folder.mkdir(parents=True, exist_ok=True)
            cfg.kafka_properties.write_text(self._kafka_properties())
            self._ensure_watchdog()
            classpath = f"{libs}/*"
            if not (cfg.kafka_data / "meta.properties").exists():
                self._format_kafka_storage(java, classpath)
            command = [
                java,
                f"-Xmx{cfg.kafka_heap}",
                f"-Xms{cfg.kafka_heap}",
                "-XX:+UseG1GC",
                "-XX:MaxGCPauseMillis=20",
                "-XX:InitiatingHeapOccupancyPercent=35",
                "-XX:+ExplicitGCInvokesConcurrent",
                "-Djava.awt.headless=true",
                f"-Dlog4j2.configurationFile={KAFKA_LOG4J_CONFIG}",
                f"-Dkafka.logs.dir={cfg.logs_dir}",
                "-cp",
                classpath,
                "kafka.Kafka",
                str(cfg.kafka_properties),
            ]
            self._spawn("kafka", command, cfg.logs_dir / "kafka.out", None,
                        [cfg.kafka_port, cfg.kafka_controller_port])
        self._wait_healthy("kafka", self.kafka_healthy, timeout or self.KAFKA_START_TIMEOUT,
                           cfg.logs_dir / "kafka.out")

    def stop_kafka(self) -> None:
        """Stop the broker cleanly (controlled shutdown), killing it if it does not exit in time."""
        self._stop("kafka", self.KAFKA_STOP_TIMEOUT)

    def kill_kafka(self) -> None:
        """Kill the broker with SIGKILL at once: a crash, for recovery tests."""
        self._stop("kafka", 0.0)

    def kafka_healthy(self, port: int | None = None) -> bool:
        """True when the port accepts connections and the metadata shows a leader for every partition."""
        port = port or self.config.kafka_port
        if not port_open(port):
            return False
        return _run_sync(self._kafka_metadata_round_trip(port))

    @staticmethod
    async def _kafka_metadata_round_trip(port: int) -> bool:
        from aiokafka.admin import AIOKafkaAdminClient

        admin = AIOKafkaAdminClient(bootstrap_servers=f"127.0.0.1:{port}", request_timeout_ms=5000)
        try:
            await asyncio.wait_for(admin.start(), timeout=10)
            topics = await asyncio.wait_for(admin.describe_topics(), timeout=10)
            # After a restart the metadata answers before every partition has its leader back.
            return all(
                topic["error_code"] == 0 and all(p["error_code"] == 0 and p["leader"] >= 0 for p in topic["partitions"])
                for topic in topics
            )
        except Exception:  # noqa: BLE001 - any failure just means "not healthy yet"
            return False
        finally:
            with contextlib.suppress(Exception):
                await admin.close()

    def _kafka_properties(self) -> str:
        """A single-node KRaft server (broker and controller in one process) for one machine."""
        cfg = self.config
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.bootstrap.servers": f"127.0.0.1:{cfg.kafka_controller_port}",
            "listeners": f"PLAINTEXT://127.0.0.1:{cfg.kafka_port},CONTROLLER://127.0.0.1:{cfg.kafka_controller_port}",
            "advertised.listeners": f"PLAINTEXT://{cfg.kafka_advertised_host}:{cfg.kafka_port},"
            f"CONTROLLER://127.0.0.1:{cfg.kafka_controller_port}",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "log.dirs": str(cfg.kafka_data),
            "num.partitions": "4",
            "default.replication.factor": "1",
            "min.insync.replicas": "1",
            "auto.create.topics.enable": "false",
            "offsets.topic.replication.factor": "1",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            # After a crash (SIGKILL) the restarted broker cannot register until its old session
            # expires: 3 s instead of 9 s keeps crash-recovery tests quick.
            "broker.heartbeat.interval.ms": "1000",
            "broker.session.timeout.ms": "3000",
            "num.network.threads": "2",
            "num.io.threads": "4",
            "log.retention.hours": "168",
            "log.segment.bytes": str(256 * 1024 * 1024),
        }
        lines = ["# Generated by archlab/devstack/native.py at every start: edit StackConfig, not this file."]
        lines += [f"{key}={value}" for key, value in props.items()]
        return "\n".join(lines) + "\n"

    def _format_kafka_storage(self, java: str, classpath: str) -> None:
        """Write meta.properties and the initial KRaft voter set (the one-time ``kafka-storage format``)."""
        cluster_id = _kafka_cluster_id()
        command = [java, "-Xmx256m", f"-Dlog4j2.configurationFile={KAFKA_LOG4J_CONFIG}",
                   f"-Dkafka.logs.dir={self.config.logs_dir}", "-cp", classpath,
                   "kafka.tools.StorageTool", "format", "--standalone", "-t", cluster_id,
                   "-c", str(self.config.kafka_properties)]
        result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
        if result.returncode != 0:
            raise StackError(
                f"formatting the Kafka storage in {self.config.kafka_data} failed "
                f"(exit {result.returncode}):\n{result.stdout}{result.stderr}"
            )

    # ------------------------------------------------------------------ MinIO
    def start_minio(self, timeout: float | None = None) -> None:
        """Start the MinIO server and wait until ``/minio/health/ready`` answers 200."""
        cfg = self.config
        binary = minio_binary()
        if not os.access(binary, os.X_OK):
            raise NotProvisionedError(f"MinIO binary not found at {binary}: run `make provision` first")
        if len(cfg.access_key) < 3 or len(cfg.secret_key) < 8:
            raise StackError("MinIO needs an access key of at least 3 and a secret key of at least 8 characters")
        if self.pid("minio") is None:
            self._check_ports_free("minio", [cfg.minio_port, cfg.minio_console_port])
            for folder in (cfg.minio_data, cfg.logs_dir, cfg.run_dir):
                folder.mkdir(parents=True, exist_ok=True)
            self._ensure_watchdog()
            env = {
                **os.environ,
                "MINIO_ROOT_USER": cfg.access_key,
                "MINIO_ROOT_PASSWORD": cfg.secret_key,
                "MINIO_UPDATE": "off",  # never try to reach the internet for updates
            }
            command = [
                str(binary), "server", str(cfg.minio_data),
                "--address", f"127.0.0.1:{cfg.minio_port}",
                "--console-address", f"127.0.0.1:{cfg.minio_console_port}",
            ]
            self._spawn("minio", command, cfg.logs_dir / "minio.log", env,
                        [cfg.minio_port, cfg.minio_console_port])
        self._wait_healthy("minio", self.minio_healthy, timeout or self.MINIO_START_TIMEOUT,
                           cfg.logs_dir / "minio.log")

    def stop_minio(self) -> None:
        """Stop the MinIO server (SIGTERM, then SIGKILL)."""
        self._stop("minio", self.MINIO_STOP_TIMEOUT)

    def minio_healthy(self, port: int | None = None) -> bool:
        """True when MinIO reports itself ready to serve requests."""
        port = port or self.config.minio_port
        try:
            response = httpx.get(f"http://127.0.0.1:{port}/minio/health/ready", timeout=2.0)
        except httpx.HTTPError:
            return False
        return response.status_code == 200

    # ------------------------------------------------------------------ processes
    def _pid_file(self, name: str) -> Path:
        return self.config.run_dir / f"{name}.pid"

    def _ensure_watchdog(self) -> None:
        """Start (once) the process that stops the servers if this one disappears without stop()."""
        if not self.exit_with_owner or (self._watchdog is not None and self._watchdog.poll() is None):
            return
        owner = psutil.Process()
        code = ("import sys; from archlab.devstack.native import _watchdog; "
                "_watchdog(sys.argv[1], int(sys.argv[2]), float(sys.argv[3]))")
        with (self.config.logs_dir / "watchdog.log").open("ab") as out:
            self._watchdog = subprocess.Popen(
                [sys.executable, "-c", code, str(self.config.root), str(owner.pid), repr(owner.create_time())],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, cwd=PROJECT_ROOT,
                start_new_session=True,  # survives the owner's death, and its Ctrl-C
            )

    def _spawn(self, name: str, command: list[str], log: Path, env: dict[str, str] | None,
               ports: list[int]) -> None:
        """Start a server in its own session, output appended to ``log``, and record its pid file."""
        with log.open("ab") as out:
            out.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} starting {name}\n".encode())
            out.flush()
            proc = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                env=env, cwd=self.config.root, start_new_session=True,
            )
        self._children[name] = proc
        info = {"pid": proc.pid, "create_time": psutil.Process(proc.pid).create_time(), "ports": ports}
        self._pid_file(name).write_text(json.dumps(info))

    def _read_pid_file(self, name: str) -> dict[str, Any] | None:
        """The pid file's content when its process is still alive; removes a stale pid file."""
        path = self._pid_file(name)
        try:
            info = json.loads(path.read_text())
            alive = _process_alive(info["pid"], info["create_time"])
        except (OSError, ValueError, KeyError, TypeError):
            alive = False
            info = None
        if not alive:
            self._reap(name)
            path.unlink(missing_ok=True)
            return None
        return info

    def _reap(self, name: str) -> None:
        child = self._children.pop(name, None)
        if child is not None:
            try:
                child.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass

    def _check_ports_free(self, name: str, ports: list[int]) -> None:
        busy = [port for port in ports if port_open(port)]
        if busy:
            raise StackError(f"cannot start {name}: port(s) {busy} on 127.0.0.1 already in use by another program")

    def _wait_healthy(self, name: str, check: Any, timeout: float, log: Path) -> None:
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
        info = self._read_pid_file(name)
        if info is None:
            return
        pid = info["pid"]
        try:
            proc = psutil.Process(pid)
        except psutil.NoSuchProcess:
            self._reap(name)
            self._pid_file(name).unlink(missing_ok=True)
            return
        self._signal_group(pid, signal.SIGTERM if grace > 0 else signal.SIGKILL)
        if not self._wait_gone(name, proc, grace):
            self._signal_group(pid, signal.SIGKILL)
            if not self._wait_gone(name, proc, 10.0):
                raise StackError(f"{name} (pid {pid}) survived SIGKILL")
        self._pid_file(name).unlink(missing_ok=True)
        deadline = time.monotonic() + 10
        while any(port_open(port) for port in info["ports"]):
            if time.monotonic() > deadline:
                raise StackError(f"{name} stopped but port(s) {info['ports']} are still open")
            time.sleep(0.1)

    @staticmethod
    def _signal_group(pid: int, sig: signal.Signals) -> None:
        # The server is its session's leader (start_new_session), so its pgid is its pid.
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            pass
        except PermissionError as exc:
            raise StackError(f"not allowed to signal process group {pid}: {exc}") from exc

    def _wait_gone(self, name: str, proc: psutil.Process, timeout: float) -> bool:
        """Wait until the process has exited (reaping it when this process is its parent)."""
        child = self._children.get(name)
        if child is not None:
            try:
                child.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                return False
            self._children.pop(name, None)
            return True
        # Started by another process (or another NativeStack object): it is gone once it no longer
        # exists or is a zombie waiting for its parent to reap it (its sockets are closed by then).
        deadline = time.monotonic() + timeout
        while True:
            try:
                if proc.status() == psutil.STATUS_ZOMBIE:
                    return True
            except psutil.NoSuchProcess:
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.1)


def _process_alive(pid: int, started: float) -> bool:
    """True while the process ``pid`` created at ``started`` runs (a reused pid or a zombie is dead)."""
    try:
        proc = psutil.Process(pid)
        return abs(proc.create_time() - started) < 0.01 and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _watchdog(root: str, owner_pid: int, owner_started: float) -> None:
    """Body of the watchdog process: once the owner is gone, stop whatever runs under ``root``."""
    stack = NativeStack(StackConfig(Path(root), access_key="", secret_key=""))
    while _process_alive(owner_pid, owner_started):
        time.sleep(1.0)
    if stack.pid("kafka") or stack.pid("minio"):
        print(f"owner {owner_pid} is gone without stopping the stack: stopping it", flush=True)
        stack.stop()


def _kafka_cluster_id() -> str:
    """A random cluster id in Kafka's format (URL-safe base64 of a UUID, no padding, no leading '-')."""
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not text.startswith("-"):
            return text


# ---------------------------------------------------------------------- CLI: `lab infra ...`
infra_app = typer.Typer(help="Run the native Kafka broker and MinIO server (after `make provision`).",
                        no_args_is_help=True)

_ROOT_OPTION = typer.Option(None, "--root", envvar="LAB_STACK_ROOT",
                            help="Folder for data, logs and pid files [default: <stack home>/native]")


def _default_root(root: Path | None) -> Path:
    return root if root is not None else stack_home() / "native"


def _fail(message: str) -> None:
    typer.secho(message, fg=typer.colors.RED, err=True)
    raise typer.Exit(1)


@infra_app.command()
def up(
    root: Path | None = _ROOT_OPTION,
    kafka_port: int = typer.Option(9092, envvar="LAB_KAFKA_PORT"),
    kafka_controller_port: int = typer.Option(9093, envvar="LAB_KAFKA_CONTROLLER_PORT"),
    minio_port: int = typer.Option(9000, envvar="LAB_MINIO_PORT"),
    minio_console_port: int = typer.Option(9001, envvar="LAB_MINIO_CONSOLE_PORT"),
    kafka_heap: str = typer.Option("512m", envvar="LAB_KAFKA_HEAP"),
    advertised_host: str = typer.Option("127.0.0.1", envvar="LAB_KAFKA_ADVERTISED_HOST"),
    bootstrap: bool = typer.Option(True, help="Create the bucket and the dataset topics"),
) -> None:
    """Start Kafka and MinIO, wait until healthy, then create the bucket and topics."""
    access_key = os.environ.get("LAB_S3_ACCESS_KEY")
    secret_key = os.environ.get("LAB_S3_SECRET_KEY")
    if not access_key or not secret_key:
        _fail("LAB_S3_ACCESS_KEY and LAB_S3_SECRET_KEY must be set (they become MinIO's root credentials)")
    config = StackConfig(
        _default_root(root), kafka_port=kafka_port, kafka_controller_port=kafka_controller_port,
        minio_port=minio_port, minio_console_port=minio_console_port, access_key=access_key or "",
        secret_key=secret_key or "", kafka_heap=kafka_heap, kafka_advertised_host=advertised_host,
    )
    started = time.monotonic()
    try:
        NativeStack(config).start()
    except StackError as exc:
        _fail(str(exc))
    typer.echo(f"kafka  {config.bootstrap}\nminio  {config.s3_endpoint} "
               f"(console http://127.0.0.1:{config.minio_console_port})\n"
               f"root   {config.root}\nhealthy in {time.monotonic() - started:.1f}s")
    if bootstrap:
        from archlab.core.settings import Settings
        from archlab.kafka.topics import ensure_topics
        from archlab.lake.store import ensure_bucket

        settings = Settings(kafka_bootstrap=config.bootstrap, s3_endpoint=config.s3_endpoint,
                            s3_access_key=access_key, s3_secret_key=secret_key)  # type: ignore[call-arg, arg-type]
        ensure_bucket(settings)
        topics = _run_sync(ensure_topics(settings))
        typer.echo(f"bucket {settings.bucket}; topics: {', '.join(topics)}")


@infra_app.command()
def down(root: Path | None = _ROOT_OPTION) -> None:
    """Stop Kafka and MinIO (data is kept)."""
    try:
        NativeStack(StackConfig(_default_root(root), access_key="", secret_key="")).stop()
    except StackError as exc:
        _fail(str(exc))
    typer.echo("stopped")


@infra_app.command()
def clean(root: Path | None = _ROOT_OPTION) -> None:
    """Stop everything and delete all data and logs under the root folder."""
    folder = _default_root(root).resolve()
    down(folder)
    markers = ("run", "kafka-data", "minio-data", "logs")
    if folder.exists():
        if not any((folder / marker).exists() for marker in markers):
            _fail(f"{folder} does not look like a stack root (no {'/'.join(markers)}): not deleting it")
        shutil.rmtree(folder)
    typer.echo(f"deleted {folder}")


@infra_app.command()
def status(root: Path | None = _ROOT_OPTION) -> None:
    """Show whether each server runs and answers its health check."""
    stack = NativeStack(StackConfig(_default_root(root), access_key="", secret_key=""))
    states = stack.status()
    for name, state in states.items():
        if state["running"]:
            health = "healthy" if state["healthy"] else "NOT healthy"
            typer.echo(f"{name:<6} running  pid {state['pid']}  ports {state['ports']}  {health}")
        else:
            typer.echo(f"{name:<6} stopped")
    if not all(state["running"] and state["healthy"] for state in states.values()):
        raise typer.Exit(1)
