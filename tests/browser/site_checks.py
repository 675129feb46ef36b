"""Checks of a rendered book in a real browser (headless Chromium through selenium).

Kept apart from the pytest files so that the same checks run against the real build and against small
broken sites the tests make on purpose (a raw equation, a missing image, a broken link), proving that
each check can fail.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import os
import re
import shutil
import threading
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1280,900",
)
#: The window every page is checked in: a common laptop width, at which the book shows both sidebars and its
#: narrowest text column. Code cells and display equations must fit that column (``PageReport.overflowing``).
WINDOW = (1280, 900)
# Leftovers of TeX that MathJax failed to typeset, as they would show in the page's visible text.
RAW_TEX = re.compile(r"\$\$|\\\[|\\\(|\\begin\{|\\frac\{|\\sum_|\\beta\b|\\pi_")


@dataclass
class PageReport:
    """What one page showed in the browser."""

    page: str
    console_errors: list[str] = field(default_factory=list)
    math_expected: int = 0
    math_typeset: int = 0
    math_errors: int = 0
    raw_tex: list[str] = field(default_factory=list)
    broken_images: list[str] = field(default_factory=list)
    broken_links: list[str] = field(default_factory=list)
    launch_buttons: list[str] = field(default_factory=list)
    overflowing: list[str] = field(default_factory=list)

    def problems(self) -> list[str]:
        out = [f"console error: {e}" for e in self.console_errors]
        if self.math_typeset < self.math_expected:
            out.append(f"only {self.math_typeset} of {self.math_expected} equations typeset")
        if self.math_errors:
            out.append(f"{self.math_errors} MathJax error(s)")
        out += [f"raw TeX left in the text: {t!r}" for t in self.raw_tex]
        out += [f"image did not load: {src}" for src in self.broken_images]
        out += [f"broken internal link: {href}" for href in self.broken_links]
        out += [f"overflows its column at {WINDOW[0]}px (scrolls sideways): {e}" for e in self.overflowing]
        return out


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep test output readable
        pass


@contextlib.contextmanager
def serve(directory: Path):
    """Serve ``directory`` on 127.0.0.1 on a free port; yields the base URL."""
    handler = functools.partial(_QuietHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


@contextlib.contextmanager
def chromium(user_data_dir: Path):
    """A headless Chromium driven by selenium, with the browser console log enabled."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        raise RuntimeError(
            f"{CHROMIUM} / {CHROMEDRIVER} missing: install Debian's chromium and chromium-driver "
            "(apt-get update && apt-get install -y chromium chromium-driver)"
        )
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={user_data_dir}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_window_size(*WINDOW)
    driver.set_page_load_timeout(60)
    driver.set_script_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def toc_pages(toc_path: Path) -> list[str]:
    """The pages of a Jupyter Book ``_toc.yml``, as paths without suffix (``book/intro``)."""
    import yaml

    toc = yaml.safe_load(toc_path.read_text())
    pages = [toc["root"]]

    def walk(entries):
        for entry in entries or []:
            if "file" in entry:
                pages.append(entry["file"])
            walk(entry.get("sections"))
            walk(entry.get("chapters"))

    for part in toc.get("parts", []):
        walk(part.get("chapters"))
    walk(toc.get("chapters"))
    return [str(Path(p).with_suffix("")) for p in pages]


_WAIT_FOR_MATHJAX = """
const done = arguments[arguments.length - 1];
if (!window.MathJax || !MathJax.startup || !MathJax.startup.promise) { done('no-mathjax'); return; }
MathJax.startup.promise.then(() => done('ok')).catch(e => done('error: ' + e));
"""

_COLLECT = """
const math = document.querySelectorAll('div.math, span.math, .math.notranslate');
const typeset = document.querySelectorAll('mjx-container');
const errors = document.querySelectorAll('mjx-merror');
const imgs = Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.getAttribute('src'));
const links = Array.from(document.querySelectorAll('a[href]')).map(a => a.getAttribute('href'));
const buttons = Array.from(document.querySelectorAll('a, button')).map(e => (e.getAttribute('href') || '') + ' ' + (e.getAttribute('title') || e.getAttribute('data-bs-title') || e.textContent || '').trim());
// prose only: code cells and literal blocks legitimately contain backslashes and dollars
const prose = (document.querySelector('main') || document.body).cloneNode(true);
prose.querySelectorAll('pre, code, .highlight, script, style, mjx-container').forEach(e => e.remove());
return {math: math.length, typeset: typeset.length, errors: errors.length, imgs, links, buttons,
        text: prose.textContent};
"""


# Code cells (the <pre> of a cell's input and of its text output) and typeset display equations whose content
# is wider than their box, so that the reader has to scroll them sideways. Collapsed parts (hidden cell inputs,
# solution dropdowns) are opened first, so that what a click reveals is measured too. 1 px of slack for rounding.
_OVERFLOW = """
document.querySelectorAll('details').forEach(d => { d.open = true; });
document.querySelectorAll('.toggle-hidden').forEach(e => e.classList.remove('toggle-hidden'));
const tex = new Map();
try {
  for (const item of MathJax.startup.document.math) { tex.set(item.typesetRoot, item.math); }
} catch (e) { /* no MathJax on this page */ }
const short = (text) => { text = text.trim().replace(/\\s+/g, ' '); return text.length > 70 ? text.slice(0, 70) + '...' : text; };
const out = [];
const cells = Array.from(document.querySelectorAll('div.cell'));
const pres = new Set(document.querySelectorAll('div.cell div.highlight pre, div.cell_input pre, div.cell_output pre'));
for (const pre of pres) {
  if (!pre.offsetParent || pre.scrollWidth <= pre.clientWidth + 1) continue;
  const cell = pre.closest('div.cell');
  const part = pre.closest('div.cell_output') ? 'output' : 'input';
  const lines = pre.textContent.split('\\n');
  const first = lines.find(line => line.trim()) || '';
  const widest = lines.reduce((a, b) => (b.length > a.length ? b : a), '');
  out.push(`code cell ${cells.indexOf(cell)} (${part}, first line "${short(first)}"): ` +
           `${pre.scrollWidth}px of content in ${pre.clientWidth}px, widest line ${widest.length} characters ` +
           `"${short(widest)}"`);
}
for (const m of document.querySelectorAll('mjx-container[display="true"]')) {
  if (!m.offsetParent || m.scrollWidth <= m.clientWidth + 1) continue;
  const box = m.closest('div.math, .math');
  const label = box && box.id ? `#${box.id} ` : '';
  out.push(`display equation ${label}"${short(tex.get(m) || m.textContent)}": ` +
           `${m.scrollWidth}px of content in ${m.clientWidth}px`);
}
return out;
"""


def _is_internal(href: str) -> bool:
    parsed = urllib.parse.urlparse(href)
    return not parsed.scheme and not parsed.netloc and not href.startswith(("mailto:", "javascript:"))


def _link_ok(site: Path, page_file: Path, href: str, ids_cache: dict[Path, set[str]]) -> bool:
    parsed = urllib.parse.urlparse(href)
    target = page_file if not parsed.path else (page_file.parent / urllib.parse.unquote(parsed.path)).resolve()
    if target.is_dir():
        target = target / "index.html"
    try:
        target.relative_to(site.resolve())
    except ValueError:
        return False
    if not target.is_file():
        return False
    if parsed.fragment and target.suffix == ".html":
        if target not in ids_cache:
            html = target.read_text(encoding="utf-8", errors="replace")
            ids_cache[target] = set(re.findall(r'\sid="([^"]+)"', html)) | set(re.findall(r'\sname="([^"]+)"', html))
        return urllib.parse.unquote(parsed.fragment) in ids_cache[target]
    return True


def check_page(
    driver, base_url: str, site: Path, page: str, screenshot_dir: Path | None = None, ids_cache: dict | None = None
) -> PageReport:
    """Load one page, wait for MathJax, and collect everything a reader would notice."""
    ids_cache = {} if ids_cache is None else ids_cache
    report = PageReport(page)
    page_file = (site / f"{page}.html").resolve()
    if not page_file.is_file():
        report.broken_links.append(f"{page}.html (page in the table of contents was not built)")
        return report
    driver.get_log("browser")  # drop messages of the previous page
    driver.get(base_url + f"{page}.html")
    state = driver.execute_async_script(_WAIT_FOR_MATHJAX)
    data = driver.execute_script(_COLLECT)
    report.math_expected, report.math_typeset, report.math_errors = data["math"], data["typeset"], data["errors"]
    if data["math"] and state != "ok":
        report.console_errors.append(f"MathJax did not start: {state}")
    report.raw_tex = sorted(set(RAW_TEX.findall(data["text"])))
    report.broken_images = [src for src in data["imgs"]]
    report.broken_links = sorted(
        {h for h in data["links"] if _is_internal(h) and not _link_ok(site, page_file, h, ids_cache)}
    )
    report.launch_buttons = [b for b in data["buttons"] if re.search(r"colab|binder", b, re.I)]
    report.console_errors += [entry["message"] for entry in driver.get_log("browser") if entry.get("level") == "SEVERE"]
    if screenshot_dir is not None:
        screenshot_dir.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(screenshot_dir / (page.replace("/", "__") + ".png")))
    report.overflowing = driver.execute_script(_OVERFLOW)  # last: it opens what the reader has to click open
    return report


def check_site(
    site: Path, pages: list[str], user_data_dir: Path, screenshot_dir: Path | None = None
) -> list[PageReport]:
    """Check every page of a built site in one browser session."""
    ids_cache: dict = {}
    with serve(site) as base_url, chromium(user_data_dir) as driver:
        return [check_page(driver, base_url, site, page, screenshot_dir, ids_cache) for page in pages]


def copy_site(site: Path, dest: Path) -> Path:
    """A writable copy of a built site, for the failure-mode tests."""
    shutil.copytree(site, dest)
    return dest
