"""One settings model for every service, read only from environment variables.

The same names are used natively (``make up`` loads ``.env``) and in ``docker-compose.yml``.
Secrets have no default: a service started without them fails at once with a clear message.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Annotated

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parents[2]


class Settings(BaseSettings):
    """Configuration shared by all services. Every field maps to ``LAB_<FIELD>``."""

    model_config = SettingsConfigDict(env_prefix="LAB_", extra="ignore", frozen=True)

    kafka_bootstrap: str = Field("localhost:9092", description="Kafka bootstrap servers, comma-separated")
    s3_endpoint: str = Field("http://localhost:9000", description="S3 (MinIO) endpoint URL")
    s3_access_key: SecretStr = Field(description="S3 access key (MinIO root user natively)")
    s3_secret_key: SecretStr = Field(description="S3 secret key (MinIO root password natively)")
    s3_region: str = Field("us-east-1", description="S3 region name")
    bucket: str = Field("lake", description="Bucket that holds every lake layer")
    datasets: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["orders"], description="Datasets to run, comma-separated"
    )
    contracts_dir: Path = Field(PROJECT_ROOT / "contracts", description="Folder of data contract YAML files")
    topic_partitions: int = Field(4, ge=1, description="Partitions of every dataset topic")
    metrics_port: int = Field(0, ge=0, description="Prometheus metrics port (0 = no metrics server)")
    log_level: str = Field("INFO", description="Log level: DEBUG, INFO, WARNING, ERROR")
    log_json: bool = Field(False, description="Log as JSON lines instead of console text")
    instance_id: str = Field(
        default_factory=socket.gethostname,
        description="Stable id of this instance; its transactional ids fence a crashed predecessor",
    )

    # Landing: when a buffered file is rolled and written to the lake.
    flush_records: int = Field(20_000, ge=1, description="Roll a lake file after this many records")
    flush_bytes: int = Field(32 * 1024 * 1024, ge=1024, description="Roll a lake file after this many bytes")
    flush_interval_s: float = Field(5.0, gt=0, description="Roll a lake file this long after its first record")

    @field_validator("datasets", mode="before")
    @classmethod
    def _split_datasets(cls, value: object) -> object:
        if isinstance(value, str):
            return [name.strip() for name in value.split(",") if name.strip()]
        return value

    @property
    def storage_options(self) -> dict[str, object]:
        """Keyword arguments for ``s3fs.S3FileSystem``."""
        return {
            "key": self.s3_access_key.get_secret_value(),
            "secret": self.s3_secret_key.get_secret_value(),
            "endpoint_url": self.s3_endpoint,
            "client_kwargs": {"region_name": self.s3_region},
        }




def describe_env_vars(model: type[BaseSettings] = Settings) -> str:
    """A help text listing every environment variable a service reads."""
    prefix = model.model_config.get("env_prefix", "")
    lines = []
    for name, field in model.model_fields.items():
        default = "required" if field.is_required() else f"default {field.get_default(call_default_factory=True)!r}"
        lines.append(f"  {prefix}{name.upper():<22} {field.description or ''} ({default})")
    return "Environment variables:\n" + "\n".join(lines)
