"""Likelihood search on a real language model (paper Section 5.2, Fig. 2, eq. 12-13) and best-of-n.

Section 5.2 argues that searching for the continuation that maximises the regularised reward plus the
optimal value of where it ends (eq. 12) is, for a DPO policy, the same as searching for the continuation
with the highest likelihood under that policy (eq. 13): substituting the implicit reward of eq. 10 makes
the sum telescope, and what is left differs from ``sum_t beta * log pi_theta(a_t|s_t)`` only by
``V*(s_0)``, a constant of the prompt. So plain beam search on the DPO model *is* value-guided search on
its implicit reward, and "more beams" means "optimise the learned reward harder" -- which is why the paper
sees a few beams help and many beams hurt, with exploding lengths (reward over-optimisation).

This module has three parts:

* decoding with ``transformers``' ``generate`` (:func:`generate_summaries`), a sweep over beam widths and
  length penalties judged against the record's chosen summary (:func:`beam_sweep`, :func:`plot_beam_sweep`:
  our Fig. 2), and best-of-n reranking by the implicit reward (:func:`best_of_n`, the V-STaR-style
  verifier the paper mentions);
* a small hand-written beam search whose step score is either the implicit reward plus the reference term
  (:func:`value_guided_beam_search`, eq. 12) or the policy's log-likelihood
  (:func:`likelihood_beam_search`, eq. 13), which returns the beams kept at every step so the two can be
  compared beam set by beam set. It re-runs the full forward pass every step (no KV cache: short and
  obviously right), so it is meant for a few prompts and tens of tokens, not for sweeps;
* :func:`hf_beam_search` / :func:`compare_with_generate`, which check the hand-written search against
  ``generate(num_beams=k, length_penalty=0, early_stopping="never")``.

It knows nothing about training: it is handed models (``policy``, ``ref_model``) and a judge function.

Stopping rules of :func:`generate_summaries` (our decision, documented): a summary ends at the EOS token,
at ``max_new_tokens``, or -- with ``stop_at_newline=True``, the default -- at the first newline that comes
*after some text*. TL;DR summaries are one paragraph, and a model that starts a new line after writing
has left the summary (it begins a new post or another "TL;DR:"). Newlines *before* any text are not a
stop: an untuned instruct model often opens with a blank line, and stopping there would return empty
summaries. The rule is part of the search (a ``StoppingCriteria`` in ``generate``, so a beam that starts a
new paragraph is finished, like one that writes EOS); the returned text is the first paragraph, with
leading blank lines replaced by the single leading space TL;DR completions carry. The hand-written
searches stop at EOS and ``max_new_tokens`` only, so that they compare exactly with ``generate``.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from transformers import LogitsProcessorList, StoppingCriteria, StoppingCriteriaList

from qstar_lib.collate import encode_completion, pad_batch, pad_token_id, record_field
from qstar_lib.logps import model_device, per_token_logps, sequence_logps

__all__ = [
    "BeamSearchResult",
    "BestOfN",
    "SWEEP_COLUMNS",
    "beam_sweep",
    "best_of_n",
    "best_of_n_comparison",
    "bootstrap_ci",
    "compare_with_generate",
    "first_paragraph",
    "generate_summaries",
    "hf_beam_search",
    "implicit_rewards",
    "likelihood_beam_search",
    "plot_beam_sweep",
    "summary_stats",
    "value_guided_beam_search",
]

#: Columns of the table :func:`beam_sweep` returns.
SWEEP_COLUMNS = (
    "decoding", "num_beams", "length_penalty", "win_rate", "ci_low", "ci_high", "mean_tokens", "mean_words", "n",
)
#: The paper's sampling parameters (Appendix G / the PPO comparison): temperature 1 and top-k 50.
PAPER_TOP_K = 50


# ----------------------------------------------------------------------------------------------- helpers



def _prompt_ids(tokenizer, prompt: str, what: str = "prompt") -> list[int]:
    """Prompt token ids as :mod:`qstar_lib.collate` makes them (no special tokens), so the model sees at
    decoding time exactly the context it was trained on."""
    if not isinstance(prompt, str):
        raise TypeError(f"{what} must be a str, got {type(prompt).__name__}")
    ids = list(tokenizer(prompt, add_special_tokens=False).input_ids)
    if not ids:
        raise ValueError(f"{what} tokenises to 0 tokens; generation needs a context")
    return ids


@contextlib.contextmanager
def _eval_mode(*models):
    """Evaluation mode (no dropout) for the duration, restoring each model's previous mode afterwards."""
    modes = [m.training for m in models]
    for m in models:
        m.eval()
    try:
        yield
    finally:
        for m, mode in zip(models, modes):
            m.train(mode)


def first_paragraph(text: str) -> str:
    """The summary inside a generated text: up to the first newline after the first non-space character.

    Leading spaces are kept (TL;DR completions start with one); leading whitespace that contains a
    newline becomes a single space. Trailing whitespace is removed. ``"\n\nA b.\nC"`` -> ``" A b."``.
    """
    body = text.lstrip()
    lead = text[: len(text) - len(body)]
    body = body.split("\n", 1)[0].rstrip()
    if not body:
        return ""
    return (" " if "\n" in lead else lead) + body


class _NewParagraphStop(StoppingCriteria):
    """Stops a row once its generated part has a newline after some text (see :func:`first_paragraph`).

    ``generate`` left-pads a batch, so every row's generated tokens start at column ``prompt_width``; beam
    search calls this on its candidate rows, which share that layout.
    """

    def __init__(self, tokenizer, prompt_width: int):
        self.tokenizer, self.prompt_width = tokenizer, prompt_width

    def __call__(self, input_ids: torch.Tensor, scores=None, **kwargs) -> torch.Tensor:
        texts = self.tokenizer.batch_decode(input_ids[:, self.prompt_width :], skip_special_tokens=True)
        return torch.tensor(["\n" in t.lstrip() for t in texts], dtype=torch.bool, device=input_ids.device)  # (B,)


def bootstrap_ci(
    values: Sequence[float] | np.ndarray, *, confidence: float = 0.95, n_boot: int = 2000, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of a mean over prompts (resampling prompts with replacement).

    ``values`` are per-prompt outcomes, e.g. the judge's 1 / 0.5 / 0 (ties count one half, so the
    binomial shortcut of :func:`qstar_lib.llm_judge.bootstrap_ci` does not apply). Seeded: the same
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


# ----------------------------------------------------------------------------------------------- generate


def _generation_config(tokenizer, *, num_beams, length_penalty, early_stopping, do_sample, temperature, top_k,
                       max_new_tokens, num_return_sequences=1):
    """Every knob explicit, so a model's ``generation_config.json`` cannot change what we measure."""
    from transformers import GenerationConfig

    kw = dict(
        max_new_tokens=max_new_tokens,
        num_beams=num_beams,
        do_sample=do_sample,
        num_return_sequences=num_return_sequences,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=pad_token_id(tokenizer),
        repetition_penalty=1.0,
        no_repeat_ngram_size=0,
        min_length=0,
    )
    if num_beams > 1:  # only beam search reads these; setting them for greedy/sampling makes HF warn
        kw.update(length_penalty=float(length_penalty), early_stopping=early_stopping)
    if do_sample:
        kw.update(temperature=float(temperature), top_k=int(top_k or 0), top_p=1.0)
    return GenerationConfig(**kw)


def generate_summaries(
    model,
    tokenizer,
    prompts: Sequence[str],
    *,
    num_beams: int = 1,
    length_penalty: float = 1.0,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_k: int | None = PAPER_TOP_K,
    max_new_tokens: int = 64,
    batch_size: int = 8,
    seed: int = 0,
    early_stopping: bool | str = False,
    stop_at_newline: bool = True,
    num_return_sequences: int = 1,
    share_prefill: bool = True,
    logits_processors: Callable[[torch.Tensor], list] | None = None,
    progress: bool = True,
) -> list[str]:
    """Decode one summary per prompt with ``model.generate``; returns the completions only (prompt stripped).

    Decoding: greedy (``num_beams=1``), beam search (``num_beams>1``) or sampling (``do_sample=True``;
    ``temperature`` and ``top_k``, default 50 as in the paper; ``top_k=None`` or 0 samples from the full
    distribution). ``length_penalty`` only matters for beam search: a finished beam is ranked by
    ``sum log p / length ** length_penalty``, so 0 is pure likelihood search (eq. 13) and HF's default 1.0
    ranks by the mean log-prob per token, which favours long answers. ``early_stopping`` is HF's (default
    ``False``); with ``length_penalty=0`` its ``False`` and ``"never"`` settings give the same, exact beam
    search (see :func:`hf_beam_search`).

    Prompts are tokenised without special tokens (as in :mod:`qstar_lib.collate`) and left-padded in
    batches of ``batch_size`` (a decoder-only model continues from the last column, so padding must come
    first). Stopping: EOS, ``max_new_tokens``, and with ``stop_at_newline`` the first newline after some
    text (see the module docstring); the text returned is then :func:`first_paragraph` of the generation,
    otherwise the generation with trailing whitespace removed. Sampling is seeded per batch
    (``seed + batch index``) inside a forked RNG, so the global torch RNG is untouched and a call is
    reproducible for a fixed ``batch_size``.

    ``num_return_sequences`` (as in ``generate``): that many completions per prompt, prompt ``i``'s at
    positions ``i * n .. i * n + n - 1`` of the returned list (independent samples when sampling, the best
    finished beams for beam search, where it must not exceed ``num_beams``).

    ``share_prefill`` (default on): beam search keeps ``num_beams`` rows per prompt, and ``generate`` would
    run the whole prompt through the model once per row. Here the prompt (all but its last token) is run
    once per prompt and its key/value cache repeated across the beams (:func:`_shared_prefill`), so
    ``generate`` starts from the last prompt token. Same tokens as without it (tested token for token); with
    20 beams and 64 new tokens it removes most of the cost of a TL;DR prompt of ~170 tokens.

    ``logits_processors``: called once per batch with that batch's prompt attention mask (B, T) and
    returning the ``LogitsProcessor`` list for its ``generate`` call -- per batch because a processor that
    runs other models on the sequences (proxy tuning, :func:`qstar_lib.proxy.steered_summaries`) needs the
    left-padding mask of exactly those prompts.
    """
    from tqdm.auto import tqdm

    if isinstance(prompts, str):
        raise TypeError("prompts must be a sequence of str, not one str")
    if num_beams < 1:
        raise ValueError(f"num_beams must be >= 1, got {num_beams}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if do_sample and temperature <= 0:
        raise ValueError(f"temperature must be > 0 when sampling, got {temperature}")
    if num_return_sequences < 1:
        raise ValueError(f"num_return_sequences must be >= 1, got {num_return_sequences}")
    if num_beams > 1 and num_return_sequences > num_beams:
        raise ValueError(f"num_return_sequences ({num_return_sequences}) must be <= num_beams ({num_beams})")
    if num_beams == 1 and not do_sample and num_return_sequences > 1:
        raise ValueError("greedy decoding returns one sequence per prompt; sample or use beams for more")
    encoded = []
    for i, prompt in enumerate(prompts):
        ids = _prompt_ids(tokenizer, prompt, what=f"prompts[{i}]")
        encoded.append({"input_ids": ids, "completion_mask": [0] * len(ids)})
    config = _generation_config(
        tokenizer, num_beams=num_beams, length_penalty=length_penalty, early_stopping=early_stopping,
        do_sample=do_sample, temperature=temperature, top_k=top_k, max_new_tokens=max_new_tokens,
        num_return_sequences=num_return_sequences,
    )
    rows_per_prompt = num_beams if num_beams > 1 else num_return_sequences  # how generate expands the batch
    device = model_device(model)
    out: list[str] = []
    with _eval_mode(model):
        n_batches = math.ceil(len(encoded) / batch_size)
        for b in tqdm(range(n_batches), desc=f"generate (beams={num_beams})", disable=not progress):
            chunk = encoded[b * batch_size : (b + 1) * batch_size]
            batch = pad_batch(chunk, pad_token_id(tokenizer), padding_side="left")
            width = batch["input_ids"].shape[1]
            extra = {}
            if stop_at_newline:
                extra["stopping_criteria"] = StoppingCriteriaList([_NewParagraphStop(tokenizer, width)])
            if logits_processors is not None:
                extra["logits_processor"] = LogitsProcessorList(logits_processors(batch["attention_mask"]))
            input_ids = batch["input_ids"].to(device)  # (B, T)
            attention_mask = batch["attention_mask"].to(device)  # (B, T)
            with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), torch.inference_mode():
                if share_prefill and rows_per_prompt > 1 and width > 1:
                    extra["past_key_values"] = _shared_prefill(model, input_ids, attention_mask, rows_per_prompt)
                torch.manual_seed(seed + b)
                generated = model.generate(
                    input_ids=input_ids, attention_mask=attention_mask, generation_config=config, **extra,
                )  # (B, T + new)
            for row in generated[:, width:].cpu():
                text = tokenizer.decode(row, skip_special_tokens=True)
                out.append(first_paragraph(text) if stop_at_newline else text.rstrip())
    return out


def _shared_prefill(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, repeats: int):
    """Key/value cache of every prompt but its last token, computed once per prompt and repeated
    ``repeats`` times per row (``repeat_interleave`` order, the order in which ``generate`` expands a batch
    into beams).

    ``generate`` given this cache and the full ``input_ids`` runs only the last prompt column, then decodes
    as usual. Positions are the ones ``generate`` itself uses under left padding (count of real tokens
    before each one), so the cache holds the same keys and values it would have computed per beam.
    """
    from transformers import DynamicCache

    positions = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)  # (B, T): padding sits at 0, masked anyway
    cache = DynamicCache(config=model.config)
    model(input_ids=input_ids[:, :-1], attention_mask=attention_mask[:, :-1], position_ids=positions[:, :-1],
          past_key_values=cache, use_cache=True)  # fills the cache: (B, heads, T - 1, head_dim) per layer
    cache.batch_repeat_interleave(repeats)  # (B * repeats, heads, T - 1, head_dim) per layer
    return cache


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
    judge :func:`qstar_lib.judge.compare`; ties count one half), its bootstrap interval over prompts, mean
    length in tokens (the returned text re-tokenised by ``tokenizer`` without special tokens, which for
    byte-level garbage from a random model can exceed the tokens generated) and in words, and ``n``. Also
    ``outcomes`` (list of per-prompt judge results)."""
    if judge is None:
        from qstar_lib.judge import compare as judge
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
    gen = dict(max_new_tokens=max_new_tokens, batch_size=batch_size, seed=seed, stop_at_newline=stop_at_newline,
               progress=progress)
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
                texts = generate_summaries(model, tokenizer, prompts, num_beams=k, length_penalty=lp,
                                           early_stopping=early_stopping, **gen)
            s = summary_stats(records, texts, tokenizer, judge, **stats)
            key = ("beam", k, float(lp))
            summaries[key], outcomes[key] = texts, s.pop("outcomes")
            rows.append({"decoding": "beam", "num_beams": k, "length_penalty": float(lp), **s})
    if include_sampling:
        texts = generate_summaries(model, tokenizer, prompts, do_sample=True, temperature=temperature, top_k=top_k,
                                   **gen)
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
    from qstar_lib.plots import COLORS, new_figure

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


def implicit_rewards(policy, ref_model, tokenizer, prompts: Sequence[str], completions: Sequence[str], beta: float,
                     *, batch_size: int = 8, max_length: int = 1024) -> list[float]:
    """Sequence-level implicit reward beta * (log pi_theta(y|x) - log pi_ref(y|x)) of each completion.

    Completions are encoded as in training (:func:`qstar_lib.collate.encode_completion`: prompt ids +
    completion ids + EOS), so a summary is scored as the DPO loss saw the chosen ones; summed over the
    completion tokens, the per-token rewards of eq. 10 give this number. Sums are in float64.
    """
    if beta <= 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    if len(prompts) != len(completions):
        raise ValueError(f"{len(completions)} completions for {len(prompts)} prompts")
    out: list[float] = []
    with _eval_mode(policy, ref_model), torch.inference_mode():
        for lo in range(0, len(prompts), batch_size):
            enc = [encode_completion(p, c, tokenizer, max_length=max_length)
                   for p, c in zip(prompts[lo : lo + batch_size], completions[lo : lo + batch_size])]
            batch = pad_batch(enc, pad_token_id(tokenizer))
            sums = []
            for m in (policy, ref_model):
                b = {k: v.to(model_device(m)) for k, v in batch.items()}
                sums.append(sequence_logps(per_token_logps(m, **b).double(), b["completion_mask"]).cpu())  # (B,)
            out.extend((beta * (sums[0] - sums[1])).tolist())
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
    samples = generate_summaries(proposal, tokenizer, prompts, do_sample=True, temperature=temperature, top_k=top_k,
                                 max_new_tokens=max_new_tokens, batch_size=batch_size, seed=seed,
                                 stop_at_newline=stop_at_newline, num_return_sequences=n, progress=progress)
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


def best_of_n_comparison(records: Sequence[Mapping], result: BestOfN, tokenizer, judge: Callable | None = None,
                         *, confidence: float = 0.95, n_boot: int = 2000, seed: int = 0):
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


# ----------------------------------------------------------------------------------------------- eq. 12-13


@dataclass
class BeamSearchResult:
    """The outcome of a hand-written beam search on one prompt.

    ``steps[t]`` is the tuple of running beams kept after step t (each a tuple of completion token ids, in
    rank order) and ``finished[t]`` the finished hypotheses after step t (ending in EOS, or cut by
    ``max_new_tokens``). ``min_margin`` is the smallest score gap at any decision the search made (which
    candidates may finish, which stay running, which finished ones are kept, the final pick, and the stop
    test): two searches whose scores agree to better than it must make the same choices.
    """

    tokens: list[int]  # the best completion (token ids, EOS included when it ended with one)
    score: float  # its cumulative score (sum of step scores)
    text: str
    steps: list[tuple[tuple[int, ...], ...]] = field(default_factory=list)
    finished: list[tuple[tuple[int, ...], ...]] = field(default_factory=list)
    finished_scores: list[float] = field(default_factory=list)  # of the final finished set, best first
    min_margin: float = math.inf
    max_abs_value: float = 0.0  # value-guided search only: max |V_hat(s)| over expanded states (0 in theory)


def _last_logits(model, sequences: torch.Tensor) -> torch.Tensor:
    """Next-token logits of each row (all rows the same length, no padding), as float32 (like HF)."""
    kw = {"logits_to_keep": 1} if "logits_to_keep" in _forward_params(model) else {}
    logits = model(input_ids=sequences.to(model_device(model)), **kw).logits[:, -1, :]  # (W, V)
    return logits.float().cpu()


def _forward_params(model) -> set:
    import inspect

    try:
        return set(inspect.signature(getattr(model, "module", model).forward).parameters)
    except (TypeError, ValueError):
        return set()


def _beam_search(step_scores: Callable[[torch.Tensor], torch.Tensor], prompt_ids: list[int], num_beams: int,
                 max_new_tokens: int, eos_token_id: int) -> dict:
    """Beam search with the bookkeeping of ``transformers`` ``generate`` (5.x, ``length_penalty=0``,
    ``early_stopping="never"``), over an arbitrary additive step score.

    ``step_scores(sequences (W, T)) -> (W, V)`` float64 scores of every next token for the W running beams.
    Each step: all W*V extensions are ranked by cumulative score (ties: lower beam, then lower token id);
    the best 2k are kept; among the top k of them, those ending in EOS (all of them at the last step) are
    offered to the finished set, which keeps its k best; the best k non-EOS extensions become the running
    beams. The search stops at ``max_new_tokens`` or once k hypotheses are finished and the best running
    beam scores no higher than the worst finished one (scores only fall, so none could enter any more).
    """
    if num_beams < 1:
        raise ValueError(f"num_beams must be >= 1, got {num_beams}")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    k = num_beams
    prompt = torch.tensor(prompt_ids, dtype=torch.long)
    running: list[tuple[int, ...]] = [()]
    running_scores = torch.zeros(1, dtype=torch.float64)  # (W,)
    finished: list[tuple[float, tuple[int, ...]]] = []  # (score, tokens), best first
    steps, finished_steps, margins = [], [], []
    for t in range(max_new_tokens):
        seqs = torch.stack([torch.cat([prompt, torch.tensor(r, dtype=torch.long)]) for r in running])  # (W, P+t)
        step = step_scores(seqs).to(torch.float64)  # (W, V)
        vocab = step.shape[1]
        cand = (running_scores[:, None] + step).reshape(-1)  # (W*V,)
        order = torch.sort(-cand, stable=True).indices  # best first; ties keep the lower flat index
        top = order[: 2 * k + 1]
        top_scores = cand[top]
        if len(top) > k:  # which extensions may finish: ranks < k
            margins.append(float(top_scores[k - 1] - top_scores[k]))
        last = t == max_new_tokens - 1
        offered, new_running, new_scores = [], [], []
        for rank, flat in enumerate(top[: 2 * k].tolist()):
            beam, token = divmod(flat, vocab)
            seq = running[beam] + (token,)
            score = float(cand[flat])
            if token == eos_token_id or last:
                if rank < k:
                    offered.append((score, seq))
            elif len(new_running) < k:
                new_running.append(seq)
                new_scores.append(score)
        if not last:  # the boundary between the last running beam kept and the next non-EOS extension
            rest = [float(cand[f]) for f in order[: 2 * k + 2].tolist() if f % vocab != eos_token_id]
            if len(rest) > len(new_running):
                margins.append(new_scores[-1] - rest[len(new_running)])
        merged = sorted(finished + offered, key=lambda x: -x[0])  # stable: earlier finished first on ties
        if len(merged) > k:
            margins.append(merged[k - 1][0] - merged[k][0])
        finished = merged[:k]
        steps.append(tuple(new_running))
        finished_steps.append(tuple(seq for _, seq in finished))
        if last:
            break
        running, running_scores = new_running, torch.tensor(new_scores, dtype=torch.float64)
        if len(finished) == k:
            gap = float(running_scores[0]) - finished[-1][0]
            margins.append(abs(gap))
            if gap <= 0:
                break
    if len(finished) > 1:
        margins.append(finished[0][0] - finished[1][0])
    return {
        "tokens": list(finished[0][1]),
        "score": finished[0][0],
        "steps": steps,
        "finished": finished_steps,
        "finished_scores": [s for s, _ in finished],
        "min_margin": min(margins) if margins else math.inf,
    }


def likelihood_beam_search(policy, tokenizer, prompt: str, num_beams: int, max_new_tokens: int,
                           beta: float = 1.0) -> BeamSearchResult:
    """Eq. 13: beam search on ``beta * sum_t log pi_theta(a_t|s_t)`` (a positive ``beta`` changes no choice).

    This is ``generate(num_beams=k, length_penalty=0, early_stopping="never")`` written out, with the beam
    sets of every step recorded (see :func:`_beam_search`).
    """
    if beta <= 0:
        raise ValueError(f"beta must be > 0, got {beta}")

    def step(seqs):
        with torch.inference_mode():
            return beta * torch.log_softmax(_last_logits(policy, seqs), dim=-1).double()  # (W, V)

    with _eval_mode(policy):
        out = _beam_search(step, _prompt_ids(tokenizer, prompt), num_beams, max_new_tokens, tokenizer.eos_token_id)
    return _result(tokenizer, out)


def _result(tokenizer, out: dict, max_abs_value: float = 0.0) -> BeamSearchResult:
    return BeamSearchResult(text=tokenizer.decode(out["tokens"], skip_special_tokens=True),
                            max_abs_value=max_abs_value, **out)


def value_guided_beam_search(policy, ref_model, tokenizer, prompt: str, beta: float, num_beams: int,
                             max_new_tokens: int) -> BeamSearchResult:
    """Eq. 12: beam search whose step score is the implicit reward plus the reference term,
    ``r_hat(s, a) + beta * log pi_ref(a|s)`` with ``r_hat = beta * log(pi_theta / pi_ref)`` (eq. 10).

    Eq. 12 also adds the optimal value of the state where the partial expansion ends. For the reward
    ``r_hat`` that value is zero at every state: the soft Bellman backup gives
    ``V_hat(s) = beta * log sum_a pi_ref(a|s) exp(r_hat(s, a) / beta) = beta * log sum_a pi_theta(a|s) = 0``
    (the policy is the optimal policy of its own implicit reward). So the tail drops out, and the score
    telescopes to ``sum_t beta * log pi_theta``: likelihood search (eq. 13). The search computes ``V_hat``
    at every expanded state from the same logits and reports ``max_abs_value`` (zero up to rounding) as a
    check. The scores are computed from both models separately, so the agreement with
    :func:`likelihood_beam_search` is a numerical fact, not a shared code path.
    """
    if beta <= 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    worst = [0.0]

    def step(seqs):
        with torch.inference_mode():
            logp = torch.log_softmax(_last_logits(policy, seqs), dim=-1).double()  # (W, V)
            ref_logp = torch.log_softmax(_last_logits(ref_model, seqs), dim=-1).double()  # (W, V)
        if logp.shape != ref_logp.shape:
            raise ValueError(f"policy and ref_model disagree on the vocabulary: {tuple(logp.shape)} vs "
                             f"{tuple(ref_logp.shape)}")
        r_hat = beta * (logp - ref_logp)  # (W, V) eq. 10
        v_hat = beta * torch.logsumexp(ref_logp + r_hat / beta, dim=-1)  # (W,) soft value of r_hat: 0
        worst[0] = max(worst[0], float(v_hat.abs().max()))
        return r_hat + beta * ref_logp  # (W, V) eq. 12 step score

    with _eval_mode(policy, ref_model):
        out = _beam_search(step, _prompt_ids(tokenizer, prompt), num_beams, max_new_tokens, tokenizer.eos_token_id)
    return _result(tokenizer, out, max_abs_value=worst[0])


def hf_beam_search(model, tokenizer, prompt: str, num_beams: int, max_new_tokens: int) -> tuple[list[int], float]:
    """``generate(num_beams=k, length_penalty=0, early_stopping="never")`` on one prompt (no newline stop).

    Returns the best completion's token ids (EOS included if it ended with one) and its score, the sum of
    log-probs. Why these flags: ``length_penalty=0`` ranks finished beams by the plain sum of log-probs
    (eq. 13); ``early_stopping="never"`` stops only when no running beam can still beat a finished one,
    which is exact because with ``length_penalty=0`` scores never rise (HF's docstring calls this the
    canonical beam search). ``early_stopping=True`` would stop as soon as k beams have finished, even when a
    running beam could still finish higher, so it is not the same search.
    """
    ids = torch.tensor([_prompt_ids(tokenizer, prompt)], dtype=torch.long)  # (1, P)
    config = _generation_config(
        tokenizer, num_beams=num_beams, length_penalty=0.0, early_stopping="never", do_sample=False,
        temperature=1.0, top_k=None, max_new_tokens=max_new_tokens,
    )
    config.return_dict_in_generate = True
    config.output_scores = True
    device = model_device(model)
    with _eval_mode(model), torch.inference_mode():
        out = model.generate(input_ids=ids.to(device), attention_mask=torch.ones_like(ids).to(device),
                             generation_config=config)
    if num_beams > 1:
        n_new = int((out.beam_indices[0] >= 0).sum())
        score = float(out.sequences_scores[0])
    else:  # greedy: no beam bookkeeping; the length is up to and including the first EOS
        new = out.sequences[0, ids.shape[1]:].tolist()
        n_new = new.index(tokenizer.eos_token_id) + 1 if tokenizer.eos_token_id in new else len(new)
        score = float(sum(torch.log_softmax(s[0].float(), -1)[tok] for s, tok in zip(out.scores, new[:n_new])))
    tokens = out.sequences[0, ids.shape[1] : ids.shape[1] + n_new].tolist()
    return tokens, score


def compare_with_generate(policy, tokenizer, prompt: str, num_beams: int, max_new_tokens: int,
                          tol: float = 1e-4) -> dict:
    """Run :func:`likelihood_beam_search` and :func:`hf_beam_search` on one prompt and compare.

    The comparison is of token sequences. HF accumulates float32 scores from cached incremental forwards;
    ours accumulates float64 from full forwards, so scores differ by ~1e-6. Where some decision of our
    search was closer than ``tol`` (``near_tie``), a different choice by HF is not an error and
    ``comparable`` is False. Returns ``{"agree", "comparable", "near_tie", "min_margin", "ours", "hf",
    "score_ours", "score_hf"}``.
    """
    ours = likelihood_beam_search(policy, tokenizer, prompt, num_beams, max_new_tokens)
    hf_tokens, hf_score = hf_beam_search(policy, tokenizer, prompt, num_beams, max_new_tokens)
    near_tie = ours.min_margin < tol
    return {
        "agree": ours.tokens == hf_tokens,
        "comparable": not near_tie,
        "near_tie": near_tie,
        "min_margin": ours.min_margin,
        "ours": ours.tokens,
        "hf": hf_tokens,
        "score_ours": ours.score,
        "score_hf": hf_score,
    }
