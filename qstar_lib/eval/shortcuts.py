"""The shortcut audit: no-model baselines that try to find the planted errors by the text's surface alone.

An experiment that a string rule can pass says nothing about the model. Before the chapter trusts the DPO
reward's localisation it scores, like any method, four localisers that read no model:

- ``absent_from_post``: a token whose word does not occur in the post is suspicious (it finds absent values
  and inserted claims by construction, so their columns are not a test of preference learning);
- ``repeated_value``: a value-like word (a digit or a capital letter) written twice in the summary (in data v1
  the swapped-in value was usually already in the summary: this rule beat the DPO reward there);
- ``seen_in_train_rejects``: a word that the training split's planted errors use and its chosen summaries do
  not (inserted claims whose phrases reappear in the test split);
- ``surface_lr``: a logistic regression on surface features of each token (:data:`FEATURES`: a digit,
  capitalised, relative position, repeated in the summary, in the post), fitted on the training split's
  token labels.

Scores follow :mod:`qstar_lib.eval.credit` (one per token of the rejected completion, lower = more
suspicious), so :func:`qstar_lib.eval.credit_table.credit_table` reads them like the DPO reward;
:func:`shortcut_audit` builds the table straight from records and a tokenizer. The book's test asserts that on
in-post swaps of the test split every row stays at per-record AUROC <= 0.60 (``tests/test_shortcuts.py``).
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Mapping, Sequence

import numpy as np

__all__ = ["FEATURES", "SHORTCUTS", "fit_surface_lr", "shortcut_audit", "shortcut_scores", "token_features"]

SHORTCUTS = ("absent_from_post", "repeated_value", "seen_in_train_rejects", "surface_lr")
FEATURES = ("digit", "capitalised", "position", "repeated", "in_post")
_WORD = re.compile(r"[A-Za-z0-9]+(?:[,.'&-][A-Za-z0-9]+)*")


def _words(text: str) -> list[tuple[int, int, str]]:
    return [(m.start(), m.end(), m.group()) for m in _WORD.finditer(text)]


def token_words(text: str, tokenizer) -> list[str | None]:
    """For each token of ``tokenizer(text, add_special_tokens=False)``, the word its first letter or digit
    belongs to (``"1,050"``, ``"Denver"``), or None for a token of spaces and punctuation only."""
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    words = _words(text)
    starts = [w[0] for w in words]
    out: list[str | None] = []
    for a, b in enc["offset_mapping"]:
        pos = next((i for i in range(a, b) if text[i].isalnum()), None)
        j = bisect.bisect_right(starts, pos) - 1 if pos is not None else -1
        out.append(words[j][2] if j >= 0 and words[j][0] <= pos < words[j][1] else None)
    return out


def _value_like(word: str) -> bool:
    return any(c.isdigit() for c in word) or word[0].isupper()


def token_features(record: Mapping, tokenizer) -> np.ndarray:
    """(T, 5) surface features of the rejected completion's tokens, in :data:`FEATURES` order."""
    words = token_words(record["rejected"], tokenizer)
    post = {w.lower() for *_, w in _words(record["prompt"])}
    counts: dict[str, int] = {}
    for *_, w in _words(record["rejected"]):
        counts[w.lower()] = counts.get(w.lower(), 0) + 1
    T = len(words)
    rows = [
        [
            float(w is not None and any(c.isdigit() for c in w)),
            float(w is not None and w[0].isupper()),
            i / max(T - 1, 1),
            float(w is not None and counts.get(w.lower(), 0) >= 2),
            float(w is not None and w.lower() in post),
        ]
        for i, w in enumerate(words)
    ]
    return np.asarray(rows, dtype=np.float64).reshape(T, len(FEATURES))  # (T, 5)


def _labels(records: Sequence[Mapping], tokenizer) -> list[np.ndarray]:
    from qstar_lib.lm.collate import planted_labels

    return [np.asarray(planted_labels(r, tokenizer)["rejected_labels"], dtype=np.float64) for r in records]


def fit_surface_lr(train_records: Sequence[Mapping], tokenizer, *, l2: float = 1e-3, iters: int = 25) -> np.ndarray:
    """Weights (bias first, then :data:`FEATURES`) of a logistic regression of "this token is a planted
    error" on the surface features, fitted by Newton's method on the training split's tokens."""
    X = np.concatenate([token_features(r, tokenizer) for r in train_records])  # (N, 5)
    y = np.concatenate(_labels(train_records, tokenizer))  # (N,)
    X = np.hstack([np.ones((len(X), 1)), X])  # (N, 6)
    w = np.zeros(X.shape[1])
    for _ in range(iters):
        p = 1.0 / (1.0 + np.exp(-X @ w))  # (N,)
        H = (X * (p * (1 - p))[:, None]).T @ X + l2 * np.eye(len(w))  # (6, 6)
        step = np.linalg.solve(H, X.T @ (p - y) + l2 * w)
        w -= step
        if np.abs(step).max() < 1e-10:
            break
    return w


def _seen_reject_words(train_records: Sequence[Mapping]) -> set[str]:
    planted = {w.lower() for r in train_records for e in r["errors"] for *_, w in _words(e.get("planted", ""))}
    chosen = {w.lower() for r in train_records for *_, w in _words(r["chosen"])}
    return planted - chosen


def shortcut_scores(
    records: Sequence[Mapping], tokenizer, train_records: Sequence[Mapping]
) -> dict[str, list[np.ndarray]]:
    """The :data:`SHORTCUTS` scores of every record's rejected completion (lower = more suspicious); the
    fitted ones (``seen_in_train_rejects``, ``surface_lr``) learn from ``train_records`` only."""
    if not train_records:
        raise ValueError("shortcut_scores: train_records is empty; the fitted baselines need the training split")
    w = fit_surface_lr(train_records, tokenizer)
    seen = _seen_reject_words(train_records)
    out: dict[str, list[np.ndarray]] = {name: [] for name in SHORTCUTS}
    for r in records:
        words = token_words(r["rejected"], tokenizer)
        F = token_features(r, tokenizer)  # (T, 5)
        counts: dict[str, int] = {}
        for *_, x in _words(r["rejected"]):
            counts[x] = counts.get(x, 0) + 1
        out["absent_from_post"].append(-(1.0 - F[:, 4]) * np.array([x is not None for x in words]))
        out["repeated_value"].append(
            -np.array([float(x is not None and _value_like(x) and counts[x] >= 2) for x in words])
        )
        out["seen_in_train_rejects"].append(-np.array([float(x is not None and x.lower() in seen) for x in words]))
        out["surface_lr"].append(-(F @ w[1:] + w[0]))
    return out


def shortcut_audit(
    records: Sequence[Mapping],
    tokenizer,
    train_records: Sequence[Mapping],
    *,
    n_boot: int = 0,
    kinds: Sequence[str] | None = None,
    subset: str | None = None,
):
    """The credit table (:func:`qstar_lib.eval.credit_table.credit_table`) of the no-model baselines on
    ``records``, beside the ``random`` and ``uniform_share`` chance rows, with no model anywhere."""
    from qstar_lib.eval.baselines import random_scores
    from qstar_lib.eval.credit_table import TABLE_KINDS, credit_table, credit_targets
    from qstar_lib.lm.collate import planted_labels

    targets = credit_targets([planted_labels(r, tokenizer) for r in records])
    methods = shortcut_scores(records, tokenizer, train_records)
    methods["random"] = random_scores(methods["surface_lr"])
    methods["uniform_share"] = [np.zeros(len(s)) for s in methods["surface_lr"]]
    return credit_table(
        methods, targets, kinds=kinds or TABLE_KINDS, n_boot=n_boot, reference="surface_lr", subset=subset
    )
