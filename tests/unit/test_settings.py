"""The one configuration mechanism: every process loads a pydantic-settings model with ``load_settings``.

Checked here: configuration errors look the same from a service and from ``lab``; the dotenv file is
read by ``load_settings`` only, under the environment; list settings are written ``a,b,c`` and
parsed one way; the dashboard and stopping the native stack need no secret; a ``lab`` flag wins over
its variable; ``--help`` lists every model's variables; and no module reads the environment on its own.
"""

from __future__ import annotations

import importlib
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic_settings import BaseSettings, NoDecode
from typer.testing import CliRunner

from archlab.cli.infra import InfraUpSettings, UpSettings
from archlab.cli.main import app
from archlab.core import settings as settings_module
from archlab.core.settings import (
    CONFIGURATION_ERROR_STATUS,
    ENV_FILE_VARIABLE,
    PROJECT_ROOT,
    ConfigurationError,
    Settings,
    describe_env_vars,
    load_settings,
)
from archlab.serving.api.settings import ApiSettings
from ui.settings import UiSettings

BIN = Path(sys.executable).parent
SERVICES = sorted(path.parent.name for path in (PROJECT_ROOT / "services").glob("*/__main__.py"))
SECRETS = {"LAB_S3_ACCESS_KEY": "key", "LAB_S3_SECRET_KEY": "secret"}


def service_models() -> list[type[BaseSettings]]:
    """The model each service loads, as its ``__main__`` defines or names it."""
    models = []
    for name in SERVICES:
        module = importlib.import_module(f"services.{name}.__main__")
        defined = [obj for obj in vars(module).values()
                   if isinstance(obj, type) and issubclass(obj, Settings) and obj.__module__ == module.__name__]
        models.append(getattr(module, "SETTINGS_MODEL", None) or defined[0])
    return models


MODELS: list[type[BaseSettings]] = [Settings, ApiSettings, UiSettings, InfraUpSettings, UpSettings,
                                    *service_models()]


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No LAB_* variable of the developer's shell and no dotenv file, unless a test sets them."""
    for name in [name for name in os.environ if name.startswith("LAB_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv(ENV_FILE_VARIABLE, "")


def child_environment(**variables: str) -> dict[str, str]:
    return {"PATH": os.environ["PATH"], ENV_FILE_VARIABLE: "", **variables}


# ---- errors ----------------------------------------------------------------------------------------


def test_every_missing_or_invalid_variable_is_listed_in_one_line_each(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("LAB_TOPIC_PARTITIONS", "0")
    with pytest.raises(ConfigurationError) as raised:
        load_settings(Settings)
    assert raised.value.code == CONFIGURATION_ERROR_STATUS
    lines = str(raised.value).splitlines()
    assert lines[0] == "configuration error:"
    assert sorted(line.split(":")[0].strip() for line in lines[1:]) == [
        "LAB_S3_ACCESS_KEY", "LAB_S3_SECRET_KEY", "LAB_TOPIC_PARTITIONS"]
    assert capsys.readouterr().err.strip() == str(raised.value)


def test_a_service_and_the_lab_command_report_a_bad_configuration_alike() -> None:
    env = child_environment(LAB_S3_ACCESS_KEY="key", LAB_FLUSH_RECORDS="many")
    service = subprocess.run([sys.executable, "-m", "services.bronze_sink"], env=env, capture_output=True,
                             text=True, timeout=60, cwd=PROJECT_ROOT)
    cli = subprocess.run([str(BIN / "lab"), "infra", "init"], env=env, capture_output=True, text=True,
                         timeout=60, cwd=PROJECT_ROOT)
    expected = [
        "configuration error:",
        "  LAB_S3_SECRET_KEY: Field required",
        "  LAB_FLUSH_RECORDS: Input should be a valid integer, unable to parse string as an integer",
    ]
    for proc in (service, cli):
        assert proc.returncode == CONFIGURATION_ERROR_STATUS, proc.stderr
        assert sorted(proc.stderr.strip().splitlines()) == sorted(expected), proc.stderr


# ---- the dotenv file -------------------------------------------------------------------------------------


def test_load_settings_reads_the_dotenv_file_under_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    dotenv = tmp_path / "lab.env"
    dotenv.write_text("LAB_S3_ACCESS_KEY=from-file\nLAB_S3_SECRET_KEY=from-file\nLAB_BUCKET=file-bucket\n"
                      "LAB_PRODUCER_RATE=5\nOTHER_TOOL_SETTING=ignored\n")
    monkeypatch.setenv(ENV_FILE_VARIABLE, str(dotenv))
    monkeypatch.setenv("LAB_BUCKET", "env-bucket")

    settings = load_settings(Settings)
    assert settings.s3_access_key.get_secret_value() == "from-file"
    assert settings.bucket == "env-bucket"  # the environment wins over the file

    producer = load_settings(next(m for m in MODELS if "producer_rate" in m.model_fields))
    assert producer.producer_rate == 5  # service fields come from the same file


def test_only_load_settings_reads_the_dotenv_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    dotenv = tmp_path / "lab.env"
    dotenv.write_text("LAB_BUCKET=file-bucket\n")
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv(ENV_FILE_VARIABLE, str(dotenv))
    assert Settings().bucket == "lake"  # type: ignore[call-arg]  # direct instantiation: environment only
    monkeypatch.setenv(ENV_FILE_VARIABLE, "")
    assert load_settings(Settings).bucket == "lake"  # empty: no file at all


def test_without_lab_env_file_the_projects_dotenv_is_read(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("LAB_API_URL=http://api.example:8000\n")
    monkeypatch.setattr(settings_module, "PROJECT_ROOT", tmp_path)
    monkeypatch.delenv(ENV_FILE_VARIABLE)
    assert load_settings(UiSettings).api_url == "http://api.example:8000"


# ---- comma lists -------------------------------------------------------------------------------------------


def test_comma_lists_are_split_and_trimmed(monkeypatch: pytest.MonkeyPatch) -> None:
    variables = {**SECRETS, "LAB_DATASETS": " orders, sensors ,,", "LAB_API_SERVICE_GROUPS": "silver-x,gold-x"}
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    settings = load_settings(ApiSettings)
    assert settings.datasets == ["orders", "sensors"]
    assert settings.api_service_groups == ["silver-x", "gold-x"]


@pytest.mark.parametrize("model", MODELS, ids=lambda model: model.__name__)
def test_every_list_setting_is_a_comma_list(model: type[BaseSettings]) -> None:
    lists = [name for name, field in model.model_fields.items() if getattr(field.annotation, "__origin__", None) is list]
    not_comma = [name for name in lists if NoDecode not in model.model_fields[name].metadata]
    assert not not_comma, f"{model.__name__}: give {not_comma} the CommaList type of archlab.core.settings"


# ---- per-process models ----------------------------------------------------------------------------------


def test_the_dashboard_needs_no_secret_nor_lake_setting() -> None:
    assert load_settings(UiSettings).api_url == "http://localhost:8000"
    assert not set(UiSettings.model_fields) & set(Settings.model_fields)


@pytest.mark.parametrize("model", MODELS, ids=lambda model: model.__name__)
def test_help_lists_every_variable_of_a_model(model: type[BaseSettings]) -> None:
    listed = set(re.findall(r"^  (LAB_[A-Z0-9_]+)", describe_env_vars(model), re.MULTILINE))
    assert listed == {f"LAB_{name.upper()}" for name in model.model_fields} | {ENV_FILE_VARIABLE}


@pytest.mark.parametrize("name", SERVICES)
def test_service_help_shows_its_variables(name: str) -> None:
    proc = subprocess.run([sys.executable, "-m", f"services.{name}", "--help"], env=child_environment(),
                          capture_output=True, text=True, timeout=60, cwd=PROJECT_ROOT)
    assert proc.returncode == 0, proc.stderr
    assert "LAB_S3_ACCESS_KEY" in proc.stdout and ENV_FILE_VARIABLE in proc.stdout


@pytest.mark.parametrize("command", [["up"], ["infra", "up"]], ids=" ".join)
def test_lab_help_of_the_commands_that_start_the_stack_lists_their_variables(command: list[str]) -> None:
    proc = subprocess.run([str(BIN / "lab"), *command, "--help"], env=child_environment(COLUMNS="200"),
                          capture_output=True, text=True, timeout=60, cwd=PROJECT_ROOT)
    assert proc.returncode == 0, proc.stderr
    for variable in ("LAB_S3_ACCESS_KEY", "LAB_STACK_ROOT", "LAB_KAFKA_PORT", "LAB_DATASETS", ENV_FILE_VARIABLE):
        assert variable in proc.stdout, proc.stdout


# ---- the native stack's command --------------------------------------------------------------------------


def test_finding_and_stopping_the_native_stack_needs_no_secret(tmp_path: Path) -> None:
    env = child_environment(LAB_STACK_ROOT=str(tmp_path / "stack"))
    for command, status in ((["infra", "down"], 0), (["down"], 0), (["infra", "status"], 1)):  # 1: stopped
        proc = subprocess.run([str(BIN / "lab"), *command], env=env, capture_output=True, text=True,
                              timeout=60, cwd=PROJECT_ROOT)
        assert proc.returncode == status, (command, proc.stderr)


@pytest.mark.parametrize("command", [["up"], ["infra", "up"]], ids=" ".join)
def test_starting_the_native_stack_without_its_secrets_is_a_configuration_error(
    command: list[str], tmp_path: Path
) -> None:
    root = tmp_path / "stack"
    proc = subprocess.run([str(BIN / "lab"), *command, "--root", str(root)], env=child_environment(),
                          capture_output=True, text=True, timeout=60, cwd=PROJECT_ROOT)
    assert proc.returncode == CONFIGURATION_ERROR_STATUS, proc.stderr
    assert sorted(proc.stderr.strip().splitlines()) == [
        "  LAB_S3_ACCESS_KEY: Field required", "  LAB_S3_SECRET_KEY: Field required", "configuration error:"]
    assert not root.exists()  # nothing was started


def test_a_lab_flag_wins_over_its_variable_from_the_settings_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    dotenv = tmp_path / "lab.env"
    dotenv.write_text(f"LAB_STACK_ROOT={tmp_path / 'from-file'}\n")
    monkeypatch.setenv(ENV_FILE_VARIABLE, str(dotenv))
    runner = CliRunner()
    from_file = runner.invoke(app, ["infra", "clean"])
    from_flag = runner.invoke(app, ["infra", "clean", "--root", str(tmp_path / "from-flag")])
    assert from_file.exit_code == 0 and from_flag.exit_code == 0, (from_file.output, from_flag.output)
    assert f"deleted {tmp_path / 'from-file'}" in from_file.output
    assert f"deleted {tmp_path / 'from-flag'}" in from_flag.output


# ---- nobody else reads the environment ---------------------------------------------------------------------

# Reading a variable or a dotenv file; copying the whole environment for a child process
# (``{**os.environ, ...}``, ``dict(os.environ)``) is allowed.
RAW_ENVIRONMENT = re.compile(r"os\.environ(?!\s*[,)}])|os\.getenv|\bgetenv\(|dotenv|_env_file\b")
SCANNED = ("archlab", "services", "ui")


def test_only_the_settings_module_reads_the_environment() -> None:
    readers: dict[str, list[str]] = {}
    for folder in SCANNED:
        for path in sorted((PROJECT_ROOT / folder).rglob("*.py")):
            relative = str(path.relative_to(PROJECT_ROOT))
            if relative == "archlab/core/settings.py":
                continue
            hits = [line.strip() for line in path.read_text().splitlines() if RAW_ENVIRONMENT.search(line)]
            if hits:
                readers[relative] = hits
    assert not readers, f"read settings through archlab.core.settings.load_settings instead: {readers}"
