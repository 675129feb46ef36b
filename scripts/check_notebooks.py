"""Fail when a notebook is stored with outputs or with a cell that has no id (or a repeated one); ``--strip``
removes the outputs and gives such cells a fresh id, in place.

Notebooks are executed by the book build and by nbval at every scale, so stored outputs would only go
stale (and bloat diffs). Usage: ``python scripts/check_notebooks.py [--strip] [paths...]``.
"""

from __future__ import annotations

import argparse
import glob
import json
import sys


def dirty_cells(nb: dict) -> list[int]:
    return [
        i
        for i, cell in enumerate(nb.get("cells", []))
        if cell.get("cell_type") == "code" and (cell.get("outputs") or cell.get("execution_count") is not None)
    ]


def bad_ids(nb: dict) -> list[int]:
    """Cells without an id, or with the id of an earlier cell (nbformat 4.5 requires unique ids)."""
    seen, bad = set(), []
    for i, cell in enumerate(nb.get("cells", [])):
        if not cell.get("id") or cell["id"] in seen:
            bad.append(i)
        seen.add(cell.get("id"))
    return bad


def strip(nb: dict) -> dict:
    import uuid

    for i in bad_ids(nb):
        nb["cells"][i]["id"] = uuid.uuid4().hex[:8]
    for cell in nb.get("cells", []):
        if cell.get("cell_type") == "code":
            cell["outputs"] = []
            cell["execution_count"] = None
    nb.get("metadata", {}).pop("widgets", None)
    return nb


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--strip", action="store_true", help="remove outputs in place instead of failing")
    parser.add_argument("paths", nargs="*", help="notebooks (default: notebooks/*.ipynb)")
    args = parser.parse_args(argv)
    paths = args.paths or sorted(glob.glob("notebooks/*.ipynb"))
    bad = []
    for path in paths:
        with open(path, encoding="utf-8") as f:
            nb = json.load(f)
        cells, ids = dirty_cells(nb), bad_ids(nb)
        if not cells and not ids and "widgets" not in nb.get("metadata", {}):
            continue
        if args.strip:
            with open(path, "w", encoding="utf-8") as f:
                json.dump(strip(nb), f, indent=1, ensure_ascii=False)
                f.write("\n")
            print(f"stripped {path}")
        else:
            bad.append(f"{path}: outputs in code cells {cells}, cells without a unique id {ids}")
    if bad:
        print(
            "notebooks stored with outputs or cell ids missing (run `make strip`):\n  " + "\n  ".join(bad),
            file=sys.stderr,
        )
        return 1
    print(f"notebooks: {len(paths)} stored without outputs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
