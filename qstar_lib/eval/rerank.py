"""Best-of-n (paper Section 5.2): the DPO model as a verifier, as V-STaR does.

Sample n summaries per prompt and keep the one with the largest sequence implicit reward
beta * (log pi_theta - log pi_ref) (eq. 10 summed). It is likelihood search of eq. 13 restricted to n
proposals, the second search the chapter on search compares with beam search
(:mod:`qstar_lib.eval.sweep`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from qstar_lib.eval.quality import decode_stats
from qstar_lib.eval.sweep import ROWS_PER_CALL, sequence_log_ratios
from qstar_lib.lm.collate import record_field
from qstar_lib.lm.decoding import PAPER_TOP_K, Decoded, decode_summaries


@dataclass
class BestOfN:
    """What :func:`best_of_n` picked, per prompt: ``summaries[i] = candidates[i][index[i]]``."""

    summaries: list[str]
    scores: list[float]  # the implicit reward of the picked candidate
    index: list[int]  # which of the n samples was picked (0 = the first sample)
    candidates: list[list[str]]  # (N, n) all samples
    candidate_scores: list[list[float]]  # (N, n) their implicit rewards
    decoded: list[list[Decoded]]  # (N, n) the samples with their lengths and stop reasons

    @property
    def first_samples(self) -> list[str]:
        """The first sample per prompt: what plain sampling would have returned."""
        return [c[0] for c in self.candidates]


def implicit_rewards(
    policy,
    ref_model,
    tokenizer,
    prompts: Sequence[str],
    completions: Sequence[str],
    beta: float,
    *,
    batch_size: int = 8,
    max_length: int = 1024,
) -> list[float]:
    """Sequence-level implicit reward beta * (log pi_theta(y|x) - log pi_ref(y|x)) of each completion: the
    per-token rewards of eq. 10 summed over the completion (:func:`sequence_log_ratios`, float64)."""
    if beta <= 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    logps = sequence_log_ratios(
        [policy, ref_model], tokenizer, prompts, completions, batch_size=batch_size, max_length=max_length
    )
    return (beta * (logps[0] - logps[1])).tolist()


def best_of_n(
    policy,
    ref_model,
    tokenizer,
    records: Sequence[Mapping],
    n: int = 8,
    beta: float = 0.1,
    *,
    proposal=None,
    temperature: float = 1.0,
    top_k: int | None = PAPER_TOP_K,
    max_new_tokens: int = 128,
    batch_size: int = 8,
    rows_per_call: int = ROWS_PER_CALL,
    seed: int = 0,
    stop_at_newline: bool = True,
    progress: bool = True,
) -> BestOfN:
    """Sample ``n`` summaries per prompt from ``proposal`` (default: the policy itself) at ``temperature``
    and keep the one with the largest DPO implicit reward beta * (log pi_theta - log pi_ref) summed over
    the completion: the DPO model used as a verifier, as V-STaR does (paper Section 5.2).

    It is likelihood search of eq. 13 restricted to n proposals, with the reference term moved to the
    score. Ties go to the earliest sample (exact comparison), so with ``policy == ref_model`` every score is
    0 and the result is the first sample, i.e. plain sampling.

    Each ``generate`` call decodes about ``rows_per_call`` rows (``n`` per prompt, sharing one prompt
    prefill); ``batch_size`` counts completions per scoring batch.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    proposal = policy if proposal is None else proposal
    prompts = [record_field(r, i, "prompt") for i, r in enumerate(records)]
    repeated = [p for p in prompts for _ in range(n)]  # (N * n,): prompt i's samples are rows i*n .. i*n+n-1
    samples = decode_summaries(
        proposal,
        tokenizer,
        prompts,
        do_sample=True,
        temperature=temperature,
        top_k=top_k,
        max_new_tokens=max_new_tokens,
        rows_per_call=rows_per_call,
        seed=seed,
        stop_at_newline=stop_at_newline,
        num_return_sequences=n,
        progress=progress,
    )
    texts = [d.text for d in samples]
    scores = implicit_rewards(policy, ref_model, tokenizer, repeated, texts, beta, batch_size=batch_size)
    decoded = [samples[i * n : (i + 1) * n] for i in range(len(prompts))]
    candidates = [[d.text for d in row] for row in decoded]
    candidate_scores = [scores[i * n : (i + 1) * n] for i in range(len(prompts))]
    index = [max(range(n), key=lambda j, s=s: (s[j], -j)) for s in candidate_scores]  # ties -> lowest j
    return BestOfN(
        summaries=[c[j] for c, j in zip(candidates, index)],
        scores=[s[j] for s, j in zip(candidate_scores, index)],
        index=index,
        candidates=candidates,
        candidate_scores=candidate_scores,
        decoded=decoded,
    )


def best_of_n_comparison(
    records: Sequence[Mapping],
    result: BestOfN,
    anchors: Mapping[str, Sequence[str]] | None = None,
    judge: Callable | None = None,
    *,
    confidence: float = 0.95,
    n_boot: int = 2000,
    seed: int = 0,
):
    """Two :func:`qstar_lib.eval.quality.decode_stats` rows (``first sample``, ``best of n``), indexed by that name: gold score,
    win rates against ``anchors`` (e.g. the greedy SFT and DPO summaries), the implicit reward of the pick,
    lengths and stops.

    Both rows come from the same samples, so the difference is only the reranking by the implicit reward."""
    import pandas as pd

    n = len(result.candidates[0]) if result.candidates else 0
    picks = {
        "first sample": ([row[0] for row in result.decoded], [s[0] for s in result.candidate_scores]),
        f"best of {n}": ([row[j] for row, j in zip(result.decoded, result.index)], result.scores),
    }
    rows = {}
    for name, (decodes, rewards) in picks.items():
        row = decode_stats(
            records, decodes, anchors, judge, rewards=rewards, confidence=confidence, n_boot=n_boot, seed=seed
        )
        row.pop("outcomes")
        row.pop("per_record")
        rows[name] = row
    return pd.DataFrame.from_dict(rows, orient="index")
