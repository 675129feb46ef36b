"""Preference records: validation at every entry point, span -> token labels, and writing them out.

Records are plain dicts in TRL's preference format (``prompt``/``chosen``/``rejected``), so they go
straight into TRL or into :mod:`qstar_lib.lm.collate`. Synthetic records also carry their ground truth:
``errors`` (character spans of the planted errors in ``rejected``), ``facts`` and ``post_values``, which
is what turns the paper's qualitative Fig. 1 into a measurement of credit assignment.

This module knows nothing about models; a tokenizer is only used to map character spans to tokens
(:func:`token_labels`) and to check prompt lengths (:func:`validate_records`).
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from qstar_lib.data.synthetic import (
    ERROR_KINDS,
    LOCALISED_KINDS,
    NONLOCAL_KINDS,
    generate,
)

__all__ = [
    "DropReport",
    "RecordError",
    "synthetic_tldr",
    "to_hf_dataset",
    "token_labels",
    "validate_records",
    "write_jsonl",
]

log = logging.getLogger(__name__)

REQUIRED = ("prompt", "chosen", "rejected")


# ---------------------------------------------------------------------------------------------------
# The synthetic set
# ---------------------------------------------------------------------------------------------------
def synthetic_tldr(
    n: int,
    seed: int = 0,
    split: str = "train",
    *,
    kinds: Sequence[str] | dict[str, float] | None = None,
    families: Sequence[str] | None = None,
) -> list[dict]:
    """``n`` synthetic TL;DR preference pairs with planted errors, deterministic in ``(seed, split)``.

    Splits ``train``/``validation``/``test`` never share a prompt, whatever the seeds: a prompt of the
    training families and templates belongs to the split a hash of its text says, and held-out families
    and templates appear in the test split only.

    ``kinds`` chooses the pair kinds (names from :data:`ERROR_MIX`: ``in_post_swap``,
    ``absent_value``, ``inserted_claim``, ``two_errors``, ``omission``, ``verbosity``), as a list (the
    documented shares renormalised over those kinds) or a dict of weights; default :data:`ERROR_MIX`.
    Counts follow the shares exactly (largest remainder), not by chance. ``families`` restricts topics
    (names in :data:`FAMILIES`). Speed: 20,000 pairs take about 4 s of CPU time.

    Each record: ``version`` (:data:`qstar_lib.data.synthetic.DATA_VERSION`), ``id``, ``prompt`` (TRL TL;DR
    layout, ending ``"TL;DR:"``), ``chosen`` and ``rejected`` (each with one leading space), ``errors`` (list
    of ``{kind, start, end, slot, true, planted}``; offsets into ``rejected``, ``start`` at the first character
    that differs from the true value; ``omission``/``verbosity`` entries have ``start == end == -1``),
    ``n_errors`` (localised errors: 0, 1 or 2), ``kind`` (the pair kind), ``family``, ``facts`` (slot ->
    value as the chosen summary states it), ``post_values`` (role -> value as the post writes it),
    ``rejected_values`` (``{slot, type, start, end}`` of every value the rejected summary writes),
    ``heldout_family`` / ``heldout_template`` (the test split's records from a family, or with a post or
    summary template, that no other split uses) and ``templates`` (the title, post and summary indices).

    Data v2 (what makes the benchmark one a string rule cannot pass): an in-post swap takes a value of the
    post that the summary does not already write; an absent value is the same slot of a fresh draw of the
    family's sampler (the distribution of the true values); inserted claims come from disjoint lists per
    split; the test split holds out whole families (:data:`qstar_lib.data.synthetic.HELDOUT_FAMILIES`, half
    its records) and the last 30% of every family's post and summary templates.
    """
    return generate(n, seed=seed, split=split, kinds=kinds, families=families)


# ---------------------------------------------------------------------------------------------------
# Character spans -> token labels
# ---------------------------------------------------------------------------------------------------
def _span_pairs(spans: Iterable[Any]) -> list[tuple[int, int]]:
    out = []
    for i, sp in enumerate(spans):
        start, end = (sp["start"], sp["end"]) if isinstance(sp, dict) else sp
        if start < 0 or end < 0:
            continue  # non-localised difference (omission, verbosity): no span
        if end < start:
            raise ValueError(f"span {i}: end {end} < start {start}")
        out.append((int(start), int(end)))
    return out


def token_labels(completion: str, spans: Sequence[tuple[int, int]] | Sequence[dict], tokenizer) -> list[int]:
    """1 for each token of ``tokenizer(completion, add_special_tokens=False)`` that shows part of a span.

    The rule: a token is labelled iff at least one *non-whitespace* character inside its character
    offsets lies inside a span ``[start, end)``. Byte-level BPE glues the preceding space to a token
    (SmolLM2 writes " 250k" as " 2", "5", "0", "k"), so a token like " was" right before a span, whose
    only contact with the span would be its space, is not labelled; " 2" in that example is, because its
    digit is in the span. ``spans`` are ``(start, end)`` pairs or error dicts (entries with ``start < 0``
    are skipped). Needs a fast tokenizer (``return_offsets_mapping``). Returns a list as long as the
    tokenisation.
    """
    pairs = _span_pairs(spans)
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError("token_labels needs a fast (Rust) tokenizer: it reads return_offsets_mapping")
    enc = tokenizer(completion, add_special_tokens=False, return_offsets_mapping=True)
    inside = [False] * len(completion)  # character i is a non-space character inside some span
    for start, end in pairs:
        for i in range(max(start, 0), min(end, len(completion))):
            inside[i] = not completion[i].isspace()
    return [int(any(inside[a:b])) for a, b in enc["offset_mapping"]]


# ---------------------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------------------
class RecordError(ValueError):
    """A malformed preference record. ``index``, ``record_id``, ``field`` and ``reason`` say which and why."""

    def __init__(self, index: int, field: str, problem: str, reason: str, record_id: Any = None):
        where = f"record {index}" + (f" (id {record_id})" if record_id is not None else "")
        super().__init__(f"{where}: field {field!r} {problem}")
        self.index, self.field, self.reason, self.record_id = index, field, reason, record_id


@dataclass
class DropReport:
    """What ``validate_records(..., drop_invalid=True)`` removed: counts by reason and every message."""

    n_total: int = 0
    n_kept: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    dropped: list[tuple[int, Any, str]] = field(default_factory=list)  # (index, id, message)

    @property
    def n_dropped(self) -> int:
        return self.n_total - self.n_kept

    @property
    def indices(self) -> list[int]:
        return [i for i, _, _ in self.dropped]

    def __str__(self) -> str:
        reasons = ", ".join(f"{k}: {v}" for k, v in sorted(self.counts.items())) or "none"
        return f"dropped {self.n_dropped} of {self.n_total} records ({reasons})"


def _check_errors(i: int, rid: Any, rec: dict) -> None:
    errors = rec["errors"]
    if not isinstance(errors, list):
        raise RecordError(i, "errors", f"is not a list (got {type(errors).__name__})", "bad_span", rid)
    rejected = rec["rejected"]
    n_loc = 0
    for j, err in enumerate(errors):
        name = f"errors[{j}]"
        if not isinstance(err, dict) or not {"kind", "start", "end"} <= set(err):
            raise RecordError(i, name, "needs keys 'kind', 'start', 'end'", "bad_span", rid)
        kind, start, end = err["kind"], err["start"], err["end"]
        if kind not in ERROR_KINDS:
            raise RecordError(i, name, f"has unknown kind {kind!r} (known: {', '.join(ERROR_KINDS)})", "bad_span", rid)
        if not isinstance(start, int) or not isinstance(end, int):
            raise RecordError(i, name, "has non-integer start/end", "bad_span", rid)
        if kind in NONLOCAL_KINDS and start == end == -1:
            continue
        if kind in LOCALISED_KINDS:
            n_loc += 1
        if not 0 <= start < end <= len(rejected):
            raise RecordError(
                i, name, f"span {start}:{end} is outside 'rejected' (length {len(rejected)})", "bad_span", rid
            )
        planted = err.get("planted")
        if isinstance(planted, str) and planted and not planted.endswith(rejected[start:end]):
            raise RecordError(
                i,
                name,
                f"span text {rejected[start:end]!r} is not the end of the planted value {planted!r}",
                "bad_span",
                rid,
            )
    if "n_errors" in rec and rec["n_errors"] != n_loc:
        raise RecordError(
            i, "n_errors", f"is {rec['n_errors']} but 'errors' has {n_loc} localised errors", "bad_span", rid
        )


def _prompt_room(
    i: int,
    rid: Any,
    prompt: str,
    tokenizer,
    max_length: int | None,
    max_prompt_length: int | None,
    max_prompt_tokens: int | None,
) -> None:
    """The prompt must leave at least one completion token inside ``max_length`` without being cut.

    A prompt that fills the whole budget would be cut from the left by :func:`qstar_lib.lm.collate.encode_completion`
    down to ``max_length - 1`` tokens: a different post than the record's, and a completion of one token.
    Cutting is accepted only when the caller asked for it with ``max_prompt_length``.
    """
    n_tok = len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    if n_tok == 0:
        raise RecordError(i, "prompt", "tokenises to 0 tokens", "empty", rid)
    if max_prompt_tokens is not None and n_tok > max_prompt_tokens:
        raise RecordError(
            i, "prompt", f"has {n_tok} tokens, more than max_prompt_tokens={max_prompt_tokens}", "too_long", rid
        )
    if max_length is not None:
        kept = n_tok if max_prompt_length is None else min(n_tok, max_prompt_length)
        if kept >= max_length:
            raise RecordError(
                i,
                "prompt",
                f"has {n_tok} tokens and leaves no room for a completion token within "
                f"max_length={max_length} (raise max_length, or set max_prompt_length to cut prompts)",
                "too_long",
                rid,
            )


def _check_record(
    i: int,
    rec: Any,
    tokenizer,
    max_prompt_tokens: int | None,
    seen_ids: dict,
    fields: Sequence[str] = REQUIRED,
    max_length: int | None = None,
    max_prompt_length: int | None = None,
) -> None:
    if not isinstance(rec, dict):
        raise RecordError(i, "<record>", f"is not a dict (got {type(rec).__name__})", "not_dict")
    rid = rec.get("id")
    for key in fields:
        if key not in rec:
            raise RecordError(i, key, "is missing", "missing", rid)
        if not isinstance(rec[key], str):
            raise RecordError(i, key, f"is not a string (got {type(rec[key]).__name__})", "not_string", rid)
        if not rec[key].strip():
            raise RecordError(i, key, "is empty", "empty", rid)
    if "chosen" in fields and "rejected" in fields and rec["chosen"] == rec["rejected"]:
        raise RecordError(i, "rejected", "is identical to 'chosen'", "identical", rid)
    if rid is not None:
        if not isinstance(rid, (str, int)) or isinstance(rid, bool):
            raise RecordError(i, "id", f"must be a string or an integer (got {type(rid).__name__})", "bad_id", rid)
        if rid in seen_ids:
            raise RecordError(i, "id", f"repeats the id of record {seen_ids[rid]}", "duplicate_id", rid)
        seen_ids[rid] = i
    if tokenizer is not None and (max_prompt_tokens is not None or max_length is not None):
        _prompt_room(i, rid, rec["prompt"], tokenizer, max_length, max_prompt_length, max_prompt_tokens)
    if "errors" in rec and "rejected" in rec:
        _check_errors(i, rid, rec)


def validate_records(
    records: Sequence[dict],
    *,
    tokenizer=None,
    max_prompt_tokens: int | None = None,
    max_length: int | None = None,
    max_prompt_length: int | None = None,
    fields: Sequence[str] = REQUIRED,
    drop_invalid: bool = False,
):
    """Check preference records; raise :class:`RecordError` naming the record and the field.

    Checks: the record is a dict; each of ``fields`` (``prompt``/``chosen``/``rejected`` by default; SFT
    needs only the prompt and its completion field) exists, is a string and is not empty after stripping;
    ``chosen != rejected``; ids (when present) are strings or integers and unique; with a tokenizer, the
    prompt has tokens, fits in ``max_prompt_tokens``, and leaves room for a completion token within
    ``max_length`` (unless ``max_prompt_length`` asks for prompts to be cut); and for records with
    ``errors``, every span lies inside ``rejected``, ends the planted value, and ``n_errors`` counts the
    localised ones.

    Every entry point that takes records (training, scoring, the command line, the experiment pipeline)
    calls this before any work, so a bad record fails in a second, not after the reference pass.

    Default: returns ``records`` (the same list) when all are valid, else raises on the first bad one.
    With ``drop_invalid=True`` returns ``(kept, report)``: the valid records and a :class:`DropReport`
    (counts by reason, indices, messages), which is also issued as a ``UserWarning`` and logged when
    anything was dropped. Nothing is dropped silently.
    """
    if isinstance(records, (str, bytes, Mapping)) or not hasattr(records, "__len__"):
        raise TypeError(f"records must be a list of dicts, got {type(records).__name__}")
    seen_ids: dict = {}
    check = dict(fields=tuple(fields), max_length=max_length, max_prompt_length=max_prompt_length)
    if not drop_invalid:
        for i, rec in enumerate(records):
            _check_record(i, rec, tokenizer, max_prompt_tokens, seen_ids, **check)
        return records
    kept, report = [], DropReport(n_total=len(records))
    counts: Counter = Counter()
    for i, rec in enumerate(records):
        try:
            _check_record(i, rec, tokenizer, max_prompt_tokens, seen_ids, **check)
        except RecordError as err:
            counts[err.reason] += 1
            report.dropped.append((i, err.record_id, str(err)))
            continue
        kept.append(rec)
    report.n_kept, report.counts = len(kept), dict(counts)
    if report.dropped:
        msg = f"validate_records: {report}; first: {report.dropped[0][2]}"
        warnings.warn(msg, UserWarning, stacklevel=2)
        log.warning(msg)
    return kept, report


# ---------------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------------
def write_jsonl(records: Iterable[dict], path: str) -> str:
    """Write one JSON object per line (UTF-8); create the folder if needed. Returns ``path``."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for rec in records:
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
    return path


JSON_COLUMNS = ("facts", "post_values")


def to_hf_dataset(records: Sequence[dict]):
    """A ``datasets.Dataset`` of the records (TRL's DPOTrainer reads prompt/chosen/rejected from it).

    ``facts`` and ``post_values`` have different keys in every topic family; Arrow would turn them
    into one wide struct full of nulls, so they are stored as JSON strings (``json.loads`` them back).
    ``errors`` stays a list of structs.
    """
    import datasets

    rows = [
        {k: (json.dumps(v) if k in JSON_COLUMNS and isinstance(v, dict) else v) for k, v in r.items()} for r in records
    ]
    return datasets.Dataset.from_list(rows)
