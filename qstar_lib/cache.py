"""The library's one cache protocol: a folder built once, in a temporary sibling, then renamed into place.

Every cache of the library goes through :func:`cached_folder`: the converted SmolLM2 and the tiny ci model
(:mod:`qstar_lib.lm.models`) and the trained runs of :mod:`qstar_lib.experiments`. A build writes into a
temporary sibling folder; a :data:`COMPLETE` marker is written last and the folder is renamed onto its
target while a lock file is held. So concurrent callers wait for the first build, a failed build is deleted,
and a killed one leaves only a ``*.tmp-*`` folder that is never read: a folder without the marker is never
used, whatever else it holds.

It knows nothing about what is cached: a path and a build function.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

#: Marker file written last inside a finished cache folder.
COMPLETE = "COMPLETE"


@contextlib.contextmanager
def file_lock(path: Path):
    """An exclusive advisory lock on ``path`` (created if needed), so two processes never build one cache."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def is_complete(target: Path) -> bool:
    """Whether ``target`` is a finished cache folder (it holds the :data:`COMPLETE` marker)."""
    return (Path(target) / COMPLETE).exists()


def cached_folder(target: Path, build: Callable[[Path], None]) -> Path:
    """Return ``target``, first building it with ``build(tmp_folder)`` if it is not complete.

    ``build`` must write everything into the folder it is given and record no absolute path of it (the
    folder is renamed afterwards). A leftover ``target`` without the marker (an older or interrupted
    cache) is replaced.
    """
    target = Path(target)
    if is_complete(target):
        return target
    with file_lock(target.with_name(target.name + ".lock")):
        if is_complete(target):  # built by another process while we waited
            return target
        tmp = Path(tempfile.mkdtemp(prefix=target.name + ".tmp-", dir=target.parent))
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; the cache is shared like any other folder
        try:
            build(tmp)
            (tmp / COMPLETE).write_text("ok\n")
            if target.exists():  # an incomplete leftover
                shutil.rmtree(target)
            os.rename(tmp, target)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return target
