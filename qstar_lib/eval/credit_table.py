"""The credit-assignment table: token labels carried by the scored rows, every method's metrics per error kind.

:func:`credit_targets` reads the token labels that :func:`qstar_lib.lm.logps.score_pairs` attached to each
row (:func:`qstar_lib.lm.collate.planted_labels`), so no record has to be matched to its row by index;
:func:`credit_table` and :func:`minimum_table` score every method of :func:`qstar_lib.eval.baselines.credit_scores`
with the metrics of :mod:`qstar_lib.eval.credit` (lower = more suspicious), one column group per error kind,
with percentile-bootstrap intervals over records (:func:`qstar_lib.stats.bootstrap_ci`'s resamples, computed
in one matrix product); :func:`credit_report` does both from the scored rows.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import numpy as np

from qstar_lib.data import LOCALISED_KINDS
from qstar_lib.eval.baselines import DEFAULT_METHODS, credit_scores
from qstar_lib.eval.credit import (
    MIN_BINS,
    _argmin_set,
    _pairs,
    error_token_auroc,
    pair_accuracy,
    stitching_rate,
    top1_localisation,
    where_is_the_minimum,
)
from qstar_lib.stats import percentile_interval, resample_indices

__all__ = ["CI", "SINGLE_KINDS", "TABLE_KINDS", "credit_report", "credit_table", "credit_targets", "minimum_table"]

#: Single-error pair kinds of the synthetic set (one localised error each): :data:`qstar_lib.data.LOCALISED_KINDS`
#: with the in-post swap, the kind only preference training can flag, last (the tables' column order).
SINGLE_KINDS = tuple(sorted(LOCALISED_KINDS, key=lambda kind: kind == "in_post_swap"))
#: Column groups of :func:`credit_table`: the single-error kinds, the two-error pairs, and all localised pairs.
TABLE_KINDS = SINGLE_KINDS + ("two_errors", "all")


class CI(NamedTuple):
    """A point estimate and its bootstrap percentile interval."""

    point: float
    lo: float
    hi: float


def _fast_bootstrap(
    pairs: Sequence[tuple[np.ndarray, np.ndarray]], n_boot: int, seed: int, confidence: float = 0.95
) -> tuple[CI, CI]:
    """Bootstrap CIs of the pooled error-token AUROC and of top-1, equal to :func:`qstar_lib.stats.bootstrap_ci`
    with ``statistic=error_token_auroc`` / ``top1_localisation`` (the same draws, :func:`qstar_lib.stats.resample_indices`).

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
    idx = resample_indices(R, n_boot, seed)  # (n_boot, R)
    np.add.at(W, (np.repeat(np.arange(n_boot), R), idx.ravel()), 1.0)  # (n_boot, R) multiplicities
    auroc_boot = ((W @ U) * W).sum(axis=1) / ((W @ n_err) * (W @ n_clean))
    top1 = np.array([lab[_argmin_set(s)].mean() for s, lab in pairs])  # (R,)
    top1_boot = top1[idx].mean(axis=1)
    point_auroc = float(U.sum() / (n_err.sum() * n_clean.sum()))
    return (
        CI(point_auroc, *percentile_interval(auroc_boot, confidence)),
        CI(float(top1.mean()), *percentile_interval(top1_boot, confidence)),
    )


# ---------------------------------------------------------------------------------------------------
# Targets (labels per row) and the tables
# ---------------------------------------------------------------------------------------------------
def credit_targets(scored: Sequence[Mapping]) -> list[dict]:
    """Token labels of each row's *rejected* completion, one dict per :func:`qstar_lib.lm.logps.score_pairs` row.

    The labels are the ones score_pairs attached to the row (:func:`qstar_lib.lm.collate.planted_labels`: the
    tokens of ``tokenizer(rejected, add_special_tokens=False)``, the positions score_pairs scores). Keys:
    ``id``, ``kind`` (the pair kind), ``n_tokens`` (completion tokens, no EOS), ``labels`` (0/1 array, the
    union of all planted spans), ``error_labels`` (one 0/1 array per localised error, in span order) and
    ``error_kinds``.
    """
    out = []
    for i, row in enumerate(scored):
        if "rejected_labels" not in row:
            raise KeyError(
                f"row {i} (id {row.get('id')}) has no field 'rejected_labels': credit needs the score_pairs "
                f"rows of planted-error records (records with 'errors')"
            )
        union = np.asarray(row["rejected_labels"], dtype=np.int8)
        per_error = [np.asarray(lab, dtype=np.int8) for lab in row["rejected_error_labels"]]
        out.append(
            {
                "id": row.get("id", i),
                "kind": row.get("kind"),
                "n_tokens": len(union),
                "labels": union,
                "error_labels": per_error,
                "error_kinds": [e["kind"] for e in row["rejected_errors"]],
            }
        )
    return out


def _group(targets: Sequence[dict], kind: str) -> list[int]:
    if kind == "all":
        return [i for i, t in enumerate(targets) if t["labels"].any()]
    if kind == "two_errors":
        return [i for i, t in enumerate(targets) if len(t["error_labels"]) >= 2]
    return [i for i, t in enumerate(targets) if len(t["error_labels"]) == 1 and t["error_kinds"][0] == kind]


def _cell(
    kind: str, sc: list, cell_targets: list[dict], pairs: tuple[list, list] | None, n_boot: int, seed: int
) -> dict:
    """One method's metrics on one column group: ``sc`` are its scores of the group's records, ``cell_targets``
    their targets, ``pairs`` their (chosen, rejected) sequence scores or None. NaN where not computed."""
    labs = [t["labels"] for t in cell_targets]
    metrics = ["n", "n_err_tokens", "auroc", "auroc_rec", "top1", "pair_acc"]
    if kind == "two_errors":
        metrics += ["stitching", "stitching_k2", "stitching_top5"]
    if n_boot:
        metrics += ["auroc_lo", "auroc_hi", "top1_lo", "top1_hi"]
    cell = dict.fromkeys(metrics, math.nan)
    cell["n"], cell["n_err_tokens"] = len(labs), int(sum(int(lab.sum()) for lab in labs))
    if not labs:
        return cell
    cell["auroc"] = error_token_auroc(sc, labs)
    has_clean = [j for j, lab in enumerate(labs) if not lab.all()]
    if has_clean:
        cell["auroc_rec"] = error_token_auroc(
            [sc[j] for j in has_clean], [labs[j] for j in has_clean], average="per_record"
        )
    cell["top1"] = top1_localisation(sc, labs)
    if kind == "two_errors":
        errs = [t["error_labels"] for t in cell_targets]
        cell["stitching"] = stitching_rate(sc, errs)
        cell["stitching_k2"] = stitching_rate(sc, errs, k=2)
        cell["stitching_top5"] = stitching_rate(sc, errs, k=5)
    if pairs is not None:
        cell["pair_acc"] = pair_accuracy(*pairs)
    if n_boot:
        a, t = _fast_bootstrap(_pairs(sc, labs, need_error=True), n_boot, seed)
        cell.update(auroc_lo=a.lo, auroc_hi=a.hi, top1_lo=t.lo, top1_hi=t.hi)
    return cell


def credit_table(
    methods: Mapping[str, Sequence[Sequence[float]]],
    targets: Sequence[dict],
    *,
    pair_scores: Mapping[str, tuple[Sequence[float], Sequence[float]]] | None = None,
    kinds: Sequence[str] = TABLE_KINDS,
    n_boot: int = 0,
    seed: int = 0,
):
    """One row per method, one column group per error kind: how well each score finds the planted errors.

    Args:
        methods: name -> per-token scores of the rejected completions, one array per target, aligned as
            score_pairs returns them (EOS entry allowed; see :func:`qstar_lib.eval.credit.align_scores`). Lower
            = more suspicious. :func:`qstar_lib.eval.baselines.credit_scores` builds it; rows follow
            :data:`qstar_lib.eval.baselines.DEFAULT_METHODS` order, then any others.
        targets: :func:`credit_targets` of the same scored rows.
        pair_scores: name -> (chosen sequence scores, rejected sequence scores) for the ``pair_acc``
            column (e.g. ``dpo_reward``: the score_pairs ``chosen_reward``/``rejected_reward``); NaN elsewhere.
        kinds: column groups. A single-error kind holds the one-error records whose error has that kind;
            ``two_errors`` the records with two errors; ``all`` every record with a labelled token.
        n_boot: when > 0, add ``auroc_lo/auroc_hi/top1_lo/top1_hi``: 95% percentile bootstrap over records,
            the same numbers as :func:`qstar_lib.stats.bootstrap_ci` with this ``seed``, in one matrix product.

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
        warnings.warn(
            f"credit_table: {len(unlabelled)} of {n} records have no planted-error token and get no token "
            f"metric (by kind: {counts})",
            UserWarning,
            stacklevel=2,
        )
    order = [m for m in DEFAULT_METHODS if m in methods] + [m for m in methods if m not in DEFAULT_METHODS]
    rows: dict[str, dict] = {m: {} for m in order}
    for kind in kinds:
        idx = _group(targets, kind)
        for m in order:
            pairs = None
            if pair_scores and m in pair_scores:
                c, r = pair_scores[m]
                pairs = ([c[i] for i in idx], [r[i] for i in idx])
            cell = _cell(kind, [methods[m][i] for i in idx], [targets[i] for i in idx], pairs, n_boot, seed)
            rows[m].update({(kind, k): v for k, v in cell.items()})
    df = pd.DataFrame.from_dict(rows, orient="index")
    df.columns = pd.MultiIndex.from_tuples(df.columns, names=["kind", "metric"])
    df.index.name = "method"
    for col in [c for c in df.columns if c[1] in ("n", "n_err_tokens")]:
        df[col] = df[col].astype(int)
    return df


def minimum_table(methods: Mapping[str, Sequence[Sequence[float]]], targets: Sequence[dict], *, kind: str = "all"):
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


def credit_report(
    scored: Sequence[Mapping],
    *,
    sft_logps: Sequence[Mapping] | None = None,
    base_logps: Sequence[Mapping] | None = None,
    seed: int = 0,
    n_boot: int = 0,
    kinds: Sequence[str] = TABLE_KINDS,
):
    """:func:`credit_table` straight from score_pairs rows (they carry their token labels) and pair_logps rows.

    ``pair_acc`` is filled for ``dpo_reward`` (chosen vs rejected sequence reward) and, when their log-probs
    are given, for the surprisal baselines (chosen vs rejected sequence log-prob: does the model merely
    find the rejected summary less likely?).
    """
    targets = credit_targets(scored)
    methods = credit_scores(scored, sft_logps=sft_logps, base_logps=base_logps, seed=seed)
    pair_scores = {"dpo_reward": ([r["chosen_reward"] for r in scored], [r["rejected_reward"] for r in scored])}
    for name, rows in (("sft_surprisal", sft_logps), ("base_surprisal", base_logps)):
        if rows is not None:
            pair_scores[name] = ([r["chosen_logps"] for r in rows], [r["rejected_logps"] for r in rows])
    return credit_table(methods, targets, pair_scores=pair_scores, kinds=kinds, n_boot=n_boot, seed=seed)
