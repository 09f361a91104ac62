"""`make up` then `make down` (or Ctrl-C) leaves nothing behind: no process of the session, no open port.

Each test runs the real thing (Kafka, MinIO and every registered service) on free ports with a
throw-away LAB_STACK_ROOT, so a developer's own stack is never touched; the provisioned binaries in
LAB_STACK_HOME are reused. Missing infrastructure fails the test, it is never skipped.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil
import pytest
from dotenv import dotenv_values

from archlab.core.settings import PROJECT_ROOT
from archlab.devstack.launcher import is_running, kill_group_or_process, port_open
from archlab.devstack.native import NativeStack, StackConfig
from archlab.devstack.supervisor import ServiceSpec, service_specs, supervisor_pid_file
from archlab.testing.processes import free_port, free_ports

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(150)]

READY_TIMEOUT_S = 90.0
STABLE_S = 5.0  # a service process this old has survived its start-up (a crashing one is restarted sooner)
DOWN_TIMEOUT_S = 100.0


def _make(target: str) -> list[str]:
    # The test already runs inside the provisioned environment (`make test` depends on `provision`);
    # re-running provisioning here would only re-sync the venv under the running test.
    return ["make", "--no-print-directory", "-o", "provision", "-o", "env", target]


def _free_port_block(count: int) -> int:
    """The first of ``count`` consecutive free ports (the supervisor numbers metrics ports upwards)."""
    for _ in range(100):
        base = free_port()
        if base + count > 65535:
            continue
        sockets = []
        try:
            for port in range(base, base + count):
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sockets.append(sock)
                sock.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for sock in sockets:
                sock.close()
    raise RuntimeError(f"no {count} consecutive free ports found")


@dataclass
class Lab:
    """One `make up` session: its environment, ports and the running `make up` process."""

    root: Path
    env: dict[str, str]
    config: StackConfig
    services: list[ServiceSpec]
    output: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def ports(self) -> list[int]:
        cfg = self.config
        ports = [cfg.kafka_port, cfg.kafka_controller_port, cfg.minio_port, cfg.minio_console_port]
        for spec in self.services:
            ports += [port for port in (spec.http_port, spec.metrics_port) if port]
        return ports

    def report(self) -> str:
        """What `make up` printed and the end of every log, for failure messages."""
        parts = [f"--- make up output\n{self.output.read_text(errors='replace')}"]
        for log in sorted((self.root / "logs").glob("*")):
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
            parts.append(f"--- {log.name} (tail)\n{tail}")
        return "\n".join(parts)


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    """A session's settings; teardown stops whatever a failed test left running."""
    kafka, controller, minio, console, api, ui, notebooks = free_ports(7)
    specs = service_specs(api, ui, _free_port_block(len(service_specs())), notebooks)
    root = tmp_path / "stack"
    env = {
        **os.environ,
        "LAB_ENV_FILE": str(PROJECT_ROOT / ".env"),  # `make up` reads the project's .env, as for a user
        "LAB_STACK_ROOT": str(root),
        "LAB_KAFKA_PORT": str(kafka),
        "LAB_KAFKA_CONTROLLER_PORT": str(controller),
        "LAB_MINIO_PORT": str(minio),
        "LAB_MINIO_CONSOLE_PORT": str(console),
        "LAB_API_PORT": str(api),
        "LAB_UI_PORT": str(ui),
        "LAB_NOTEBOOK_PORT": str(notebooks),
        "LAB_METRICS_BASE_PORT": str(specs[0].metrics_port),
    }
    config = StackConfig(root, kafka_port=kafka, kafka_controller_port=controller, minio_port=minio,
                         minio_console_port=console, access_key="", secret_key="")
    session = Lab(root, env, config, specs, tmp_path / "make-up.out")
    yield session
    proc = session.proc
    if proc is not None and proc.poll() is None:
        leftovers = psutil.Process(proc.pid).children(recursive=True)
        subprocess.run(_make("down"), cwd=PROJECT_ROOT, env=env, timeout=DOWN_TIMEOUT_S, check=False,
                       capture_output=True)
        for child in leftovers:
            kill_group_or_process(child)
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    if proc is not None:
        proc.wait(30)
    NativeStack(config).stop()


def _start(lab: Lab) -> None:
    with lab.output.open("wb") as out:
        # Its own session, like a terminal's foreground job: killpg then reaches make and lab only.
        lab.proc = subprocess.Popen(_make("up"), cwd=PROJECT_ROOT, env=lab.env, stdin=subprocess.DEVNULL,
                                    stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def _wait_running(lab: Lab) -> list[psutil.Process]:
    """Wait until Kafka and MinIO are healthy and every service runs and listens; returns every
    process of the session (make, lab, servers, services and whatever they started)."""
    assert lab.proc is not None
    stack = NativeStack(lab.config)
    deadline = time.monotonic() + READY_TIMEOUT_S
    missing: list[str] = ["everything"]
    while time.monotonic() < deadline:
        assert lab.proc.poll() is None, f"`make up` exited with {lab.proc.returncode}\n{lab.report()}"
        processes = [psutil.Process(lab.proc.pid), *psutil.Process(lab.proc.pid).children(recursive=True)]
        missing = []
        if not stack.minio_healthy():
            missing.append("minio")
        if not stack.kafka_healthy():
            missing.append("kafka")
        for spec in lab.services:
            matches = []
            for proc in processes:
                try:
                    if proc.cmdline()[1:] == list(spec.argv[1:]):
                        matches.append(proc)
                except psutil.Error:
                    continue
            if not any(time.time() - proc.create_time() >= STABLE_S for proc in matches):
                missing.append(f"{spec.name} (process)")
            missing += [f"{spec.name} (port {port})" for port in (spec.http_port, spec.metrics_port)
                        if port and not port_open(port)]
        if not missing:
            return [psutil.Process(lab.proc.pid), *psutil.Process(lab.proc.pid).children(recursive=True)]
        time.sleep(0.5)
    pytest.fail(f"not running after {READY_TIMEOUT_S:.0f}s: {', '.join(missing)}\n{lab.report()}")


def _assert_nothing_left(lab: Lab, processes: list[psutil.Process]) -> None:
    survivors = [f"{proc.pid} {' '.join(proc.cmdline())[:120]}" for proc in processes if is_running(proc)]
    assert not survivors, "processes of the session still run:\n" + "\n".join(survivors) + "\n" + lab.report()
    listening = [port for port in lab.ports if port_open(port)]
    assert not listening, f"ports still listening: {listening}\n{lab.report()}"
    run_dir = lab.root / "run"
    pid_files = sorted(path.name for path in run_dir.glob("*.pid")) if run_dir.exists() else []
    assert not pid_files, f"pid files left in {run_dir}: {pid_files}"


def _assert_notebooks_need_the_token(lab: Lab) -> None:
    """JupyterLab under `make up` refuses a visitor without the token of .env and serves one with it."""
    port = next(spec.http_port for spec in lab.services if spec.name == "notebooks")
    token = dotenv_values(PROJECT_ROOT / ".env").get("LAB_NOTEBOOK_TOKEN")
    assert token, "`make up` left .env without a LAB_NOTEBOOK_TOKEN"
    base = f"http://127.0.0.1:{port}"
    page = httpx.get(f"{base}/lab", timeout=10)
    assert page.status_code == 302 and "/login" in page.headers["location"], (page.status_code, page.headers)
    assert httpx.get(f"{base}/api/contents", timeout=10).status_code == 403
    assert httpx.get(f"{base}/api/contents", headers={"Authorization": "token not-the-token"}, timeout=10
                     ).status_code == 403
    assert httpx.get(f"{base}/lab", params={"token": token}, timeout=10).status_code == 200
    listing = httpx.get(f"{base}/api/contents", headers={"Authorization": f"token {token}"}, timeout=10)
    assert listing.status_code == 200
    served = {item["name"] for item in listing.json()["content"]}
    assert {"01_spark_basics.ipynb", "02_explore_the_lake.ipynb"} <= served, served


def test_make_down_stops_everything(lab: Lab) -> None:
    _start(lab)
    processes = _wait_running(lab)
    assert supervisor_pid_file(lab.root).exists()
    _assert_notebooks_need_the_token(lab)

    down = subprocess.run(_make("down"), cwd=PROJECT_ROOT, env=lab.env, timeout=DOWN_TIMEOUT_S,
                          capture_output=True, text=True, check=False)
    assert down.returncode == 0, f"`make down` failed:\n{down.stdout}{down.stderr}\n{lab.report()}"
    assert lab.proc is not None
    # `make down` returns only once everything has stopped; only make itself may still be exiting.
    _assert_nothing_left(lab, [proc for proc in processes if proc.pid != lab.proc.pid])
    assert lab.proc.wait(30) == 0, lab.report()


def test_ctrl_c_stops_everything(lab: Lab) -> None:
    _start(lab)
    processes = _wait_running(lab)

    assert lab.proc is not None
    os.killpg(lab.proc.pid, signal.SIGINT)  # what the terminal does on Ctrl-C: the foreground job's group
    code = lab.proc.wait(DOWN_TIMEOUT_S)
    # make waits for `lab up` to finish its shutdown, then reports the interrupt by dying of SIGINT itself.
    assert code in (0, -signal.SIGINT), f"`make up` ended with {code}\n{lab.report()}"
    assert "everything stopped" in lab.output.read_text(), lab.report()
    _assert_nothing_left(lab, processes)
