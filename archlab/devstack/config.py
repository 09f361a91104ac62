"""Where the native stack's binaries are (filled by ``make provision``) and where one stack keeps
its data, logs and pid files, with the ports it listens on."""

from __future__ import annotations

import os
from dataclasses import KW_ONLY, dataclass, field
from pathlib import Path

from archlab.core.settings import PROJECT_ROOT


class StackError(RuntimeError):
    """A native server could not be started, checked or stopped."""


class NotProvisionedError(StackError):
    """The jars or binaries are missing: ``make provision`` has not been run."""


def stack_home() -> Path:
    """The cache folder filled by ``scripts/provision.sh`` (``$LAB_STACK_HOME`` overrides it)."""
    return Path(os.environ.get("LAB_STACK_HOME") or PROJECT_ROOT / ".stack").resolve()


def default_root() -> Path:
    """The stack root of ``lab infra`` and ``lab up`` when ``--root``/``LAB_STACK_ROOT`` is not given."""
    return stack_home() / "native"


def kafka_libs() -> Path:
    """Folder of the Kafka jars (class path ``libs/*``)."""
    return stack_home() / "kafka" / "libs"


def minio_binary() -> Path:
    """The MinIO server binary built by ``go install``."""
    return stack_home() / "bin" / "minio"


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
