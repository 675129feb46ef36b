"""The paper's data: Reddit TL;DR preference pairs from ``trl-lib/tldr-preference`` (hub) or a local copy.

CNN/DailyMail rows of the hub's validation split are removed (loudly): the paper's TL;DR experiments are
Reddit posts only. Without a network, :func:`load_tldr_preference` says to use the synthetic set or a
local file. It knows nothing about models.
"""

from __future__ import annotations

import json
import logging
import os
import warnings

from qstar_lib.data.records import validate_records

log = logging.getLogger(__name__)

HUB_DATASET = "trl-lib/tldr-preference"
HUB_SPLITS = ("train", "validation")  # the hub set has no test split
REDDIT_PREFIX = "SUBREDDIT:"


def _read_local(path: str) -> list[dict]:
    if not os.path.exists(path):
        raise FileNotFoundError(f"load_tldr_preference: no file at path={path!r}")
    if path.endswith(".jsonl") or path.endswith(".json"):
        with open(path, encoding="utf-8") as f:
            rows = []
            for line_no, line in enumerate(f, 1):
                if line.strip():
                    try:
                        rows.append(json.loads(line))
                    except json.JSONDecodeError as err:
                        raise ValueError(f"{path}: line {line_no} is not JSON ({err.msg})") from err
            return rows
    if path.endswith(".parquet"):
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    raise ValueError(f"load_tldr_preference: path={path!r} must end in .jsonl or .parquet")


def _read_hub(split: str) -> list[dict]:
    if split not in HUB_SPLITS:
        raise ValueError(f"split={split!r}: {HUB_DATASET} has the splits {', '.join(HUB_SPLITS)}")
    try:
        import datasets

        ds = datasets.load_dataset(HUB_DATASET, split=split)
    except Exception as err:  # offline, no cache, hub down: say what to use instead
        raise ConnectionError(
            f"could not load {HUB_DATASET!r} (split {split!r}) from the Hugging Face hub: "
            f"{type(err).__name__}: {err}. Offline, use qstar_lib.data.synthetic_tldr(n) (the offline default), "
            f"or pass path= to a local .jsonl/.parquet file with prompt/chosen/rejected columns."
        ) from err
    return [dict(row) for row in ds]


def load_tldr_preference(
    split: str = "train", *, n: int | None = None, path: str | None = None, reddit_only: bool = True
) -> list[dict]:
    """Reddit TL;DR preference pairs (prompt/chosen/rejected), from a local file or from the hub.

    With ``path`` (a ``.jsonl`` or ``.parquet`` file in the schema of ``trl-lib/tldr-preference``)
    the file is read; without it, ``datasets.load_dataset("trl-lib/tldr-preference", split=split)``.
    Offline that raises a ``ConnectionError`` naming the offline default, :func:`synthetic_tldr`.

    The hub's validation split mixes in CNN/DailyMail rows (about 2.3k of its 86.1k; TRL's
    ``trl-internal-testing/tldr-preference-trl-style`` keeps them apart as ``validation_cnndm``). Their
    prompts are written ``"Article:\\n...\\n\\nTL;DR:"`` while every Reddit prompt starts with
    ``"SUBREDDIT:"``, so with ``reddit_only`` (default) rows whose prompt does not start with
    ``"SUBREDDIT:"`` are removed, and how many is reported in a warning. Then the first ``n`` rows are
    kept, an ``id`` (``f"{split}-{i:06d}"``) is added where missing, and :func:`validate_records` runs
    with ``drop_invalid=True`` (dropped rows are reported in a warning, never silently).
    """
    rows = _read_local(path) if path is not None else _read_hub(split)
    if reddit_only:
        kept = [r for r in rows if isinstance(r.get("prompt"), str) and r["prompt"].startswith(REDDIT_PREFIX)]
        if len(kept) < len(rows):
            msg = (
                f"load_tldr_preference: removed {len(rows) - len(kept)} of {len(rows)} rows whose prompt does "
                f"not start with {REDDIT_PREFIX!r} (CNN/DailyMail articles)"
            )
            warnings.warn(msg, UserWarning, stacklevel=2)
            log.warning(msg)
        rows = kept
    if n is not None:
        rows = rows[:n]
    for i, r in enumerate(rows):
        r.setdefault("id", f"{split}-{i:06d}")
    kept, _ = validate_records(rows, drop_invalid=True)
    return kept
