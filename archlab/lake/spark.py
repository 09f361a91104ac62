"""A local Spark session that reads the lake's Delta tables over ``s3a://``: the outside engine of the lake.

The project never runs on Spark; this exists so that a test (and a curious developer) can check that what
the project commits is exactly what any Delta reader sees. It needs the ``outside-readers`` dependency
group (pyspark 3.5) and the jars ``make provision`` puts in ``<stack home>/spark/jars`` (Delta Lake for
Spark, Hadoop's S3A connector and the AWS SDK modules it uses): they are listed in ``spark.jars``, so
starting a session downloads nothing (``spark.jars.packages`` would fetch from a repository at run time).

Read-only by intent: Delta on Spark commits to S3 through a single-driver log store that does not use
the conditional puts delta-rs relies on, so a Spark writer beside the services could overwrite a commit.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import Field

from archlab.core.errors import UserError
from archlab.core.settings import PROJECT_ROOT, LakeSettings

if TYPE_CHECKING:  # pyspark is an optional dependency group; importing this module must not need it
    from pyspark.sql import SparkSession


class SparkNotProvisionedError(UserError):
    """The Spark jars (or pyspark itself) are missing."""

    label = "spark not provisioned"


class SparkSettings(LakeSettings):
    """The lake's settings plus where ``make provision`` put the Spark jars and how big the driver may grow."""

    # Same variable and default as devstack's StackSettings.stack_home (lake may not import devstack).
    stack_home: Path = Field(PROJECT_ROOT / ".stack",
                             description="Cache folder `make provision` fills (Spark jars under spark/jars)")
    spark_driver_memory: str = Field("1g", description="Heap of the local Spark driver (spark.driver.memory)")
    spark_master: str = Field("local[2]", description="Spark master URL: local[N], or a cluster's spark://host:port")
    spark_python: str = Field(sys.executable, description="Interpreter of Spark's Python workers (they import "
                              "archlab and pyarrow): this one by default, a cluster's own there")

    @property
    def spark_jars_dir(self) -> Path:
        return self.stack_home / "spark" / "jars"


def provisioned_jars(settings: SparkSettings) -> list[Path]:
    """The jar files of ``<stack home>/spark/jars``; :class:`SparkNotProvisionedError` when there are none."""
    jars = sorted(settings.spark_jars_dir.glob("*.jar"))
    if not jars:
        raise SparkNotProvisionedError(f"no Spark jars in {settings.spark_jars_dir}: run `make provision`")
    return jars


def s3a_uri(settings: LakeSettings, path: str) -> str:
    """The ``s3a://`` URI of a lake path (Hadoop's S3 connector answers only to that scheme)."""
    return f"s3a://{settings.bucket}/{path.strip('/')}"


def spark_session(settings: SparkSettings, app_name: str = "archlab-outside-reader") -> SparkSession:
    """A local SparkSession (2 threads, no UI, UTC) with Delta Lake and ``s3a://`` to the lake's endpoint.

    Spark keeps one session per process: a second call returns the running one (stop it to reconfigure).
    """
    jars = provisioned_jars(settings)
    try:
        from pyspark.sql import SparkSession
    except ModuleNotFoundError as exc:
        raise SparkNotProvisionedError("pyspark is not installed: run `make env` (dependency group "
                                       "outside-readers)") from exc
    endpoint = settings.s3_endpoint
    s3a = {
        "endpoint": endpoint,
        "endpoint.region": settings.s3_region,
        "access.key": settings.s3_access_key.get_secret_value(),
        "secret.key": settings.s3_secret_key.get_secret_value(),
        "aws.credentials.provider": "org.apache.hadoop.fs.s3a.SimpleAWSCredentialsProvider",
        "path.style.access": "true",  # MinIO serves buckets as paths, not as host names
        "connection.ssl.enabled": str(endpoint.startswith("https://")).lower(),
        "attempts.maximum": "3",
    }
    builder = (
        SparkSession.builder.master(settings.spark_master).appName(app_name)
        .config("spark.jars", ",".join(str(jar) for jar in jars))
        .config("spark.driver.memory", settings.spark_driver_memory)
        # Tuned for short sessions over small tables on a busy 2-core machine, where compiling is the
        # cost: the JIT's first tier only, and no whole-stage code generation. Measured at a load of ~20,
        # start-up plus the first Delta read and collect fell from ~210 s to ~40 s.
        .config("spark.driver.extraJavaOptions", "-XX:TieredStopAtLevel=1")
        .config("spark.sql.codegen.wholeStage", "false")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.shuffle.partitions", "2")
        # Delta rebuilds a table's state from its log in this many tasks (default 50: slow on 2 cores)
        .config("spark.databricks.delta.snapshotPartitions", "2")
        .config("spark.sql.extensions", "io.delta.sql.DeltaSparkSessionExtension")
        .config("spark.sql.catalog.spark_catalog", "org.apache.spark.sql.delta.catalog.DeltaCatalog")
    )
    for key, value in s3a.items():
        builder = builder.config(f"spark.hadoop.fs.s3a.{key}", value)
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("WARN")
    # PySpark would start whatever `python3` is first on the PATH (or $PYSPARK_PYTHON) for its workers.
    session.sparkContext.pythonExec = settings.spark_python
    return session
