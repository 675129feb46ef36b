"""Statistics shared by every chapter: the percentile bootstrap of a mean.

It knows nothing about models or data: arrays in, intervals out.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def bootstrap_ci(
    values: Sequence[float] | np.ndarray, *, confidence: float = 0.95, n_boot: int = 2000, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of a mean over prompts (resampling prompts with replacement).

    ``values`` are per-prompt outcomes, e.g. the judge's 1 / 0.5 / 0 (ties count one half, so the
    binomial shortcut of :func:`qstar_lib.eval.llm_judge.bootstrap_ci` does not apply). Seeded: the same
    values and seed give the same interval. ``(nan, nan)`` for no values.
    """
    values = np.asarray(values, dtype=float)  # (N,)
    if values.ndim != 1:
        raise ValueError(f"values must be 1-D, got shape {values.shape}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    if values.size == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, values.size, size=(n_boot, values.size))  # (n_boot, N)
    means = values[idx].mean(axis=1)  # (n_boot,)
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(means, [alpha, 1.0 - alpha])
    return float(low), float(high)
