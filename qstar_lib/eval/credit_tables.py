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
    per_record_auroc,
    stitching_rate,
    top1_localisation,
    where_is_the_minimum,
)
from qstar_lib.stats import mean_ci, percentile_interval, resample_indices

__all__ = ["CI", "SINGLE_KINDS", "TABLE_KINDS", "credit_report", "credit_table", "credit_targets", "minimum_table"]

#: Single-error pair kinds of the synthetic set (one localised error each): :data:`qstar_lib.data.LOCALISED_KINDS`
#: with the in-post swap, the kind only preference training can flag, last (the tables' column order).
SINGLE_KINDS = tuple(sorted(LOCALISED_KINDS, key=lambda kind: kind == "in_post_swap"))
#: Record subsets of :func:`credit_table` (data v2 flags): held-out families, any held-out template (held-out
#: families included), and the test records whose family and templates training also uses.
SUBSETS = ("heldout_family", "heldout_template", "seen_template")
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
        everything = np.ones_like(union)
        cands = [np.asarray(c, dtype=np.int8) for c in row.get("rejected_candidates", [everything] * len(per_error))]
        firsts = [np.asarray(c, dtype=np.int8) for c in row.get("rejected_first_labels", per_error)]
        f_cands = [
            np.asarray(c, dtype=np.int8) for c in row.get("rejected_first_candidates", [everything] * len(firsts))
        ]
        out.append(
            {
                "id": row.get("id", i),
                "kind": row.get("kind"),
                "n_tokens": len(union),
                "labels": union,
                "error_labels": per_error,
                "error_kinds": [e["kind"] for e in row["rejected_errors"]],
                "candidates": np.logical_or.reduce(cands).astype(np.int8) if cands else everything,
                "first": np.logical_or.reduce(firsts).astype(np.int8) if firsts else union,
                "first_candidates": np.logical_or.reduce(f_cands).astype(np.int8) if f_cands else everything,
                "heldout_family": bool(row.get("heldout_family", False)),
                "heldout_template": bool(row.get("heldout_template", False)),
            }
        )
    return out


def _mean_ci(values: np.ndarray, n_boot: int, seed: int) -> tuple[float, float, float]:
    """Mean of the defined entries of ``values`` and its interval over records (:func:`qstar_lib.stats.mean_ci`)."""
    return mean_ci(values, n_boot=n_boot, seed=seed)


def _group(targets: Sequence[dict], kind: str, subset: str | None = None) -> list[int]:
    if subset is not None:  # the records that hold out a family / a template, or whose text is all seen
        if subset not in SUBSETS:
            raise ValueError(f"subset={subset!r}; choose one of {', '.join(SUBSETS)}")
        flag = "heldout_template" if subset == "seen_template" else subset
        keep = [i for i, t in enumerate(targets) if t[flag] != (subset == "seen_template")]
        return [keep[j] for j in _group([targets[i] for i in keep], kind)]
    if kind == "all":
        return [i for i, t in enumerate(targets) if t["labels"].any()]
    if kind == "two_errors":
        return [i for i, t in enumerate(targets) if len(t["error_labels"]) >= 2]
    return [i for i, t in enumerate(targets) if len(t["error_labels"]) == 1 and t["error_kinds"][0] == kind]


def _cell(
    kind: str,
    sc: list,
    cell_targets: list[dict],
    pairs: tuple[list, list] | None,
    n_boot: int,
    seed: int,
    reference: np.ndarray | None = None,
) -> tuple[dict, np.ndarray]:
    """One method's metrics on one column group: ``sc`` are its scores of the group's records, ``cell_targets``
    their targets, ``pairs`` their (chosen, rejected) sequence scores or None, ``reference`` the reference
    method's per-record AUROCs on the same records (for the paired difference). NaN where not computed.
    Returns the cell and this method's per-record AUROCs."""
    labs = [t["labels"] for t in cell_targets]
    metrics = ["n", "n_err_tokens", "auroc_rec", "auroc_rec_lo", "auroc_rec_hi", "auroc_first", "auroc"]
    metrics += ["top1", "top1_chance", "top1_all", "top1_all_chance", "pair_acc"]
    metrics += ["delta_rec", "delta_rec_lo", "delta_rec_hi"]
    if kind == "two_errors":
        metrics += ["stitching", "stitching_chance", "stitching_k2", "stitching_top5"]
    if n_boot:
        metrics += ["auroc_lo", "auroc_hi", "top1_all_lo", "top1_all_hi"]
    cell = dict.fromkeys(metrics, math.nan)
    cell["n"], cell["n_err_tokens"] = len(labs), int(sum(int(lab.sum()) for lab in labs))
    if not labs:
        return cell, np.zeros(0)
    cands = [t["candidates"] for t in cell_targets]
    rec = per_record_auroc(sc, labs, cands)  # (R,) NaN where a record has no clean candidate
    cell["auroc_rec"], cell["auroc_rec_lo"], cell["auroc_rec_hi"] = _mean_ci(rec, n_boot, seed)
    first = per_record_auroc(sc, [t["first"] for t in cell_targets], [t["first_candidates"] for t in cell_targets])
    cell["auroc_first"] = float(np.nanmean(first)) if (~np.isnan(first)).any() else math.nan
    cell["auroc"] = error_token_auroc(sc, labs)
    cell["top1_all"] = top1_localisation(sc, labs)
    cell["top1_all_chance"] = float(np.mean([lab.mean() for lab in labs]))
    among = [(s[c.astype(bool)], lab[c.astype(bool)]) for (s, lab), c in zip(_pairs(sc, labs), cands)]
    among = [(s, lab) for s, lab in among if lab.any()]
    if among:  # the lowest *candidate* is an error; a constant score gets (errors) / (candidates)
        cell["top1"] = top1_localisation([s for s, _ in among], [lab for _, lab in among])
        cell["top1_chance"] = float(np.mean([lab.mean() for _, lab in among]))
    if reference is not None:
        cell["delta_rec"], cell["delta_rec_lo"], cell["delta_rec_hi"] = _mean_ci(reference - rec, n_boot, seed)
    if kind == "two_errors":
        errs = [t["error_labels"] for t in cell_targets]
        cell["stitching"] = stitching_rate(sc, errs)
        cell["stitching_chance"] = stitching_rate([np.zeros(len(lab)) for lab in labs], errs)
        cell["stitching_k2"] = stitching_rate(sc, errs, k=2)
        cell["stitching_top5"] = stitching_rate(sc, errs, k=5)
    if pairs is not None:
        cell["pair_acc"] = pair_accuracy(*pairs)
    if n_boot:
        a, t = _fast_bootstrap(_pairs(sc, labs, need_error=True), n_boot, seed)
        cell.update(auroc_lo=a.lo, auroc_hi=a.hi, top1_all_lo=t.lo, top1_all_hi=t.hi)
    return cell, rec


def _check_inputs(methods: Mapping, targets: Sequence[dict], pair_scores: Mapping | None) -> int:
    n = len(targets)
    for name, sc in methods.items():
        if len(sc) != n:
            raise ValueError(f"methods[{name!r}] has {len(sc)} records, targets has {n}")
    for name, (c, r) in (pair_scores or {}).items():
        if len(c) != n or len(r) != n:
            raise ValueError(f"pair_scores[{name!r}] has {len(c)}/{len(r)} pairs, targets has {n}")
    return n


def credit_table(
    methods: Mapping[str, Sequence[Sequence[float]]],
    targets: Sequence[dict],
    *,
    pair_scores: Mapping[str, tuple[Sequence[float], Sequence[float]]] | None = None,
    kinds: Sequence[str] = TABLE_KINDS,
    n_boot: int = 0,
    seed: int = 0,
    reference: str | None = "dpo_reward",
    subset: str | None = None,
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
        n_boot: when > 0, 95% percentile-bootstrap intervals over records: ``auroc_rec_lo/hi``,
            ``delta_rec_lo/hi`` (paired: the same resampled records for both methods) and
            ``auroc_lo/auroc_hi/top1_all_lo/top1_all_hi`` (the same numbers as :func:`qstar_lib.stats.bootstrap_ci`
            with this ``seed``, in one matrix product).
        reference: the method the ``delta_rec`` columns compare with (None: no differences).
        subset: one of :data:`SUBSETS`: only those records (data v2 flags).

    Returns a ``pandas.DataFrame`` (index ``method``; columns a MultiIndex ``(kind, metric)``) with metrics
    ``n`` (records in the cell), ``n_err_tokens``, ``auroc_rec`` (the headline: the mean over records of the
    AUROC inside each record among its candidate tokens, :func:`qstar_lib.eval.credit.per_record_auroc`;
    chance 0.5), ``auroc_first`` (the same with only each error's first differing token as positive),
    ``auroc`` (pooled over all tokens of all records, :func:`error_token_auroc`; it also rewards scoring a
    whole summary low), ``top1`` (:func:`top1_localisation` among the candidates: the lowest candidate token
    is an error) and ``top1_chance`` (a constant score's), ``top1_all`` (the lowest of all tokens) and ``top1_all_chance``,
    ``pair_acc`` (:func:`pair_accuracy`), ``delta_rec`` (reference minus this method, per record, averaged),
    and under ``two_errors`` also ``stitching`` (k = labelled tokens) with ``stitching_chance``,
    ``stitching_k2`` and ``stitching_top5``. A cell with no records is NaN with n = 0. Records with no
    labelled token (omission/verbosity pairs) have no token metric; they are left out with a warning.
    """
    import pandas as pd

    n = _check_inputs(methods, targets, pair_scores)
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
    if reference is not None and reference not in methods:
        raise ValueError(f"reference={reference!r} is not one of the methods {list(methods)}")
    order = ([reference] if reference else []) + [m for m in order if m != reference]
    rows: dict[str, dict] = {m: {} for m in order}
    for kind in kinds:
        idx = _group(targets, kind, subset)
        ref_rec = None
        for m in order:
            pairs = None
            if pair_scores and m in pair_scores:
                c, r = pair_scores[m]
                pairs = ([c[i] for i in idx], [r[i] for i in idx])
            sc, tg = [methods[m][i] for i in idx], [targets[i] for i in idx]
            cell, rec = _cell(kind, sc, tg, pairs, n_boot, seed, None if m == reference else ref_rec)
            ref_rec = rec if m == reference else ref_rec
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
    controls: Mapping[str, Sequence[Mapping]] | None = None,
    extra: Mapping[str, Sequence[Sequence[float]]] | None = None,
    seed: int = 0,
    n_boot: int = 0,
    kinds: Sequence[str] = TABLE_KINDS,
    subset: str | None = None,
):
    """:func:`credit_table` straight from score_pairs rows (they carry their token labels) and pair_logps rows.

    ``controls`` (score_pairs rows of the control policies, see :func:`qstar_lib.eval.baselines.credit_scores`)
    and ``extra`` (name -> per-token scores, e.g. :func:`qstar_lib.eval.shortcuts.shortcut_scores`) add rows.
    ``pair_acc`` is filled for ``dpo_reward`` and the controls (chosen vs rejected sequence reward) and, when
    their log-probs are given, for the surprisal baselines (chosen vs rejected sequence log-prob: does the model merely
    find the rejected summary less likely?).
    """
    targets = credit_targets(scored)
    methods = credit_scores(scored, sft_logps=sft_logps, base_logps=base_logps, controls=controls, seed=seed)
    methods.update(extra or {})
    pair_scores = {
        name: ([r["chosen_reward"] for r in rows], [r["rejected_reward"] for r in rows])
        for name, rows in {"dpo_reward": scored, **(controls or {})}.items()
    }
    for name, rows in (("sft_surprisal", sft_logps), ("base_surprisal", base_logps)):
        if rows is not None:
            pair_scores[name] = ([r["chosen_logps"] for r in rows], [r["rejected_logps"] for r in rows])
    return credit_table(methods, targets, pair_scores=pair_scores, kinds=kinds, n_boot=n_boot, seed=seed, subset=subset)
