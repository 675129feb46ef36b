"""Small Sphinx fixes for the book, found by the real-browser test (tests/browser).

- sphinx-thebe registers its inline configuration script once per read phase; Jupyter Book's build can
  run that phase twice, and the page then declares ``const THEBE_JS_URL`` twice, a console SyntaxError.
  Identical script entries are dropped before each page is written.
- pydata-sphinx-theme logs "Got invalid theme mode" when no default mode is set: we set ``light``.
- The ipywidgets HTML manager is served from ``_static/offline/html-manager`` (no CDN). It finds its fonts
  and chunks through RequireJS's module path, so RequireJS is told where that folder is, relative to the
  page; and it typesets widget labels with MathJax 2's ``MathJax.Hub.Queue``, which MathJax 3 lacks, so a
  two-line shim maps it onto ``MathJax.typesetPromise``.
- Equation numbers follow the paper where we follow the paper. A labelled equation whose label starts with
  ``eq-p<N>-`` (e.g. ``eq-p7-bellman``) *is* the paper's eq. N: it is shown as "(7)", and every {eq}
  reference to it reads "(7)", in whichever chapter it appears. Every other numbered equation is ours and is
  numbered per chapter, "(2.1)", "(2.2)", ..., with the chapter taken from the notebook's ``NN_`` prefix (a
  page without one gets a letter, "(A.1)"), so ours never look like the paper's. Exercises
  (sphinx-exercise) are numbered per chapter the same way, "Exercise 2.1". Sphinx numbers equations and
  exercises book-wide in ``env.toc_fignumbers`` (numfig, which sphinx-exercise switches on); both the
  displayed number and the text of references are read from there, so that is the one place we rewrite,
  just after Sphinx assigns them.
"""

from __future__ import annotations

import re

from docutils.nodes import make_id
from sphinx.util import logging

logger = logging.getLogger(__name__)

# "eq-p7-bellman" -> paper eq. 7. The paper numbers eqs. 1-16 in the main text and 17-18 in an appendix.
PAPER_LABEL = re.compile(r"^eq-p(\d+)-[a-z0-9-]+$")
PAPER_EQUATIONS = range(1, 19)
_CHAPTER = re.compile(r"^(\d+)_")

# Runs before require.js (priority < 500): RequireJS reads a global ``require`` object as its configuration.
_WIDGET_OFFLINE_JS = """
var require = {paths: {"@jupyter-widgets/html-manager/dist":
  (document.documentElement.dataset.content_root || "") + "_static/offline/html-manager"}};
document.addEventListener("DOMContentLoaded", function () {
  var mj = window.MathJax;
  if (mj && !mj.Hub) {
    mj.Hub = {Queue: function (job) {
      var el = job && job[2];
      if (mj.typesetPromise) { mj.typesetPromise(el ? [el] : undefined); }
    }};
  }
});
"""


def _dedupe_scripts(app, pagename, templatename, context, doctree):
    scripts = context.get("script_files")
    if not scripts:
        return
    seen, unique = set(), []
    for js in scripts:
        # an inline script has filename None or "" depending on who added it
        key = (getattr(js, "filename", None) or "", tuple(sorted((getattr(js, "attributes", None) or {}).items())))
        if key not in seen:
            seen.add(key)
            unique.append(js)
    context["script_files"] = unique


def _theme_defaults(app, config):
    context = dict(config.html_context or {})
    context.setdefault("default_mode", "light")
    config.html_context = context


def paper_number(label: str) -> int | None:
    """The paper's equation number encoded in a label (``eq-p7-...`` -> 7), or None for our own equations."""
    match = PAPER_LABEL.match(label)
    return int(match.group(1)) if match else None


def _chapter_keys(docnames) -> dict:
    """Chapter key per page: the notebook's number prefix ("02_tree_mdp" -> 2), else a letter in book order."""
    keys, letters = {}, iter("ABCDEFGHIJKLMNOPQRSTUVWXYZ")
    for docname in docnames:
        match = _CHAPTER.match(docname.rsplit("/", 1)[-1])
        keys[docname] = int(match.group(1)) if match else next(letters, docname)
    return keys


def _renumber(app, env):
    """Rewrite Sphinx's book-wide equation and exercise numbers (see the module docstring)."""
    if not (env.config.numfig and env.config.math_numfig):
        logger.warning("qstar_book: numfig and math_numfig must be on to show the paper's equation numbers")
        return []
    domain = env.get_domain("math")
    labels_by_id = {make_id(f"equation-{label}"): label for label in domain.equations}
    pages = [d for d, kinds in env.toc_fignumbers.items() if kinds.get("displaymath") or kinds.get("exercise")]
    chapter = _chapter_keys(pages)
    for docname in pages:
        kinds = env.toc_fignumbers[docname]
        equations = kinds.get("displaymath", {})
        own = 0
        for node_id in sorted(equations, key=equations.get):  # document order
            label = labels_by_id.get(node_id, node_id)
            number = paper_number(label)
            if number is None:
                own += 1
                equations[node_id] = (chapter[docname], own)
            elif number in PAPER_EQUATIONS:
                equations[node_id] = (number,)
            else:
                logger.warning(
                    f"qstar_book: {label!r} names paper eq. {number}, which the paper does not have", location=docname
                )
        exercises = kinds.get("exercise", {})
        for k, node_id in enumerate(sorted(exercises, key=exercises.get), start=1):
            exercises[node_id] = (chapter[docname], k)
    return []


def setup(app):
    # MathJax on every page: Sphinx adds it only where it saw math while reading, but the bibliography's math
    # (the paper's title, "From $r$ to $Q^*$") is created later by sphinxcontrib-bibtex, and the browser
    # test then finds an untypeset equation there
    app.set_html_assets_policy("always")
    app.connect("config-inited", _theme_defaults)
    app.add_js_file(None, body=_WIDGET_OFFLINE_JS, priority=450)
    # after the theme and extensions have added their scripts
    app.connect("html-page-context", _dedupe_scripts, priority=900)
    # after Sphinx's toctree collector has assigned the book-wide numbers (default priority 500)
    app.connect("env-get-updated", _renumber, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
