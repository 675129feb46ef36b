"""Figure 2 (paper Section 5.2): a sweep over beam widths and length penalties, judged, and best-of-n.

"More beams" on a DPO policy means "optimise the learned reward harder" (eq. 12-13, see
:mod:`qstar_lib.lm.value_search`), which is why the paper sees a few beams help and many beams hurt, with
exploding lengths (reward over-optimisation). :func:`beam_sweep` decodes with
:func:`qstar_lib.lm.decoding.generate_summaries` and judges each summary against the record's chosen one
(:func:`plot_beam_sweep` draws our Fig. 2); :func:`best_of_n` reranks samples by the implicit reward (the
V-STaR-style verifier the paper mentions).

It knows nothing about training: it is handed models and a judge function.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from qstar_lib.eval.judge import compare as gold_compare
from qstar_lib.lm.collate import encode_completion, pad_batch, pad_token_id, record_field
from qstar_lib.lm.decoding import PAPER_TOP_K, generate_summaries
from qstar_lib.lm.logps import model_device, per_token_logps, per_token_rewards, sequence_logps
from qstar_lib.lm.models import eval_mode
from qstar_lib.plots import COLORS, new_figure
from qstar_lib.stats import bootstrap_ci

#: Columns of the table :func:`beam_sweep` returns.
SWEEP_COLUMNS = (
    "decoding",
    "num_beams",
    "length_penalty",
    "win_rate",
    "ci_low",
    "ci_high",
    "mean_tokens",
    "mean_words",
    "n",
)


# ----------------------------------------------------------------------------------------------- judging


def summary_stats(
    records: Sequence[Mapping],
    summaries: Sequence[str],
    tokenizer,
    judge: Callable | None = None,
    *,
    confidence: float = 0.95,
    n_boot: int = 2000,
    seed: int = 0,
) -> dict:
    """Win rate of ``summaries`` against each record's ``chosen`` summary under ``judge`` (default: the gold
    judge :func:`qstar_lib.eval.judge.compare`; ties count one half), its bootstrap interval over prompts, mean
    length in tokens (the returned text re-tokenised by ``tokenizer`` without special tokens, which for
    byte-level garbage from a random model can exceed the tokens generated) and in words, and ``n``. Also
    ``outcomes`` (list of per-prompt judge results)."""
    if judge is None:
        judge = gold_compare
    if len(records) != len(summaries):
        raise ValueError(f"{len(summaries)} summaries for {len(records)} records")
    outcomes = []
    for i, (record, summary) in enumerate(zip(records, summaries)):
        chosen = record_field(record, i, "chosen")
        outcomes.append(float(judge(record, summary, chosen)))
    low, high = bootstrap_ci(outcomes, confidence=confidence, n_boot=n_boot, seed=seed)
    n_tokens = [len(tokenizer(s, add_special_tokens=False).input_ids) for s in summaries]
    n_words = [len(s.split()) for s in summaries]
    return {
        "win_rate": float(np.mean(outcomes)) if outcomes else float("nan"),
        "ci_low": low,
        "ci_high": high,
        "mean_tokens": float(np.mean(n_tokens)) if n_tokens else float("nan"),
        "mean_words": float(np.mean(n_words)) if n_words else float("nan"),
        "n": len(outcomes),
        "outcomes": outcomes,
    }


def beam_sweep(
    model,
    tokenizer,
    records: Sequence[Mapping],
    beams: Sequence[int] = (1, 2, 5, 10, 20),
    length_penalties: Sequence[float] = (0.0, 1.0),
    include_sampling: bool = True,
    judge: Callable | None = None,
    *,
    max_new_tokens: int = 64,
    batch_size: int = 8,
    seed: int = 0,
    temperature: float = 1.0,
    top_k: int | None = PAPER_TOP_K,
    early_stopping: bool | str = False,
    stop_at_newline: bool = True,
    confidence: float = 0.95,
    n_boot: int = 2000,
    progress: bool = True,
):
    """Our Fig. 2: win rate against the chosen summary and length, per beam width and length penalty.

    Returns a ``pandas.DataFrame`` with one row per (decoding, num_beams, length_penalty) and the columns
    :data:`SWEEP_COLUMNS`: ``decoding`` is ``"beam"`` (``num_beams=1`` is greedy decoding, which is the same
    for every length penalty, so it is generated once and reported on each penalty's row) or ``"sample"``
    (one sample per prompt at ``temperature``/``top_k``, ``num_beams=1``, ``length_penalty`` NaN); the win
    rate and its percentile-bootstrap interval over prompts (seeded by ``seed``); the mean length in tokens
    and words; ``n``. The summaries are in ``df.attrs["summaries"]`` keyed by ``(decoding, num_beams,
    length_penalty)`` and the per-prompt judge outcomes in ``df.attrs["outcomes"]``.
    """
    import pandas as pd

    beams = [int(k) for k in beams]
    if not beams or min(beams) < 1:
        raise ValueError(f"beams must be non-empty and >= 1, got {beams}")
    prompts = [record_field(r, i, "prompt") for i, r in enumerate(records)]
    for i, r in enumerate(records):
        record_field(r, i, "chosen")
    gen = dict(
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        seed=seed,
        stop_at_newline=stop_at_newline,
        progress=progress,
    )
    stats = dict(confidence=confidence, n_boot=n_boot, seed=seed)
    rows, summaries, outcomes = [], {}, {}
    greedy = None
    for lp in length_penalties:
        for k in sorted(set(beams)):
            if k == 1:
                if greedy is None:
                    greedy = generate_summaries(model, tokenizer, prompts, num_beams=1, **gen)
                texts = greedy
            else:
                texts = generate_summaries(
                    model, tokenizer, prompts, num_beams=k, length_penalty=lp, early_stopping=early_stopping, **gen
                )
            s = summary_stats(records, texts, tokenizer, judge, **stats)
            key = ("beam", k, float(lp))
            summaries[key], outcomes[key] = texts, s.pop("outcomes")
            rows.append({"decoding": "beam", "num_beams": k, "length_penalty": float(lp), **s})
    if include_sampling:
        texts = generate_summaries(
            model, tokenizer, prompts, do_sample=True, temperature=temperature, top_k=top_k, **gen
        )
        s = summary_stats(records, texts, tokenizer, judge, **stats)
        key = ("sample", 1, float("nan"))
        summaries[key], outcomes[key] = texts, s.pop("outcomes")
        rows.append({"decoding": "sample", "num_beams": 1, "length_penalty": float("nan"), **s})
    df = pd.DataFrame(rows, columns=list(SWEEP_COLUMNS))
    df.attrs["summaries"] = summaries
    df.attrs["outcomes"] = outcomes
    return df


def plot_beam_sweep(df, title: str | None = None):
    """Fig. 2 from a :func:`beam_sweep` table: win rate with its interval (left) and mean length in tokens
    (right) against the number of beams, one line per length penalty, the sampling baseline as a
    horizontal line. Returns the figure."""

    fig, (ax_win, ax_len) = new_figure(1, 2, figsize=(11.0, 4.0))
    palette = [COLORS["policy"], COLORS["accent"], COLORS["chosen"], COLORS["rejected"]]
    names = {0.0: "sum of log-probs", 1.0: "mean log-prob per token"}
    beam_rows = df[df["decoding"] == "beam"]
    penalties = sorted(beam_rows["length_penalty"].unique())
    markers = ["o", "s", "^", "D"]
    for i, lp in enumerate(penalties):
        part = beam_rows[beam_rows["length_penalty"] == lp].sort_values("num_beams")
        color, style = palette[i % len(palette)], markers[i % len(markers)] + "-"
        label = f"length_penalty={lp:g}" + (f" ({names[lp]})" if lp in names else "")
        x = part["num_beams"] * (1.0 + 0.03 * (i - (len(penalties) - 1) / 2))  # dodge so equal lines stay visible
        ax_win.plot(x, part["win_rate"], style, color=color, label=label, ms=5)
        ax_win.fill_between(x, part["ci_low"], part["ci_high"], color=color, alpha=0.15, lw=0)
        ax_len.plot(x, part["mean_tokens"], style, color=color, label=label, ms=5)
    sample = df[df["decoding"] == "sample"]
    if len(sample):
        row = sample.iloc[0]
        grey = COLORS["reference"]
        ax_win.axhline(row["win_rate"], color=grey, ls="--", label="sampling (T=1), 1 sample")
        ax_win.axhspan(row["ci_low"], row["ci_high"], color=grey, alpha=0.08, lw=0)
        ax_len.axhline(row["mean_tokens"], color=grey, ls="--", label="sampling (T=1), 1 sample")
    ticks = sorted(beam_rows["num_beams"].unique())
    for ax in (ax_win, ax_len):
        ax.set_xscale("log")
        ax.set_xticks(ticks)
        ax.set_xticklabels([str(int(t)) for t in ticks])
        ax.minorticks_off()
        ax.set_xlabel("number of beams")
    ax_win.axhline(0.5, color="black", lw=0.8, ls=":", alpha=0.6)  # parity with the chosen summary
    ax_win.set_ylabel("win rate vs chosen summary")
    ax_win.set_ylim(-0.02, 1.02)
    ax_win.set_title(f"Win rate (95% bootstrap CI, n={int(df['n'].max())} prompts)")
    ax_len.set_ylabel("mean summary length (tokens)")
    ax_len.set_ylim(bottom=0)
    ax_len.set_title("Answer length")
    handles, labels = ax_win.get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), bbox_to_anchor=(0.5, -0.01))
    if title:
        fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    return fig


# ----------------------------------------------------------------------------------------------- best-of-n


@dataclass
class BestOfN:
    """What :func:`best_of_n` picked, per prompt: ``summaries[i] = candidates[i][index[i]]``."""

    summaries: list[str]
    scores: list[float]  # the implicit reward of the picked candidate
    index: list[int]  # which of the n samples was picked (0 = the first sample)
    candidates: list[list[str]]  # (N, n) all samples
    candidate_scores: list[list[float]]  # (N, n) their implicit rewards

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
    """Sequence-level implicit reward beta * (log pi_theta(y|x) - log pi_ref(y|x)) of each completion.

    Completions are encoded as in training (:func:`qstar_lib.lm.collate.encode_completion`: prompt ids +
    completion ids + EOS), so a summary is scored as the DPO loss saw the chosen ones; summed over the
    completion tokens, the per-token rewards of eq. 10 give this number. Sums are in float64.
    """
    if beta <= 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    if len(prompts) != len(completions):
        raise ValueError(f"{len(completions)} completions for {len(prompts)} prompts")
    out: list[float] = []
    with eval_mode(policy, ref_model), torch.inference_mode():
        for lo in range(0, len(prompts), batch_size):
            enc = [
                encode_completion(p, c, tokenizer, max_length=max_length)
                for p, c in zip(prompts[lo : lo + batch_size], completions[lo : lo + batch_size])
            ]
            batch = pad_batch(enc, pad_token_id(tokenizer))
            sums = []
            for m in (policy, ref_model):
                b = {k: v.to(model_device(m)) for k, v in batch.items()}
                sums.append(sequence_logps(per_token_logps(m, **b).double(), b["completion_mask"]).cpu())  # (B,)
            rewards = per_token_rewards(sums[0], sums[1], torch.ones_like(sums[0], dtype=torch.bool), beta)  # (B,)
            out.extend(rewards.tolist())  # eq. 10 on the summed log-probs: the sequence reward
    return out


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
    max_new_tokens: int = 64,
    batch_size: int = 8,
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

    ``batch_size`` counts prompts per ``generate`` call (each decodes ``n`` rows that share one prompt
    prefill) and completions per scoring batch.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    proposal = policy if proposal is None else proposal
    prompts = [record_field(r, i, "prompt") for i, r in enumerate(records)]
    repeated = [p for p in prompts for _ in range(n)]  # (N * n,): prompt i's samples are rows i*n .. i*n+n-1
    samples = generate_summaries(
        proposal,
        tokenizer,
        prompts,
        do_sample=True,
        temperature=temperature,
        top_k=top_k,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        seed=seed,
        stop_at_newline=stop_at_newline,
        num_return_sequences=n,
        progress=progress,
    )
    scores = implicit_rewards(policy, ref_model, tokenizer, repeated, samples, beta, batch_size=batch_size)
    candidates = [samples[i * n : (i + 1) * n] for i in range(len(prompts))]
    candidate_scores = [scores[i * n : (i + 1) * n] for i in range(len(prompts))]
    index = [max(range(n), key=lambda j, s=s: (s[j], -j)) for s in candidate_scores]  # ties -> lowest j
    return BestOfN(
        summaries=[c[j] for c, j in zip(candidates, index)],
        scores=[s[j] for s, j in zip(candidate_scores, index)],
        index=index,
        candidates=candidates,
        candidate_scores=candidate_scores,
    )


def best_of_n_comparison(
    records: Sequence[Mapping],
    result: BestOfN,
    tokenizer,
    judge: Callable | None = None,
    *,
    confidence: float = 0.95,
    n_boot: int = 2000,
    seed: int = 0,
):
    """Two rows (``first sample``, ``best of n``): win rate vs chosen with interval, lengths, n.

    Both rows come from the same samples, so the difference is only the reranking by the implicit reward."""
    import pandas as pd

    n = len(result.candidates[0]) if result.candidates else 0
    rows = []
    for name, texts in (("first sample", result.first_samples), (f"best of {n}", result.summaries)):
        s = summary_stats(records, texts, tokenizer, judge, confidence=confidence, n_boot=n_boot, seed=seed)
        s.pop("outcomes")
        rows.append({"decoding": name, **s})
    return pd.DataFrame(rows)
