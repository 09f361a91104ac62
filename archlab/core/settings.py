"""The one configuration mechanism: pydantic-settings models read from ``LAB_<FIELD>`` variables.

Every process (services, the dashboard, the ``lab`` command) gets its settings from
:func:`load_settings`, which lists every missing or invalid variable in one format and exits 2.

Where values come from, first wins: keyword arguments, the process environment, then the dotenv file
:func:`load_settings` names — the project's ``.env``, or the file ``LAB_ENV_FILE`` points at (empty:
none) — then the field's default. Services read ``.env`` natively, so ``python -m services.<name>``,
``lab`` and ``make up`` need nothing exported, and nothing else reads the file. Tests and benchmarks
set ``LAB_ENV_FILE=`` so that a developer's ``.env`` never changes what they check or measure. In a
container there is no ``.env``: compose passes every variable (``docker-compose.yml``). A model
instantiated directly (``Settings()``, as tests and library callers do) reads the environment only.

The models share one base, so each process asks only for what it uses: :class:`LabSettings` (the
``LAB_`` prefix, no fields), :class:`LakeSettings` (object store, with the secrets), :class:`Settings`
(what the pipeline needs: Kafka, datasets, the lake, observability). Service settings subclass
``Settings``; the dashboard's subclass ``LabSettings`` and need no secret. Secrets have no default.
"""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path
from typing import Annotated, TypeVar

from pydantic import BeforeValidator, Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parents[2]
ENV_FILE_VARIABLE = "LAB_ENV_FILE"
CONFIGURATION_ERROR_STATUS = 2

S = TypeVar("S", bound=BaseSettings)


def _split_commas(value: object) -> object:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


CommaList = Annotated[list[str], NoDecode, BeforeValidator(_split_commas)]
"""A list setting written ``a,b,c`` in the environment (blanks around items and empty items dropped)."""


class LabSettings(BaseSettings):
    """Base of every settings model: ``LAB_<FIELD>`` names, unknown variables ignored, frozen. An empty
    variable counts as unset (compose passes ``${LAB_X:-}`` through, and ``.env.example`` lists optional
    ones empty), so the field keeps its default."""

    model_config = SettingsConfigDict(env_prefix="LAB_", extra="ignore", frozen=True, env_ignore_empty=True)


class LakeSettings(LabSettings):
    """Where the lake is and the credentials to reach it."""

    s3_endpoint: str = Field("http://localhost:9000", description="S3 (MinIO) endpoint URL")
    s3_access_key: SecretStr = Field(description="S3 access key (MinIO root user natively)")
    s3_secret_key: SecretStr = Field(description="S3 secret key (MinIO root password natively)")
    s3_region: str = Field("us-east-1", description="S3 region name")
    bucket: str = Field("lake", description="Bucket that holds every lake layer")

    # Table properties: every table is created with them, and maintenance keeps them set.
    checkpoint_every: int = Field(
        10, ge=1, description="Write a Delta checkpoint after this many new versions (the table property "
                              "delta.checkpointInterval): an exactly-once check replays at most this many commits")
    vacuum_retention_h: int = Field(
        168, ge=0, description="Hours a file removed from a table is kept before vacuum deletes it: the longest a "
                               "reader may hold a snapshot (0 is unsafe under readers)")
    history_retention_h: int = Field(
        168, ge=1, description="Hours of table history (log entries, time travel) kept before cleanup")
    target_file_mb: int = Field(
        32, ge=1, description="Size compaction makes a table's files (the table property delta.targetFileSize): "
                              "a file this large is never read and rewritten again, so a compaction's memory stays "
                              "bounded however much a partition holds")

    @property
    def storage_options(self) -> dict[str, object]:
        """Keyword arguments for ``s3fs.S3FileSystem``."""
        return {
            "key": self.s3_access_key.get_secret_value(),
            "secret": self.s3_secret_key.get_secret_value(),
            "endpoint_url": self.s3_endpoint,
            "client_kwargs": {"region_name": self.s3_region},
        }


class Settings(LakeSettings):
    """Configuration shared by every pipeline service and the ``lab`` command."""

    kafka_bootstrap: str = Field("localhost:9092", description="Kafka bootstrap servers, comma-separated")
    datasets: CommaList = Field(default_factory=lambda: ["orders"], description="Datasets to run, comma-separated")
    contracts_dir: Path = Field(PROJECT_ROOT / "contracts", description="Folder of data contract YAML files")
    topic_partitions: int = Field(4, ge=1, description="Partitions of every dataset topic")
    metrics_port: int = Field(0, ge=0, description="Prometheus metrics port (0 = no metrics server)")
    log_level: str = Field("INFO", description="Log level: DEBUG, INFO, WARNING, ERROR")
    log_json: bool = Field(False, description="Log as JSON lines instead of console text")
    instance_id: str = Field(
        default_factory=socket.gethostname,
        description="Stable id of this instance; its transactional ids fence a crashed predecessor",
    )

    # A stage reading a raw topic closes a fetched batch on size or on a short deadline, whichever comes first,
    # so a quiet stream pays its per-batch costs (transaction, query, commit) once a second, not per record;
    # the stages after it take each of its transactions as it commits. A busy stream fills its batches long
    # before the deadline. At the demo rate the whole system used 0.71-0.83 cores with 500 ms, 0.50-0.52
    # with 1 s (bench --steady, alternating).
    batch_min_bytes: int = Field(
        256 * 1024, ge=1, description="A raw topic's reader fetches once this many bytes wait for it (1: at once)")
    batch_wait_ms: int = Field(
        1_000, ge=0, le=5_000, description="...or after at most this many milliseconds with less: the batch deadline")

    # Landing: when a buffered file is rolled and written to the lake.
    # Per partition, while the one before lands: a sink holds up to twice this many records per partition.
    flush_records: int = Field(5_000, ge=1, description="Roll a lake file after this many records")
    flush_bytes: int = Field(32 * 1024 * 1024, ge=1024, description="Roll a lake file after this many bytes")
    flush_interval_s: float = Field(5.0, gt=0, description="Roll a lake file this long after its first record")

    # Table maintenance (archlab.lake.maintenance): each writing service keeps its own tables small and tidy.
    maintenance_interval_s: float = Field(60.0, gt=0, description="Seconds between two maintenance passes")
    compact_quiet_s: float = Field(
        300.0, ge=0, description="A partition not written for this long is closed: its files are compacted into few")
    compact_min_files: int = Field(
        32, ge=2, description="An open partition (or unpartitioned table) is compacted once it has this many files")


class NotebookSettings(Settings):
    """What the notebooks in notebooks/ read: the pipeline's settings and the dataset they show."""

    notebook_dataset: str = Field("orders", description="Dataset the notebooks show (a contract in contracts/)")


class ObserverSettings(Settings):
    """The observer (services/observer): how often it samples, how long a change must hold, where alerts go."""

    observer_group: str = Field(
        "observer", description="The observer's faust app id: its consumer group and the prefix of its tables' topics")
    observer_sample_s: float = Field(5.0, gt=0, description="Seconds between two samples of the pipeline's health")
    observer_settle_s: float = Field(
        30.0, ge=0, description="Seconds a rate or volume breach, and any recovery, must hold before an alert "
                               "opens or resolves (no flapping)")
    observer_groups: CommaList = Field(
        default_factory=lambda: ["bronze_sink", "silver_refiner", "gold_aggregator"],
        description="Prefixes of the consumer groups whose stalls are watched, comma-separated")
    observer_state_dir: Path = Field(PROJECT_ROOT / ".stack" / "native" / "state" / "observer",
                                     description="Folder of the observer's local state (faust data, webhook log)")
    alert_webhook_url: str | None = Field(None, description="URL that gets a JSON POST per alert change (unset: none)")
    alert_webhook_queue: int = Field(
        1000, ge=1, description="Alert changes waiting for the webhook at most; more are dropped and counted")


def env_file() -> Path | None:
    """The dotenv file :func:`load_settings` reads: ``LAB_ENV_FILE`` if set (empty: none), else ``.env``."""
    configured = os.environ.get(ENV_FILE_VARIABLE)
    if configured is None:
        return PROJECT_ROOT / ".env"
    return Path(configured) if configured else None


class ConfigurationError(SystemExit):
    """Missing or invalid ``LAB_*`` variables. Uncaught, it ends the process with status 2 (the list
    is on stderr already); the dashboard catches it to show the same list on its page."""

    def __init__(self, message: str) -> None:
        super().__init__(CONFIGURATION_ERROR_STATUS)
        self.message = message

    def __str__(self) -> str:
        return self.message


def load_settings(model: type[S]) -> S:
    """``model`` from the environment and the dotenv file; else every bad variable on stderr and
    :class:`ConfigurationError` (exit status 2)."""
    try:
        return model(_env_file=env_file())  # type: ignore[call-arg]
    except ValidationError as exc:
        message = describe_errors(model, exc)
        print(message, file=sys.stderr)
        raise ConfigurationError(message) from None


def describe_errors(model: type[BaseSettings], error: ValidationError) -> str:
    """The one format of a configuration error: a header, then ``  LAB_<FIELD>: problem`` per line."""
    prefix = model.model_config.get("env_prefix", "")
    lines = []
    for problem in error.errors():
        field, *inner = problem["loc"]
        where = f" (item {'.'.join(map(str, inner))})" if inner else ""
        lines.append(f"  {prefix}{str(field).upper()}{where}: {problem['msg']}")
    return "configuration error:\n" + "\n".join(lines)


def _as_variable(value: list[str] | Path) -> str:
    """A default written as the variable would be (``'a,b'``, not ``['a', 'b']``)."""
    return repr(",".join(value) if isinstance(value, list) else str(value))


def describe_env_vars(model: type[BaseSettings] = Settings) -> str:
    """A help text listing every environment variable ``model`` reads, with its default."""
    prefix = model.model_config.get("env_prefix", "")
    lines = []
    for name, field in model.model_fields.items():
        if field.is_required():
            default = "required"
        else:
            value = field.get_default(call_default_factory=True)
            default = f"default {_as_variable(value) if isinstance(value, list | Path) else repr(value)}"
        lines.append(f"  {prefix}{name.upper():<22} {field.description or ''} ({default})")
    lines.append(f"  {ENV_FILE_VARIABLE:<26} Dotenv file read under the environment (default {PROJECT_ROOT / '.env'}; "
                 "empty = none)")
    return "Environment variables:\n" + "\n".join(lines)
