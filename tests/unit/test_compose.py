"""Offline checks of the container setup: docker-compose.yml, Dockerfile, .dockerignore, .env.example.

There is no Docker engine here, so the files are checked statically and every project service's
command is run once with ``--help``, in a subprocess whose environment holds only what compose
sets for that service (``${...}`` filled from .env.example, as ``docker compose`` does with .env).

Conventions the checks rely on:

* A project service (one built from the Dockerfile) starts with ``python -m <module>``,
  ``streamlit run <script>`` or ``lab <args>`` (the console script of pyproject.toml).
* ``python -m <module> --help`` exits 0; that also proves the module imports.
* A service's own pydantic-settings model (a ``Settings`` subclass, or one named ``SETTINGS_MODEL``)
  is found in ``<package>/__init__.py``, ``settings.py``, ``config.py`` or a ``__main__.py`` that
  guards its start with ``if __name__ == "__main__":``. ``LAB_*`` names written in the service's
  source are checked too.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import tomllib
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import pytest
import yaml

from archlab.devstack.services import SERVICES

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
ENV_EXAMPLE = ROOT / ".env.example"
VERSIONS_ENV = ROOT / "infra" / "versions.env"
BIN = Path(sys.executable).parent  # the venv's bin dir: check-jsonschema, hadolint, lab, streamlit

PROJECT_IMAGE = "architecture-lab:latest"
# Build targets of the Dockerfile and the tag of each: the notebook service runs the `notebooks` target
# (the project image's stages plus Java, PySpark and the Spark jars, which the other services never carry).
TARGET_IMAGES = {None: PROJECT_IMAGE, "notebooks": "architecture-lab-notebooks:latest"}
LONG_RUNNING_RESTART = {"always", "unless-stopped", "on-failure"}
SUBPROCESS_TIMEOUT_S = 180  # a guard against a hang, not a speed target: imports crawl on a loaded machine

# What the Dockerfile puts in every container's environment besides compose's variables.
IMAGE_ENV = {
    "PATH": os.pathsep.join([str(BIN), "/usr/local/bin", "/usr/bin", "/bin"]),
    "PYTHONUNBUFFERED": "1",
    "PYTHONDONTWRITEBYTECODE": "1",
}

_INTERPOLATION = re.compile(r"\$(?:\{(?P<braced>[^}]*)\}|(?P<named>[A-Za-z_][A-Za-z0-9_]*)|(?P<escaped>\$))")
_BRACED = re.compile(r"(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>.*))?", re.DOTALL)
_LAB_VAR = re.compile(r"\bLAB_[A-Z0-9_]*[A-Z0-9](?![A-Za-z0-9_])")


# ---- helpers ------------------------------------------------------------------------------------


class MissingVariableError(ValueError):
    """A ``${VAR:?message}`` whose variable is unset (compose refuses to start)."""


def interpolate(text: str, env: Mapping[str, str]) -> str:
    """Compose-style interpolation: ``$$``, ``$VAR``, ``${VAR}``, ``${VAR:-d}``, ``${VAR-d}``,
    ``${VAR:?msg}``, ``${VAR?msg}``, ``${VAR:+alt}``, ``${VAR+alt}`` (not nested)."""

    def substitute(match: re.Match[str]) -> str:
        if match["escaped"]:
            return "$"
        if match["named"]:
            return env.get(match["named"], "")
        braced = _BRACED.fullmatch(match["braced"])
        if braced is None:
            raise ValueError(f"invalid interpolation ${{{match['braced']}}}")
        name, op, arg = braced["name"], braced["op"], braced["arg"]
        value = env.get(name)
        missing = (not value) if op and op.startswith(":") else value is None
        if op in (":-", "-"):
            return arg if missing else value
        if op in (":?", "?"):
            if missing:
                raise MissingVariableError(f"{name}: {arg}")
            return value
        if op in (":+", "+"):
            return "" if missing else arg
        return value or ""

    return _INTERPOLATION.sub(substitute, text)


def interpolated_names(text: str) -> set[str]:
    """Names of the variables that ``text`` interpolates."""
    names = set()
    for match in _INTERPOLATION.finditer(text):
        if match["named"]:
            names.add(match["named"])
        elif match["braced"] is not None:
            braced = _BRACED.fullmatch(match["braced"])
            names.add(braced["name"] if braced else match["braced"])
    return names


def read_env_file(path: Path) -> dict[str, str]:
    """``KEY=value`` lines of a dotenv file (comments and blank lines skipped)."""
    values = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        assert sep, f"{path.name}: not a KEY=value line: {line!r}"
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key.strip().removeprefix("export ").strip()] = value
    return values


def strings_in(node: object) -> Iterator[str]:
    """Every string value (not key) in a parsed YAML tree."""
    if isinstance(node, str):
        yield node
    elif isinstance(node, Mapping):
        for value in node.values():
            yield from strings_in(value)
    elif isinstance(node, list):
        for value in node:
            yield from strings_in(value)


@cache
def compose() -> dict:
    # PyYAML's safe loader resolves anchors and `<<` merge keys like compose does.
    return yaml.safe_load(COMPOSE_FILE.read_text())


@cache
def env_example() -> dict[str, str]:
    return read_env_file(ENV_EXAMPLE)


def services() -> dict[str, dict]:
    return compose()["services"]


def project_service_names() -> list[str]:
    """Services run from the project image (built from the Dockerfile)."""
    return sorted(
        name for name, svc in services().items() if "build" in svc or svc.get("image") == PROJECT_IMAGE
    )


def service_env(name: str) -> dict[str, str]:
    """The environment compose gives a service, interpolated from .env.example."""
    raw = services()[name].get("environment") or {}
    if isinstance(raw, list):
        raw = dict(item.partition("=")[::2] if "=" in item else (item, None) for item in raw)
    env = {}
    for key, value in raw.items():
        if value is None:  # `KEY:` alone passes the variable through from .env / the shell
            value = f"${{{key}}}"
        env[key] = interpolate(str(value).lower() if isinstance(value, bool) else str(value), env_example())
    return env


def run(
    argv: list[str], env: Mapping[str, str] | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            argv,
            cwd=ROOT,
            env=env,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=SUBPROCESS_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else exc.stdout or ""
        err = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else exc.stderr or ""
        err += f"\n(timed out after {SUBPROCESS_TIMEOUT_S} s)"
        return subprocess.CompletedProcess(argv, -1, out, err)


def output_of(proc: subprocess.CompletedProcess[str]) -> str:
    return f"exit {proc.returncode}\n--- stdout ---\n{proc.stdout}\n--- stderr ---\n{proc.stderr}"


# ---- what each project service runs ------------------------------------------------------------------


@dataclass
class Target:
    """The program a compose service's `command:` starts."""

    service: str
    kind: str  # "module" | "streamlit" | "console-script"
    name: str  # module name, script path or console script name
    path: Path  # the file that has to exist
    help_argv: list[str]
    packages: list[str] = field(default_factory=list)  # modules that define settings models
    sources: Path | None = None  # file or folder grepped for LAB_* variables
    options: list[str] = field(default_factory=list)  # streamlit options that must exist

    @property
    def exists(self) -> bool:
        return self.path.is_file()

    def describe(self) -> str:
        return f"{self.service}: {self.kind} {self.name!r} (expected {self.path.relative_to(ROOT)})"


def module_file(module: str) -> Path:
    base = ROOT.joinpath(*module.split("."))
    if base.is_dir() or not base.with_suffix(".py").exists():
        return base / "__main__.py"
    return base.with_suffix(".py")


_DEFINES_SETTINGS = re.compile(r"^class\s+\w+\([^)]*Settings[^)]*\)\s*:|\bSETTINGS_MODEL\b", re.MULTILINE)
_MAIN_GUARD = re.compile(r"^if\s+__name__\s*==\s*[\'\"]__main__[\'\"]\s*:", re.MULTILINE)


def settings_packages(module: str, base: Path) -> list[str]:
    """Modules of a service that define a settings model (a BaseSettings subclass or SETTINGS_MODEL).

    Only modules whose source shows one are imported (imports are slow), and a ``__main__`` only
    when it guards its start with ``if __name__ == "__main__":`` (importing it must not run it).
    """
    if base.is_dir():
        subs = ("__init__", "settings", "config", "__main__")
        candidates = {
            (module if sub == "__init__" else f"{module}.{sub}"): base / f"{sub}.py" for sub in subs
        }
    else:
        candidates = {module: base.with_suffix(".py")}
    chosen = []
    for name, path in candidates.items():
        source = path.read_text() if path.is_file() else ""
        if not _DEFINES_SETTINGS.search(source):
            continue
        if path.name == "__main__.py" and not _MAIN_GUARD.search(source):
            continue
        chosen.append(name)
    return chosen


def resolve_target(name: str) -> Target:
    command = services()[name].get("command")
    assert command, f"{name}: a project service must set its own `command:` (the image CMD is a placeholder)"
    argv = shlex.split(command) if isinstance(command, str) else [str(part) for part in command]

    if Path(argv[0]).name.startswith("python") and len(argv) >= 3 and argv[1] == "-m":
        module = argv[2]
        base = ROOT.joinpath(*module.split("."))
        return Target(
            service=name,
            kind="module",
            name=module,
            path=module_file(module),
            help_argv=[sys.executable, "-m", module, "--help"],
            packages=settings_packages(module, base),
            sources=base if base.is_dir() else base.with_suffix(".py"),
        )

    if argv[0] == "streamlit" and len(argv) >= 3 and argv[1] == "run":
        script = ROOT / argv[2]
        package_dir = script.parent
        package = ".".join(package_dir.relative_to(ROOT).parts)
        return Target(
            service=name,
            kind="streamlit",
            name=argv[2],
            path=script,
            help_argv=[str(BIN / "streamlit"), "run", "--help"],
            packages=settings_packages(package, package_dir) if package else [],
            sources=package_dir,
            options=[arg.split("=", 1)[0] for arg in argv[3:] if arg.startswith("--")],
        )

    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"].get("scripts", {})
    if argv[0] in scripts:
        module = scripts[argv[0]].split(":", 1)[0]
        base = ROOT.joinpath(*module.split("."))
        path = base / "__init__.py" if base.is_dir() else base.with_suffix(".py")
        return Target(
            service=name,
            kind="console-script",
            name=f"{argv[0]} -> {scripts[argv[0]]}",
            path=path,
            help_argv=[str(BIN / argv[0]), *argv[1:], "--help"],
            packages=settings_packages(module, base),
            # The CLI module itself: the rest of its package is shared library code (and native-stack
            # helpers with their own defaults), not what this command reads.
            sources=path,
        )

    pytest.fail(
        f"{name}: cannot tell what `{shlex.join(argv)}` runs; use `python -m <module>`, "
        f"`streamlit run <script>` or a [project.scripts] console script"
    )


@cache
def targets() -> dict[str, Target]:
    return {name: resolve_target(name) for name in project_service_names()}


def subprocess_env(name: str) -> dict[str, str]:
    return {**IMAGE_ENV, **service_env(name)}


# One process inspects every service (fast): for each, the environment is replaced by the one compose
# gives it, its settings modules are imported, archlab.core.settings.Settings and every settings model
# they define (or name as SETTINGS_MODEL) are instantiated from that environment, and their fields
# are reported as JSON.
_INSPECT_SETTINGS = r"""
import importlib, json, os, sys
from pydantic_settings import BaseSettings
from archlab.core.settings import Settings

report = {}
for service, job in json.load(sys.stdin).items():
    os.environ.clear()
    os.environ.update(job["env"])
    models = {"archlab.core.settings.Settings": Settings}
    errors = []
    for package in job["packages"]:
        try:
            module = importlib.import_module(package)
        except BaseException as exc:  # SystemExit too: one service must not hide the others
            errors.append(f"import {package}: {type(exc).__name__}: {exc}")
            continue
        for attr, obj in vars(module).items():
            is_model = isinstance(obj, type) and issubclass(obj, BaseSettings)
            if is_model and (attr == "SETTINGS_MODEL" or obj.__module__ == module.__name__):
                models.setdefault(f"{obj.__module__}.{obj.__qualname__}", obj)
    fields = []
    for label, model in models.items():
        prefix = model.model_config.get("env_prefix", "")
        for name, info in model.model_fields.items():
            alias = info.validation_alias if isinstance(info.validation_alias, str) else info.alias
            env = (alias or prefix + name).upper()
            fields.append({"model": label, "env": env, "required": info.is_required()})
        try:
            model()
        except Exception as exc:
            errors.append(f"{label}() from the compose environment: {exc}")
    report[service] = {"fields": fields, "errors": errors}
print(json.dumps(report))
"""


@dataclass
class ServiceRuns:
    help: dict[str, subprocess.CompletedProcess[str]]  # only for services whose target exists
    settings: subprocess.CompletedProcess[str]  # one JSON report for all services


@pytest.fixture(scope="module")
def service_runs() -> ServiceRuns:
    """`--help` of every project service and the settings inspection, a few at a time."""
    inspect_input = json.dumps(
        {name: {"env": subprocess_env(name), "packages": t.packages} for name, t in targets().items()}
    )
    # As many at once as there are cores: eight interpreters importing pyarrow, duckdb and deltalake
    # together on two busy cores took over a minute each.
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        settings = pool.submit(run, [sys.executable, "-c", _INSPECT_SETTINGS], dict(IMAGE_ENV), inspect_input)
        helps = {
            name: pool.submit(run, target.help_argv, subprocess_env(name))
            for name, target in targets().items()
            if target.exists
        }
        return ServiceRuns(
            help={name: future.result() for name, future in helps.items()}, settings=settings.result()
        )


@pytest.fixture(scope="module")
def settings_report(service_runs: ServiceRuns) -> dict[str, dict]:
    proc = service_runs.settings
    assert proc.returncode == 0, f"settings inspection failed:\n{output_of(proc)}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ---- the test's own helper ------------------------------------------------------------------------


def test_interpolation_follows_compose_rules() -> None:
    env = {"SET": "v", "EMPTY": ""}
    assert interpolate("${SET:-d} ${EMPTY:-d} ${UNSET:-d} ${EMPTY-d} $SET $$SET", env) == "v d d  v $SET"
    assert interpolate("${SET:?m}${SET:+alt}${EMPTY:+alt}${EMPTY+alt}", env) == "valtalt"
    for text in ("${UNSET:?set it}", "${EMPTY:?set it}", "${UNSET?set it}"):
        with pytest.raises(MissingVariableError):
            interpolate(text, env)
    assert interpolated_names("a ${A:-x} $B $$C ${D:?m}") == {"A", "B", "D"}


# ---- validation with the real tools ----------------------------------------------------------------


def test_compose_file_matches_the_compose_spec_schema() -> None:
    tool = BIN / "check-jsonschema"
    assert tool.is_file(), f"{tool} missing: install the dev dependencies (uv sync)"
    proc = run([str(tool), "--builtin-schema", "vendor.compose-spec", str(COMPOSE_FILE)])
    hint = ""
    if "Traceback" in proc.stderr:
        hint = "\ncheck-jsonschema itself crashed (a tool/dependency problem, not a schema error)"
    assert proc.returncode == 0, output_of(proc) + hint


def test_dockerfile_passes_hadolint() -> None:
    tool = BIN / "hadolint"
    assert tool.is_file(), f"{tool} missing: install the dev dependencies (uv sync)"
    proc = run([str(tool), "--no-color", str(DOCKERFILE)])
    assert proc.returncode == 0, output_of(proc)


# ---- every service starts something that exists and works --------------------------------------------


def test_every_service_command_names_an_existing_module_or_script() -> None:
    missing = [target.describe() for target in targets().values() if not target.exists]
    assert not missing, "docker-compose.yml starts modules/scripts that do not exist yet:\n  " + "\n  ".join(
        missing
    )


@pytest.mark.parametrize("name", project_service_names())
def test_service_command_runs_help_with_only_the_compose_environment(
    name: str, service_runs: ServiceRuns
) -> None:
    target = targets()[name]
    if not target.exists:
        pytest.fail(f"missing: {target.describe()}")
    proc = service_runs.help[name]
    assert proc.returncode == 0, f"`{shlex.join(target.help_argv)}` failed:\n{output_of(proc)}"
    if target.kind == "streamlit":
        compile(target.path.read_text(), str(target.path), "exec")  # the script at least parses
        unknown = [option for option in target.options if option not in proc.stdout]
        assert not unknown, f"{name}: `streamlit run` has no option(s) {unknown}"


@pytest.mark.parametrize("name", project_service_names())
def test_every_setting_a_service_reads_is_set_by_compose_or_has_a_default(
    name: str, settings_report: dict[str, dict]
) -> None:
    target = targets()[name]
    report = settings_report[name]
    env = service_env(name)
    problems = list(report["errors"])

    defaults = {f["env"] for f in report["fields"] if not f["required"]}
    for f in report["fields"]:
        if f["required"] and not env.get(f["env"]):
            problems.append(f"{f['env']} is required by {f['model']} but compose does not set it")

    read_by_source: dict[str, set[str]] = {}
    if target.sources is not None and target.sources.exists():
        files = [target.sources] if target.sources.is_file() else sorted(target.sources.rglob("*.py"))
        for path in files:
            for var in _LAB_VAR.findall(path.read_text()):
                read_by_source.setdefault(var, set()).add(str(path.relative_to(ROOT)))
    for var, paths in sorted(read_by_source.items()):
        if var not in env and var not in defaults:
            problems.append(
                f"{var} (mentioned in {', '.join(sorted(paths))}) is not set by compose and no settings "
                f"model gives it a default"
            )
    assert not problems, f"{name}:\n  " + "\n  ".join(problems)


def test_shared_environment_blocks_only_name_settings_fields() -> None:
    """A typo in the common `x-` environment (e.g. LAB_BUCKETS) would silently be ignored."""
    from archlab.core.settings import Settings

    prefix = Settings.model_config.get("env_prefix", "")
    fields = {(prefix + name).upper() for name in Settings.model_fields}
    blocks = {
        key: value
        for key, value in compose().items()
        if key.startswith("x-")
        and isinstance(value, Mapping)
        and value
        and all(k.startswith("LAB_") for k in value)
    }
    assert blocks, "expected the shared LAB_* environment as an `x-` extension field"
    unknown = {key: sorted(set(block) - fields) for key, block in blocks.items() if set(block) - fields}
    assert not unknown, f"not fields of archlab.core.settings.Settings: {unknown}"


# ---- .env.example ---------------------------------------------------------------------------------------


def test_every_compose_variable_is_documented_in_env_example() -> None:
    used = set().union(*(interpolated_names(text) for text in strings_in(compose())))
    undocumented = sorted(used - set(env_example()))
    assert not undocumented, f"used in docker-compose.yml but missing from .env.example: {undocumented}"


def test_every_env_example_variable_has_a_comment() -> None:
    lines = ENV_EXAMPLE.read_text().splitlines()
    bare = []
    for i, line in enumerate(lines):
        if line.strip() and not line.lstrip().startswith("#"):
            above = lines[i - 1].strip() if i else ""
            if not above.startswith("#") and not re.match(r"^[A-Z0-9_]+=", above):
                bare.append(line.split("=", 1)[0])
    assert not bare, f"give these .env.example variables a comment line above them: {bare}"


def test_env_example_sets_the_required_settings() -> None:
    from archlab.core.settings import Settings

    prefix = Settings.model_config.get("env_prefix", "")
    required = {(prefix + n).upper() for n, f in Settings.model_fields.items() if f.is_required()}
    assert required, "the settings model is expected to have required secrets"
    missing = sorted(var for var in required if not env_example().get(var))
    assert not missing, f".env.example must give dev values for {missing}"


def test_compose_refuses_to_start_without_the_secrets() -> None:
    """Interpolating without .env must fail for the secrets, like `docker compose up` does."""
    env = {k: v for k, v in env_example().items() if k not in ("LAB_S3_ACCESS_KEY", "LAB_S3_SECRET_KEY")}
    raw = services()["minio"]["environment"]
    for key in ("MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD"):
        with pytest.raises(MissingVariableError):
            interpolate(str(raw[key]), env)


# ---- images, restarts, dependencies, health checks -------------------------------------------------------


def test_images_are_pinned() -> None:
    problems = []
    for name, svc in services().items():
        image = svc.get("image", "")
        if "build" in svc:
            expected = TARGET_IMAGES.get(build_target(svc["build"]))
            if image != expected:
                problems.append(f"{name}: a built service must be tagged {expected} (got {image!r})")
            continue
        last = image.rsplit("/", 1)[-1]
        tag = last.split(":", 1)[1] if ":" in last else ""
        if "@sha256:" not in image and (not tag or tag == "latest"):
            problems.append(f"{name}: image {image!r} is not pinned to a version")
    assert not problems, "\n".join(problems)


def build_target(build: object) -> str | None:
    return build.get("target") if isinstance(build, Mapping) else None


def build_source(build: object) -> object:
    """What a service is built from, whichever target: ``build: .`` and ``{context: .}`` are the same."""
    if isinstance(build, Mapping):
        return {key: value for key, value in build.items() if key != "target"}
    return None if build is None else {"context": build}


def test_project_services_share_one_image_and_build() -> None:
    builds = {
        name: json.dumps(build_source(services()[name].get("build")), sort_keys=True)
        for name in project_service_names()
    }
    assert len(set(builds.values())) == 1 and "null" not in builds.values(), f"builds differ: {builds}"
    expected = {"init"} | written_services()
    assert expected <= set(project_service_names()), f"missing services: {sorted(expected - set(builds))}"


def written_services() -> set[str]:
    """The services that exist in the code base: each must be in compose (later issues add theirs)."""
    names = {path.parent.name for path in (ROOT / "services").glob("*/__main__.py")}
    return names | ({"ui"} if (ROOT / "ui" / "app.py").exists() else set())


def test_compose_runs_the_registered_services_with_their_programs() -> None:
    """docker-compose.yml and `lab up` run the same services, listed once in archlab/devstack/services.py
    (the infrastructure and one-shot jobs such as init are not services of the registry)."""
    registered = {service.name: service for service in SERVICES}
    long_running = set(project_service_names()) - one_shot_services()
    assert long_running == set(registered), (
        f"only in compose: {sorted(long_running - set(registered))}; "
        f"only in the registry: {sorted(set(registered) - long_running)}"
    )
    problems = []
    for name, service in sorted(registered.items()):
        target = targets()[name]
        runs = target.name if target.kind == "module" else f"{target.kind} run {target.name}"
        expected = " ".join((service.module, *service.args))
        if runs != expected:
            problems.append(f"{name}: compose runs {runs!r}, the registry {expected!r}")
    assert not problems, "\n".join(problems)


def test_every_written_service_is_registered() -> None:
    registered = {service.name for service in SERVICES}
    assert written_services() == registered, f"written: {sorted(written_services())}, registered: {sorted(registered)}"


def one_shot_services() -> set[str]:
    return {
        dep
        for svc in services().values()
        if isinstance(svc.get("depends_on"), Mapping)
        for dep, spec in svc["depends_on"].items()
        if isinstance(spec, Mapping) and spec.get("condition") == "service_completed_successfully"
    }


def test_restart_policies() -> None:
    problems = []
    for name, svc in services().items():
        restart = str(svc.get("restart", "no"))
        if name in one_shot_services():
            if restart != "no":
                problems.append(f"{name}: a one-shot job needs restart 'no' (got {restart!r})")
        elif restart.split(":", 1)[0] not in LONG_RUNNING_RESTART:
            problems.append(f"{name}: a long-running service needs a restart policy (got {restart!r})")
    assert not problems, "\n".join(problems)


def has_healthcheck(svc: Mapping) -> bool:
    check = svc.get("healthcheck") or {}
    return bool(check.get("test")) and not check.get("disable") and check.get("test") != ["NONE"]


def test_every_dependency_has_a_condition_that_can_be_met() -> None:
    problems = []
    for name, svc in services().items():
        deps = svc.get("depends_on")
        if deps is None:
            continue
        if not isinstance(deps, Mapping):
            problems.append(f"{name}: depends_on must be a mapping with a condition per service")
            continue
        for dep, spec in deps.items():
            condition = spec.get("condition") if isinstance(spec, Mapping) else None
            if dep not in services():
                problems.append(f"{name}: depends on unknown service {dep!r}")
            elif condition not in ("service_healthy", "service_completed_successfully", "service_started"):
                problems.append(f"{name} -> {dep}: no valid condition ({condition!r})")
            elif condition == "service_healthy" and not has_healthcheck(services()[dep]):
                problems.append(f"{name} -> {dep}: service_healthy, but {dep} has no healthcheck")
            elif services()[dep].get("profiles") and not set(services()[dep]["profiles"]) & set(
                svc.get("profiles", [])
            ):
                profiles = services()[dep]["profiles"]
                problems.append(f"{name} -> {dep}: {dep} only runs in profile(s) {profiles}")
    assert not problems, "\n".join(problems)


def test_python_services_wait_for_the_stack_and_init() -> None:
    problems = []
    needed = {
        "kafka": "service_healthy",
        "minio": "service_healthy",
        "init": "service_completed_successfully",
    }
    for name in project_service_names():
        deps = services()[name].get("depends_on") or {}
        for dep, condition in needed.items():
            if dep == name or (name in one_shot_services() and dep == "init"):
                continue
            got = deps.get(dep, {}).get("condition") if isinstance(deps, Mapping) else None
            if got != condition:
                problems.append(f"{name}: needs depends_on {dep} with condition {condition} (got {got!r})")
    assert not problems, "\n".join(problems)


def test_http_project_services_have_a_healthcheck_that_works_in_the_image() -> None:
    problems = []
    for name in project_service_names():
        svc = services()[name]
        check = svc.get("healthcheck")
        if svc.get("ports") and not has_healthcheck(svc):
            problems.append(f"{name}: publishes a port but has no healthcheck")
        if check:
            test = check.get("test")
            text = test if isinstance(test, str) else " ".join(map(str, test))
            if re.search(r"\b(curl|wget)\b", text):
                problems.append(f"{name}: python:slim has no curl/wget; check with python -c urllib")
    for name in {"api", "ui"} & written_services():
        if not has_healthcheck(services().get(name, {})):
            problems.append(f"{name}: serves HTTP and needs a healthcheck")
    assert not problems, "\n".join(problems)


def test_every_long_running_python_service_sets_a_metrics_port() -> None:
    missing = [
        name
        for name in project_service_names()
        if name not in one_shot_services() and not service_env(name).get("LAB_METRICS_PORT", "0").strip("0")
    ]
    assert not missing, f"set LAB_METRICS_PORT for {missing}"


def test_every_default_dataset_has_a_contract() -> None:
    datasets = {d.strip() for n in project_service_names() for d in service_env(n)["LAB_DATASETS"].split(",")}
    missing = sorted(d for d in datasets if d and not (ROOT / "contracts" / f"{d}.yaml").is_file())
    assert not missing, f"LAB_DATASETS names datasets without contracts/<name>.yaml: {missing}"


def test_ui_points_at_the_api_service() -> None:
    if "ui" not in written_services():
        assert "ui" not in services(), "compose names a ui that does not exist yet"
        return
    assert service_env("ui").get("LAB_API_URL") == "http://api:8000"


def test_kafka_is_a_single_node_kraft_broker_of_the_native_version() -> None:
    kafka = services()["kafka"]
    native = read_env_file(VERSIONS_ENV)["KAFKA_VERSION"]
    assert kafka["image"] == f"apache/kafka:{native}", f"native stack runs Kafka {native}"
    env = {k: str(v) for k, v in kafka["environment"].items()}
    expected = {
        "KAFKA_NODE_ID": "1",
        "KAFKA_PROCESS_ROLES": "broker,controller",
        "KAFKA_CONTROLLER_LISTENER_NAMES": "CONTROLLER",
        "KAFKA_CONTROLLER_QUORUM_VOTERS": "1@kafka:9093",
        "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR": "1",
        "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR": "1",
        "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR": "1",
        "KAFKA_SHARE_COORDINATOR_STATE_TOPIC_REPLICATION_FACTOR": "1",
        "KAFKA_SHARE_COORDINATOR_STATE_TOPIC_MIN_ISR": "1",
        "KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS": "0",
        "KAFKA_AUTO_CREATE_TOPICS_ENABLE": "false",
    }
    wrong = {k: (env.get(k), v) for k, v in expected.items() if env.get(k) != v}
    assert not wrong, f"(got, expected): {wrong}"
    assert "PLAINTEXT://kafka:9092" in env["KAFKA_ADVERTISED_LISTENERS"].split(",")
    bootstrap = {service_env(name).get("LAB_KAFKA_BOOTSTRAP") for name in project_service_names()}
    assert bootstrap == {"kafka:9092"}, f"services must use the in-network listener, got {bootstrap}"


# ---- Dockerfile and build context -----------------------------------------------------------------------


def test_dockerfile_copies_every_package_and_the_context_keeps_them() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = pyproject["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"]
    needed = {*packages, "contracts", "pyproject.toml", "uv.lock", "README.md"}
    copied = set()
    for line in DOCKERFILE.read_text().splitlines():
        parts = line.split()
        if parts and parts[0].upper() == "COPY":
            sources = [p for p in parts[1:-1] if not p.startswith("--")]
            copied |= {p.rstrip("/") for p in sources}
    assert needed <= copied, f"Dockerfile does not COPY {sorted(needed - copied)}"
    ignored = {
        line.strip().rstrip("/")
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith(("#", "!"))
    }
    assert not needed & ignored, f".dockerignore drops {sorted(needed & ignored)} from the build context"


def test_dockerfile_pins_the_base_image_and_runs_as_non_root() -> None:
    text = DOCKERFILE.read_text()
    base = re.search(r"^FROM\s+(\S+)", text, re.MULTILINE)
    image = base[1] if base else None
    pinned = image and re.fullmatch(r"python:3\.11\.\d+-slim(-\w+)?", image)
    assert pinned, f"pin a python:3.11.X-slim tag, got {image}"
    users = re.findall(r"^USER\s+(\S+)", text, re.MULTILINE)
    assert users and users[-1].split(":")[0] not in ("root", "0"), f"last USER must not be root: {users}"
