"""Likelihood search on a real LM: generate, the beam sweep and its CIs, best-of-n, and eq. 12 == eq. 13.

All on the in-memory tiny models of ``conftest`` (2 layers, 64 wide, 320 tokens): seconds in total.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from qstar_lib.data import synthetic_tldr
from qstar_lib.eval.judge import compare
from qstar_lib.eval.quality import decode_stats, decode_table, distinct_n
from qstar_lib.eval.rerank import best_of_n, best_of_n_comparison, implicit_rewards
from qstar_lib.eval.sweep import (
    PATTERN,
    SWEEP_COLUMNS,
    overoptimisation_sweep,
    paper_pattern,
    plot_beta_sweep,
    plot_overoptimisation,
    sequence_log_ratios,
)
from qstar_lib.lm.decoding import Decoded, _prompt_ids, decode_summaries, first_paragraph, generate_summaries
from qstar_lib.lm.value_search import (
    CachedLastLogits,
    _beam_search,
    _last_logits,
    compare_with_generate,
    eq12_step_score,
    likelihood_beam_search,
    value_guided_beam_search,
)
from qstar_lib.stats import bootstrap_ci

PROMPTS = [
    "POST: He earns 38k. TL;DR:",
    "The quick brown fox",
    "Q:",
    "POST: We have been together for three years and he got an offer in another city. TL;DR:",
]


@pytest.fixture(scope="module")
def eos_lm(tiny_lm, random_lm):
    """(policy, ref, tokenizer): two different random models whose EOS is likely in some contexts."""
    _, tok = tiny_lm
    return random_lm(tok, 1, {tok.eos_token_id: 10.0}), random_lm(tok, 2, {tok.eos_token_id: 10.0}), tok


@pytest.fixture(scope="module")
def short_records():
    """Four synthetic test records with their prompts cut to the last 160 characters (the tiny models have
    256 positions); the gold judge only needs the facts and the prompt's numbers."""
    records = synthetic_tldr(4, seed=0, split="test")
    return [{**r, "prompt": r["prompt"][-160:]} for r in records]


def naive_greedy(model, tokenizer, prompt: str, max_new_tokens: int) -> str:
    """Greedy decoding by hand: argmax of a full forward pass each step, stop at EOS."""
    ids = _prompt_ids(tokenizer, prompt)
    new: list[int] = []
    with torch.inference_mode():
        for _ in range(max_new_tokens):
            token = int(model(torch.tensor([ids + new])).logits[0, -1].argmax())
            if token == tokenizer.eos_token_id:
                break
            new.append(token)
    return tokenizer.decode(new, skip_special_tokens=True)


# ----------------------------------------------------------------------------------------------- generate


def test_generate_strips_the_prompt_and_batching_changes_nothing_under_greedy(tiny_lm):
    model, tok = tiny_lm
    batched = generate_summaries(
        model, tok, PROMPTS, max_new_tokens=8, batch_size=4, progress=False, stop_at_newline=False
    )
    single = [
        generate_summaries(model, tok, [p], max_new_tokens=8, batch_size=1, progress=False, stop_at_newline=False)[0]
        for p in PROMPTS
    ]
    assert isinstance(batched, list) and len(batched) == len(PROMPTS) and all(isinstance(s, str) for s in batched)
    assert batched == single  # left padding with position ids from the mask: the rows do not see each other
    # the output is exactly the continuation (prompt stripped), as a hand-written greedy loop produces it
    assert batched == [naive_greedy(model, tok, p, 8).rstrip() for p in PROMPTS]


def test_newline_stops_the_summary(tiny_lm, random_lm):
    _, tok = tiny_lm
    newline = tok("\n", add_special_tokens=False).input_ids
    assert len(newline) == 1
    model = random_lm(tok, 3, {newline[0]: 12.0})  # a model that likes to start new lines
    free = generate_summaries(model, tok, PROMPTS, max_new_tokens=12, progress=False, stop_at_newline=False)
    cut = generate_summaries(model, tok, PROMPTS, max_new_tokens=12, progress=False, stop_at_newline=True)
    assert any("\n" in s.lstrip() for s in free)  # the test is not vacuous
    assert all("\n" not in s for s in cut)
    assert cut == [first_paragraph(s) for s in free]  # greedy: the same tokens up to the stop
    model.train()  # decoding runs in eval mode and gives the caller's mode back
    assert generate_summaries(model, tok, PROMPTS[:1], max_new_tokens=12, progress=False) == cut[:1]
    assert model.training


@pytest.mark.parametrize("num_beams, length_penalty", [(3, 0.0), (4, 1.0)])
def test_shared_prefill_gives_the_same_beams_as_plain_generate(tiny_lm, num_beams, length_penalty):
    """The prompt is run once and its cache repeated across beams: token for token what generate does alone,
    with prompts of different lengths (left padding) in one batch."""
    model, tok = tiny_lm
    assert len({len(tok(p, add_special_tokens=False).input_ids) for p in PROMPTS}) > 1  # padding is exercised
    kw = dict(
        num_beams=num_beams,
        length_penalty=length_penalty,
        max_new_tokens=10,
        batch_size=3,
        progress=False,
        stop_at_newline=False,
    )
    shared = generate_summaries(model, tok, PROMPTS, share_prefill=True, **kw)
    assert shared == generate_summaries(model, tok, PROMPTS, share_prefill=False, **kw)
    top2 = generate_summaries(model, tok, PROMPTS, num_return_sequences=2, **kw)
    assert len(top2) == 2 * len(PROMPTS) and top2[::2] == shared  # the best beam comes first


def test_shared_prefill_keeps_the_samples(tiny_lm):
    model, tok = tiny_lm
    kw = dict(
        do_sample=True,
        max_new_tokens=8,
        progress=False,
        batch_size=2,
        seed=3,
        num_return_sequences=3,
        stop_at_newline=False,
    )
    shared = generate_summaries(model, tok, PROMPTS, share_prefill=True, **kw)
    assert len(shared) == 3 * len(PROMPTS)
    assert shared == generate_summaries(model, tok, PROMPTS, share_prefill=False, **kw)
    assert len(set(shared)) > len(PROMPTS)  # the three samples of a prompt are not copies of one another


def test_num_return_sequences_is_checked(tiny_lm):
    model, tok = tiny_lm
    with pytest.raises(ValueError, match="num_return_sequences"):
        generate_summaries(model, tok, PROMPTS, num_return_sequences=0, progress=False)
    with pytest.raises(ValueError, match=r"num_return_sequences \(3\) must be <= num_beams \(2\)"):
        generate_summaries(model, tok, PROMPTS, num_beams=2, num_return_sequences=3, progress=False)
    with pytest.raises(ValueError, match="greedy"):
        generate_summaries(model, tok, PROMPTS, num_return_sequences=2, progress=False)


def test_first_paragraph():
    assert first_paragraph(" he earns 38k.\nPOST: next") == " he earns 38k."
    assert first_paragraph("\n\nA b.\nC") == " A b."  # blank lines before the text are not a stop
    assert first_paragraph(" one line  ") == " one line"
    assert first_paragraph("\n \n") == "" and first_paragraph("") == ""


def test_sampling_is_seeded_and_leaves_the_global_rng_alone(tiny_lm):
    model, tok = tiny_lm
    kw = dict(do_sample=True, max_new_tokens=8, progress=False, batch_size=2)
    state = torch.get_rng_state()
    a = generate_summaries(model, tok, PROMPTS, seed=5, **kw)
    assert torch.equal(state, torch.get_rng_state())
    assert a == generate_summaries(model, tok, PROMPTS, seed=5, **kw)
    assert a != generate_summaries(model, tok, PROMPTS, seed=6, **kw)


def test_generate_rejects_bad_arguments(tiny_lm):
    model, tok = tiny_lm
    with pytest.raises(TypeError, match="sequence of str"):
        generate_summaries(model, tok, "one prompt")
    with pytest.raises(ValueError, match="num_beams"):
        generate_summaries(model, tok, PROMPTS, num_beams=0)
    with pytest.raises(ValueError, match=r"prompts\[1\]"):
        generate_summaries(model, tok, ["Q:", ""])
    with pytest.raises(ValueError, match="rows_per_call"):
        generate_summaries(model, tok, PROMPTS, rows_per_call=0)


def test_rows_per_call_sets_the_prompts_per_call(tiny_lm, monkeypatch):
    """rows_per_call // rows per prompt prompts go to each generate call (at least one), and the beams found
    are the ones of plain batches of that size."""
    import qstar_lib.lm.decoding as decoding

    model, tok = tiny_lm
    sizes = []
    real = decoding._generate_batch
    monkeypatch.setattr(
        decoding, "_generate_batch", lambda m, t, chunk, *a, **k: sizes.append(len(chunk)) or real(m, t, chunk, *a, **k)
    )
    kw = dict(num_beams=3, length_penalty=0.0, max_new_tokens=6, progress=False, stop_at_newline=False)
    by_rows = generate_summaries(model, tok, PROMPTS, rows_per_call=7, **kw)  # 7 // 3 = 2 prompts a call
    assert sizes == [2] * (len(PROMPTS) // 2) + [len(PROMPTS) % 2] * (len(PROMPTS) % 2)
    sizes.clear()
    assert by_rows == generate_summaries(model, tok, PROMPTS, batch_size=2, **kw)
    sizes.clear()
    generate_summaries(model, tok, PROMPTS, rows_per_call=2, **kw)  # fewer rows than beams: one prompt a call
    assert sizes == [1] * len(PROMPTS)


# ----------------------------------------------------------------------------------------------- statistics


def test_bootstrap_ci_is_seeded_reproducible_and_matches_a_naive_loop():
    values = np.array([1.0, 0.0, 0.5, 1.0, 1.0, 0.0, 0.5, 1.0])
    low, high = bootstrap_ci(values, seed=3, n_boot=500)
    assert (low, high) == bootstrap_ci(values, seed=3, n_boot=500)
    assert low <= values.mean() <= high
    rng = np.random.default_rng(3)
    idx = rng.integers(0, len(values), size=(500, len(values)))
    means = [values[row].mean() for row in idx]
    assert (low, high) == pytest.approx(tuple(np.quantile(means, [0.025, 0.975])))
    assert bootstrap_ci([1.0, 1.0, 1.0]) == (1.0, 1.0)
    assert all(math.isnan(x) for x in bootstrap_ci([]))
    with pytest.raises(ValueError, match="confidence"):
        bootstrap_ci(values, confidence=1.5)


def _decoded(texts, stop="eos"):
    return [Decoded(t, len(t.split()) + 1, stop) for t in texts]


def test_decode_stats_with_the_gold_judge(short_records):
    chosen = [r["chosen"] for r in short_records]
    rejected = [r["rejected"] for r in short_records]
    same = decode_stats(short_records, _decoded(chosen), {"vs_chosen": chosen})
    assert same["vs_chosen"] == 0.5 and same["outcomes"]["vs_chosen"] == [0.5] * 4  # a summary ties with itself
    full = synthetic_tldr(4, seed=0, split="test")  # whole prompts: every fact of the summary is in the post
    flawless = decode_stats(full, _decoded([r["chosen"] for r in full]))
    assert flawless["gold_score"] == pytest.approx(1.0) and flawless["n_contradicted"] == 0
    worse = decode_stats(short_records, _decoded(rejected), {"vs_chosen": chosen}, compare)
    assert worse["vs_chosen"] < 0.5 and worse["gold_score"] < 1.0  # the planted errors lose, and cost score
    assert worse["gold_score_lo"] <= worse["gold_score"] <= worse["gold_score_hi"]
    assert worse["n"] == 4 and worse["mean_words"] > 0 and worse["stop_eos"] == 1.0 and worse["stop_cap"] == 0.0
    assert math.isnan(worse["implicit_reward"])  # no rewards given
    with pytest.raises(ValueError, match="3 decodes for 4 records"):
        decode_stats(short_records, _decoded(["a", "b", "c"]))
    with pytest.raises(ValueError, match="anchors\\['x'\\] has 1 texts"):
        decode_stats(short_records, _decoded(chosen), {"x": ["a"]})


def test_decode_table_rows_and_anchors(short_records):
    chosen = _decoded([r["chosen"] for r in short_records])
    rejected = _decoded([r["rejected"] for r in short_records], stop="cap")
    table = decode_table(short_records, {"chosen": chosen, "rejected": rejected}, {"vs_chosen": "chosen"}, n_boot=100)
    assert list(table.index) == ["chosen", "rejected"]
    assert table.loc["chosen", "vs_chosen"] == 0.5 and table.loc["rejected", "vs_chosen"] < 0.5
    assert table.loc["rejected", "stop_cap"] == 1.0 and len(table.attrs["outcomes"]["rejected"]["vs_chosen"]) == 4
    with pytest.raises(ValueError, match="'nope' is not among the decodes"):
        decode_table(short_records, {"chosen": chosen}, {"vs": "nope"})


def test_distinct_2_counts_repeated_bigrams():
    assert distinct_n("a b c d") == 1.0
    assert distinct_n("a b a b a b") == pytest.approx(2 / 5)  # (a b), (b a) among five bigrams
    assert math.isnan(distinct_n("one"))


def test_stop_reasons_eos_newline_and_cap(tiny_lm, eos_lm, random_lm):
    model, tok = tiny_lm
    capped = decode_summaries(model, tok, PROMPTS, max_new_tokens=3, stop_at_newline=False, progress=False)
    for d in capped:  # 3 tokens: either the cap, or an EOS came first
        assert d.stop in ("cap", "eos") and d.n_tokens <= 3
        assert d.stop == "eos" or d.n_tokens == 3
    _, _, etok = eos_lm
    eos_model = eos_lm[0]
    ended = decode_summaries(eos_model, etok, PROMPTS, max_new_tokens=40, stop_at_newline=False, progress=False)
    assert any(d.stop == "eos" for d in ended)  # EOS is likely for this model
    for d in ended:
        if d.stop == "eos":  # the EOS is counted as a generated token
            assert 1 <= d.n_tokens <= 40
    newline_id = tok("\n", add_special_tokens=False).input_ids[-1]
    word_id = tok(" a", add_special_tokens=False).input_ids[-1]
    liner = random_lm(tok, 3, {newline_id: 6.0, word_id: 6.0})  # writes words and new lines
    lines = decode_summaries(liner, tok, PROMPTS, max_new_tokens=30, progress=False)
    assert any(d.stop == "newline" for d in lines)
    for d in lines:
        assert "\n" not in d.text  # the returned text is the first paragraph
    assert [d.text for d in lines] == generate_summaries(liner, tok, PROMPTS, max_new_tokens=30, progress=False)


def test_overoptimisation_sweep_columns_anchors_and_intervals(short_records, eos_lm):
    policy, ref, tok = eos_lm
    beta = 0.1
    df = overoptimisation_sweep(
        policy, ref, tok, short_records, beta, beams=(1, 2), max_new_tokens=6, progress=False, n_boot=300
    )
    assert list(df.columns) == list(SWEEP_COLUMNS)
    assert len(df) == 2 * (2 * 2 + 1)  # models x ((beams x length penalties) + the sampling row)
    assert (df["n"] == 4).all() and set(df["model"]) == {"dpo", "sft"}
    for col in ("gold_score", "win_rate_vs_sft", "win_rate_vs_dpo_greedy", "implicit_reward", "mean_tokens"):
        assert ((df[f"{col}_lo"] <= df[col] + 1e-12) & (df[col] <= df[f"{col}_hi"] + 1e-12)).all(), col
    stops = df[["stop_eos", "stop_newline", "stop_cap"]].sum(axis=1)
    assert np.allclose(stops, 1.0) and (df["mean_tokens"] <= 6).all()
    greedy = df[(df["decoding"] == "beam") & (df["num_beams"] == 1)].set_index(["model", "length_penalty"])
    assert len(greedy) == 4
    assert (greedy.loc["sft", "win_rate_vs_sft"] == 0.5).all()  # the anchor ties with itself
    assert (greedy.loc["dpo", "win_rate_vs_dpo_greedy"] == 0.5).all()
    sft_rows = df[df["model"] == "sft"]
    assert (sft_rows["kl"] == 0.0).all()  # the SFT model is pi_ref
    dpo_rows = df[df["model"] == "dpo"]
    assert np.allclose(dpo_rows["implicit_reward"], beta * dpo_rows["kl"])  # the policy's own log-ratio
    # the implicit reward of one decode against a naive recomputation
    key = ("dpo", "beam", 2, 0.0)
    text = df.attrs["decodes"][key][0].text
    naive = implicit_rewards(policy, ref, tok, [short_records[0]["prompt"]], [text], beta)[0]
    logps = sequence_log_ratios([policy, ref], tok, [short_records[0]["prompt"]], [text])
    assert naive == pytest.approx(beta * (logps[0, 0] - logps[1, 0]), abs=1e-9)
    pattern = paper_pattern(df, n_boot=300)
    assert list(pattern.index) == [claim for claim, *_ in PATTERN]
    beam = df[(df["model"] == "dpo") & (df["length_penalty"] == 0.0)].set_index("num_beams")
    for claim, column, *_ in PATTERN:
        row = pattern.loc[claim]
        if row["num_beams_a"] == row["num_beams_b"]:  # widths 1-2 only: "many" is "few"
            assert math.isnan(row["difference"]) and not row["holds"]
            continue
        want = beam.loc[row["num_beams_a"], column] - beam.loc[row["num_beams_b"], column]
        assert row["difference"] == pytest.approx(want)  # the paired mean is the difference of the means
        assert row["lo"] <= row["difference"] + 1e-12 <= row["hi"] + 2e-12
    fig = plot_overoptimisation(df)
    assert len(fig.axes) == 4
    import matplotlib.pyplot as plt

    plt.close(fig)
    # a second policy (another beta) without the control rows: its DPO rows are the full sweep's
    alone = overoptimisation_sweep(
        policy, ref, tok, short_records, beta, beams=(1, 2), max_new_tokens=6, progress=False, n_boot=300, control=False
    )
    assert set(alone["model"]) == {"dpo"} and len(alone) == 2 * 2 + 1
    assert set(alone.attrs["decodes"]) == {k for k in df.attrs["decodes"] if k[0] == "dpo"} | {("sft", "beam", 1, None)}
    full = df[df["model"] == "dpo"].reset_index(drop=True)
    pd.testing.assert_frame_equal(alone.reset_index(drop=True), full)  # same decodes, anchors, intervals
    fig = plot_beta_sweep({beta: df, 2 * beta: alone})
    assert len(fig.axes) == 2 and len(fig.axes[0].lines) == 3  # two betas and the chosen summaries' line
    plt.close(fig)


# ----------------------------------------------------------------------------------------------- best-of-n


def test_best_of_n_with_policy_equal_to_ref_is_the_first_sample(short_records, tiny_lm):
    model, tok = tiny_lm
    res = best_of_n(model, model, tok, short_records, n=3, max_new_tokens=5, progress=False)
    assert all(s == 0.0 for row in res.candidate_scores for s in row)  # log pi - log pi_ref is exactly 0
    assert res.index == [0] * 4 and res.summaries == res.first_samples  # ties go to the earliest sample
    anchors = {"vs_chosen": [r["chosen"] for r in short_records]}
    table = best_of_n_comparison(short_records, res, anchors, n_boot=200)
    assert list(table.index) == ["first sample", "best of 3"]
    assert table["vs_chosen"].iloc[0] == table["vs_chosen"].iloc[1]
    assert table["gold_score"].iloc[0] == table["gold_score"].iloc[1]


def test_best_of_n_ranks_by_the_implicit_reward(short_records, eos_lm):
    policy, ref, tok = eos_lm
    beta = 0.1
    res = best_of_n(policy, ref, tok, short_records[:2], n=3, beta=beta, max_new_tokens=5, progress=False)
    for i, record in enumerate(short_records[:2]):
        for cand, score in zip(res.candidates[i], res.candidate_scores[i]):
            # naive reference: one unpadded forward per model, sum of log-probs of completion + EOS
            prompt = _prompt_ids(tok, record["prompt"])
            completion = list(tok(cand, add_special_tokens=False).input_ids) + [tok.eos_token_id]
            ids = torch.tensor([prompt + completion])
            with torch.inference_mode():
                sums = [
                    torch.log_softmax(m(ids).logits[0, :-1].double(), -1)[len(prompt) - 1 :]
                    .gather(-1, ids[0, len(prompt) :, None])
                    .sum()
                    .item()
                    for m in (policy, ref)
                ]
            assert score == pytest.approx(beta * (sums[0] - sums[1]), abs=1e-4)
        assert res.index[i] == int(np.argmax(res.candidate_scores[i]))
        assert res.summaries[i] == res.candidates[i][res.index[i]]
        assert res.scores[i] == max(res.candidate_scores[i])
    assert len(set(res.candidate_scores[0])) > 1  # the ranking is not vacuous
    again = implicit_rewards(policy, ref, tok, [short_records[0]["prompt"]], [res.candidates[0][1]], beta)
    assert again[0] == pytest.approx(res.candidate_scores[0][1], abs=1e-6)


# ----------------------------------------------------------------------------------------------- eq. 12-13


VG_CASES = [  # (beta, prompt, num_beams)
    (0.1, PROMPTS[0], 2),
    (0.1, PROMPTS[1], 3),
    (0.1, PROMPTS[3], 3),
    (1.0, PROMPTS[0], 3),
    (1.0, PROMPTS[2], 2),
]


def test_value_guided_search_keeps_the_same_beams_as_likelihood_search(eos_lm):
    policy, ref, tok = eos_lm
    n_steps = 0
    for beta, prompt, k in VG_CASES:
        vg = value_guided_beam_search(policy, ref, tok, prompt, beta=beta, num_beams=k, max_new_tokens=6)
        ll = likelihood_beam_search(policy, tok, prompt, num_beams=k, max_new_tokens=6)
        assert vg.max_abs_value < 1e-5  # V_hat(s) = beta log sum_a pi_theta(a|s) = 0: eq. 12's tail vanishes
        if vg.steps != ll.steps or vg.finished != ll.finished:  # only allowed at a float tie
            assert min(vg.min_margin, ll.min_margin * beta) < 1e-9
            continue
        assert vg.tokens == ll.tokens and vg.text == ll.text
        assert vg.score == pytest.approx(beta * ll.score, abs=1e-9)  # eq. 13 with V*(s_0) = 0 for r_hat
        n_steps += len(vg.steps)
    assert n_steps >= 10


def test_cached_last_logits_equal_full_recomputation_along_a_beam_search(eos_lm):
    """The KV-cached scorer the searches use, against running every prefix again at every step."""
    policy, _, tok = eos_lm
    cached = CachedLastLogits(policy)
    calls, gaps = [], []

    def step(seqs):
        with torch.inference_mode():
            fast, slow = cached(seqs), _last_logits(policy, seqs)  # (W, V) each
        calls.append(seqs.shape)
        gaps.append(float((fast - slow).abs().max()))
        return torch.log_softmax(slow, -1).double()

    _beam_search(step, _prompt_ids(tok, PROMPTS[1]), 3, 6, tok.eos_token_id)
    assert len(calls) >= 4 and calls[0][0] == 1 and max(c[0] for c in calls) == 3  # one row, then three beams
    assert max(gaps) < 1e-4, gaps
    with torch.inference_mode():  # rows that do not extend the last call's: a full recomputation
        other = torch.tensor([_prompt_ids(tok, PROMPTS[2])])
        assert torch.allclose(cached(other), _last_logits(policy, other), atol=1e-4)


def test_the_reference_term_is_what_makes_reward_search_likelihood_search(eos_lm):
    """Searching on the implicit reward alone (no beta log pi_ref term) keeps other beams: not vacuous."""
    policy, ref, tok = eos_lm
    beta, prompt, k = 0.5, PROMPTS[0], 3
    ids = _prompt_ids(tok, prompt)

    def reward_only(seqs):
        with torch.inference_mode():
            lp = torch.log_softmax(_last_logits(policy, seqs), -1).double()
            lr = torch.log_softmax(_last_logits(ref, seqs), -1).double()
        return beta * (lp - lr)

    r_only = _beam_search(reward_only, ids, k, 6, tok.eos_token_id)
    ll = likelihood_beam_search(policy, tok, prompt, num_beams=k, max_new_tokens=6)
    assert r_only["steps"] != ll.steps


def test_likelihood_search_matches_generate(eos_lm):
    policy, _, tok = eos_lm
    compared, ended_early = 0, 0
    for prompt in PROMPTS:
        for k in (1, 2, 4):
            c = compare_with_generate(policy, tok, prompt, num_beams=k, max_new_tokens=7)
            if not c["comparable"]:  # a float near-tie: HF (float32, cached) may break it the other way
                continue
            assert c["agree"], (prompt, k, c)
            assert c["score_ours"] == pytest.approx(c["score_hf"], abs=1e-3)
            compared += 1
            ended_early += c["ours"][-1] == tok.eos_token_id and len(c["ours"]) < 7
    assert compared >= 9 and ended_early >= 3  # EOS handling and the stopping rule were exercised


def test_eq12_step_score_is_beta_log_pi_theta_and_a_zero_value():
    """r_hat + beta log pi_ref = beta log pi_theta, and the soft value of r_hat is 0 (eq. 12 -> eq. 13)."""
    gen = torch.Generator().manual_seed(0)
    logp = torch.log_softmax(torch.randn(3, 11, generator=gen, dtype=torch.float64), -1)  # (W, V)
    ref_logp = torch.log_softmax(torch.randn(3, 11, generator=gen, dtype=torch.float64), -1)  # (W, V)
    score, value = eq12_step_score(logp, ref_logp, beta=0.3)
    assert score.shape == (3, 11) and value.shape == (3,)
    assert torch.allclose(score, 0.3 * logp, atol=1e-12, rtol=0)
    assert float(value.abs().max()) < 1e-12
    with pytest.raises(ValueError, match="vocabulary"):
        eq12_step_score(logp, ref_logp[:, :5], beta=0.3)


class _FakeTokenizer:
    """Ids 0-9 decode to letters, 10 to a newline; EOS and pad configurable."""

    def __init__(self, eos, pad):
        self.eos_token_id, self.pad_token_id = eos, pad

    def decode(self, ids, skip_special_tokens=True):
        skip = {self.eos_token_id, self.pad_token_id} if skip_special_tokens else set()
        return "".join("\n" if i == 10 else chr(97 + i) for i in ids if i not in skip)


@pytest.mark.parametrize(
    "eos, pad, row, stop, n",
    [
        (2, 2, [5, 6, 2, 2], "eos", 3),  # pad == eos (SmolLM2): the EOS counts, the padding does not
        (2, 2, [5, 10, 6, 2], "newline", 3),  # a paragraph stop, then padding that reads as EOS
        (2, 2, [5, 6, 7, 8], "cap", 4),
        (2, 2, [5, 6, 7, 2], "eos", 4),  # EOS written at the limit is still the model's stop
        (0, 1, [5, 6, 5, 1], "cap", 4),  # pad != eos (tiny): a generated pad id at the limit is a token
        (0, 1, [5, 10, 1, 1], "newline", 2),
        (0, 1, [5, 0, 1, 1], "eos", 2),
    ],
)
def test_stop_reason_of_one_row(eos, pad, row, stop, n):
    from qstar_lib.lm.decoding import _stop_reason

    assert _stop_reason(row, _FakeTokenizer(eos, pad), max_new_tokens=4, stop_at_newline=True) == (stop, n)
