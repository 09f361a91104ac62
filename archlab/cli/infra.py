"""``lab infra up|down|clean|status`` (the native Kafka and MinIO alone) and ``lab up``/``lab down``
(those plus every service, supervised in the foreground): the command-line face of ``archlab.devstack``.

Every value comes from ``load_settings`` (the environment, then the project's ``.env``); a flag given
on the command line wins over its variable. Finding, checking and stopping a stack needs no secret.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.markup import escape

from archlab.core.settings import (
    ENV_FILE_VARIABLE,
    LabSettings,
    Settings,
    describe_env_vars,
    env_file,
    load_settings,
)
from archlab.devstack.config import StackConfig, StackError, StackSettings
from archlab.devstack.native import NativeStack
from archlab.devstack.supervisor import (
    SupervisorError,
    SupervisorSettings,
    console,
    run_supervisor,
    service_specs,
    stop_supervisor,
)

S = TypeVar("S", bound=LabSettings)


class InfraUpSettings(StackSettings, Settings):
    """What ``lab infra up`` reads: the stack, the MinIO credentials, and the bucket and topics it creates."""


class UpSettings(SupervisorSettings, Settings):
    """What ``lab up`` reads: ``lab infra up``'s settings and the ports of the services it runs."""


infra_app = typer.Typer(help="Run the native Kafka broker and MinIO server (after `make provision`).",
                        no_args_is_help=True)


def _flag(field: str, *declarations: str) -> Any:
    """A flag that overrides the setting ``field`` (the settings model documents it once)."""
    description = UpSettings.model_fields[field].description
    return typer.Option(*declarations, help=f"{description}; overrides LAB_{field.upper()}", show_default=False)


_Root = Annotated[Path | None, _flag("stack_root", "--root")]
_KafkaPort = Annotated[int | None, _flag("kafka_port")]
_KafkaControllerPort = Annotated[int | None, _flag("kafka_controller_port")]
_MinioPort = Annotated[int | None, _flag("minio_port")]
_MinioConsolePort = Annotated[int | None, _flag("minio_console_port")]
_KafkaHeap = Annotated[str | None, _flag("kafka_heap")]
_AdvertisedHost = Annotated[str | None, _flag("kafka_advertised_host", "--advertised-host")]


def _load(model: type[S], **flags: object) -> S:
    """``model`` as ``load_settings`` gives it, with each flag given on the command line winning."""
    return load_settings(model).model_copy(update={name: value for name, value in flags.items() if value is not None})


def _fail(message: str) -> None:
    typer.secho(message, fg=typer.colors.RED, err=True)
    raise typer.Exit(1)


def _start_infra(settings: InfraUpSettings | UpSettings, *, bootstrap: bool) -> StackConfig:
    """Start Kafka and MinIO, wait until healthy, then (``bootstrap``) create the bucket and topics."""
    config = settings.stack(settings)
    started = time.monotonic()
    try:
        NativeStack(config).start()
    except StackError as exc:
        _fail(str(exc))
    typer.echo(f"kafka  {config.bootstrap}\nminio  {config.s3_endpoint} "
               f"(console http://127.0.0.1:{config.minio_console_port})\n"
               f"root   {config.root}\nhealthy in {time.monotonic() - started:.1f}s")
    if bootstrap:
        from archlab.kafka.topics import ensure_topics
        from archlab.lake.store import ensure_bucket

        here = settings.model_copy(update={"kafka_bootstrap": config.bootstrap, "s3_endpoint": config.s3_endpoint})
        ensure_bucket(here)
        topics = asyncio.run(ensure_topics(here))
        typer.echo(f"bucket {here.bucket}; topics: {', '.join(topics)}")
    return config


# ---------------------------------------------------------------------- `lab infra ...`
@infra_app.command("up", epilog=describe_env_vars(InfraUpSettings))
def infra_up(
    stack_root: _Root = None,
    kafka_port: _KafkaPort = None,
    kafka_controller_port: _KafkaControllerPort = None,
    minio_port: _MinioPort = None,
    minio_console_port: _MinioConsolePort = None,
    kafka_heap: _KafkaHeap = None,
    kafka_advertised_host: _AdvertisedHost = None,
    bootstrap: Annotated[bool, typer.Option(help="Create the bucket and the dataset topics")] = True,
) -> None:
    """Start Kafka and MinIO, wait until healthy, then create the bucket and topics."""
    settings = _load(InfraUpSettings, stack_root=stack_root, kafka_port=kafka_port,
                     kafka_controller_port=kafka_controller_port, minio_port=minio_port,
                     minio_console_port=minio_console_port, kafka_heap=kafka_heap,
                     kafka_advertised_host=kafka_advertised_host)
    _start_infra(settings, bootstrap=bootstrap)


def _stopped_stack(stack_root: Path | None) -> NativeStack:
    """A stack object to find, check or stop servers by their pid files (it starts nothing)."""
    return NativeStack(_load(StackSettings, stack_root=stack_root).stack())


def _stop(stack: NativeStack) -> None:
    try:
        stack.stop()
    except StackError as exc:
        _fail(str(exc))
    typer.echo("stopped")


@infra_app.command("down")
def infra_down(stack_root: _Root = None) -> None:
    """Stop Kafka and MinIO (data is kept)."""
    _stop(_stopped_stack(stack_root))


@infra_app.command("clean")
def infra_clean(stack_root: _Root = None) -> None:
    """Stop everything and delete all data and logs under the root folder."""
    stack = _stopped_stack(stack_root)
    _stop(stack)
    folder = stack.config.root
    markers = ("run", "kafka-data", "minio-data", "logs")
    if folder.exists():
        if not any((folder / marker).exists() for marker in markers):
            _fail(f"{folder} does not look like a stack root (no {'/'.join(markers)}): not deleting it")
        shutil.rmtree(folder)
    typer.echo(f"deleted {folder}")


@infra_app.command("status")
def infra_status(stack_root: _Root = None) -> None:
    """Show whether each server runs and answers its health check."""
    states = _stopped_stack(stack_root).status()
    for name, state in states.items():
        if state["running"]:
            health = "healthy" if state["healthy"] else "NOT healthy"
            typer.echo(f"{name:<6} running  pid {state['pid']}  ports {state['ports']}  {health}")
        else:
            typer.echo(f"{name:<6} stopped")
    if not all(state["running"] and state["healthy"] for state in states.values()):
        raise typer.Exit(1)


# ---------------------------------------------------------------------- `lab up` / `lab down`
UP_EPILOG = describe_env_vars(UpSettings) + "\n\nEach service reads its own too: python -m services.<name> --help."


def _services_environment(settings: UpSettings, config: StackConfig) -> dict[str, str]:
    """The services' environment: this one, the addresses of the servers started here (whatever the
    settings file says about other ports), and the settings file this command read, by absolute path,
    so that every service loads the same values (they run in the project folder)."""
    settings_file = env_file()
    return {
        **os.environ,
        ENV_FILE_VARIABLE: str(settings_file.resolve()) if settings_file else "",
        "LAB_KAFKA_BOOTSTRAP": config.bootstrap,
        "LAB_S3_ENDPOINT": config.s3_endpoint,
        "LAB_API_PORT": str(settings.api_port),
        "LAB_API_URL": f"http://127.0.0.1:{settings.api_port}",
    }


def up(
    stack_root: _Root = None,
    api_port: Annotated[int | None, _flag("api_port")] = None,
    ui_port: Annotated[int | None, _flag("ui_port")] = None,
    metrics_base_port: Annotated[int | None, _flag("metrics_base_port")] = None,
) -> None:
    """Start Kafka, MinIO and every service in the foreground; Ctrl-C (or `make down`) stops them all.

    Kafka's and MinIO's ports, heap and advertised host come from their LAB_* variables (listed below);
    `lab infra up` also takes them as flags."""
    settings = _load(UpSettings, stack_root=stack_root, api_port=api_port, ui_port=ui_port,
                     metrics_base_port=metrics_base_port)
    config = settings.stack(settings)
    links = [("MinIO console", f"http://localhost:{config.minio_console_port}"), ("Kafka", config.bootstrap),
             ("S3 endpoint", config.s3_endpoint)]
    try:
        code = run_supervisor(
            service_specs(settings.api_port, settings.ui_port, settings.metrics_base_port,
                          settings.notebook_port),
            _services_environment(settings, config), NativeStack(config).stop, root=config.root,
            start_infra=lambda: _start_infra(settings, bootstrap=True), links=links,
        )
    except SupervisorError as exc:
        console.print(f"[red]{escape(str(exc))}[/red]")
        raise typer.Exit(1) from exc
    raise typer.Exit(code)


def down(stack_root: _Root = None) -> None:
    """Stop the services `lab up` runs, then Kafka and MinIO (data is kept)."""
    stack = _stopped_stack(stack_root)
    if stop_supervisor(stack.config.root):
        console.print("supervisor and services stopped")
    try:
        stack.stop()
    except StackError as exc:
        console.print(f"[red]{escape(str(exc))}[/red]")
        raise typer.Exit(1) from exc
    console.print("Kafka and MinIO stopped")
