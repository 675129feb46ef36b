"""The per-token scores the credit metrics compare: the DPO implicit reward and its four baselines.

Every score follows the convention of :mod:`qstar_lib.eval.credit`: one float per token of the *rejected*
completion, aligned as :func:`qstar_lib.lm.logps.score_pairs` returns them (EOS entry last when kept), and
**lower = more suspicious**. Surprisal baselines use ``+log pi`` (negative surprisal) so that an unlikely
token also gets a low score. Models appear only in the surprisal baselines, through
:func:`qstar_lib.lm.logps.pair_logps`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from qstar_lib.eval.credit import _vector

__all__ = [
    "DEFAULT_METHODS",
    "base_surprisal",
    "credit_scores",
    "log_ratio",
    "random_scores",
    "sft_surprisal",
    "surprisal_scores",
    "uniform_share",
]

#: Row order of :func:`qstar_lib.eval.credit_tables.credit_table`: the DPO implicit reward, the log-ratio controls
#: (:func:`log_ratio`: two models' per-token log-probs subtracted, the DPO reward's own form), the surprisal
#: baselines and the chance rows; the no-model rows of :mod:`qstar_lib.eval.shortcuts` follow when given.
DEFAULT_METHODS = (
    "dpo_reward",
    "sft_minus_base",
    "continued_sft",
    "shuffled_dpo",
    "sft_surprisal",
    "base_surprisal",
    "random",
    "uniform_share",
)


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


def sft_surprisal(
    model_or_rows,
    tokenizer=None,
    records: Sequence[Mapping] | None = None,
    *,
    side: str = "rejected",
    **pair_logps_kwargs,
) -> list[np.ndarray]:
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


def base_surprisal(
    model_or_rows,
    tokenizer=None,
    records: Sequence[Mapping] | None = None,
    *,
    side: str = "rejected",
    **pair_logps_kwargs,
) -> list[np.ndarray]:
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


def log_ratio(policy_rows: Sequence[Mapping], reference_rows: Sequence[Mapping], side: str = "rejected"):
    """A control of the DPO reward's own form: ``log pi_a - log pi_b`` per token, from two models'
    :func:`qstar_lib.lm.logps.pair_logps` rows on the same records (lower = more suspicious).

    With the SFT model against the base model it asks whether *any* fine-tuning on the chosen summaries
    already moves the planted tokens (no preference was ever seen); with a continued-SFT model or a DPO run on
    shuffled labels against the SFT model, whether more steps of the same size do, without the preference
    signal. The DPO reward must beat these, not only absolute surprisal, to show that preferences taught
    credit assignment. (The DPO reward is ``beta`` times such a ratio; AUROC does not see the factor.)"""
    a, b = _per_token(policy_rows, f"{side}_per_token_logps"), _per_token(reference_rows, f"{side}_per_token_logps")
    if len(a) != len(b):
        raise ValueError(f"log_ratio: {len(a)} policy rows but {len(b)} reference rows")
    for i, (x, y) in enumerate(zip(a, b)):
        if x.shape != y.shape:
            raise ValueError(f"log_ratio: row {i} has {x.shape[0]} policy and {y.shape[0]} reference tokens")
    return [x - y for x, y in zip(a, b)]


def credit_scores(
    scored: Sequence[Mapping],
    *,
    sft_logps: Sequence[Mapping] | None = None,
    base_logps: Sequence[Mapping] | None = None,
    controls: Mapping[str, Sequence[Mapping]] | None = None,
    seed: int = 0,
) -> dict[str, list[np.ndarray]]:
    """The per-token scores of every method for the rejected completions (lower = more suspicious).

    ``scored``: :func:`qstar_lib.lm.logps.score_pairs` rows (``dpo_reward`` and ``uniform_share`` come from
    ``rejected_rewards``); ``sft_logps`` / ``base_logps``: :func:`qstar_lib.lm.logps.pair_logps` rows of the
    SFT and base models (those methods, and ``sft_minus_base`` when both are given, are left out otherwise);
    ``controls``: name -> score_pairs rows of another policy against the same reference (``continued_sft``,
    ``shuffled_dpo``), read like the DPO reward; ``random`` uses ``seed``.
    """
    methods = {"dpo_reward": _per_token(scored, "rejected_rewards")}
    if sft_logps is not None and base_logps is not None:
        methods["sft_minus_base"] = log_ratio(sft_logps, base_logps)
    for name, rows in (controls or {}).items():
        methods[name] = _per_token(rows, "rejected_rewards")
    if sft_logps is not None:
        methods["sft_surprisal"] = sft_surprisal(sft_logps)
    if base_logps is not None:
        methods["base_surprisal"] = base_surprisal(base_logps)
    methods["random"] = random_scores(methods["dpo_reward"], seed=seed)
    methods["uniform_share"] = uniform_share(scored)
    return methods
