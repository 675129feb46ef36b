"""Static checks of the book's reading aids, over every notebook and book page; nothing is executed.

Each chapter (``notebooks/*.ipynb``) opens with a title and a "what you will see" paragraph, links the
notation page near the top, closes with a Summary and then 2-4 sphinx-exercise exercises, each with a
solution hidden in a dropdown. Equation labels are unique across the whole book, every {eq} reference has a
target, and a label that claims to be one of the paper's equations (``eq-p7-...``, shown as "(7)" by
``book/_ext/qstar_book.py``) names an equation the paper has. The landing page has the five-minute path,
and its links point at targets that exist.
"""

from __future__ import annotations

import importlib.util
import json
import re
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
PAGES = sorted((ROOT / "book").glob("*.md"))
INTRO = ROOT / "book" / "intro.md"

NOTATION_LINK = "](../book/notation.md"
EQ_LABEL = re.compile(r"\$\$[ \t]*\((eq-[^)\s]+)\)")  # $$ ... $$ (eq-label)
EQ_REF = re.compile(r"\{eq\}`([^`<]+?)`|\{eq\}`[^`<]*<([^>]+)>`")
TARGET = re.compile(r"^\(([A-Za-z0-9_.:-]+)\)=[ \t]*$", re.M)  # (sec-label)=
EXERCISE = re.compile(r"^(?P<fence>`{3,}|:{3,})\{exercise\}[^\n]*\n(?P<body>.*?)^(?P=fence)[ \t]*$", re.M | re.S)
SOLUTION = re.compile(
    r"^(?P<fence>`{3,}|:{3,})\{solution\}[ \t]+(?P<target>\S+)[ \t]*\n(?P<body>.*?)^(?P=fence)[ \t]*$", re.M | re.S
)
PLAIN_EXERCISE = re.compile(r"^\*\*Exercise \d+\.?\*\*", re.M)  # the pre-directive style


def _load_extension():
    spec = importlib.util.spec_from_file_location("qstar_book", ROOT / "book" / "_ext" / "qstar_book.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def markdown_cells(path: Path) -> list[str]:
    with open(path, encoding="utf-8") as f:
        nb = json.load(f)
    return ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown"]


def page_text(path: Path) -> str:
    """All the MyST a reader sees: the markdown cells of a notebook, or a page's text."""
    return "\n\n".join(markdown_cells(path)) if path.suffix == ".ipynb" else path.read_text(encoding="utf-8")


def options(body: str) -> dict[str, str]:
    """The ``:name: value`` lines at the top of a directive's body."""
    found = {}
    for line in body.splitlines():
        match = re.match(r"^:([\w-]+):[ \t]*(.*)$", line)
        if not match:
            break
        found[match.group(1)] = match.group(2).strip()
    return found


def all_sources() -> list[Path]:
    return NOTEBOOKS + PAGES


ids = [p.stem for p in NOTEBOOKS]


def test_there_are_chapters():
    assert NOTEBOOKS, "no notebooks/*.ipynb found"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=ids)
def test_opens_with_title_and_what_you_will_see(path):
    cells = markdown_cells(path)
    assert cells, f"{path.name}: no markdown cells"
    first = cells[0]
    assert first.lstrip().startswith("# "), f"{path.name}: the first markdown cell must start with a '# ' title"
    assert re.search(r"you will see", first, re.I), f"{path.name}: the first cell needs a 'what you will see' paragraph"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=ids)
def test_links_notation_near_the_top(path):
    top = markdown_cells(path)[:3]
    assert any(NOTATION_LINK in cell for cell in top), (
        f"{path.name}: link the notation page ([notation](../book/notation.md)) in one of the first three "
        "markdown cells"
    )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=ids)
def test_summary_then_exercises_with_hidden_solutions(path):
    text = page_text(path)
    assert not PLAIN_EXERCISE.search(text), f"{path.name}: '**Exercise N.**' paragraphs: use {{exercise}} directives"
    exercises = list(EXERCISE.finditer(text))
    assert 2 <= len(exercises) <= 4, f"{path.name}: {len(exercises)} exercise directives, expected 2-4"
    summary = re.search(r"^##[ \t]+Summary[ \t]*$", text, re.M)
    assert summary, f"{path.name}: no '## Summary' section"
    assert summary.start() < exercises[0].start(), f"{path.name}: the Summary must come before the exercises"

    labels = []
    for ex in exercises:
        label = options(ex.group("body")).get("label")
        assert label and label.startswith("ex-"), f"{path.name}: every exercise needs ':label: ex-...', got {label!r}"
        labels.append(label)
    solutions = {}
    for sol in SOLUTION.finditer(text):
        assert sol.group("target") not in solutions, f"{path.name}: two solutions for {sol.group('target')}"
        solutions[sol.group("target")] = options(sol.group("body"))
    for label in labels:
        assert label in solutions, f"{path.name}: exercise {label} has no {{solution}} {label}"
        assert "dropdown" in solutions[label].get("class", "").split(), (
            f"{path.name}: the solution of {label} must be hidden (':class: dropdown')"
        )
    assert set(solutions) <= set(labels), f"{path.name}: solutions for missing exercises {set(solutions) - set(labels)}"


def test_exercise_labels_unique_across_the_book():
    labels = Counter()
    for path in all_sources():
        for ex in EXERCISE.finditer(page_text(path)):
            labels[options(ex.group("body")).get("label")] += 1
    duplicates = sorted(label for label, n in labels.items() if n > 1 and label)
    assert not duplicates, f"exercise labels used more than once: {duplicates}"


def _equation_labels() -> dict[str, list[str]]:
    where: dict[str, list[str]] = {}
    for path in all_sources():
        for label in EQ_LABEL.findall(page_text(path)):
            where.setdefault(label, []).append(path.name)
    return where


def test_equation_labels_unique_across_the_book():
    duplicates = {label: files for label, files in _equation_labels().items() if len(files) > 1}
    assert not duplicates, f"equation labels defined more than once: {duplicates}"


def test_every_equation_reference_has_a_target():
    labels = set(_equation_labels())
    missing = []
    for path in all_sources():
        for ref in EQ_REF.findall(page_text(path)):
            target = ref[0] or ref[1]
            if target not in labels:
                missing.append(f"{path.name}: {{eq}}`{target}`")
    assert not missing, "references to undefined equations:\n" + "\n".join(missing)


def test_paper_equation_labels_name_a_paper_equation():
    ext = _load_extension()
    for label in _equation_labels():
        number = ext.paper_number(label)
        if label.startswith("eq-p") and label[4:5].isdigit():
            assert number in ext.PAPER_EQUATIONS, f"{label}: looks like a paper label but is not 'eq-p<N>-name'"


def test_intro_has_the_five_minute_path():
    text = INTRO.read_text(encoding="utf-8")
    headings = re.findall(r"^## +(.+)$", text, re.M)
    assert headings and re.search(r"five minutes", headings[0], re.I), "intro: '## If you have five minutes' first"
    section = text.split("\n## ", 2)[1]
    stops = re.findall(r"^\d+\. ", section, re.M)
    assert 3 <= len(stops) <= 4, f"intro: the five-minute path has {len(stops)} stops, expected 3-4"
    targets = set()
    for path in all_sources():
        targets.update(TARGET.findall(page_text(path)))
    anchors = re.findall(r"\]\(#([^)\s]+)\)", section)
    assert len(anchors) >= 3, "intro: the five-minute path should link the exact sections it talks about"
    assert not [a for a in anchors if a not in targets], f"intro: links to missing targets {set(anchors) - targets}"
    for doc in re.findall(r"\]\(((?:\.\./)?[\w/.-]+\.(?:ipynb|md))(?:#[^)]*)?\)", section):
        assert (INTRO.parent / doc).resolve().is_file(), f"intro: link to a page that does not exist: {doc}"


def test_extension_numbers_paper_equations_and_ours():
    """``_renumber`` on a fake environment: paper labels show the paper's number, ours get 'chapter.k'."""
    ext = _load_extension()
    assert ext.paper_number("eq-p7-bellman") == 7 and ext.paper_number("eq-p16-tok-kl") == 16
    assert ext.paper_number("eq-telescoping") is None and ext.paper_number("eq-p7") is None
    equations = {
        "eq-p5-soft-pi": ("notebooks/01_x", 1),
        "eq-telescoping": ("notebooks/01_x", 2),
        "eq-p7-tree": ("notebooks/02_y", 3),
        "eq-mine": ("notebooks/02_y", 4),
        "eq-other": ("book/page", 5),
    }
    fig = {
        "notebooks/01_x": {
            "displaymath": {"equation-eq-p5-soft-pi": (1,), "equation-eq-telescoping": (2,)},
            "exercise": {"ex-a": (1,), "ex-b": (2,)},
        },
        "notebooks/02_y": {"displaymath": {"equation-eq-mine": (4,), "equation-eq-p7-tree": (3,)}},
        "book/page": {"displaymath": {"equation-eq-other": (5,)}},
    }
    env = SimpleNamespace(
        config=SimpleNamespace(numfig=True, math_numfig=True),
        toc_fignumbers=fig,
        get_domain=lambda name: SimpleNamespace(equations=equations),
    )
    assert ext._renumber(None, env) == []
    assert fig["notebooks/01_x"]["displaymath"] == {"equation-eq-p5-soft-pi": (5,), "equation-eq-telescoping": (1, 1)}
    assert fig["notebooks/01_x"]["exercise"] == {"ex-a": (1, 1), "ex-b": (1, 2)}
    assert fig["notebooks/02_y"]["displaymath"] == {"equation-eq-p7-tree": (7,), "equation-eq-mine": (2, 1)}
    assert fig["book/page"]["displaymath"] == {"equation-eq-other": ("A", 1)}
