#!/usr/bin/env bash
# Install the scripts the rendered book serves itself (MathJax 3, the ipywidgets HTML manager, RequireJS)
# from the npm registry and copy them under web/static/offline/ (a Sphinx html_static_path), so that maths and widgets render with no CDN.
# Versions are pinned in web/package.json and web/package-lock.json. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
dest=web/static/offline
if [ ! -f web/node_modules/mathjax/es5/tex-chtml-full.js ]; then
  echo "[web] installing pinned web assets from npm"
  (cd web && npm ci --no-audit --no-fund --loglevel=error)
fi
if [ ! -f "$dest/mathjax/tex-chtml-full.js" ] || [ web/package-lock.json -nt "$dest/.stamp" ]; then
  rm -rf "$dest" && mkdir -p "$dest"
  cp -r web/node_modules/mathjax/es5 "$dest/mathjax"
  mkdir -p "$dest/html-manager"
  cp web/node_modules/@jupyter-widgets/html-manager/dist/embed-amd.js "$dest/html-manager/"
  # embed-amd.js loads its chunks and fonts relative to itself
  find web/node_modules/@jupyter-widgets/html-manager/dist -maxdepth 1 -type f \
    \( -name '*.woff*' -o -name '*.ttf' -o -name '*.eot' -o -name '*.svg' -o -name 'libembed-amd.js' \) \
    -exec cp {} "$dest/html-manager/" \;
  cp web/node_modules/requirejs/require.js "$dest/require.js"
  touch "$dest/.stamp"
  echo "[web] assets in $dest"
fi
