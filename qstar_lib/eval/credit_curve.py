"""Credit assignment along a training run: the credit metrics of every saved checkpoint, and of fixed scores.

The tree chapter shows localisation sharpening with the number of preference pairs; on the language model
the same curve is the credit table's headline (per-record AUROC per error kind) computed at each checkpoint
of a run against the same reference. :func:`localisation_curve` scores the checkpoints (one forward pass per
pair each, the reference's log-probs given once); :func:`method_table` scores per-token arrays that need no
policy (a log-ratio of two fixed models, the no-model shortcuts) on planted-error records. Checkpoints are
chosen on a validation split with these curves; the test pairs are scored once, with the chosen ones.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from qstar_lib.eval.credit_tables import SINGLE_KINDS, credit_table, credit_targets

__all__ = ["localisation_curve", "method_table"]


def method_table(
    methods: Mapping[str, Sequence],
    records: Sequence[Mapping],
    tokenizer,
    *,
    kinds: Sequence[str] = SINGLE_KINDS,
    metric: str | None = None,
    **table_kw,
):
    """:func:`qstar_lib.eval.credit_tables.credit_table` of per-token scores of the records' rejected
    completions, with the records' own token labels (no scored rows needed). ``metric``: one metric's
    column per kind instead of the whole table."""
    from qstar_lib.lm.collate import planted_labels

    targets = credit_targets([planted_labels(r, tokenizer) for r in records])
    table_kw.setdefault("reference", None)
    df = credit_table(methods, targets, kinds=kinds, **table_kw)
    return df.xs(metric, axis=1, level="metric") if metric else df


def localisation_curve(
    load: Callable[[int], object],
    steps: Sequence[int],
    tokenizer,
    records: Sequence[Mapping],
    ref_logps: Sequence[Mapping],
    beta: float,
    *,
    kinds: Sequence[str] = SINGLE_KINDS,
    metric: str = "auroc_rec",
    cache: bool = False,
    **score_kw,
):
    """``metric`` of the implicit reward of each checkpoint ``load(step)`` against the reference whose
    :func:`qstar_lib.lm.logps.pair_logps` rows are ``ref_logps``: a DataFrame indexed by step, one column
    per kind. Each model is released before the next is loaded. ``cache``: each checkpoint's log-probs
    through the disk cache (:func:`qstar_lib.lm.logps_cache.cached_score_pairs`)."""
    import pandas as pd

    from qstar_lib.lm.logps import score_pairs
    from qstar_lib.lm.logps_cache import cached_score_pairs

    rows = {}
    for step in steps:
        model = load(step)
        if cache:
            scored = cached_score_pairs(model, tokenizer, records, beta, ref_logps, **score_kw)
        else:
            scored = score_pairs(model, None, tokenizer, records, beta, ref_scores=ref_logps, **score_kw)
        del model
        rewards = {"reward": [r["rejected_rewards"] for r in scored]}
        table = credit_table(rewards, credit_targets(scored), kinds=kinds, reference=None)
        rows[step] = table.xs(metric, axis=1, level="metric").loc["reward"]
    df = pd.DataFrame(rows).T
    df.index.name = "step"
    return df
