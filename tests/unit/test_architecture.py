"""The package map of docs/architecture.md, enforced: which package of the library may import which.

A layer imports only layers below it, so that pipeline code can never come to depend on the developer
stack or the CLI, and the services stay thin composition roots over the library.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from archlab.core.settings import PROJECT_ROOT

#: package (or top-level folder) -> the archlab packages it may import, itself included.
ALLOWED: dict[str, set[str]] = {
    "core": {"core"},
    "contract": {"core", "contract"},
    "kafka": {"core", "kafka"},
    "lake": {"core", "contract", "lake"},
    "streaming": {"core", "kafka", "lake", "streaming"},
    "pipeline": {"core", "contract", "kafka", "lake", "streaming", "pipeline"},
    "ingest": {"core", "contract", "kafka", "pipeline", "ingest"},
    "serving": {"core", "contract", "kafka", "lake", "serving"},
    "devstack": {"core", "kafka", "lake", "devstack"},
    "observe": {"core", "contract", "kafka", "lake", "observe"},
    "batch": {"core", "contract", "lake", "pipeline", "batch"},
    "testing": {"core", "contract", "kafka", "lake", "pipeline", "ingest", "devstack", "testing"},
    "cli": {"core", "contract", "kafka", "lake", "ingest", "devstack", "batch", "cli"},
    "services": {"core", "contract", "kafka", "lake", "streaming", "pipeline", "ingest", "serving", "observe"},
    "ui": {"core"},
}


def owner(path: Path) -> str:
    relative = path.relative_to(PROJECT_ROOT).parts
    return relative[1] if relative[0] == "archlab" else relative[0]


def archlab_imports(path: Path) -> set[tuple[str, int]]:
    """(package, line) of every ``archlab.<package>`` the module imports, at any depth of its code."""
    found: set[tuple[str, int]] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        modules: list[str] = []
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
            if node.module != "archlab":
                modules = modules[:1]
        for module in modules:
            parts = module.split(".")
            if parts[0] == "archlab" and len(parts) > 1:
                found.add((parts[1], node.lineno))
    return found


def modules() -> list[Path]:
    files = [p for folder in ("archlab", "services", "ui") for p in (PROJECT_ROOT / folder).rglob("*.py")]
    return sorted(p for p in files if p.name != "__init__.py" or p.parent.name != "archlab")


def test_every_package_has_a_rule() -> None:
    packages = {p.name for p in (PROJECT_ROOT / "archlab").iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert packages <= ALLOWED.keys(), f"packages without a rule in ALLOWED: {sorted(packages - ALLOWED.keys())}"


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(PROJECT_ROOT)))
def test_imports_follow_the_package_map(path: Path) -> None:
    allowed = ALLOWED[owner(path)]
    wrong = sorted(f"line {line}: archlab.{package}" for package, line in archlab_imports(path) if package not in allowed)
    assert not wrong, f"{owner(path)} may import only {sorted(allowed)}; found {wrong} (see docs/architecture.md)"


def test_the_rule_sees_imports_inside_functions(tmp_path: Path) -> None:
    source = tmp_path / "m.py"
    source.write_text("def f():\n    from archlab.devstack import launcher\n    import archlab.cli.main\n")
    assert {package for package, _ in archlab_imports(source)} == {"devstack", "cli"}


def test_test_modules_have_unique_names() -> None:
    """pytest imports test files by basename (the test folders are not packages): two files of one name
    in different folders break the collection of the whole suite."""
    names = [path.name for path in (PROJECT_ROOT / "tests").rglob("test_*.py")]
    assert len(names) == len(set(names)), sorted(name for name in set(names) if names.count(name) > 1)
