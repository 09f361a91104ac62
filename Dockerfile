# syntax=docker/dockerfile:1
# One image for every Python service of the lab (producer, sinks, refiner, aggregator, API, UI and
# the one-shot `lab infra init`). Each docker-compose service sets its own `command:`.
#
# Build:  docker compose build      (or: docker build -t architecture-lab:latest .)

# Debian release pinned too, so a new Debian default does not change the base under a fixed tag.
FROM python:3.11.14-slim-bookworm

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
# is writable by it (gold_aggregator keeps its RocksDB window checkpoint under /app/.stack by default).
USER 10001:10001
WORKDIR /app

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
