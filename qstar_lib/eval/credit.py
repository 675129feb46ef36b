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
labels come from :func:`qstar_lib.data.token_labels` (one 0/1 per completion token, no EOS).

**EOS.** When a score list is one longer than the labels, its last entry is the EOS position; it is dropped
before any metric (:func:`align_scores`), so the EOS is neither an error token nor a clean one (it says
"the summary ends here", not anything about a planted value). A score list *shorter* than the labels means
the completion was truncated (``max_length``); that raises instead of silently losing error tokens.

Ties: wherever a metric asks "which token is lowest" and several tokens share the lowest value, the answer
is the expectation under a uniformly random tie-break (exact, not sampled). So a constant score (the
``uniform_share`` baseline, or rewards that are all zero because policy == reference) scores exactly chance:
AUROC 0.5 within a record, top-1 = (labelled tokens) / (tokens).

Everything here is numpy (plus pandas for :func:`credit_table`); models appear only in the surprisal
baselines, through :func:`qstar_lib.lm.logps.pair_logps`.
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

__all__ = [
    "DEFAULT_METHODS", "MIN_BINS", "SINGLE_KINDS", "TABLE_KINDS", "CI",
    "align_scores", "auroc", "base_surprisal", "bootstrap_ci", "credit_report", "credit_scores",
    "credit_table", "credit_targets", "error_token_auroc", "minimum_table", "pair_accuracy", "random_scores",
    "sft_surprisal", "stitching_rate", "surprisal_scores", "top1_localisation", "uniform_share", "where_is_the_minimum",
]

#: Row order of :func:`credit_table`: the DPO implicit reward and its four baselines.
DEFAULT_METHODS = ("dpo_reward", "sft_surprisal", "base_surprisal", "random", "uniform_share")
#: Single-error pair kinds of the synthetic set (one localised error each).
SINGLE_KINDS = ("absent_value", "inserted_claim", "in_post_swap")
#: Column groups of :func:`credit_table`: the single-error kinds, the two-error pairs, and all localised pairs.
TABLE_KINDS = SINGLE_KINDS + ("two_errors", "all")
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
        raise ValueError(f"{where}scores has {len(s)} entries for {n_tokens} completion tokens: the completion was "
                         f"truncated (use a larger max_length), so error tokens could be missing")
    raise ValueError(f"{where}scores has {len(s)} entries for {n_tokens} completion tokens (+1 EOS at most): "
                     f"scores and labels come from different tokenisations")


def _pairs(records_scores: Sequence, labels: Sequence, *, need_error: bool = False,
           need_clean: bool = False) -> list[tuple[np.ndarray, np.ndarray]]:
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
            raise ValueError(f"record {i}: labels has no error token (a non-localised pair?); select records with "
                             f"n_errors >= 1")
        if need_clean and lab.all():
            raise ValueError(f"record {i}: every token is labelled as an error; a within-record AUROC needs clean tokens")
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


def error_token_auroc(records_scores: Sequence[Sequence[float]], labels: Sequence[Sequence[int]], *,
                      average: str = "pooled") -> float:
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


def stitching_rate(records_scores: Sequence[Sequence[float]], error_labels: Sequence[Sequence[Sequence[int]]],
                   k: int | str = "labelled") -> float:
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


# ---------------------------------------------------------------------------------------------------
# Bootstrap over records
# ---------------------------------------------------------------------------------------------------
class CI(NamedTuple):
    """A point estimate and its bootstrap percentile interval."""

    point: float
    lo: float
    hi: float


def bootstrap_ci(metric_fn: Callable[..., float], *per_record: Sequence, n_boot: int = 1000, seed: int = 0,
                 level: float = 0.95, **kwargs) -> CI:
    """Percentile bootstrap over records: ``metric_fn(*per_record, **kwargs)`` on resampled records.

    Each positional argument is a per-record sequence (scores, labels, ...) of the same length; a resample
    draws record indices with replacement and takes the same indices from every argument, so the tokens of
    a record stay together (tokens of one summary are not independent). Example::

        bootstrap_ci(error_token_auroc, scores, labels, n_boot=1000)
    """
    if not per_record:
        raise ValueError("bootstrap_ci needs at least one per-record sequence")
    n = len(per_record[0])
    if any(len(a) != n for a in per_record):
        raise ValueError(f"per-record arguments have different lengths {[len(a) for a in per_record]}")
    if n == 0:
        raise ValueError("no records given")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    point = float(metric_fn(*per_record, **kwargs))
    stats = np.array([metric_fn(*[[a[i] for i in idx] for a in per_record], **kwargs)
                      for idx in _resamples(n, n_boot, seed)])
    return CI(point, *_percentiles(stats, level))


def _resamples(n: int, n_boot: int, seed: int) -> np.ndarray:
    """(n_boot, n) record indices drawn with replacement; the same draws for every bootstrap of this module."""
    return np.random.default_rng(seed).integers(0, n, size=(n_boot, n))


def _percentiles(stats: np.ndarray, level: float) -> tuple[float, float]:
    if len(stats) == 0:
        return math.nan, math.nan
    alpha = (1 - level) / 2
    lo, hi = np.quantile(stats, [alpha, 1 - alpha])
    return float(lo), float(hi)


def _fast_bootstrap(pairs: Sequence[tuple[np.ndarray, np.ndarray]], n_boot: int, seed: int,
                    level: float = 0.95) -> tuple[CI, CI]:
    """Bootstrap CIs of the pooled error-token AUROC and of top-1, equal to :func:`bootstrap_ci` (same draws).

    Instead of recomputing ranks for every resample, it counts once, for every pair of records (r, r'),
    U[r, r'] = #(error token of r scored below a clean token of r') + 0.5 #ties; a resample with record
    multiplicities w has AUROC = w U w / ((w . n_err)(w . n_clean)). Memory: R x R floats for R records.
    """
    R = len(pairs)
    n_err = np.array([lab.sum() for _, lab in pairs], dtype=np.float64)  # (R,)
    n_clean = np.array([(~lab).sum() for _, lab in pairs], dtype=np.float64)  # (R,)
    err = np.concatenate([s[lab] for s, lab in pairs])  # error-token scores, all records
    owner = np.repeat(np.arange(R), n_err.astype(int))  # which record each error token is from
    U = np.zeros((R, R))
    for j, (s, lab) in enumerate(pairs):
        clean = np.sort(s[~lab])
        left, right = np.searchsorted(clean, err, "left"), np.searchsorted(clean, err, "right")
        per_token = (len(clean) - right) + 0.5 * (right - left)  # clean tokens of record j above / tied
        U[:, j] = np.bincount(owner, weights=per_token, minlength=R)
    W = np.zeros((n_boot, R))
    idx = _resamples(R, n_boot, seed)
    np.add.at(W, (np.repeat(np.arange(n_boot), R), idx.ravel()), 1.0)  # (n_boot, R) multiplicities
    auroc_boot = ((W @ U) * W).sum(axis=1) / ((W @ n_err) * (W @ n_clean))
    top1 = np.array([lab[_argmin_set(s)].mean() for s, lab in pairs])  # (R,)
    top1_boot = top1[idx].mean(axis=1)
    point_auroc = float(U.sum() / (n_err.sum() * n_clean.sum()))
    return (CI(point_auroc, *_percentiles(auroc_boot, level)), CI(float(top1.mean()), *_percentiles(top1_boot, level)))


# ---------------------------------------------------------------------------------------------------
# Scores: the DPO reward and its baselines, all "lower = more suspicious", same shape as score_pairs
# ---------------------------------------------------------------------------------------------------
def _per_token(rows: Sequence, key: str) -> list[np.ndarray]:
    """Per-token arrays from score_pairs/pair_logps rows (dicts, read at ``key``) or from arrays as they are."""
    out = []
    for i, row in enumerate(rows):
        if isinstance(row, Mapping):
            if key not in row:
                raise KeyError(f"row {i} has no field {key!r} (fields: {sorted(row)})")
            row = row[key]
        out.append(_vector(row, f"row {i}: {key}"))
    return out


def surprisal_scores(logps_rows: Sequence[Mapping], side: str = "rejected") -> list[np.ndarray]:
    """``+log pi`` per token (negative surprisal: lower = more suspicious) from :func:`qstar_lib.lm.logps.pair_logps` rows."""
    return _per_token(logps_rows, f"{side}_per_token_logps")


def sft_surprisal(model_or_rows, tokenizer=None, records: Sequence[Mapping] | None = None, *,
                  side: str = "rejected", **pair_logps_kwargs) -> list[np.ndarray]:
    """Baseline: the SFT model's own log-prob of each token, ``+log pi_SFT`` (lower = more suspicious).

    A token the SFT model did not expect (a value absent from the post) is flagged without any preference
    training; the DPO reward must beat this to show it learned something. Pass either the
    :func:`qstar_lib.lm.logps.pair_logps` output of the SFT model (the same rows serve as ``ref_scores`` of
    ``score_pairs`` when pi_ref is the SFT model, so nothing is recomputed), or the model with ``tokenizer``
    and ``records`` (extra keyword arguments go to ``pair_logps``). Aligned like score_pairs' rewards
    (EOS entry last when kept).
    """
    if model_or_rows is None:
        raise ValueError("model_or_rows is None: pass a model or pair_logps rows")
    if isinstance(model_or_rows, Sequence):
        return surprisal_scores(model_or_rows, side)
    if tokenizer is None or records is None:
        raise ValueError("with a model, pass tokenizer= and records= too")
    from qstar_lib.lm.logps import pair_logps

    return surprisal_scores(pair_logps(model_or_rows, tokenizer, records, **pair_logps_kwargs), side)


def base_surprisal(model_or_rows, tokenizer=None, records: Sequence[Mapping] | None = None, *,
                   side: str = "rejected", **pair_logps_kwargs) -> list[np.ndarray]:
    """Baseline: ``+log pi_base`` per token from the pretrained model before SFT (lower = more suspicious).

    Same inputs as :func:`sft_surprisal`. It separates what plain language modelling flags from what SFT on
    summaries adds.
    """
    return sft_surprisal(model_or_rows, tokenizer, records, side=side, **pair_logps_kwargs)


def random_scores(like: Sequence, seed: int = 0) -> list[np.ndarray]:
    """Baseline: independent standard-normal scores shaped like ``like`` (arrays, score_pairs rows or lengths).

    Chance level: AUROC about 0.5, top-1 about (labelled tokens)/(tokens). Deterministic in ``seed``.
    """
    rng = np.random.default_rng(seed)
    out = []
    for i, x in enumerate(like):
        if isinstance(x, (int, np.integer)):
            n = int(x)
        elif isinstance(x, Mapping):
            n = len(_per_token([x], "rejected_rewards")[0])
        else:
            n = len(x)
        if n < 0:
            raise ValueError(f"like[{i}] has a negative length {n}")
        out.append(rng.standard_normal(n))
    return out


def uniform_share(rewards: Sequence, side: str = "rejected") -> list[np.ndarray]:
    """Baseline: the sequence reward split equally over the completion's positions (a constant per record).

    ``rewards`` are per-token reward arrays or score_pairs rows (read at ``{side}_rewards``). Each record's
    value is ``sum / length`` (the EOS position, when present, is counted like the others). Within a record
    it cannot tell tokens apart (per-record AUROC exactly 0.5, top-1 at chance): what the DPO reward beats
    this by is what *per-token* credit adds over one reward per summary.
    """
    return [np.full(len(r), r.sum() / len(r)) if len(r) else r for r in _per_token(rewards, f"{side}_rewards")]


# ---------------------------------------------------------------------------------------------------
# Targets (labels per record) and the table
# ---------------------------------------------------------------------------------------------------
def credit_targets(records: Sequence[Mapping], tokenizer) -> list[dict]:
    """Token labels of each record's *rejected* completion, one dict per record.

    Keys: ``id``, ``kind`` (the pair kind), ``n_tokens`` (completion tokens, no EOS), ``labels`` (0/1 array,
    the union of all planted spans), ``error_labels`` (one 0/1 array per localised error, in span order)
    and ``error_kinds``. Uses :func:`qstar_lib.data.token_labels`, i.e. the tokens of
    ``tokenizer(rejected, add_special_tokens=False)``, the same positions score_pairs scores.
    """
    from qstar_lib.data import LOCALISED_KINDS, token_labels

    out = []
    for i, rec in enumerate(records):
        if "errors" not in rec:
            raise KeyError(f"record {i} (id {rec.get('id')}) has no field 'errors': credit needs planted-error records")
        errs = sorted((e for e in rec["errors"] if e["kind"] in LOCALISED_KINDS and e["start"] >= 0),
                      key=lambda e: e["start"])
        per_error = [np.asarray(token_labels(rec["rejected"], [e], tokenizer), dtype=np.int8) for e in errs]
        union = np.asarray(token_labels(rec["rejected"], errs, tokenizer), dtype=np.int8)
        out.append({
            "id": rec.get("id", i), "kind": rec.get("kind"), "n_tokens": len(union), "labels": union,
            "error_labels": per_error, "error_kinds": [e["kind"] for e in errs],
        })
    return out


def credit_scores(scored: Sequence[Mapping], *, sft_logps: Sequence[Mapping] | None = None,
                  base_logps: Sequence[Mapping] | None = None, seed: int = 0) -> dict[str, list[np.ndarray]]:
    """The per-token scores of every method for the rejected completions (lower = more suspicious).

    ``scored``: :func:`qstar_lib.lm.logps.score_pairs` rows (``dpo_reward`` and ``uniform_share`` come from
    ``rejected_rewards``); ``sft_logps`` / ``base_logps``: :func:`qstar_lib.lm.logps.pair_logps` rows of the
    SFT and base models (those methods are left out when not given); ``random`` uses ``seed``.
    """
    methods = {"dpo_reward": _per_token(scored, "rejected_rewards")}
    if sft_logps is not None:
        methods["sft_surprisal"] = sft_surprisal(sft_logps)
    if base_logps is not None:
        methods["base_surprisal"] = base_surprisal(base_logps)
    methods["random"] = random_scores(methods["dpo_reward"], seed=seed)
    methods["uniform_share"] = uniform_share(scored)
    return methods


def _group(targets: Sequence[dict], kind: str) -> list[int]:
    if kind == "all":
        return [i for i, t in enumerate(targets) if t["labels"].any()]
    if kind == "two_errors":
        return [i for i, t in enumerate(targets) if len(t["error_labels"]) >= 2]
    return [i for i, t in enumerate(targets) if len(t["error_labels"]) == 1 and t["error_kinds"][0] == kind]


def credit_table(methods: Mapping[str, Sequence[Sequence[float]]], targets: Sequence[dict], *,
                 pair_scores: Mapping[str, tuple[Sequence[float], Sequence[float]]] | None = None,
                 kinds: Sequence[str] = TABLE_KINDS, n_boot: int = 0, seed: int = 0):
    """One row per method, one column group per error kind: how well each score finds the planted errors.

    Args:
        methods: name -> per-token scores of the rejected completions, one array per target, aligned as
            score_pairs returns them (EOS entry allowed; see :func:`align_scores`). Lower = more suspicious.
            :func:`credit_scores` builds it; rows follow :data:`DEFAULT_METHODS` order, then any others.
        targets: :func:`credit_targets` of the same records.
        pair_scores: name -> (chosen sequence scores, rejected sequence scores) for the ``pair_acc``
            column (e.g. ``dpo_reward``: the score_pairs ``chosen_reward``/``rejected_reward``); NaN elsewhere.
        kinds: column groups. A single-error kind holds the one-error records whose error has that kind;
            ``two_errors`` the records with two errors; ``all`` every record with a labelled token.
        n_boot: when > 0, add ``auroc_lo/auroc_hi/top1_lo/top1_hi``: 95% percentile bootstrap over records,
            the same numbers as :func:`bootstrap_ci` with this ``seed``, computed in one matrix product.

    Returns a ``pandas.DataFrame`` (index ``method``; columns a MultiIndex ``(kind, metric)``) with metrics
    ``n`` (records in the cell), ``n_err_tokens``, ``auroc`` (pooled :func:`error_token_auroc`),
    ``auroc_rec`` (its per-record mean), ``top1`` (:func:`top1_localisation`), ``pair_acc``
    (:func:`pair_accuracy`), and under ``two_errors`` also ``stitching`` (k = labelled tokens),
    ``stitching_k2`` and ``stitching_top5``. A cell with no records is NaN with n = 0. Records with no
    labelled token (omission/verbosity pairs) have no token metric; they are left out with a warning.
    """
    import pandas as pd

    n = len(targets)
    for name, sc in methods.items():
        if len(sc) != n:
            raise ValueError(f"methods[{name!r}] has {len(sc)} records, targets has {n}")
    for name, (c, r) in (pair_scores or {}).items():
        if len(c) != n or len(r) != n:
            raise ValueError(f"pair_scores[{name!r}] has {len(c)}/{len(r)} pairs, targets has {n}")
    unlabelled = [t["kind"] for t in targets if not t["labels"].any()]
    if unlabelled:
        counts = {k: unlabelled.count(k) for k in dict.fromkeys(unlabelled)}
        warnings.warn(f"credit_table: {len(unlabelled)} of {n} records have no planted-error token and get no token "
                      f"metric (by kind: {counts})", UserWarning, stacklevel=2)
    order = [m for m in DEFAULT_METHODS if m in methods] + [m for m in methods if m not in DEFAULT_METHODS]
    rows: dict[str, dict] = {m: {} for m in order}
    for kind in kinds:
        idx = _group(targets, kind)
        labs = [targets[i]["labels"] for i in idx]
        metrics = ["n", "n_err_tokens", "auroc", "auroc_rec", "top1", "pair_acc"]
        if kind == "two_errors":
            metrics += ["stitching", "stitching_k2", "stitching_top5"]
        if n_boot:
            metrics += ["auroc_lo", "auroc_hi", "top1_lo", "top1_hi"]
        for m in order:
            cell = dict.fromkeys(metrics, math.nan)
            cell["n"], cell["n_err_tokens"] = len(idx), int(sum(int(lab.sum()) for lab in labs))
            if idx:
                sc = [methods[m][i] for i in idx]
                cell["auroc"] = error_token_auroc(sc, labs)
                has_clean = [j for j, lab in enumerate(labs) if not lab.all()]
                if has_clean:
                    cell["auroc_rec"] = error_token_auroc([sc[j] for j in has_clean], [labs[j] for j in has_clean],
                                                          average="per_record")
                cell["top1"] = top1_localisation(sc, labs)
                if kind == "two_errors":
                    errs = [targets[i]["error_labels"] for i in idx]
                    cell["stitching"] = stitching_rate(sc, errs)
                    cell["stitching_k2"] = stitching_rate(sc, errs, k=2)
                    cell["stitching_top5"] = stitching_rate(sc, errs, k=5)
                if pair_scores and m in pair_scores:
                    c, r = pair_scores[m]
                    cell["pair_acc"] = pair_accuracy([c[i] for i in idx], [r[i] for i in idx])
                if n_boot:
                    a, t = _fast_bootstrap(_pairs(sc, labs, need_error=True), n_boot, seed)
                    cell.update(auroc_lo=a.lo, auroc_hi=a.hi, top1_lo=t.lo, top1_hi=t.hi)
            rows[m].update({(kind, k): v for k, v in cell.items()})
    df = pd.DataFrame.from_dict(rows, orient="index")
    df.columns = pd.MultiIndex.from_tuples(df.columns, names=["kind", "metric"])
    df.index.name = "method"
    for col in [c for c in df.columns if c[1] in ("n", "n_err_tokens")]:
        df[col] = df[col].astype(int)
    return df


def minimum_table(methods: Mapping[str, Sequence[Sequence[float]]], targets: Sequence[dict], *,
                  kind: str = "all"):
    """:func:`where_is_the_minimum` for every method: rows = methods, columns = :data:`MIN_BINS` and ``n``.

    ``kind`` picks the records as in :func:`credit_table` (``"all"``: every record with a planted-error
    token). Compute it for checkpoints along a DPO run to see whether the lowest-score token (lower = more
    suspicious) stays inside the span or drifts to the token after it.
    """
    import pandas as pd

    idx = _group(targets, kind)
    if not idx:
        raise ValueError(f"no record of kind {kind!r} has a planted-error token")
    rows = {}
    for name, sc in methods.items():
        if len(sc) != len(targets):
            raise ValueError(f"methods[{name!r}] has {len(sc)} records, targets has {len(targets)}")
        rows[name] = where_is_the_minimum([sc[i] for i in idx], [targets[i]["labels"] for i in idx])
    df = pd.DataFrame.from_dict(rows, orient="index")[list(MIN_BINS) + ["n"]]
    df.index.name = "method"
    return df


def credit_report(records: Sequence[Mapping], scored: Sequence[Mapping], tokenizer, *,
                  sft_logps: Sequence[Mapping] | None = None, base_logps: Sequence[Mapping] | None = None,
                  seed: int = 0, n_boot: int = 0, kinds: Sequence[str] = TABLE_KINDS):
    """:func:`credit_table` straight from records and score_pairs/pair_logps outputs.

    ``pair_acc`` is filled for ``dpo_reward`` (chosen vs rejected sequence reward) and, when their log-probs
    are given, for the surprisal baselines (chosen vs rejected sequence log-prob: does the model merely
    find the rejected summary less likely?).
    """
    if len(scored) != len(records):
        raise ValueError(f"scored has {len(scored)} rows for {len(records)} records")
    targets = credit_targets(records, tokenizer)
    methods = credit_scores(scored, sft_logps=sft_logps, base_logps=base_logps, seed=seed)
    pair_scores = {"dpo_reward": ([r["chosen_reward"] for r in scored], [r["rejected_reward"] for r in scored])}
    for name, rows in (("sft_surprisal", sft_logps), ("base_surprisal", base_logps)):
        if rows is not None:
            pair_scores[name] = ([r["chosen_logps"] for r in rows], [r["rejected_logps"] for r in rows])
    return credit_table(methods, targets, pair_scores=pair_scores, kinds=kinds, n_boot=n_boot, seed=seed)
