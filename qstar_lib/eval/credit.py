"""Credit-assignment metrics: does a per-token score point at the planted errors? (paper Sec. 5.1, Fig. 1)

The paper colours every token of a summary by the implicit reward ``beta * log pi_theta / pi_ref``
(eq. 10/11) and shows one example where the invented tokens come out low. With the synthetic planted-error
set (:func:`qstar_lib.data.synthetic_tldr`) we know which tokens are wrong, so the picture becomes a number.

**Convention, everywhere in this module: lower score = more suspicious.** A per-token score is one float per
token of the *rejected* completion; a good credit assigner gives the planted-error tokens the *lowest*
scores. The DPO reward already points that way (a wrong token should lose reward); surprisal baselines use
``+log pi`` (negative surprisal) so that an unlikely token also gets a low score.

Inputs follow :func:`qstar_lib.lm.logps.score_pairs`: ``row["rejected_rewards"]`` is a list aligned with
``tokenizer(rejected, add_special_tokens=False).input_ids`` followed by the EOS when it was kept. Token
labels come from :func:`qstar_lib.data.token_labels` (one 0/1 per completion token, no EOS), computed once by
:func:`qstar_lib.lm.collate.planted_labels` and carried in the score_pairs row.

**EOS.** When a score list is one longer than the labels, its last entry is the EOS position; it is dropped
before any metric (:func:`align_scores`), so the EOS is neither an error token nor a clean one (it says
"the summary ends here", not anything about a planted value). A score list *shorter* than the labels means
the completion was truncated (``max_length``); that raises instead of silently losing error tokens.

Ties: wherever a metric asks "which token is lowest" and several tokens share the lowest value, the answer
is the expectation under a uniformly random tie-break (exact, not sampled). So a constant score (the
``uniform_share`` baseline, or rewards that are all zero because policy == reference) scores exactly chance:
AUROC 0.5 within a record, top-1 = (labelled tokens) / (tokens).

Everything here is numpy, and no model appears. The scores themselves (the DPO reward and its baselines)
are in :mod:`qstar_lib.eval.baselines`; the table of every method per error kind, with bootstrap intervals,
is in :mod:`qstar_lib.eval.credit_tables`.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = [
    "MIN_BINS",
    "align_scores",
    "auroc",
    "error_token_auroc",
    "pair_accuracy",
    "per_record_auroc",
    "stitching_rate",
    "top1_localisation",
    "where_is_the_minimum",
]

#: Where the lowest-score token lies relative to the planted span(s), see :func:`where_is_the_minimum`.
MIN_BINS = ("before", "inside", "1 after", "2+ after")


# ---------------------------------------------------------------------------------------------------
# Input checking and alignment
# ---------------------------------------------------------------------------------------------------
def _vector(x: Any, name: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return a


def _labels(x: Any, name: str) -> np.ndarray:
    a = np.asarray(x)
    if a.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {a.shape}")
    if a.size and not np.isin(a, (0, 1)).all():
        raise ValueError(f"{name} must hold only 0 and 1")
    return a.astype(bool)


def align_scores(scores: Sequence[float], n_tokens: int, *, record: Any = None) -> np.ndarray:
    """Per-token scores cut to the ``n_tokens`` completion tokens: the EOS entry, if present, is dropped.

    ``len(scores) == n_tokens + 1``: the last entry is the EOS position (as :func:`qstar_lib.lm.logps.score_pairs`
    returns it for an untruncated completion) and is removed. ``len(scores) == n_tokens``: returned as is.
    Anything else raises ``ValueError`` naming ``record``: shorter means the completion was truncated
    (raise ``max_length``), longer means the scores belong to another tokenisation.
    """
    where = f"record {record}: " if record is not None else ""
    s = _vector(scores, f"{where}scores")
    if len(s) == n_tokens + 1:
        return s[:-1]  # drop the EOS position
    if len(s) == n_tokens:
        return s
    if len(s) < n_tokens:
        raise ValueError(
            f"{where}scores has {len(s)} entries for {n_tokens} completion tokens: the completion was "
            f"truncated (use a larger max_length), so error tokens could be missing"
        )
    raise ValueError(
        f"{where}scores has {len(s)} entries for {n_tokens} completion tokens (+1 EOS at most): "
        f"scores and labels come from different tokenisations"
    )


def _pairs(
    records_scores: Sequence, labels: Sequence, *, need_error: bool = False, need_clean: bool = False
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Aligned (scores, labels) per record, checked; optionally require error / clean tokens in each record."""
    if len(records_scores) != len(labels):
        raise ValueError(f"records_scores has {len(records_scores)} records but labels has {len(labels)}")
    if len(labels) == 0:
        raise ValueError("no records given")
    out = []
    for i, (s, lab) in enumerate(zip(records_scores, labels)):
        lab = _labels(lab, f"record {i}: labels")
        s = align_scores(s, len(lab), record=i)
        if need_error and not lab.any():
            raise ValueError(
                f"record {i}: labels has no error token (a non-localised pair?); select records with n_errors >= 1"
            )
        if need_clean and lab.all():
            raise ValueError(
                f"record {i}: every token is labelled as an error; a within-record AUROC needs clean tokens"
            )
        out.append((s, lab))
    return out


# ---------------------------------------------------------------------------------------------------
# AUROC
# ---------------------------------------------------------------------------------------------------
def _average_ranks(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n of ``x`` with tied values sharing their average rank."""
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    upper = np.cumsum(counts)  # the highest rank of each distinct value
    return (upper - (counts - 1) / 2.0)[inverse]


def auroc(scores_pos: Sequence[float], scores_neg: Sequence[float]) -> float:
    """Exact AUROC = P(a positive scores higher than a negative) + 0.5 * P(tie) (Mann-Whitney U / n_pos n_neg).

    Computed from average ranks in O(n log n); equals the mean over all (positive, negative) pairs of
    ``1[p > n] + 0.5 * 1[p == n]``. Here *higher = more positive*; the credit metrics below pass
    *negated* scores because their convention is lower score = more suspicious. 1 = perfect separation,
    0 = perfectly reversed, 0.5 = chance (and exactly 0.5 when all values tie). Raises on an empty class.
    """
    pos, neg = _vector(scores_pos, "scores_pos"), _vector(scores_neg, "scores_neg")
    if len(pos) == 0 or len(neg) == 0:
        raise ValueError(f"auroc needs at least one positive and one negative score (got {len(pos)} and {len(neg)})")
    ranks = _average_ranks(np.concatenate([pos, neg]))
    n_pos, n_neg = len(pos), len(neg)
    u = ranks[:n_pos].sum() - n_pos * (n_pos + 1) / 2.0  # Mann-Whitney U of the positives
    return float(u / (n_pos * n_neg))


def error_token_auroc(
    records_scores: Sequence[Sequence[float]], labels: Sequence[Sequence[int]], *, average: str = "pooled"
) -> float:
    """AUROC of the *negative* per-token score, planted-error tokens (label 1) vs all other response tokens.

    Lower score = more suspicious, so 1.0 means every error token scores below every clean token.
    ``records_scores[i]`` is aligned with the rejected completion's tokens (an EOS entry is dropped, see
    :func:`align_scores`); ``labels[i]`` comes from :func:`qstar_lib.data.token_labels`.

    ``average="pooled"`` (default): all tokens of all records in one AUROC (records without error tokens
    contribute clean tokens only). This also rewards a score whose *scale* differs between records, e.g.
    a whole rejected summary scored low. ``average="per_record"``: the AUROC inside each record, then the
    mean over records (each record needs an error and a clean token, else ``ValueError``); this one only
    asks "which tokens of this summary are worst", and a score that is constant within a record gets
    exactly 0.5.
    """
    if average == "pooled":
        pairs = _pairs(records_scores, labels)
        s = np.concatenate([p[0] for p in pairs])
        lab = np.concatenate([p[1] for p in pairs])
        return auroc(-s[lab], -s[~lab])
    if average == "per_record":
        pairs = _pairs(records_scores, labels, need_error=True, need_clean=True)
        return float(np.mean([auroc(-s[lab], -s[~lab]) for s, lab in pairs]))
    raise ValueError(f"average must be 'pooled' or 'per_record', got {average!r}")


def per_record_auroc(
    records_scores: Sequence[Sequence[float]],
    labels: Sequence[Sequence[int]],
    candidates: Sequence[Sequence[int]] | None = None,
) -> np.ndarray:
    """The AUROC inside each record, error tokens against the record's *other candidate* tokens: (N,) floats.

    ``candidates[i]`` (0/1 per token, default every token) says which tokens a localiser chooses among;
    :func:`qstar_lib.lm.collate.planted_labels` gives, for a wrong value, the tokens of the summary's values of
    the same type (letters and digits only), so the question is "which of these values is wrong" and
    "numbers are suspicious" scores 0.5. Positives are the labelled candidates, negatives the unlabelled
    ones; NaN for a record with no positive or no negative (average with ``np.nanmean``). Lower score = more
    suspicious, as everywhere in this module.
    """
    pairs = _pairs(records_scores, labels)
    if candidates is not None and len(candidates) != len(pairs):
        raise ValueError(f"candidates has {len(candidates)} records but labels has {len(pairs)}")
    out = np.full(len(pairs), np.nan)
    for i, (s, lab) in enumerate(pairs):
        cand = np.ones_like(lab) if candidates is None else _labels(candidates[i], f"record {i}: candidates")
        if len(cand) != len(lab):
            raise ValueError(f"record {i}: candidates has {len(cand)} tokens, labels {len(lab)}")
        pos, neg = cand & lab, cand & ~lab
        if pos.any() and neg.any():
            out[i] = auroc(-s[pos], -s[neg])
    return out


# ---------------------------------------------------------------------------------------------------
# Which tokens are lowest
# ---------------------------------------------------------------------------------------------------
def _argmin_set(s: np.ndarray) -> np.ndarray:
    return np.flatnonzero(s == s.min())


def top1_localisation(records_scores: Sequence[Sequence[float]], labels: Sequence[Sequence[int]]) -> float:
    """Fraction of records whose lowest-score token lies inside a planted span (lower score = more suspicious).

    When several tokens tie for the minimum, a record counts as the fraction of them that are labelled
    (the expectation under a random tie-break); a constant score therefore gets (labelled tokens)/(tokens).
    Every record needs at least one error token (``ValueError`` otherwise).
    """
    pairs = _pairs(records_scores, labels, need_error=True)
    return float(np.mean([lab[_argmin_set(s)].mean() for s, lab in pairs]))


def _p_all_hit(s: np.ndarray, groups: Sequence[np.ndarray], k: int) -> float:
    """P(each group has a token among the k lowest of ``s``), ties at the k-th value broken uniformly at random.

    Tokens strictly below the k-th smallest value are always in; ``r`` of the ``m`` tokens tied at that
    value are drawn without replacement. Inclusion-exclusion over the groups that could all be missed.
    """
    k = min(k, len(s))
    thresh = np.sort(s)[k - 1]
    below, tied = s < thresh, s == thresh
    r, m = k - int(below.sum()), int(tied.sum())
    if any(not (g & (below | tied)).any() for g in groups):
        return 0.0  # some error has no token at or below the threshold
    unsure = [g for g in groups if not (g & below).any()]  # groups that are in only if a tied token is drawn
    total = 0.0
    for size in range(len(unsure) + 1):
        for subset in itertools.combinations(unsure, size):
            u = int((np.logical_or.reduce(subset) & tied).sum()) if subset else 0
            total += (-1) ** size * math.comb(m - u, r) / math.comb(m, r)  # P(all of subset missed)
    return float(total)


def stitching_rate(
    records_scores: Sequence[Sequence[float]],
    error_labels: Sequence[Sequence[Sequence[int]]],
    k: int | str = "labelled",
) -> float:
    """Fraction of multi-error records where *every* planted error has a token among the k lowest-score tokens.

    This measures the paper's "stitching" remark: after a first error, is the second one still found?
    Lower score = more suspicious. ``error_labels[i]`` lists one 0/1 array per planted error of record i
    (at least two; build them with :func:`credit_targets`). ``k="labelled"`` (default) sets k to the
    number of labelled tokens of the record (the union of its spans), so a perfect scorer reaches 1;
    an integer k (the book reports k=2, the strictest, and k=5, "both in the top 5") is used as is, capped
    at the record's length. Ties at the k-th value count by their exact random-tie-break probability.
    """
    if len(records_scores) != len(error_labels):
        raise ValueError(f"records_scores has {len(records_scores)} records but error_labels has {len(error_labels)}")
    if len(error_labels) == 0:
        raise ValueError("no records given")
    rates = []
    for i, (s, errs) in enumerate(zip(records_scores, error_labels)):
        if len(errs) < 2:
            raise ValueError(f"record {i}: stitching needs >= 2 planted errors, got {len(errs)}")
        groups = [_labels(e, f"record {i}: error_labels[{j}]") for j, e in enumerate(errs)]
        if len({len(g) for g in groups}) != 1:
            raise ValueError(f"record {i}: error_labels have different lengths {[len(g) for g in groups]}")
        if not all(g.any() for g in groups):
            raise ValueError(f"record {i}: an error has no labelled token")
        s = align_scores(s, len(groups[0]), record=i)
        if k == "labelled":
            kk = int(np.logical_or.reduce(groups).sum())
        elif isinstance(k, (int, np.integer)) and k >= 1:
            kk = int(k)
        else:
            raise ValueError(f"k must be a positive int or 'labelled', got {k!r}")
        rates.append(_p_all_hit(s, groups, kk))
    return float(np.mean(rates))


def where_is_the_minimum(records_scores: Sequence[Sequence[float]], labels: Sequence[Sequence[int]]) -> dict:
    """Where the lowest-score token sits relative to the planted span(s): a histogram over :data:`MIN_BINS`.

    ``"inside"``: in a span; ``"1 after"``: the token right after the end of the nearest span before it;
    ``"2+ after"``: further after a span; ``"before"``: before the first span. (In a two-error record a
    minimum between the spans counts as "after" the first.) Lower score = more suspicious, so "inside" is
    top-1 localisation. A prototype saw the minimum move from the span to the token after it as DPO
    training went on; this shows that drift. Tied minima are split evenly. Returns the fractions of records
    per bin (summing to 1) and ``"n"``, the number of records.
    """
    pairs = _pairs(records_scores, labels, need_error=True)
    hist = dict.fromkeys(MIN_BINS, 0.0)
    for s, lab in pairs:
        idx = _argmin_set(s)
        labelled = np.flatnonzero(lab)
        for j in idx:
            if lab[j]:
                b = "inside"
            else:
                prev = labelled[labelled < j]
                b = "before" if len(prev) == 0 else ("1 after" if j - prev[-1] == 1 else "2+ after")
            hist[b] += 1.0 / len(idx)
    out = {b: v / len(pairs) for b, v in hist.items()}
    out["n"] = len(pairs)
    return out


def pair_accuracy(chosen_rewards: Sequence[float], rejected_rewards: Sequence[float], *, ties: float = 0.0) -> float:
    """Fraction of pairs with chosen reward > rejected reward (TRL's ``rewards/accuracies``).

    A tie counts ``ties`` (0 by default, as in TRL, so policy == reference gives 0; pass 0.5 for chance).
    Arguments are the sequence rewards of each pair (e.g. ``row["chosen_reward"]`` of score_pairs).
    """
    c, r = _vector(chosen_rewards, "chosen_rewards"), _vector(rejected_rewards, "rejected_rewards")
    if len(c) != len(r):
        raise ValueError(f"chosen_rewards has {len(c)} entries, rejected_rewards {len(r)}")
    if len(c) == 0:
        raise ValueError("no pairs given")
    return float(np.mean((c > r) + ties * (c == r)))
