"""Point the book's execution cache at the folder of the current library, data and scale.

``_config.yml`` runs the notebooks with Jupyter Book's execution cache (``execute_notebooks: cache``,
jupyter-cache in ``_build/.jupyter_cache``), which re-executes a notebook only when its code cells change. The
chapters' outputs also depend on what they import: the ``qstar_lib`` source, the family files, the locked
versions, the configs, the judge's environment variables and ``$QSTAR_SCALE``. This script hashes those and makes ``_build/.jupyter_cache`` a link to
``_build/jupyter_cache/<scale>-<digest>``, so a change to any of them starts from an empty cache (every
notebook executed again), while a prose edit reuses every executed notebook. Folders of other digests stay
(switching back is free); ``--fresh`` empties the current one (a clean build); ``--prune`` removes the others.

Usage (the Makefile's ``book`` target calls it): ``python scripts/book_cache.py [--fresh] [--prune]``.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
INPUTS = ("qstar_lib/**/*.py", "qstar_lib/**/*.json", "configs/**/*", "requirements.lock", "_config.yml")
#: Environment variables the chapters read (qstar_lib.scale): their values (the judge key only as set or not)
#: are part of the key too.
ENVIRONMENT = ("QSTAR_JUDGE_BASE_URL", "QSTAR_JUDGE_MODEL", "ACCELERATE_MIXED_PRECISION", "QSTAR_CACHE")
SECRETS = ("QSTAR_JUDGE_API_KEY",)


def digest(root: Path = ROOT) -> str:
    """sha256 (12 hex digits) over the path and bytes of every file matching :data:`INPUTS`, in sorted order."""
    h = hashlib.sha256()
    files = sorted({p for pattern in INPUTS for p in root.glob(pattern) if p.is_file()})
    for path in files:
        h.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    for name in ENVIRONMENT:
        h.update(f"{name}={os.environ.get(name, '')}\0".encode())
    for name in SECRETS:
        h.update(f"{name} set={bool(os.environ.get(name))}\0".encode())
    return h.hexdigest()[:12]


def active_scale() -> str:
    sys.path.insert(0, str(ROOT))
    from qstar_lib.scale import active_scale as scale

    return scale()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fresh", action="store_true", help="empty the current cache folder (a clean build)")
    parser.add_argument("--prune", action="store_true", help="remove the cache folders of other digests")
    args = parser.parse_args(argv)
    build = ROOT / "_build"
    folders = build / "jupyter_cache"
    key = f"{active_scale()}-{digest()}"
    target = folders / key
    if args.fresh and target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True, exist_ok=True)
    link = build / ".jupyter_cache"
    if link.is_symlink() or link.is_file():
        link.unlink()
    elif link.is_dir():  # a cache from before this script: its key is unknown, so it cannot be reused
        shutil.rmtree(link)
    os.symlink(os.path.relpath(target, build), link)
    if args.prune:
        for other in folders.iterdir():
            if other != target:
                shutil.rmtree(other)
    cached = len(list((target / "executed").glob("*"))) if (target / "executed").exists() else 0
    print(f"[book] execution cache {key} ({'empty' if not cached else f'{cached} executed notebooks'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
