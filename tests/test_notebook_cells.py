"""Notebook code cells stay thin and fit the rendered book's code column.

Every code cell of ``notebooks/*.ipynb`` has at most ``MAX_LINES`` lines, and no line of it is longer than
the notebooks' line length: ``line-length`` of ``notebooks/ruff.toml``, the width ``ruff format`` wraps the
notebooks to, chosen so that a line fits the code column of the book at a 1280-pixel window
(``tests/browser`` fails on any code cell that scrolls sideways there). Cells the book removes (tag
``remove-cell``: the Colab install cell) are held to the line count only, since the column never shows them.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
RUFF_TOML = ROOT / "notebooks" / "ruff.toml"
MAX_LINES = 15


def notebook_line_length(config: Path = RUFF_TOML) -> int:
    """The top-level ``line-length`` of a ruff.toml (read with a regex: no TOML reader on Python 3.10)."""
    match = re.search(r"^line-length\s*=\s*(\d+)\s*(?:#.*)?$", config.read_text(encoding="utf-8"), re.M)
    assert match, f"{config}: no top-level line-length"
    return int(match.group(1))


def cell_problems(nb: dict, name: str, max_lines: int, max_chars: int) -> list[str]:
    """One message per code cell that is too long or has a line too wide, naming the cell and its first line."""
    problems = []
    for index, cell in enumerate(nb.get("cells", [])):
        if cell.get("cell_type") != "code":
            continue
        source = cell.get("source", "")
        lines = ("".join(source) if isinstance(source, list) else source).splitlines()
        first = lines[0] if lines else ""
        where = f"{name} cell {index} (first line {first!r})"
        if len(lines) > max_lines:
            problems.append(f"{where}: {len(lines)} lines, at most {max_lines}")
        if "remove-cell" in cell.get("metadata", {}).get("tags", []):
            continue
        wide = [(n, len(line)) for n, line in enumerate(lines, 1) if len(line) > max_chars]
        if wide:
            shown = ", ".join(f"line {n}: {width}" for n, width in wide)
            problems.append(f"{where}: lines wider than {max_chars} characters ({shown})")
    return problems


def test_the_notebook_line_length_is_a_readable_width():
    assert 60 <= notebook_line_length() <= 100
    assert NOTEBOOKS, "no notebooks found"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_code_cells_are_short_and_fit_the_column(path):
    nb = json.loads(path.read_text(encoding="utf-8"))
    name = str(path.relative_to(ROOT))
    problems = cell_problems(nb, name, MAX_LINES, notebook_line_length())
    assert not problems, "\n".join(problems)


def test_the_check_names_the_cell_that_breaks_a_limit():
    def code(source: str, tags=()) -> dict:
        return {"cell_type": "code", "metadata": {"tags": list(tags)}, "source": source, "outputs": []}

    nb = {
        "cells": [
            {"cell_type": "markdown", "metadata": {}, "source": "x" * 200},
            code("ok = 1\n"),
            code("".join(f"line_{i} = {i}\n" for i in range(16))),
            code("short = 1\nwide = '" + "w" * 80 + "'\n"),
            code("!pip install " + "p" * 80, tags=["remove-cell"]),
        ]
    }
    problems = cell_problems(nb, "nb.ipynb", max_lines=15, max_chars=74)
    assert problems == [
        "nb.ipynb cell 2 (first line 'line_0 = 0'): 16 lines, at most 15",
        "nb.ipynb cell 3 (first line 'short = 1'): lines wider than 74 characters (line 2: 89)",
    ]
