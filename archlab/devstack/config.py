"""The native stack's settings (``LAB_STACK_*``, its ports) and, derived from them, one stack's
description: where its binaries are (filled by ``make provision``), where it keeps its data, logs and
pid files, and the ports it listens on.

:class:`StackSettings` holds no secret, so finding, checking and stopping a stack (``lab infra
down|clean|status``) needs none; starting one takes the MinIO credentials from ``LakeSettings``.
"""

from __future__ import annotations

from dataclasses import KW_ONLY, dataclass, field
from pathlib import Path

from pydantic import Field, field_validator

from archlab.core.settings import PROJECT_ROOT, LabSettings, LakeSettings


class StackError(RuntimeError):
    """A native server could not be started, checked or stopped."""


class NotProvisionedError(StackError):
    """The jars or binaries are missing: ``make provision`` has not been run."""


class StackSettings(LabSettings):
    """Where the native Kafka and MinIO live and the ports they listen on (all on 127.0.0.1)."""

    stack_home: Path = Field(PROJECT_ROOT / ".stack",
                             description="Cache folder `make provision` fills with the Kafka jars and MinIO")
    stack_root: Path | None = Field(None, description="Folder for data, logs and pid files "
                                                      "(empty: <stack home>/native)")
    kafka_port: int = Field(9092, ge=1, le=65535, description="Kafka broker port")
    kafka_controller_port: int = Field(9093, ge=1, le=65535, description="Kafka KRaft controller port")
    minio_port: int = Field(9000, ge=1, le=65535, description="MinIO S3 port")
    minio_console_port: int = Field(9001, ge=1, le=65535, description="MinIO web console port")
    kafka_heap: str = Field("512m", description="Kafka JVM heap (-Xms and -Xmx)")
    kafka_advertised_host: str = Field("127.0.0.1", description="Host name Kafka gives its clients")

    @field_validator("stack_root", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return value or None

    @property
    def root(self) -> Path:
        """The stack's folder: ``stack_root``, else ``<stack home>/native``."""
        return self.stack_root or self.stack_home / "native"

    def stack(self, lake: LakeSettings | None = None) -> StackConfig:
        """The stack these settings describe; without ``lake`` (the MinIO credentials) it can be
        found, checked and stopped, not started."""
        return StackConfig(
            self.root, home=self.stack_home, kafka_port=self.kafka_port,
            kafka_controller_port=self.kafka_controller_port, minio_port=self.minio_port,
            minio_console_port=self.minio_console_port, kafka_heap=self.kafka_heap,
            kafka_advertised_host=self.kafka_advertised_host,
            access_key=lake.s3_access_key.get_secret_value() if lake else "",
            secret_key=lake.s3_secret_key.get_secret_value() if lake else "",
        )


def _home_from_environment() -> Path:
    """``LAB_STACK_HOME`` for a stack built in code (tests, benchmarks), which reads no settings file."""
    return StackSettings().stack_home


@dataclass
class StackConfig:
    """One native stack: its binaries, where it keeps its state and which ports it listens on."""

    root: Path
    _: KW_ONLY
    home: Path = field(default_factory=_home_from_environment)
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
        self.home = Path(self.home).expanduser().resolve()

    @property
    def bootstrap(self) -> str:
        """Kafka bootstrap servers for clients."""
        return f"{self.kafka_advertised_host}:{self.kafka_port}"

    @property
    def s3_endpoint(self) -> str:
        """MinIO S3 endpoint URL."""
        return f"http://127.0.0.1:{self.minio_port}"

    @property
    def kafka_libs(self) -> Path:
        """Folder of the Kafka jars (class path ``libs/*``)."""
        return self.home / "kafka" / "libs"

    @property
    def minio_binary(self) -> Path:
        """The MinIO server binary built by ``go install``."""
        return self.home / "bin" / "minio"

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
