"""Statistics shared by every chapter: the percentile bootstrap, one implementation for the whole library.

It knows nothing about models or data: arrays in, intervals out. Every bootstrap of the library draws its
resamples with :func:`resample_indices` (one seeded generator, ``(n_boot, n)`` indices with replacement), so
two statistics bootstrapped with the same seed see the same resamples (the credit table's fast bootstrap
relies on it), and reads its interval with :func:`percentile_interval`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np


def resample_indices(n: int, n_boot: int, seed: int) -> np.ndarray:
    """(n_boot, n) indices drawn with replacement from ``numpy.random.default_rng(seed)``."""
    return np.random.default_rng(seed).integers(0, n, size=(n_boot, n))


def percentile_interval(stats: np.ndarray, confidence: float) -> tuple[float, float]:
    """The central ``confidence`` interval of bootstrap statistics: their (alpha, 1 - alpha) quantiles."""
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(stats, [alpha, 1.0 - alpha])
    return float(low), float(high)


def bootstrap_ci(
    *per_record: Sequence | np.ndarray,
    statistic: Callable[..., float] | None = None,
    confidence: float = 0.95,
    n_boot: int = 2000,
    seed: int = 0,
    binomial: bool = False,
) -> tuple[float, float]:
    """Percentile bootstrap interval of a statistic over records (resampling records with replacement).

    Without ``statistic``: one 1-D array of per-prompt outcomes (e.g. the judge's 1 / 0.5 / 0) and the
    interval of their mean, computed from all resamples at once. With ``statistic``: any number of
    per-record sequences of one length (scores, labels, ...); each resample takes the same record indices
    from every sequence, so the tokens of a record stay together, and the interval is that of
    ``statistic(*resampled)``, e.g. ``bootstrap_ci(scores, labels, statistic=error_token_auroc)``.

    ``binomial=True`` (mean of 0/1 outcomes only, as the LLM judge's decided comparisons are): the number of
    wins in a resample of N outcomes is Binomial(N, observed rate), the same distribution as indexing with
    replacement, drawn without an (n_boot, N) array (other random numbers, so other endpoints for a seed).
    With ties (1/2) the shortcut does not apply, and it raises.

    Seeded: the same values and seed give the same interval. ``(nan, nan)`` for no records.
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    if statistic is None:
        if len(per_record) != 1:
            raise ValueError(f"without a statistic, give one array of values (got {len(per_record)})")
        values = np.asarray(per_record[0], dtype=float)  # (N,)
        if values.ndim != 1:
            raise ValueError(f"values must be 1-D, got shape {values.shape}")
        if values.size == 0:
            return float("nan"), float("nan")
        if binomial:
            if not np.isin(values, (0.0, 1.0)).all():
                raise ValueError("binomial=True needs only True/False (1/0) outcomes")
            rng = np.random.default_rng(seed)
            means = rng.binomial(values.size, values.mean(), size=n_boot) / values.size  # (n_boot,)
        else:
            means = values[resample_indices(values.size, n_boot, seed)].mean(axis=1)  # (n_boot,)
        return percentile_interval(means, confidence)
    if binomial:
        raise ValueError("binomial=True is a shortcut for the mean of 0/1 outcomes; it takes no statistic")
    if not per_record:
        raise ValueError("bootstrap_ci needs at least one per-record sequence")
    n = len(per_record[0])
    if any(len(a) != n for a in per_record):
        raise ValueError(f"per-record arguments have different lengths {[len(a) for a in per_record]}")
    if n == 0:
        return float("nan"), float("nan")
    stats = np.array(
        [statistic(*[[a[i] for i in idx] for a in per_record]) for idx in resample_indices(n, n_boot, seed)]
    )  # (n_boot,)
    return percentile_interval(stats, confidence)


def mean_ci(values, *, confidence: float = 0.95, n_boot: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """``(mean, low, high)`` of the defined (non-NaN) entries of ``values``, the interval from
    :func:`bootstrap_ci` over them; NaNs when no entry is defined, NaN bounds when ``n_boot`` is 0."""
    v = np.asarray(values, dtype=float).reshape(-1)  # (N,)
    v = v[~np.isnan(v)]
    if not v.size:
        return float("nan"), float("nan"), float("nan")
    if not n_boot:
        return float(v.mean()), float("nan"), float("nan")
    return (float(v.mean()), *bootstrap_ci(v, confidence=confidence, n_boot=n_boot, seed=seed))
