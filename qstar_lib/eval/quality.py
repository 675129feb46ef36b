"""The quality of decoded summaries, judged: gold score, win rates against anchor decodes, length, stops,
repetition.

One row per decoding setting (:func:`decode_stats`), many rows as a table (:func:`decode_table`). The search
chapter's over-optimisation curve (:mod:`qstar_lib.eval.sweep`) and the proxy-tuning chapter's controls both
read their numbers from here, so a decode is judged the same way wherever it appears. It knows nothing about
models: it is handed records and :class:`qstar_lib.lm.decoding.Decoded` results.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np

from qstar_lib.eval.judge import compare as gold_compare
from qstar_lib.eval.judge import score_summary
from qstar_lib.lm.decoding import STOP_REASONS, Decoded
from qstar_lib.stats import mean_ci


def distinct_n(text: str, n: int = 2) -> float:
    """Share of distinct word n-grams among the n-grams of ``text`` (1.0: no n-gram repeats; a decode that
    loops one sentence tends to 0). NaN for a text of fewer than ``n`` words."""
    words = text.split()
    grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
    return len(set(grams)) / len(grams) if grams else float("nan")


def _mean_ci(values, stats: dict) -> tuple[float, float, float]:
    return mean_ci(values, **stats)


def decode_stats(
    records: Sequence[Mapping],
    decodes: Sequence[Decoded],
    anchors: Mapping[str, Sequence[str]] | None = None,
    judge: Callable | None = None,
    *,
    rewards: Sequence[float] | None = None,
    log_ratios: Sequence[float] | None = None,
    confidence: float = 0.95,
    n_boot: int = 2000,
    seed: int = 0,
) -> dict:
    """One row of the sweep: the judged quality, length, stops and repetition of one decode per record.

    - ``gold_score`` (with its interval): the mean :func:`qstar_lib.eval.judge.score_summary` score, beside
      the mean counts of correct, contradicted and invented facts and of words;
    - for each ``anchors`` entry ``name -> texts`` (one per record), ``name`` (and its interval): the win
      rate of the decode against that text of the same record under ``judge`` (default: the gold judge's
      :func:`qstar_lib.eval.judge.compare`; ties count one half);
    - ``implicit_reward`` / ``kl`` (with intervals) when ``rewards`` / ``log_ratios`` (one per record) are
      given, else NaN;
    - ``mean_tokens`` (generated tokens, with interval), the share of each stop reason (``stop_eos``,
      ``stop_newline``, ``stop_cap``), ``distinct_2`` (mean of :func:`distinct_n` over decodes of >= 2 words)
      and ``n``. Also ``outcomes`` (anchor name -> per-record judge results) and ``per_record`` (the per-record
      ``gold_score``, ``mean_tokens`` and ``implicit_reward`` values the means are taken over, for paired
      comparisons between settings).
    """
    judge = gold_compare if judge is None else judge
    if len(records) != len(decodes):
        raise ValueError(f"{len(decodes)} decodes for {len(records)} records")
    stats = dict(confidence=confidence, n_boot=n_boot, seed=seed)
    texts = [d.text for d in decodes]
    scores = [score_summary(t, r) for t, r in zip(texts, records)]
    row: dict = {}
    row["gold_score"], row["gold_score_lo"], row["gold_score_hi"] = _mean_ci([s.score for s in scores], stats)
    outcomes = {}
    for name, anchor in (anchors or {}).items():
        if len(anchor) != len(records):
            raise ValueError(f"anchors[{name!r}] has {len(anchor)} texts for {len(records)} records")
        outcomes[name] = [float(judge(r, t, a)) for r, t, a in zip(records, texts, anchor)]
        row[name], row[f"{name}_lo"], row[f"{name}_hi"] = _mean_ci(outcomes[name], stats)
    for name, values in (("implicit_reward", rewards), ("kl", log_ratios)):
        if values is not None and len(values) != len(records):
            raise ValueError(f"{name}: {len(values)} values for {len(records)} records")
        est = _mean_ci(values, stats) if values is not None else (float("nan"),) * 3
        row[name], row[f"{name}_lo"], row[f"{name}_hi"] = est
    row["mean_tokens"], row["mean_tokens_lo"], row["mean_tokens_hi"] = _mean_ci([d.n_tokens for d in decodes], stats)
    for reason in STOP_REASONS:
        row[f"stop_{reason}"] = float(np.mean([d.stop == reason for d in decodes])) if decodes else float("nan")
    distinct = [distinct_n(t) for t in texts]
    row["distinct_2"] = float(np.nanmean(distinct)) if not np.isnan(distinct).all() else float("nan")
    for count in ("n_correct", "n_contradicted", "n_invented"):
        row[count] = float(np.mean([getattr(s, count) for s in scores])) if scores else float("nan")
    row["mean_words"] = float(np.mean([s.n_words for s in scores])) if scores else float("nan")
    row["n"] = len(decodes)
    row["outcomes"] = outcomes
    row["per_record"] = {
        "gold_score": [sc.score for sc in scores],
        "mean_tokens": [float(d.n_tokens) for d in decodes],
        "implicit_reward": list(rewards) if rewards is not None else [float("nan")] * len(decodes),
    }
    return row


def decode_table(
    records: Sequence[Mapping],
    decodes: Mapping[str, Sequence[Decoded]],
    anchors: Mapping[str, str] | None = None,
    judge: Callable | None = None,
    **stats,
):
    """A ``pandas.DataFrame`` of :func:`decode_stats` rows, one per entry of ``decodes`` (name -> one decode per
    record), in that order. ``anchors`` maps a column name to the name of the decodes every row is compared
    with (e.g. ``{"win_rate_vs_base": "base"}``); ``stats`` go to :func:`decode_stats` (``n_boot``, ``seed``,
    ``confidence``; per-record ``rewards`` or ``log_ratios`` belong to one row, so they raise here). The judge
    outcomes are in ``df.attrs["outcomes"]``."""
    import pandas as pd

    if {"rewards", "log_ratios"} & set(stats):
        raise ValueError("rewards and log_ratios are per row: call decode_stats for each row instead")
    for column, name in (anchors or {}).items():
        if name not in decodes:
            raise ValueError(f"anchors[{column!r}] = {name!r} is not among the decodes ({', '.join(decodes)})")
    texts = {column: [d.text for d in decodes[name]] for column, name in (anchors or {}).items()}
    rows, outcomes = {}, {}
    for name, decoded in decodes.items():
        row = decode_stats(records, decoded, texts, judge, **stats)
        outcomes[name] = row.pop("outcomes")
        row.pop("per_record")
        rows[name] = row
    df = pd.DataFrame.from_dict(rows, orient="index")
    df.attrs["outcomes"] = outcomes
    return df
