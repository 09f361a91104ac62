"""The notebooks in notebooks/ are stored clean: no outputs and no execution counts in git (they would
hide the diff of a change behind pictures and stale numbers, and could carry data out of a lake).

``make env`` sets the git filter that strips them on ``git add`` (nbstripout, see notebooks/README.md);
this test catches a notebook committed without it: ``.venv/bin/nbstripout notebooks/*.ipynb`` cleans it.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

from archlab.core.settings import PROJECT_ROOT

NOTEBOOKS = sorted((PROJECT_ROOT / "notebooks").glob("*.ipynb"))


def test_there_are_notebooks() -> None:
    assert NOTEBOOKS, "notebooks/ holds no notebook"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[path.stem for path in NOTEBOOKS])
def test_notebook_is_stored_without_outputs(path: Path) -> None:
    book = nbformat.read(path, as_version=4)
    nbformat.validate(book)
    dirty = [f"cell {i}: {len(cell.outputs)} output(s), execution count {cell.execution_count}"
             for i, cell in enumerate(book.cells)
             if cell.cell_type == "code" and (cell.outputs or cell.execution_count is not None)]
    assert not dirty, (f"{path.name} is stored with outputs (run .venv/bin/nbstripout on it):\n  "
                       + "\n  ".join(dirty))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[path.stem for path in NOTEBOOKS])
def test_notebook_names_its_kernel_and_starts_with_prose(path: Path) -> None:
    """Headless runners (nbclient, papermill) take the kernel from the metadata; a reader starts with why."""
    book = nbformat.read(path, as_version=4)
    assert book.metadata.get("kernelspec", {}).get("name") == "python3", f"{path.name}: kernelspec python3"
    assert book.cells and book.cells[0].cell_type == "markdown", f"{path.name}: begin with a markdown cell"
