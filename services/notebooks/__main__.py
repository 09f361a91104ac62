"""notebooks: JupyterLab over the notebooks in notebooks/ (PySpark beside DuckDB over the lake).

Its kernels run this environment's interpreter with this process's environment, so a notebook reads
the lake's settings exactly as a service does: ``load_settings`` (LAB_* variables, then .env). The
server always requires LAB_NOTEBOOK_TOKEN: a notebook server runs any code its visitor types.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import structlog
from pydantic import Field, SecretStr

from archlab.core.observability import configure_logging
from archlab.core.settings import PROJECT_ROOT, Settings, describe_env_vars, load_settings


class NotebookServerSettings(Settings):
    """Where JupyterLab listens and the token it asks for (the lake's settings reach its kernels)."""

    notebook_token: SecretStr = Field(
        min_length=16, description="Token JupyterLab asks for (`make .env` generates one into .env)")
    notebook_port: int = Field(8888, ge=1, le=65535, description="Port of JupyterLab")
    notebook_host: str = Field("127.0.0.1", description="Address JupyterLab binds (0.0.0.0 in a container)")
    notebook_dir: Path = Field(PROJECT_ROOT / "notebooks", description="Folder JupyterLab serves")


SETTINGS_MODEL = NotebookServerSettings


def jupyter_arguments(settings: NotebookServerSettings) -> list[str]:
    """JupyterLab's command line. Passed in-process, so the token never shows in a process listing."""
    return [
        f"--ServerApp.ip={settings.notebook_host}",
        f"--ServerApp.port={settings.notebook_port}",
        "--ServerApp.port_retries=0",  # a taken port is an error, not a silent move to another one
        f"--ServerApp.root_dir={settings.notebook_dir}",
        "--ServerApp.open_browser=False",
        f"--IdentityProvider.token={settings.notebook_token.get_secret_value()}",
        # The token is the only way in: no password can be set from the login page.
        "--PasswordIdentityProvider.allow_password_change=False",
        # Nothing asks PyPI or jupyter.org at run time (the lab may be offline); extensions come from uv.lock.
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        "--LabApp.extension_manager=readonly",
        # The server runs as whoever runs `make up`, root in a CI container; the token guards it either way.
        "--ServerApp.allow_root=True",
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m services.notebooks", description=__doc__,
                                     epilog=describe_env_vars(NotebookServerSettings),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.parse_args(argv)
    settings = load_settings(NotebookServerSettings)
    configure_logging(settings)
    log = structlog.get_logger("notebooks")
    log.info("starting", port=settings.notebook_port, root=str(settings.notebook_dir))
    from jupyterlab.labapp import LabApp  # imported here: --help and a configuration error stay fast

    # JupyterLab handles SIGTERM itself (it shuts its kernels down, then exits); `lab up` sends exactly that.
    LabApp.launch_instance(argv=jupyter_arguments(settings))


if __name__ == "__main__":
    main()
