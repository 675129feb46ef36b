"""Small Sphinx fixes for the book, found by the real-browser test (tests/browser).

- sphinx-thebe registers its inline configuration script once per read phase; Jupyter Book's build can
  run that phase twice, and the page then declares ``const THEBE_JS_URL`` twice, a console SyntaxError.
  Identical script entries are dropped before each page is written.
- pydata-sphinx-theme logs "Got invalid theme mode" when no default mode is set: we set ``light``.
- The ipywidgets HTML manager is served from ``_static/offline/html-manager`` (no CDN). It finds its fonts
  and chunks through RequireJS's module path, so RequireJS is told where that folder is, relative to the
  page; and it typesets widget labels with MathJax 2's ``MathJax.Hub.Queue``, which MathJax 3 lacks, so a
  two-line shim maps it onto ``MathJax.typesetPromise``.
"""


from __future__ import annotations

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


def setup(app):
    app.connect("config-inited", _theme_defaults)
    app.add_js_file(None, body=_WIDGET_OFFLINE_JS, priority=450)
    # after the theme and extensions have added their scripts
    app.connect("html-page-context", _dedupe_scripts, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
