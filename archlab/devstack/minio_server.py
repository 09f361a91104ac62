"""The native MinIO server: its command line, root credentials and readiness check."""

from __future__ import annotations

import os

import httpx

from archlab.devstack.config import NotProvisionedError, StackConfig, StackError


def prepare(config: StackConfig) -> tuple[list[str], dict[str, str]]:
    """Check the binary and the credentials, create the folders; returns the command and its environment."""
    binary = config.minio_binary
    if not os.access(binary, os.X_OK):
        raise NotProvisionedError(f"MinIO binary not found at {binary}: run `make provision` first")
    if len(config.access_key) < 3 or len(config.secret_key) < 8:
        raise StackError("MinIO needs an access key of at least 3 and a secret key of at least 8 characters")
    for folder in (config.minio_data, config.logs_dir, config.run_dir):
        folder.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "MINIO_ROOT_USER": config.access_key,
        "MINIO_ROOT_PASSWORD": config.secret_key,
        "MINIO_UPDATE": "off",  # never try to reach the internet for updates
    }
    command = [
        str(binary), "server", str(config.minio_data),
        "--address", f"127.0.0.1:{config.minio_port}",
        "--console-address", f"127.0.0.1:{config.minio_console_port}",
    ]
    return command, env


def minio_healthy(port: int) -> bool:
    """True when MinIO reports itself ready to serve requests."""
    try:
        response = httpx.get(f"http://127.0.0.1:{port}/minio/health/ready", timeout=2.0)
    except httpx.HTTPError:
        return False
    return response.status_code == 200
