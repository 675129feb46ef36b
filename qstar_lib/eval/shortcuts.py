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
  candidate tokens.

A fifth rule, ``context_mismatch`` (:data:`ROLE_READERS`), does what the benchmark asks by string matching:
it compares the words before each summary value with the words before that value in the post. It is not a
shortcut around reading roles but a reader of roles without a model, so it is held to no bound; the chapter
reports it beside the DPO reward as the level a string reader reaches.

Scores follow :mod:`qstar_lib.eval.credit` (one per token of the rejected completion, lower = more
suspicious), so :func:`qstar_lib.eval.credit_tables.credit_table` reads them like the DPO reward;
:func:`shortcut_audit` builds the table straight from records and a tokenizer. The book's test asserts that on
in-post swaps of the test split every row stays at per-record AUROC <= 0.60 (``tests/test_shortcuts.py``).
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Mapping, Sequence

import numpy as np

__all__ = [
    "FEATURES",
    "ROLE_READERS",
    "SHORTCUTS",
    "context_mismatch",
    "fit_surface_lr",
    "shortcut_audit",
    "shortcut_scores",
    "token_features",
]

SHORTCUTS = ("absent_from_post", "repeated_value", "seen_in_train_rejects", "surface_lr")
#: A rule that *reads roles*: it is the task solved by string matching, not a shortcut around it, so the
#: 0.60 bound does not apply to it; the DPO reward is compared with it instead (:func:`context_mismatch`).
ROLE_READERS = ("context_mismatch",)
CONTEXT_WINDOW = 3  # content words before a value that say which role it plays ("offered 38k")
_STOP = frozenset(
    "a an the and or but of to in on at for from with by is was are were be been it its this that my our "
    "i we he she they his her their me us them so as than then just about".split()
)
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


def fit_surface_lr(train_records: Sequence[Mapping], tokenizer, *, l2: float = 1e-3, iters: int = 25) -> np.ndarray:
    """Weights (bias first, then :data:`FEATURES`) of a logistic regression of "this token is a planted
    error" on the surface features, fitted by Newton's method on the training split's *candidate* tokens
    (those the metric compares: the values of the error's type, every token for a claim)."""
    from qstar_lib.lm.collate import planted_labels

    rows = [planted_labels(r, tokenizer) for r in train_records]
    keep = [  # the tokens a localiser chooses among (the metric's candidates), where it is scored
        np.logical_or.reduce([np.asarray(c, bool) for c in row["rejected_candidates"]])
        if row["rejected_candidates"]
        else np.zeros(len(row["rejected_labels"]), bool)
        for row in rows
    ]
    X = np.concatenate([token_features(r, tokenizer)[k] for r, k in zip(train_records, keep)])  # (N, 5)
    y = np.concatenate([np.asarray(row["rejected_labels"], float)[k] for row, k in zip(rows, keep)])  # (N,)
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


def _contexts(text: str) -> dict[str, set[str]]:
    """Each value-like word of ``text`` (normalised: "$45,000" and "45k" are one value) -> the content words
    in the :data:`CONTEXT_WINDOW` words before any of its occurrences."""
    from qstar_lib.data import normalise_number

    words = [w for *_, w in _words(text)]
    out: dict[str, set[str]] = {}
    for i, w in enumerate(words):
        if _value_like(w):
            key = str(normalise_number(w) or w.lower())
            before = [x.lower() for x in words[max(0, i - CONTEXT_WINDOW) : i]]
            out.setdefault(key, set()).update(x for x in before if x.isalpha() and x not in _STOP)
    return out


def context_mismatch(record: Mapping, tokenizer) -> np.ndarray:
    """A string rule that reads roles: a value of the summary whose preceding content words do not occur
    before that value anywhere in the post is suspicious (score = minus the share of its summary context
    words the post's contexts lack; -1 for a value absent from the post, 0 for other tokens). It finds
    swaps without a model because the synthetic posts state each role with cue words near the value."""
    from qstar_lib.data import normalise_number

    post = _contexts(record["prompt"])
    summary_words = [w for *_, w in _words(record["rejected"])]
    ctx_of: dict[str, float] = {}
    for i, w in enumerate(summary_words):
        if _value_like(w):
            key = str(normalise_number(w) or w.lower())
            before = {x.lower() for x in summary_words[max(0, i - CONTEXT_WINDOW) : i]}
            before = {x for x in before if x.isalpha() and x not in _STOP}
            if key not in post:
                ctx_of[w] = -1.0
            else:
                ctx_of[w] = -len(before - post[key]) / max(len(before), 1)
    return np.array([ctx_of.get(w, 0.0) if w is not None else 0.0 for w in token_words(record["rejected"], tokenizer)])


def shortcut_scores(
    records: Sequence[Mapping], tokenizer, train_records: Sequence[Mapping]
) -> dict[str, list[np.ndarray]]:
    """The :data:`SHORTCUTS` scores of every record's rejected completion (lower = more suspicious); the
    fitted ones (``seen_in_train_rejects``, ``surface_lr``) learn from ``train_records`` only."""
    if not train_records:
        raise ValueError("shortcut_scores: train_records is empty; the fitted baselines need the training split")
    w = fit_surface_lr(train_records, tokenizer)
    seen = _seen_reject_words(train_records)
    out: dict[str, list[np.ndarray]] = {name: [] for name in SHORTCUTS + ROLE_READERS}
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
        out["context_mismatch"].append(context_mismatch(r, tokenizer))
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
    """The credit table (:func:`qstar_lib.eval.credit_tables.credit_table`) of the no-model baselines on
    ``records``, beside the ``random`` and ``uniform_share`` chance rows, with no model anywhere."""
    from qstar_lib.eval.baselines import random_scores
    from qstar_lib.eval.credit_tables import TABLE_KINDS, credit_table, credit_targets
    from qstar_lib.lm.collate import planted_labels

    targets = credit_targets([planted_labels(r, tokenizer) for r in records])
    methods = shortcut_scores(records, tokenizer, train_records)
    methods["random"] = random_scores(methods["surface_lr"])
    methods["uniform_share"] = [np.zeros(len(s)) for s in methods["surface_lr"]]
    return credit_table(
        methods, targets, kinds=kinds or TABLE_KINDS, n_boot=n_boot, reference="surface_lr", subset=subset
    )
