"""Session fixtures shared by every test folder: the real native stack and the settings that reach it.

The stack runs on free ports with a throw-away root, so tests never touch a developer's own
`lab infra up` stack. Missing infrastructure is an error, not a skip: a green run must mean the
tests really ran against Kafka and MinIO.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest

from archlab.core.settings import Settings
from archlab.devstack.native import NativeStack, NotProvisionedError, StackConfig
from archlab.lake.store import ensure_bucket
from archlab.testing.processes import free_ports


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NativeStack]:
    """Kafka + MinIO started once per session; LAB_* variables point at them (subprocesses inherit them)."""
    kafka_port, controller_port, minio_port, console_port = free_ports(4)
    config = StackConfig(
        tmp_path_factory.mktemp("stack"),
        kafka_port=kafka_port,
        kafka_controller_port=controller_port,
        minio_port=minio_port,
        minio_console_port=console_port,
        access_key="lab-test",
        secret_key=secrets.token_hex(16),
    )
    native = NativeStack(config, exit_with_owner=True)  # even a SIGKILLed pytest leaves no servers behind
    with pytest.MonkeyPatch.context() as env:
        try:
            try:
                native.start()
            except NotProvisionedError as exc:
                pytest.fail(f"the real infrastructure is required: {exc}", pytrace=False)
            env.setenv("LAB_KAFKA_BOOTSTRAP", config.bootstrap)
            env.setenv("LAB_S3_ENDPOINT", config.s3_endpoint)
            env.setenv("LAB_S3_ACCESS_KEY", config.access_key)
            env.setenv("LAB_S3_SECRET_KEY", config.secret_key)
            env.setenv("LAB_BUCKET", "lake-test")
            env.setenv("LAB_ENV_FILE", "")  # a developer's .env must not change what the tests check
            ensure_bucket(Settings())  # type: ignore[call-arg]
            yield native
        finally:
            native.stop()


@pytest.fixture(scope="session")
def settings(stack: NativeStack) -> Settings:
    """Settings read from the LAB_* variables the ``stack`` fixture set."""
    return Settings()  # type: ignore[call-arg]
