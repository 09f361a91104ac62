# syntax=docker/dockerfile:1
# One image for every Python service of the lab (producer, sinks, refiner, aggregator, API, UI and
# the one-shot `lab infra init`). Each docker-compose service sets its own `command:`.
# The notebook service (JupyterLab + PySpark) runs the same image grown by a JVM, PySpark and the Spark
# jars: the target `notebooks`, built from the same stages so that the services' image stays without
# the ~550 MB of Java and Spark that none of them uses.
#
# Build:  docker compose build      (or: docker build -t architecture-lab:latest .
#                                     and docker build --target notebooks -t architecture-lab-notebooks:latest .)

# Debian release pinned too, so a new Debian default does not change the base under a fixed tag.
FROM python:3.11.14-slim-bookworm AS services

# uv: same version as the native toolchain. UV_LINK_MODE=copy because the cache is a separate mount;
# UV_PYTHON_DOWNLOADS=never so uv uses the image's own Python 3.11.
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_CACHE_DIR=/tmp/uv-cache

RUN pip install --no-cache-dir uv==0.13.8 \
    && groupadd --system --gid 10001 lab \
    && useradd --system --uid 10001 --gid lab --create-home --home-dir /home/lab --shell /usr/sbin/nologin lab \
    && mkdir /app \
    && chown lab:lab /app

# Everything below runs as the unprivileged user `lab` (numeric, so it resolves on any host); /app
# is writable by it. The services' local state lives in /app/.stack/native/state (gold_aggregator's
# RocksDB window checkpoints, the observer's webhook delivery log and faust data): compose mounts the
# volume `lab-state` there, and an empty volume takes this folder's owner, `lab`.
USER 10001:10001
WORKDIR /app
RUN mkdir -p .stack/native/state

# Dependencies first: this layer is rebuilt only when the lock file changes.
COPY --chown=10001:10001 pyproject.toml uv.lock README.md ./
RUN --mount=type=cache,target=/tmp/uv-cache,uid=10001,gid=10001 \
    uv sync --frozen --no-dev --no-install-project

# Then the project itself. uv installs it editable, so archlab.core.settings.PROJECT_ROOT is /app and the
# default LAB_CONTRACTS_DIR (/app/contracts) is right.
COPY --chown=10001:10001 archlab/ archlab/
COPY --chown=10001:10001 services/ services/
COPY --chown=10001:10001 ui/ ui/
COPY --chown=10001:10001 .streamlit/ .streamlit/
COPY --chown=10001:10001 contracts/ contracts/
RUN --mount=type=cache,target=/tmp/uv-cache,uid=10001,gid=10001 \
    uv sync --frozen --no-dev

ENV PATH=/app/.venv/bin:$PATH

# API, UI, Prometheus metrics (LAB_METRICS_PORT in compose).
EXPOSE 8000 8501 9100

# Harmless default: every compose service sets its own command.
CMD ["lab", "--help"]


# ---- notebooks: the services' image plus Java, PySpark, JupyterLab and the Spark jars ------------------

# The jars scripts/provision.sh copies natively, copied here by the same pom at the same pinned versions.
FROM maven:3.9.9-eclipse-temurin-17 AS spark-jars
WORKDIR /build
COPY infra/versions.env infra/spark/pom.xml ./
RUN set -a && . ./versions.env && set +a \
    && mvn -q -B -f pom.xml dependency:copy-dependencies -DoutputDirectory=/jars \
       -Ddelta.version="$DELTA_SPARK_VERSION" -Dscala.binary.version="$SPARK_SCALA_VERSION" \
       -Dhadoop.version="$SPARK_HADOOP_VERSION" -Daws.sdk.version="$SPARK_AWS_SDK_VERSION"

# A Java 17 runtime for PySpark, taken whole from the Temurin image (no apt, pinned like the rest).
FROM eclipse-temurin:17.0.15_6-jre-jammy AS java

FROM services AS notebooks
ENV JAVA_HOME=/opt/java/openjdk
ENV PATH=$JAVA_HOME/bin:$PATH
COPY --from=java /opt/java/openjdk /opt/java/openjdk
RUN --mount=type=cache,target=/tmp/uv-cache,uid=10001,gid=10001 \
    uv sync --frozen --no-dev --group notebooks
# archlab.lake.spark finds the jars under LAB_STACK_HOME (default /app/.stack), as natively.
COPY --chown=10001:10001 --from=spark-jars /jars /app/.stack/spark/jars
COPY --chown=10001:10001 notebooks/ notebooks/
EXPOSE 8888


# ---- the default target: `docker build .` and every service but notebooks -----------------------------
FROM services AS runtime
