"""The rendered book in a real browser: every page loads cleanly, maths is typeset, images load, links resolve,
and no code cell or display equation is wider than its column at a 1280x900 window (it would scroll sideways).

Runs against the HTML that ``make book`` wrote to ``_build/html`` (CI builds it at ci scale first; see
``.ci/run``). Screenshots of every page go to ``_build/screenshots``. The failure-mode tests break a copy
of a built page on purpose and check that each check notices.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from .site_checks import check_page, chromium, copy_site, serve, toc_pages

ROOT = Path(__file__).resolve().parents[2]
SITE = ROOT / "_build" / "html"
SCREENSHOTS = ROOT / "_build" / "screenshots"


@pytest.fixture(scope="module")
def site() -> Path:
    if not (SITE / "index.html").is_file():
        pytest.fail(f"no built book in {SITE}: run `QSTAR_SCALE=ci make book` first")
    return SITE


@pytest.fixture(scope="module")
def pages() -> list[str]:
    return toc_pages(ROOT / "_toc.yml")


@pytest.fixture(scope="module")
def driver(tmp_path_factory):
    with chromium(tmp_path_factory.mktemp("chromium-profile")) as drv:
        yield drv


def test_every_page_in_the_toc_renders_cleanly(site, pages, driver):
    reports = []
    ids_cache: dict = {}
    with serve(site) as base_url:
        for page in pages:
            reports.append(check_page(driver, base_url, site, page, SCREENSHOTS, ids_cache))
    problems = [f"{r.page}: {p}" for r in reports for p in r.problems()]
    assert not problems, "\n".join(problems)
    assert sum(r.math_typeset for r in reports) > 0, "no equation was typeset anywhere"
    assert len(list(SCREENSHOTS.glob("*.png"))) >= len(pages)


def _notebook_page(pages: list[str]) -> str:
    return next(p for p in pages if p.startswith("notebooks/"))


def _break(site: Path, tmp_path: Path, page: str, pattern: str, replacement: str) -> Path:
    """A copy of the site whose ``page`` has its first match of ``pattern`` replaced (``<MATCH>`` in ``replacement`` stands for the match)."""
    broken = copy_site(site, tmp_path / "site")
    path = broken / f"{page}.html"
    html, n = re.subn(
        pattern, lambda m: replacement.replace("<MATCH>", m.group(0)), path.read_text(encoding="utf-8"), count=1
    )
    assert n == 1, f"pattern {pattern!r} not found in the built page"
    path.write_text(html, encoding="utf-8")
    return broken


_AFTER_MAIN = r"<main[^>]*>"
# A code cell with one line far wider than the column, and a display equation of 120 terms.
_LINE = "x = " + "1 + " * 60 + "1"
_WIDE_CELL = f'<div class="cell"><div class="cell_input"><div class="highlight"><pre>{_LINE}</pre></div></div></div>'
_WIDE_TEX = " + ".join(f"a_{{{i}}}" for i in range(120))
_WIDE_EQUATION = f'<div class="math notranslate nohighlight">\\[{_WIDE_TEX}\\]</div>'


@pytest.mark.parametrize(
    "pattern, replacement, symptom",
    [
        # MathJax not served (the offline failure a CDN causes): every equation stays raw TeX
        (r"offline/mathjax/tex-chtml-full\.js", "offline/mathjax/not-there.js", "raw TeX left in the text"),
        (_AFTER_MAIN, '<MATCH><p><img src="figure_that_was_never_built.png" alt="missing"></p>', "image did not load"),
        (_AFTER_MAIN, '<MATCH><p><a href="no_such_chapter.html#nowhere">dangling</a></p>', "broken internal link"),
        # a line of code or an equation wider than the column at a 1280-pixel window
        (_AFTER_MAIN, "<MATCH>" + _WIDE_CELL, "overflows its column"),
        (_AFTER_MAIN, "<MATCH>" + _WIDE_EQUATION, "overflows its column"),
    ],
    ids=["raw-equation", "missing-image", "broken-link", "wide-code-cell", "wide-equation"],
)
def test_each_check_catches_its_failure(site, pages, driver, tmp_path, pattern, replacement, symptom):
    page = _notebook_page(pages)
    with serve(site) as base_url:
        clean = check_page(driver, base_url, site, page)
    assert clean.problems() == [], clean.problems()
    broken = _break(site, tmp_path, page, pattern, replacement)
    with serve(broken) as base_url:
        report = check_page(driver, base_url, broken, page)
    assert any(p.startswith(symptom) for p in report.problems()), report.problems()


def test_notebook_pages_show_launch_buttons(site, pages, driver):
    notebook_pages = [p for p in pages if p.startswith("notebooks/")]
    assert notebook_pages
    with serve(site) as base_url:
        for page in notebook_pages:
            buttons = " ".join(check_page(driver, base_url, site, page).launch_buttons).lower()
            assert "colab" in buttons and "binder" in buttons, f"{page}: launch buttons missing ({buttons!r})"
