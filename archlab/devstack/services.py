"""Every long-running service of the system, defined once.

``lab up`` starts them in this order, benchmarks and tests start them by name, and a unit test
checks that ``docker-compose.yml`` runs the same ones with the same program.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass


@dataclass(frozen=True)
class Service:
    """How to run one service with this environment's interpreter, and which ports it needs."""

    name: str
    module: str  # run as ``python -m <module> <*args> <*local_flags>``
    args: tuple[str, ...] = ()
    local_flags: tuple[str, ...] = ()  # only for a native run (compose sets its own, e.g. the address)
    pipeline: bool = False  # a stage that consumes Kafka and commits: chaos kills it, benchmarks time it
    metrics: bool = True  # serves Prometheus metrics on LAB_METRICS_PORT
    http_port_env: str | None = None  # the variable naming its HTTP port, when it serves people
    http_title: str = ""  # what its URL shows, e.g. "API docs"
    http_path: str = ""

    def command(self) -> list[str]:
        # sys.executable: this environment's interpreter, not whichever `python` is first on PATH.
        return [sys.executable, "-m", self.module, *self.args, *self.local_flags]

    def env(self, *, metrics_port: int | None = None, http_port: int | None = None) -> dict[str, str]:
        """The variables that give it its ports (0 turns the metrics server off)."""
        env = {"LAB_METRICS_PORT": str(metrics_port or 0)}
        if self.http_port_env and http_port is not None:
            env[self.http_port_env] = str(http_port)
        return env


SERVICES: tuple[Service, ...] = (
    Service("producer", "services.producer"),
    Service("bronze_sink", "services.bronze_sink", pipeline=True),
    Service("silver_refiner", "services.silver_refiner", pipeline=True),
    Service("gold_aggregator", "services.gold_aggregator", pipeline=True),
    Service("observer", "services.observer"),  # watches the pipeline: not a stage chaos kills or benchmarks time
    Service("api", "services.api", http_port_env="LAB_API_PORT", http_title="API docs", http_path="/docs"),
    # Streamlit serves no Prometheus metrics of its own; it reads its port from STREAMLIT_SERVER_PORT.
    Service("ui", "streamlit", args=("run", "ui/app.py"),
            local_flags=("--server.headless", "true", "--server.address", "127.0.0.1"),
            metrics=False, http_port_env="STREAMLIT_SERVER_PORT", http_title="dashboard"),
    # JupyterLab over notebooks/; it asks for LAB_NOTEBOOK_TOKEN (in .env) and serves no metrics.
    Service("notebooks", "services.notebooks", metrics=False, http_port_env="LAB_NOTEBOOK_PORT",
            http_title="notebooks", http_path="/lab"),
)
PIPELINE_SERVICES: tuple[str, ...] = tuple(service.name for service in SERVICES if service.pipeline)


def service(name: str) -> Service:
    """The service called ``name``; a KeyError names the known ones."""
    for candidate in SERVICES:
        if candidate.name == name:
            return candidate
    raise KeyError(f"no service {name!r}; known: {', '.join(s.name for s in SERVICES)}")
