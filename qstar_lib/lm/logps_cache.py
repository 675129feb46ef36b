"""Per-token log-probs of preference pairs, computed once per model and data and kept on disk.

Chapter 5 scores the same evaluation pairs with the SFT model (the reference and the surprisal baseline), the
base model, the DPO policy and the control runs, at several checkpoints; a rebuild after a change elsewhere
would compute every one of them again. :func:`cached_pair_logps` keys the output of
:func:`qstar_lib.lm.logps.pair_logps` on what determines it -- a digest of the model's weights
(:func:`weights_digest`), of the records (:func:`records_digest`), the tokenizer, the lengths and the source
of the modules that compute them (:data:`SOURCES`) -- and stores it as gzipped JSON under ``cache_dir()/logps``. Data, not pickles: the file holds lists
of numbers and ids, and a file that does not parse is computed again.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import tempfile
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

#: How many times :func:`cached_pair_logps` had to compute (tests and benchmarks read it).
COMPUTED = {"count": 0}
#: Bump when :func:`qstar_lib.lm.logps.pair_logps` changes what it returns.
FORMAT_VERSION = 1


def weights_digest(model) -> str:
    """blake2b (16 hex digits) over the names, dtypes, shapes and bytes of ``model.state_dict()``: two models
    with equal weights share it whatever folder they came from; one changed weight changes it."""
    h = hashlib.blake2b(digest_size=8)
    for name, tensor in model.state_dict().items():
        t = tensor.detach().to("cpu").contiguous().reshape(-1)  # (numel,)
        h.update(f"{name}:{t.dtype}:{tuple(tensor.shape)};".encode())
        h.update(t.view(torch.uint8).numpy())  # the raw bytes, any dtype
    return h.hexdigest()


def records_digest(records: Sequence[Mapping]) -> str:
    """blake2b (16 hex digits) over the prompt, chosen and rejected text of every record, in order."""
    h = hashlib.blake2b(digest_size=8)
    for r in records:
        h.update(json.dumps([r.get("prompt"), r.get("chosen"), r.get("rejected")]).encode() + b"\n")
    return h.hexdigest()


def _tokenizer_digest(tokenizer) -> str:
    """The vocabulary, the full tokenizer definition where the fast backend has one (merges, normaliser,
    pre-tokenizer) and the EOS id (appended to every completion)."""
    h = hashlib.blake2b(digest_size=8)
    h.update(json.dumps(sorted(tokenizer.get_vocab().items())).encode())
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        h.update(backend.to_str().encode())
    h.update(f"eos={tokenizer.eos_token_id};pad={getattr(tokenizer, 'pad_token_id', None)}".encode())
    return h.hexdigest()


#: The modules whose code decides what :func:`qstar_lib.lm.logps.pair_logps` returns: their source is part of
#: the key, so a change to the encoding, truncation or scoring code never reads an old file.
SOURCES = ("lm/logps.py", "lm/collate.py", "data/records.py")


def _source_digest() -> str:
    root = Path(__file__).resolve().parents[1]  # qstar_lib/
    h = hashlib.blake2b(digest_size=8)
    for name in SOURCES:
        h.update(name.encode() + b"\0" + (root / name).read_bytes())
    return h.hexdigest()


def cache_key(model, tokenizer, records: Sequence[Mapping], max_length: int, max_prompt_length: int | None) -> str:
    """The file name of one :func:`cached_pair_logps` entry (without the folder)."""
    parts = [weights_digest(model), records_digest(records), _tokenizer_digest(tokenizer)]
    parts += [str(max_length), str(max_prompt_length), f"v{FORMAT_VERSION}", _source_digest()]
    return hashlib.blake2b("-".join(parts).encode(), digest_size=10).hexdigest() + ".json.gz"


def cached_pair_logps(
    model,
    tokenizer,
    records: Sequence[Mapping],
    batch_size: int = 8,
    max_length: int = 512,
    max_prompt_length: int | None = None,
    progress: bool = True,
    cache_dir: str | os.PathLike | None = None,
) -> list[dict]:
    """:func:`qstar_lib.lm.logps.pair_logps`, read from disk when this model, these records and lengths were
    scored before (``cache_dir``, default ``qstar_lib.scale.cache_dir()/logps``), else computed and written.

    The batch size and prompt sharing do not change the values (tested in ``tests/test_logps.py``), so they
    are not part of the key."""
    from qstar_lib import scale
    from qstar_lib.lm.logps import pair_logps

    folder = Path(cache_dir) if cache_dir is not None else Path(scale.cache_dir()) / "logps"
    path = folder / cache_key(model, tokenizer, records, max_length, max_prompt_length)
    if path.exists():
        try:
            with gzip.open(path, "rt", encoding="utf-8") as f:
                rows = json.load(f)
            if isinstance(rows, list) and len(rows) == len(records):
                return rows
        except (OSError, ValueError, EOFError, zlib.error):
            pass  # unreadable: compute again below
    rows = pair_logps(
        model, tokenizer, records, batch_size=batch_size, max_length=max_length,
        max_prompt_length=max_prompt_length, progress=progress,
    )  # fmt: skip
    COMPUTED["count"] += 1
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", dir=folder)
    try:
        with os.fdopen(fd, "wb") as raw, gzip.open(raw, "wt", encoding="utf-8") as f:
            json.dump(rows, f)
        os.replace(tmp, path)  # atomic: a reader sees the old state or the whole file
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return rows


def cached_score_pairs(
    model,
    tokenizer,
    records: Sequence[Mapping],
    beta: float,
    ref_scores: Sequence[Mapping],
    max_length: int = 512,
    max_prompt_length: int | None = None,
    cache_dir: str | os.PathLike | None = None,
    **kw,
) -> list[dict]:
    """:func:`qstar_lib.lm.logps.score_pairs` of ``model`` against the reference rows ``ref_scores``, with the
    model's log-probs from :func:`cached_pair_logps` (``kw``: ``batch_size``, ``progress``)."""
    from qstar_lib.lm.logps import score_pairs

    lengths = dict(max_length=max_length, max_prompt_length=max_prompt_length)
    rows = cached_pair_logps(model, tokenizer, records, cache_dir=cache_dir, **lengths, **kw)
    return score_pairs(None, None, tokenizer, records, beta, ref_scores=ref_scores, scores=rows, **lengths, **kw)
