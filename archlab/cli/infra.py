"""``lab infra up|down|clean|status`` (the native Kafka and MinIO alone) and ``lab up``/``lab down``
(those plus every service, supervised in the foreground): the command-line face of ``archlab.devstack``."""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from pathlib import Path
from typing import Annotated

import typer
from dotenv import dotenv_values
from rich.markup import escape

from archlab.core.settings import PROJECT_ROOT
from archlab.devstack.config import StackConfig, StackError, default_root
from archlab.devstack.native import NativeStack
from archlab.devstack.supervisor import (
    SupervisorError,
    console,
    run_supervisor,
    service_specs,
    stop_supervisor,
)

infra_app = typer.Typer(help="Run the native Kafka broker and MinIO server (after `make provision`).",
                        no_args_is_help=True)

_Root = Annotated[Path | None, typer.Option(
    "--root", envvar="LAB_STACK_ROOT", help="Folder for data, logs and pid files (default: <stack home>/native)")]
_KafkaPort = Annotated[int, typer.Option(envvar="LAB_KAFKA_PORT")]
_KafkaControllerPort = Annotated[int, typer.Option(envvar="LAB_KAFKA_CONTROLLER_PORT")]
_MinioPort = Annotated[int, typer.Option(envvar="LAB_MINIO_PORT")]
_MinioConsolePort = Annotated[int, typer.Option(envvar="LAB_MINIO_CONSOLE_PORT")]
_KafkaHeap = Annotated[str, typer.Option(envvar="LAB_KAFKA_HEAP")]
_AdvertisedHost = Annotated[str, typer.Option(envvar="LAB_KAFKA_ADVERTISED_HOST")]


def _fail(message: str) -> None:
    typer.secho(message, fg=typer.colors.RED, err=True)
    raise typer.Exit(1)


def _stopped_stack(root: Path | None) -> NativeStack:
    """A stack object to find, check or stop servers by their pid files (it starts nothing)."""
    return NativeStack(StackConfig(root or default_root(), access_key="", secret_key=""))


# ---------------------------------------------------------------------- `lab infra ...`
@infra_app.command("up")
def infra_up(
    root: _Root = None,
    kafka_port: _KafkaPort = 9092,
    kafka_controller_port: _KafkaControllerPort = 9093,
    minio_port: _MinioPort = 9000,
    minio_console_port: _MinioConsolePort = 9001,
    kafka_heap: _KafkaHeap = "512m",
    advertised_host: _AdvertisedHost = "127.0.0.1",
    bootstrap: Annotated[bool, typer.Option(help="Create the bucket and the dataset topics")] = True,
) -> None:
    """Start Kafka and MinIO, wait until healthy, then create the bucket and topics."""
    access_key = os.environ.get("LAB_S3_ACCESS_KEY")
    secret_key = os.environ.get("LAB_S3_SECRET_KEY")
    if not access_key or not secret_key:
        _fail("LAB_S3_ACCESS_KEY and LAB_S3_SECRET_KEY must be set (they become MinIO's root credentials)")
    config = StackConfig(
        root or default_root(), kafka_port=kafka_port, kafka_controller_port=kafka_controller_port,
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
        topics = asyncio.run(ensure_topics(settings))
        typer.echo(f"bucket {settings.bucket}; topics: {', '.join(topics)}")


@infra_app.command("down")
def infra_down(root: _Root = None) -> None:
    """Stop Kafka and MinIO (data is kept)."""
    try:
        _stopped_stack(root).stop()
    except StackError as exc:
        _fail(str(exc))
    typer.echo("stopped")


@infra_app.command("clean")
def infra_clean(root: _Root = None) -> None:
    """Stop everything and delete all data and logs under the root folder."""
    folder = (root or default_root()).resolve()
    infra_down(folder)
    markers = ("run", "kafka-data", "minio-data", "logs")
    if folder.exists():
        if not any((folder / marker).exists() for marker in markers):
            _fail(f"{folder} does not look like a stack root (no {'/'.join(markers)}): not deleting it")
        shutil.rmtree(folder)
    typer.echo(f"deleted {folder}")


@infra_app.command("status")
def infra_status(root: _Root = None) -> None:
    """Show whether each server runs and answers its health check."""
    states = _stopped_stack(root).status()
    for name, state in states.items():
        if state["running"]:
            health = "healthy" if state["healthy"] else "NOT healthy"
            typer.echo(f"{name:<6} running  pid {state['pid']}  ports {state['ports']}  {health}")
        else:
            typer.echo(f"{name:<6} stopped")
    if not all(state["running"] and state["healthy"] for state in states.values()):
        raise typer.Exit(1)


# ---------------------------------------------------------------------- `lab up` / `lab down`
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
    kafka_port: _KafkaPort = 9092,
    kafka_controller_port: _KafkaControllerPort = 9093,
    minio_port: _MinioPort = 9000,
    minio_console_port: _MinioConsolePort = 9001,
    kafka_heap: _KafkaHeap = "512m",
    advertised_host: _AdvertisedHost = "127.0.0.1",
    api_port: Annotated[int, typer.Option(envvar="LAB_API_PORT")] = 8000,
    ui_port: Annotated[int, typer.Option(envvar="LAB_UI_PORT")] = 8501,
    metrics_base_port: Annotated[int, typer.Option(
        envvar="LAB_METRICS_BASE_PORT", help="Services get consecutive metrics ports from here")] = 9101,
) -> None:
    """Start Kafka, MinIO and every service in the foreground; Ctrl-C (or `make down`) stops them all."""
    _load_dotenv()
    folder = root or default_root()
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
        infra_up(root=folder, kafka_port=kafka_port, kafka_controller_port=kafka_controller_port,
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
    folder = root or default_root()
    if stop_supervisor(folder):
        console.print("supervisor and services stopped")
    try:
        _stopped_stack(folder).stop()
    except StackError as exc:
        console.print(f"[red]{escape(str(exc))}[/red]")
        raise typer.Exit(1) from exc
    console.print("Kafka and MinIO stopped")
