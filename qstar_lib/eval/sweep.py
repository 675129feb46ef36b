"""Figure 2 (paper Section 5.2): the over-optimisation curve of beam search, judged without a ceiling, and
best-of-n.

"More beams" on a DPO policy means "optimise the learned reward harder" (eq. 12-13, see
:mod:`qstar_lib.lm.value_search`), which is why the paper sees a few beams help and many beams hurt, with
exploding lengths (reward over-optimisation). :func:`overoptimisation_sweep` decodes with
:func:`qstar_lib.lm.decoding.decode_summaries` for each model (the DPO policy, and the SFT model as control),
beam width and length penalty, and reports per setting (:func:`qstar_lib.eval.quality.decode_stats`): the gold score as a number,
win rates against the *greedy SFT* and *greedy DPO* summaries of the same prompt (never against the flawless
chosen summary, which every decode can at best tie), the sequence implicit reward of the DPO policy, the
log-ratio to the reference, length, how decodes stopped and how repetitive they are.
:func:`plot_overoptimisation` draws it; best-of-n reranking by the implicit reward lives in
:mod:`qstar_lib.eval.rerank`.

It knows nothing about training: it is handed models and records.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch

from qstar_lib.eval.quality import decode_stats
from qstar_lib.lm.collate import encode_completion, record_field
from qstar_lib.lm.decoding import PAPER_TOP_K, Decoded, decode_summaries
from qstar_lib.lm.logps import prompt_shared_sequence_logps
from qstar_lib.lm.models import eval_mode
from qstar_lib.plots import COLORS, new_figure
from qstar_lib.stats import bootstrap_ci

#: The two models of the sweep: the DPO policy and the SFT model it started from (pi_ref, the control).
SWEEP_MODELS = ("dpo", "sft")

#: Rows (prompts x beams or samples) per ``generate`` call of the sweep and of best-of-n: on a CPU a decoding step
#: of a small model is bound by reading its weights, so ~100 rows cost little more than 16 (see
#: :func:`qstar_lib.lm.decoding.decode_summaries`); on a GPU it is still far from filling the device.
ROWS_PER_CALL = 96

#: The anchors every decode is compared with: the greedy decode of each model on the same prompt.
ANCHORS = {"win_rate_vs_sft": "sft", "win_rate_vs_dpo_greedy": "dpo"}

#: Columns of :func:`overoptimisation_sweep`'s table; ``*_lo``/``*_hi`` are percentile-bootstrap intervals
#: over prompts. ``kl`` is the mean log-ratio log pi_model(y|x) - log pi_ref(y|x) of the decodes (nats), scored
#: on the returned summary (its first paragraph) with an EOS appended, as the DPO loss scores summaries: the
#: log-ratio of the answers found, not a KL divergence (top-k samples and beams are not draws from pi_model);
#: 0 for the SFT model (pi_ref), implicit_reward / beta for the DPO policy.
SWEEP_COLUMNS = (
    "num_beams",
    "length_penalty",
    "model",
    "decoding",
    "gold_score",
    "gold_score_lo",
    "gold_score_hi",
    "win_rate_vs_sft",
    "win_rate_vs_sft_lo",
    "win_rate_vs_sft_hi",
    "win_rate_vs_dpo_greedy",
    "win_rate_vs_dpo_greedy_lo",
    "win_rate_vs_dpo_greedy_hi",
    "implicit_reward",
    "implicit_reward_lo",
    "implicit_reward_hi",
    "kl",
    "kl_lo",
    "kl_hi",
    "mean_tokens",
    "mean_tokens_lo",
    "mean_tokens_hi",
    "stop_eos",
    "stop_newline",
    "stop_cap",
    "distinct_2",
    "n_correct",
    "n_contradicted",
    "n_invented",
    "mean_words",
    "n",
)


# ----------------------------------------------------------------------------------------------- judging


def sequence_log_ratios(
    models: Sequence,
    tokenizer,
    prompts: Sequence[str],
    completions: Sequence[str],
    *,
    batch_size: int = 8,
    max_length: int = 1024,
) -> np.ndarray:
    """(len(models), N) summed log-probs log pi_m(y|x) of each completion under each model, in float64.

    Completions are encoded as in training (:func:`qstar_lib.lm.collate.encode_completion`: prompt ids +
    completion ids + EOS), so a summary is scored as the DPO loss saw the chosen ones. A (prompt,
    completion) pair that occurs more than once is scored once (a sweep's settings often find the same
    summary), and the completions of one prompt share its forward pass, ``batch_size`` completions at a
    time (:func:`qstar_lib.lm.logps.prompt_shared_sequence_logps`)."""
    if len(prompts) != len(completions):
        raise ValueError(f"{len(completions)} completions for {len(prompts)} prompts")
    unique: dict[tuple[str, str], int] = {}
    for pair in zip(prompts, completions):
        unique.setdefault(pair, len(unique))
    groups: dict[tuple[int, ...], list[tuple[int, list[int]]]] = {}  # prompt ids -> (unique index, completion)
    for (prompt, completion), u in unique.items():
        enc = encode_completion(prompt, completion, tokenizer, max_length=max_length)
        ids, n_prompt = enc["input_ids"], enc["n_prompt"]
        groups.setdefault(tuple(ids[:n_prompt]), []).append((u, ids[n_prompt:]))
    scores = np.zeros((len(models), len(unique)))  # (M, U)
    with eval_mode(*models), torch.inference_mode():
        for prompt_ids, members in groups.items():
            for lo in range(0, len(members), batch_size):
                chunk = members[lo : lo + batch_size]
                for j, m in enumerate(models):
                    logps = prompt_shared_sequence_logps(m, prompt_ids, [c for _, c in chunk])  # (b,)
                    scores[j, [u for u, _ in chunk]] = logps.numpy()
    return scores[:, [unique[pair] for pair in zip(prompts, completions)]]  # (M, N)


def _decode_all(models, tokenizer, prompts, settings, gen, sampling, early_stopping, progress):
    """``{(model name, decoding, num_beams, length_penalty): [Decoded] * N}`` for every model and its settings
    (``settings``: model name -> list of ``(decoding, num_beams, length_penalty)``)."""
    from tqdm.auto import tqdm

    decodes: dict[tuple, list[Decoded]] = {}
    bar = tqdm(total=sum(len(settings[name]) for name in models), desc="sweep", disable=not progress)
    for name, model in models.items():
        for decoding, k, lp in settings[name]:
            if decoding == "sample":
                opts = sampling
            else:
                opts = dict(num_beams=k, length_penalty=lp or 0.0, early_stopping=early_stopping)
            decodes[(name, decoding, k, lp)] = decode_summaries(
                model, tokenizer, prompts, progress=False, **gen, **opts
            )
            bar.update()
    bar.close()
    return decodes


def _sweep_table(records, decodes, ratio, beta, judge, control, length_penalties, stats):
    """The rows of :func:`overoptimisation_sweep` from its ``decodes`` and their (settings, N) log-ratios
    ``ratio``: one :func:`qstar_lib.eval.quality.decode_stats` row per setting (greedy on each penalty's row)."""
    import pandas as pd

    anchors = {col: [d.text for d in decodes[(m, "beam", 1, None)]] for col, m in ANCHORS.items()}
    rows, outcomes, per_record = [], {}, {}
    for i, (name, decoding, k, lp) in enumerate(decodes):
        kl = ratio[i] if name == "dpo" else np.zeros(len(records))
        row = decode_stats(
            records, decodes[(name, decoding, k, lp)], anchors, judge, rewards=beta * ratio[i], log_ratios=kl, **stats
        )
        outcomes[(name, decoding, k, lp)] = row.pop("outcomes")
        per_record[(name, decoding, k, lp)] = row.pop("per_record")
        if name == "sft" and not control:
            continue
        penalties = length_penalties if decoding == "beam" and k == 1 else [lp]  # greedy: a row per penalty
        for penalty in penalties:
            lp_col = float("nan") if penalty is None else float(penalty)
            rows.append({"num_beams": k, "length_penalty": lp_col, "model": name, "decoding": decoding, **row})
    df = pd.DataFrame(rows, columns=list(SWEEP_COLUMNS))
    df.attrs["decodes"] = decodes
    df.attrs["outcomes"] = outcomes
    df.attrs["per_record"] = per_record
    return df


def overoptimisation_sweep(
    policy,
    ref_model,
    tokenizer,
    records: Sequence[Mapping],
    beta: float,
    beams: Sequence[int] = (1, 2, 5, 10, 20),
    length_penalties: Sequence[float] = (0.0, 1.0),
    include_sampling: bool = True,
    judge: Callable | None = None,
    *,
    control: bool = True,
    max_new_tokens: int = 128,
    batch_size: int = 8,
    rows_per_call: int = ROWS_PER_CALL,
    seed: int = 0,
    temperature: float = 1.0,
    top_k: int | None = PAPER_TOP_K,
    early_stopping: bool | str = False,
    stop_at_newline: bool = True,
    confidence: float = 0.95,
    n_boot: int = 2000,
    progress: bool = True,
):
    """Our Fig. 2: for the DPO ``policy`` and for its reference ``ref_model`` (the SFT model, the control),
    each beam width and length penalty, one :func:`qstar_lib.eval.quality.decode_stats` row.

    Returns a ``pandas.DataFrame`` with the columns :data:`SWEEP_COLUMNS`, one row per (model, decoding,
    num_beams, length_penalty): ``decoding`` is ``"beam"`` (``num_beams=1`` is greedy decoding, the same for
    every length penalty, generated once and reported on each penalty's row) or ``"sample"`` (one sample
    per prompt at ``temperature``/``top_k``, ``length_penalty`` NaN). ``implicit_reward`` is the DPO
    policy's sequence reward beta * (log pi_theta - log pi_ref) of each decode (eq. 10 summed), for the
    decodes of either model; ``kl`` the decoding model's own log-ratio to pi_ref; the win rates compare each
    decode with the greedy SFT and greedy DPO decodes of the same prompt (:data:`ANCHORS`). The decodes
    are in ``df.attrs["decodes"]`` keyed by ``(model, decoding, num_beams, length_penalty)`` (``None`` as the
    penalty of greedy decoding and sampling) and the judge
    outcomes in ``df.attrs["outcomes"]``.

    ``control=False`` leaves out the SFT model's rows (it is then decoded greedily only, as the anchor of
    ``win_rate_vs_sft``): the form for a second DPO policy, e.g. another beta, whose control rows would
    repeat the first sweep's.

    Every ``generate`` call holds about ``rows_per_call`` rows (prompts x beams; see
    :func:`qstar_lib.lm.decoding.decode_summaries`); ``batch_size`` counts the completions per scoring batch.
    """
    beams = sorted({int(k) for k in beams})
    if not beams or min(beams) < 1:
        raise ValueError(f"beams must be non-empty and >= 1, got {beams}")
    if beta <= 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    prompts = [record_field(r, i, "prompt") for i, r in enumerate(records)]
    gen = dict(max_new_tokens=max_new_tokens, rows_per_call=rows_per_call, seed=seed, stop_at_newline=stop_at_newline)
    settings = [("beam", 1, None)] + [("beam", k, float(lp)) for lp in length_penalties for k in beams if k > 1]
    if include_sampling:
        settings.append(("sample", 1, None))
    models = {"dpo": policy, "sft": ref_model}
    per_model = {"dpo": settings, "sft": settings if control else [("beam", 1, None)]}
    sampling = dict(do_sample=True, temperature=temperature, top_k=top_k)
    decodes = _decode_all(models, tokenizer, prompts, per_model, gen, sampling, early_stopping, progress)
    flat = [d.text for key in decodes for d in decodes[key]]
    logps = sequence_log_ratios([policy, ref_model], tokenizer, prompts * len(decodes), flat, batch_size=batch_size)
    ratio = (logps[0] - logps[1]).reshape(len(decodes), len(prompts))  # (settings, N): log pi_theta - log pi_ref
    stats = dict(confidence=confidence, n_boot=n_boot, seed=seed)
    return _sweep_table(records, decodes, ratio, beta, judge, control, length_penalties, stats)


#: The parts of the paper's Fig. 2 pattern :func:`paper_pattern` tests: (name, column, setting a, setting b,
#: direction). "few" is 5 beams (the paper's best width), or the widest below it that was run.
PATTERN = (
    ("a few beams beat one (gold score)", "gold_score", "few", 1, +1),
    ("many beams lose to a few (gold score)", "gold_score", "max", "few", -1),
    ("answers grow longer with beams (tokens)", "mean_tokens", "max", 1, +1),
    ("the implicit reward rises with beams", "implicit_reward", "max", 1, +1),
)


def paper_pattern(df, model: str = "dpo", length_penalty: float = 0.0, *, n_boot: int = 2000, seed: int = 0):
    """Which parts of the paper's Fig. 2 pattern an :func:`overoptimisation_sweep` shows, for one model and
    length penalty: per :data:`PATTERN` row the paired difference (setting a minus setting b) of the
    per-prompt values, its percentile-bootstrap interval over prompts, and ``holds``: the interval excludes 0
    in the paper's direction. A row whose two settings coincide (only widths 1-2 were run, say) is NaN with
    ``holds`` False. Returns a ``pandas.DataFrame`` indexed by the claim."""
    import pandas as pd

    per = df.attrs["per_record"]
    beams = sorted(k for (m, d, k, lp) in per if m == model and d == "beam")
    if not beams:
        raise ValueError(f"no beam rows for model {model!r} in the sweep")
    few = 5 if 5 in beams else max([k for k in beams if 1 < k <= 5], default=1)
    widths = {"few": few, "max": max(beams), 1: 1}

    def values(k: int, column: str) -> np.ndarray:
        key = (model, "beam", 1, None) if k == 1 else (model, "beam", k, float(length_penalty))
        if key not in per:
            raise ValueError(f"the sweep has no row {key}")
        return np.asarray(per[key][column], dtype=float)  # (N,)

    rows = {}
    for claim, column, a, b, sign in PATTERN:
        ka, kb = widths[a], widths[b]
        if ka == kb:
            rows[claim] = dict(num_beams_a=ka, num_beams_b=kb, difference=np.nan, lo=np.nan, hi=np.nan, holds=False)
            continue
        diff = values(ka, column) - values(kb, column)  # (N,) paired by prompt
        low, high = bootstrap_ci(diff, n_boot=n_boot, seed=seed)
        holds = bool(low > 0) if sign > 0 else bool(high < 0)
        rows[claim] = dict(num_beams_a=ka, num_beams_b=kb, difference=float(diff.mean()), lo=low, hi=high, holds=holds)
    return pd.DataFrame.from_dict(rows, orient="index")


def plot_overoptimisation(df, reference_score: float | None = 1.0, title: str | None = None):
    """The over-optimisation curve from an :func:`overoptimisation_sweep` table: gold score, win rate against
    the greedy SFT summary, the DPO implicit reward and the length, against the number of beams (log axis),
    one line per model and length penalty, intervals shaded, sampling as dashed horizontal lines.
    ``reference_score`` (the flawless chosen summary's gold score) is drawn as a line. Returns the figure."""
    fig, axes = new_figure(2, 2, figsize=(11.0, 7.0))
    panels = [
        ("gold_score", "gold score (mean)"),
        ("win_rate_vs_sft", "win rate vs greedy SFT summary"),
        ("implicit_reward", r"implicit reward $\beta\log\pi_\theta/\pi_{\mathrm{ref}}$"),
        ("mean_tokens", "generated tokens (mean)"),
    ]
    colors = {"dpo": COLORS["policy"], "sft": COLORS["reference"]}
    styles = {0.0: "o-", 1.0: "s--"}
    beam = df[df["decoding"] == "beam"]
    sample = df[df["decoding"] == "sample"]
    ticks = sorted(beam["num_beams"].unique())
    for ax, (col, label) in zip(axes.flat, panels):
        for (model, lp), part in beam.groupby(["model", "length_penalty"], sort=True):
            part = part.sort_values("num_beams")
            style = styles.get(lp, "^-.")
            name = f"{model}, length_penalty={lp:g}"
            ax.plot(part["num_beams"], part[col], style, color=colors.get(model), label=name, ms=4)
            if f"{col}_lo" in part:
                ax.fill_between(
                    part["num_beams"], part[f"{col}_lo"], part[f"{col}_hi"], color=colors.get(model), alpha=0.1, lw=0
                )
        for _, row in sample.iterrows():
            ax.axhline(row[col], color=colors.get(row["model"]), ls=":", lw=1.0, label=f"{row['model']}, one sample")
        if col == "gold_score" and reference_score is not None:
            ax.axhline(reference_score, color="black", lw=0.8, label="chosen summary")
        if col == "win_rate_vs_sft":
            ax.axhline(0.5, color="black", lw=0.6, ls=":")
            ax.set_ylim(-0.02, 1.02)
        ax.set_xscale("log")
        ax.set_xticks(ticks)
        ax.set_xticklabels([str(int(t)) for t in ticks])
        ax.minorticks_off()
        ax.set(xlabel="number of beams", ylabel=label)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=3, bbox_to_anchor=(0.5, -0.01), fontsize=8)
    n = int(df["n"].max()) if len(df) else 0
    fig.suptitle(title or f"Over-optimisation curve ({n} prompts, 95% bootstrap intervals)")
    fig.tight_layout(rect=(0, 0.09, 1, 1))
    return fig


def plot_beta_sweep(tables: Mapping[float, object], length_penalty: float = 0.0, reference_score: float | None = 1.0):
    """The paper's Fig. 2 layout for several betas: the DPO policy's gold score (left) and generated tokens
    (right) against the number of beams at ``length_penalty``, one line per beta with its interval.
    ``tables``: beta -> :func:`overoptimisation_sweep` table of that beta's DPO run. Returns the figure."""
    fig, (ax_gold, ax_len) = new_figure(1, 2, figsize=(11.0, 3.8))
    shades = [COLORS["policy"], COLORS["accent"], COLORS["reference"], COLORS["chosen"]]
    ticks: set[int] = set()
    for i, (beta, df) in enumerate(sorted(tables.items())):
        keep = (df["model"] == "dpo") & (df["decoding"] == "beam") & (df["length_penalty"] == length_penalty)
        part = df[keep].sort_values("num_beams")
        ticks |= set(int(k) for k in part["num_beams"])
        for ax, col in ((ax_gold, "gold_score"), (ax_len, "mean_tokens")):
            colour = shades[i % len(shades)]
            ax.plot(part["num_beams"], part[col], "o-", color=colour, ms=4, label=f"beta = {beta:g}")
            ax.fill_between(part["num_beams"], part[f"{col}_lo"], part[f"{col}_hi"], color=colour, alpha=0.12, lw=0)
    if reference_score is not None:
        ax_gold.axhline(reference_score, color="black", lw=0.8, label="chosen summary")
    for ax, label in ((ax_gold, "gold score (mean)"), (ax_len, "generated tokens (mean)")):
        ax.set_xscale("log")
        ax.set_xticks(sorted(ticks), [str(t) for t in sorted(ticks)])
        ax.minorticks_off()
        ax.set(xlabel="number of beams", ylabel=label)
    ax_gold.legend(fontsize=8)
    fig.suptitle(f"DPO policies by beta, length_penalty={length_penalty:g} (95% bootstrap intervals)")
    fig.tight_layout()
    return fig
