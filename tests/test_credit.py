"""qstar_lib.eval.credit, .baselines, .credit_table: AUROC against the pairwise definition, hand-made
localisation/stitching cases, the bootstrap, the table's shape, and an end-to-end run on the tiny model
(policy == reference -> exactly chance)."""

from __future__ import annotations

import functools
import itertools
import math
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from qstar_lib.data import LOCALISED_KINDS, synthetic_tldr, token_labels
from qstar_lib.eval.baselines import DEFAULT_METHODS, credit_scores, random_scores, sft_surprisal, uniform_share
from qstar_lib.eval.credit import (
    MIN_BINS,
    align_scores,
    auroc,
    error_token_auroc,
    pair_accuracy,
    stitching_rate,
    top1_localisation,
    where_is_the_minimum,
)
from qstar_lib.eval.credit_tables import (
    SINGLE_KINDS,
    TABLE_KINDS,
    credit_report,
    credit_table,
    credit_targets,
    minimum_table,
)
from qstar_lib.lm.collate import planted_labels
from qstar_lib.stats import bootstrap_ci


def brute_auroc(pos, neg) -> float:
    """The definition: mean over all (positive, negative) pairs of 1[p > n] + 0.5 * 1[p == n]."""
    return float(np.mean([(p > n) + 0.5 * (p == n) for p in pos for n in neg]))


# ------------------------------------------------------------------------------------------------ auroc
def test_auroc_identities():
    assert auroc([3, 4, 5], [0, 1, 2]) == 1.0  # perfect separation
    assert auroc([0, 1, 2], [3, 4, 5]) == 0.0  # reversed
    assert auroc([7, 7, 7], [7, 7]) == 0.5  # all ties
    assert auroc([1.0], [0.0, 1.0]) == 0.75  # one win, one tie


@pytest.mark.parametrize("seed", range(5))
def test_auroc_equals_brute_force_on_random_data_with_ties(seed):
    rng = np.random.default_rng(seed)
    pos = rng.integers(0, 6, rng.integers(1, 40)).astype(float)  # small integers: many ties
    neg = rng.integers(0, 6, rng.integers(1, 40)).astype(float)
    assert auroc(pos, neg) == pytest.approx(brute_auroc(pos, neg), abs=1e-12)
    cont_pos, cont_neg = rng.normal(0.5, 1, 30), rng.normal(0, 1, 50)
    assert auroc(cont_pos, cont_neg) == pytest.approx(brute_auroc(cont_pos, cont_neg), abs=1e-12)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(-3, 3), min_size=1, max_size=12), st.lists(st.integers(-3, 3), min_size=1, max_size=12))
def test_auroc_property_brute_force_and_symmetry(pos, neg):
    a = auroc(pos, neg)
    assert a == pytest.approx(brute_auroc(pos, neg), abs=1e-12)
    assert a + auroc(neg, pos) == pytest.approx(1.0, abs=1e-12)  # swapping the classes mirrors the AUROC


def test_auroc_rejects_empty_and_nan():
    with pytest.raises(ValueError, match="at least one positive"):
        auroc([], [1.0])
    with pytest.raises(ValueError, match="NaN"):
        auroc([float("nan")], [1.0])


# ------------------------------------------------------------------------------------------ alignment / EOS
def test_align_scores_drops_the_eos_and_refuses_truncation():
    np.testing.assert_array_equal(align_scores([1, 2, 3, -99], 3), [1, 2, 3])  # EOS entry removed
    np.testing.assert_array_equal(align_scores([1, 2, 3], 3), [1, 2, 3])
    with pytest.raises(ValueError, match="record 4.*truncated"):
        align_scores([1, 2], 3, record=4)
    with pytest.raises(ValueError, match="different tokenisations"):
        align_scores([1, 2, 3, 4, 5], 3)


def test_error_token_auroc_pooled_and_per_record():
    scores = [[0.0, -1.0, 0.5], [-2.0, 0.1, 0.2, 0.3]]
    labels = [[0, 1, 0], [1, 0, 0, 0]]
    assert error_token_auroc(scores, labels) == 1.0  # every error token below every clean token
    assert error_token_auroc([[-s for s in r] for r in scores], labels) == 0.0
    # pooled differs from per-record when the scale differs between records
    scores2 = [[-5.0, -6.0, -4.0], [1.0, 0.0, 2.0]]
    labels2 = [[0, 1, 0], [0, 1, 0]]
    assert error_token_auroc(scores2, labels2, average="per_record") == 1.0
    pos, neg = [6.0, 0.0], [5.0, 4.0, -1.0, -2.0]  # negated scores, by hand
    assert error_token_auroc(scores2, labels2) == pytest.approx(brute_auroc(pos, neg))


def test_error_token_auroc_ignores_the_eos_entry():
    labels = [[0, 1, 0, 0]]
    base = error_token_auroc([[0.3, -0.2, 0.1, 0.0]], labels)
    with_eos = error_token_auroc([[0.3, -0.2, 0.1, 0.0, -50.0]], labels)  # a very low EOS changes nothing
    assert base == with_eos == 1.0


def test_constant_scores_give_exactly_chance_within_records():
    labels = [[0, 1, 1, 0, 0], [1, 0, 0]]
    const = [[0.7] * 5, [-3.0] * 3]
    assert error_token_auroc(const, labels, average="per_record") == 0.5
    assert top1_localisation(const, labels) == pytest.approx(np.mean([2 / 5, 1 / 3]))


def test_per_record_auroc_needs_both_classes():
    with pytest.raises(ValueError, match="record 1: labels has no error token"):
        error_token_auroc([[0, 1], [0, 1]], [[0, 1], [0, 0]], average="per_record")
    with pytest.raises(ValueError, match="record 0.*every token"):
        error_token_auroc([[0, 1]], [[1, 1]], average="per_record")
    with pytest.raises(ValueError, match="average"):
        error_token_auroc([[0, 1]], [[0, 1]], average="mean")


# ------------------------------------------------------------------------------------------------ top-1
def test_top1_localisation_hand_made():
    labels = [[0, 0, 1, 1, 0], [0, 1, 0], [1, 0, 0, 0]]
    scores = [
        [0.0, 0.1, -0.5, 0.0, 0.2],  # minimum inside the span -> 1
        [0.0, 0.1, -0.3],  # minimum right after the span -> 0
        [-1.0, -1.0, 0.0, 0.0],  # tie between an error token and a clean one -> 0.5
    ]
    assert top1_localisation(scores, labels) == pytest.approx((1 + 0 + 0.5) / 3)
    assert top1_localisation(scores[:1], labels[:1]) == 1.0
    with pytest.raises(ValueError, match="no error token"):
        top1_localisation([[0, 1]], [[0, 0]])


# ------------------------------------------------------------------------------------------------ stitching
def brute_stitching(scores, errors, k) -> float:
    """Average over every tie-break order (all permutations): do all errors have a token in the first k?"""
    s = np.asarray(scores, dtype=float)
    hits = []
    for perm in itertools.permutations(range(len(s))):
        order = sorted(range(len(s)), key=lambda i: (s[i], perm[i]))
        top = set(order[:k])
        hits.append(all(any(e[i] and i in top for i in range(len(s))) for e in errors))
    return float(np.mean(hits))


def test_stitching_hand_made_two_error_cases():
    e1 = [1, 1, 0, 0, 0, 0, 0]
    e2 = [0, 0, 0, 0, 1, 0, 0]
    both = [-1.0, -0.2, 0.0, 0.1, -2.0, 0.0, 0.3]  # both errors among the 3 (= labelled) lowest
    first_only = [-1.0, -0.9, 0.0, -0.8, 0.5, 0.0, 0.3]  # the second error is missed
    assert stitching_rate([both], [[e1, e2]]) == 1.0
    assert stitching_rate([first_only], [[e1, e2]]) == 0.0
    assert stitching_rate([both, first_only], [[e1, e2]] * 2) == 0.5
    assert stitching_rate([both], [[e1, e2]], k=2) == 1.0  # -2.0 (e2) and -1.0 (e1) are the two lowest
    assert stitching_rate([first_only], [[e1, e2]], k=5) == 0.0  # 0.5 is the highest score
    assert stitching_rate([first_only], [[e1, e2]], k=7) == 1.0  # k = all tokens
    assert stitching_rate([both + [-9.0]], [[e1, e2]]) == 1.0  # an EOS entry is dropped


@pytest.mark.parametrize(
    "scores,k",
    [
        ([0.0] * 6, 2),
        ([0.0] * 6, 3),
        ([0.0, -1.0, 0.0, 0.0, 0.0, -1.0], 2),
        ([0.0, -1.0, 0.0, 0.0, 0.0, 0.0], 3),
        ([1.0, 0.0, 0.0, 0.0, 1.0, 0.0], 4),
    ],
)
def test_stitching_ties_match_the_average_over_tie_breaks(scores, k):
    errors = [[1, 1, 0, 0, 0, 0], [0, 0, 0, 0, 1, 1]]
    assert stitching_rate([scores], [errors], k=k) == pytest.approx(brute_stitching(scores, errors, k), abs=1e-12)
    assert stitching_rate([[0.0] * 6], [errors], k=2) == pytest.approx(4 / 15)  # 2*2 of C(6, 2) pairs


def test_stitching_rejects_single_error_records_and_bad_k():
    with pytest.raises(ValueError, match="record 0: stitching needs >= 2"):
        stitching_rate([[0.0, 1.0]], [[[1, 0]]])
    with pytest.raises(ValueError, match="k must be"):
        stitching_rate([[0.0, 1.0]], [[[1, 0], [0, 1]]], k=0)


# ----------------------------------------------------------------------------------- where is the minimum
def test_where_is_the_minimum_bins():
    labels = [[0, 1, 1, 0, 0, 0]] * 5
    scores = [
        [0, -1, 0, 0, 0, 0],  # inside
        [0, 0, 0, -1, 0, 0],  # 1 after
        [0, 0, 0, 0, 0, -1],  # 2+ after
        [-1, 0, 0, 0, 0, 0],  # before
        [0, 0, -1, -1, 0, 0],  # tie: half inside, half 1 after
    ]
    hist = where_is_the_minimum(scores, labels)
    assert hist == pytest.approx({"before": 0.2, "inside": 0.3, "1 after": 0.3, "2+ after": 0.2, "n": 5})
    assert tuple(k for k in hist if k != "n") == MIN_BINS
    assert sum(hist[b] for b in MIN_BINS) == pytest.approx(1.0)


# ------------------------------------------------------------------------------------------ pair accuracy
def test_pair_accuracy():
    assert pair_accuracy([1.0, 2.0, 0.0, 0.0], [0.0, 3.0, 0.0, -1.0]) == 0.5  # tie counts 0, as in TRL
    assert pair_accuracy([0.0, 0.0], [0.0, 0.0], ties=0.5) == 0.5
    with pytest.raises(ValueError, match="3 entries"):
        pair_accuracy([1, 2, 3], [1, 2])


# -------------------------------------------------------------------------------------------- baselines
def test_baselines_have_the_shape_of_the_rewards():
    rows = [
        {"rejected_rewards": [0.1, -0.3, 0.2], "rejected_per_token_logps": [-1.0, -5.0, -0.5]},
        {"rejected_rewards": [1.0, 1.0], "rejected_per_token_logps": [-2.0, -0.1]},
    ]
    uni = uniform_share(rows)
    assert [len(u) for u in uni] == [3, 2]
    np.testing.assert_allclose(uni[0], [0.0, 0.0, 0.0], atol=1e-15)
    np.testing.assert_allclose(uni[1], [1.0, 1.0])
    np.testing.assert_allclose([u.sum() for u in uni], [0.0, 2.0], atol=1e-12)  # the sequence reward is kept
    a, b = random_scores(rows, seed=3), random_scores([3, 2], seed=3)
    assert [len(x) for x in a] == [3, 2] and all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(random_scores([3], seed=4)[0], a[0])
    np.testing.assert_array_equal(sft_surprisal(rows)[0], [-1.0, -5.0, -0.5])  # +log pi: low = surprising
    methods = credit_scores(rows, sft_logps=rows, base_logps=rows, controls={"continued_sft": rows}, seed=0)
    assert tuple(methods) == tuple(m for m in DEFAULT_METHODS if m != "shuffled_dpo")
    np.testing.assert_array_equal(methods["sft_minus_base"][0], [0.0, 0.0, 0.0])  # the same rows twice
    np.testing.assert_array_equal(methods["continued_sft"][1], methods["dpo_reward"][1])  # read like the reward


def test_surprisal_from_a_model_equals_surprisal_from_its_logps(tiny_lm, pair_records):
    from qstar_lib.lm.logps import pair_logps

    model, tok = tiny_lm
    rows = pair_logps(model, tok, pair_records, progress=False)
    direct = sft_surprisal(model, tok, pair_records, progress=False)
    assert len(direct) == len(pair_records)
    for got, row in zip(direct, rows):
        np.testing.assert_array_equal(got, row["rejected_per_token_logps"])
        assert np.all(got <= 0)  # log-probs: the least likely token has the lowest score
    with pytest.raises(ValueError, match="tokenizer= and records="):
        sft_surprisal(model)


# -------------------------------------------------------------------------------------------- bootstrap
def test_bootstrap_ci_contains_the_point_estimate_and_is_reproducible():
    rng = np.random.default_rng(0)
    labels = [rng.integers(0, 2, 12) | np.eye(12, dtype=int)[0] for _ in range(30)]
    scores = [rng.normal(0, 1, 12) - 0.8 * lab for lab in labels]
    for fn in (error_token_auroc, top1_localisation):
        lo, hi = bootstrap_ci(scores, labels, statistic=fn, n_boot=100, seed=1)
        assert lo <= fn(scores, labels) <= hi
        assert (lo, hi) == bootstrap_ci(scores, labels, statistic=fn, n_boot=100, seed=1)
    per_record = functools.partial(error_token_auroc, average="per_record")
    lo, hi = bootstrap_ci(scores, labels, statistic=per_record, n_boot=100)
    assert lo <= per_record(scores, labels) <= hi
    with pytest.raises(ValueError, match="different lengths"):
        bootstrap_ci(scores, labels[:3], statistic=top1_localisation)
    with pytest.raises(ValueError, match="binomial"):
        bootstrap_ci(scores, labels, statistic=top1_localisation, binomial=True)


def test_fast_table_bootstrap_equals_the_generic_bootstrap():
    from qstar_lib.eval.credit import _pairs
    from qstar_lib.eval.credit_tables import _fast_bootstrap

    rng = np.random.default_rng(5)
    labels = [rng.integers(0, 2, n) | np.eye(n, dtype=int)[1] for n in rng.integers(4, 15, 25)]
    scores = [np.round(rng.normal(0, 1, len(lab) + 1), 1) - 0.5 * np.append(lab, 0) for lab in labels]  # ties, EOS
    fast_auroc, fast_top1 = _fast_bootstrap(_pairs(scores, labels), n_boot=60, seed=3)
    slow_auroc = bootstrap_ci(scores, labels, statistic=error_token_auroc, n_boot=60, seed=3)
    slow_top1 = bootstrap_ci(scores, labels, statistic=top1_localisation, n_boot=60, seed=3)
    np.testing.assert_allclose(fast_auroc, (error_token_auroc(scores, labels), *slow_auroc), atol=1e-12)
    np.testing.assert_allclose(fast_top1, (top1_localisation(scores, labels), *slow_top1), atol=1e-12)


def test_single_kinds_are_the_localised_kinds_in_table_order():
    assert SINGLE_KINDS == ("absent_value", "inserted_claim", "in_post_swap")  # the columns the chapters glue
    assert set(SINGLE_KINDS) == set(LOCALISED_KINDS) and TABLE_KINDS == SINGLE_KINDS + ("two_errors", "all")


# ------------------------------------------------------------------------------------------------ table
@pytest.fixture(scope="module")
def table_records():
    kinds = ["absent_value", "inserted_claim", "in_post_swap", "two_errors", "omission"]
    return synthetic_tldr(20, seed=1, split="test", kinds=kinds)


def test_credit_targets_and_table_shape_and_n(table_records, tiny_tokenizer):
    records, tok = table_records, tiny_tokenizer
    targets = credit_targets([planted_labels(r, tok) for r in records])
    for rec, t in zip(records, targets):
        assert t["n_tokens"] == len(tok(rec["rejected"], add_special_tokens=False).input_ids)
        assert len(t["error_labels"]) == rec["n_errors"]
        if t["error_labels"]:
            np.testing.assert_array_equal(np.logical_or.reduce(t["error_labels"]), t["labels"].astype(bool))
    rng = np.random.default_rng(0)
    perfect = [-t["labels"] + 0.01 * rng.random(t["n_tokens"] + 1)[:-1] for t in targets]  # errors lowest
    methods = {
        "dpo_reward": [np.append(p, 5.0) for p in perfect],  # with an EOS entry
        "random": random_scores([t["n_tokens"] for t in targets]),
        "uniform_share": [np.full(t["n_tokens"], 0.3) for t in targets],
    }
    chosen, rejected = rng.normal(1, 0.1, len(targets)), rng.normal(0, 0.1, len(targets))
    with pytest.warns(UserWarning, match="no planted-error token.*omission"):
        df = credit_table(methods, targets, pair_scores={"dpo_reward": (chosen, rejected)}, n_boot=20)
    assert list(df.index) == ["dpo_reward", "random", "uniform_share"]
    assert list(df.columns.get_level_values("kind").unique()) == list(TABLE_KINDS)
    kinds_of = {
        k: sum(len(t["error_labels"]) == 1 and t["error_kinds"][0] == k for t in targets)
        for k in ("absent_value", "inserted_claim", "in_post_swap")
    }
    kinds_of["two_errors"] = sum(len(t["error_labels"]) == 2 for t in targets)
    kinds_of["all"] = sum(bool(t["labels"].any()) for t in targets)
    for kind, n in kinds_of.items():
        assert n > 0 and (df[(kind, "n")] == n).all(), kind
    assert kinds_of["all"] == sum(r["n_errors"] > 0 for r in records) < len(records)  # omission left out
    assert (df.loc["dpo_reward", (slice(None), "auroc")] == 1.0).all()
    assert (df.loc["dpo_reward", (slice(None), "top1")] == 1.0).all()
    assert df.loc["dpo_reward", ("two_errors", "stitching")] == 1.0
    assert (df.loc["uniform_share", (slice(None), "auroc_rec")] == 0.5).all()
    assert df.loc["dpo_reward", ("all", "pair_acc")] == 1.0 and math.isnan(df.loc["random", ("all", "pair_acc")])
    assert ("absent_value", "stitching") not in df.columns and ("two_errors", "stitching_top5") in df.columns
    ci_ok = df[("all", "auroc_lo")] <= df[("all", "auroc")] + 1e-12
    assert ci_ok.all()
    mins = minimum_table(methods, targets)
    assert list(mins.columns) == [*MIN_BINS, "n"] and (mins["n"] == kinds_of["all"]).all()
    assert mins.loc["dpo_reward", "inside"] == 1.0
    np.testing.assert_allclose(mins[list(MIN_BINS)].sum(axis=1), 1.0)


def test_credit_table_checks_lengths(table_records, tiny_tokenizer):
    targets = credit_targets([planted_labels(r, tiny_tokenizer) for r in table_records])
    with pytest.raises(ValueError, match="methods\\['x'\\] has 1 records"):
        credit_table({"x": [np.zeros(3)]}, targets)
    with pytest.raises(KeyError, match="rejected_labels"):
        credit_targets([{"rejected_rewards": [0.0]}])


# ------------------------------------------------------------------------------------ end to end, tiny model
@pytest.fixture(scope="module")
def tiny_scored():
    from qstar_lib.lm.logps import pair_logps, score_pairs
    from qstar_lib.lm.models import clone_model, load_model

    model, tok = load_model("tiny")
    kinds = ["absent_value", "inserted_claim", "in_post_swap", "two_errors"]
    records = synthetic_tldr(8, seed=0, split="test", kinds=kinds)
    ref = pair_logps(model, tok, records, progress=False)
    same = score_pairs(model, None, tok, records, beta=0.1, ref_scores=ref, progress=False)
    policy = clone_model(model)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():  # "briefly trained": a small random step away from the reference
        for p in policy.parameters():
            p.add_(0.02 * torch.randn(p.shape, generator=gen))
    moved = score_pairs(policy, None, tok, records, beta=0.1, ref_scores=ref, progress=False)
    return records, tok, ref, same, moved


def test_end_to_end_policy_equal_to_reference_is_exactly_chance(tiny_scored):
    records, tok, ref, same, _ = tiny_scored
    assert all(v == 0.0 for row in same for v in row["rejected_rewards"])
    for rec, target in zip(records, credit_targets(same)):  # the labels the rows carry: localised spans only
        spans = sorted(
            (e for e in rec["errors"] if e["kind"] in LOCALISED_KINDS and e["start"] >= 0), key=lambda e: e["start"]
        )
        np.testing.assert_array_equal(target["labels"], token_labels(rec["rejected"], spans, tok))
        assert target["kind"] == rec["kind"] and target["error_kinds"] == [e["kind"] for e in spans]
    df = credit_report(same, sft_logps=ref)
    assert (df.loc["dpo_reward", (slice(None), "auroc")] == 0.5).all()
    assert (df.loc["dpo_reward", (slice(None), "auroc_rec")] == 0.5).all()
    assert (df.loc["uniform_share", (slice(None), "auroc")] == 0.5).all()
    assert df.loc["dpo_reward", ("all", "pair_acc")] == 0.0  # all ties, counted as TRL does


def test_end_to_end_table_has_every_method_and_kind(tiny_scored):
    records, tok, ref, _, moved = tiny_scored
    assert any(v != 0.0 for row in moved for v in row["rejected_rewards"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every record is localised: no warning
        df = credit_report(moved, sft_logps=ref, base_logps=ref, n_boot=20)
    assert list(df.index) == [m for m in DEFAULT_METHODS if m not in ("continued_sft", "shuffled_dpo")]
    assert (df.loc["sft_minus_base", (slice(None), "auroc_rec")] == 0.5).all()  # the same model twice: all zero
    assert df[("all", "n")].iloc[0] == len(records)
    for kind in TABLE_KINDS:
        assert df[(kind, "n")].iloc[0] >= 1, kind
        vals = df[[(kind, "auroc"), (kind, "top1")]].to_numpy()
        assert np.all((vals >= 0) & (vals <= 1)), kind
    assert df.loc["sft_surprisal", ("all", "auroc")] == df.loc["base_surprisal", ("all", "auroc")]  # same rows
    assert df.loc["dpo_reward", ("all", "pair_acc")] == pair_accuracy(
        [r["chosen_reward"] for r in moved], [r["rejected_reward"] for r in moved]
    )


# ------------------------------------------------------------------------- data v2 metrics: candidates, chance
def test_per_record_auroc_within_candidates():
    from qstar_lib.eval.credit import per_record_auroc

    s = [np.array([0.0, -1.0, -2.0, 5.0, -3.0])]  # token 4 is the lowest overall, but not a candidate
    lab = [np.array([0, 0, 1, 0, 0])]
    cand = [np.array([1, 1, 1, 1, 0])]
    assert per_record_auroc(s, lab)[0] == 0.75  # all tokens: token 4 (-3) beats the error (-2)
    assert per_record_auroc(s, lab, cand)[0] == 1.0  # among the candidates the error is lowest
    only_error = [np.array([0, 0, 1, 0, 0])]
    assert np.isnan(per_record_auroc(s, lab, only_error)[0])  # no clean candidate: undefined, not 0.5
    with pytest.raises(ValueError, match="candidates has 2 records"):
        per_record_auroc(s, lab, cand * 2)


def test_candidates_of_a_swap_are_the_values_of_its_type(tiny_tokenizer):
    records = synthetic_tldr(60, seed=2, split="test", kinds=["in_post_swap", "inserted_claim"])
    for r in records:
        row = planted_labels(r, tiny_tokenizer)
        (err,), (cand,), (first,) = row["rejected_errors"], row["rejected_candidates"], row["rejected_first_labels"]
        lab = np.array(row["rejected_error_labels"][0], bool)
        if err["kind"] == "inserted_claim":
            assert all(cand)
            continue
        ty = next(v["type"] for v in r["rejected_values"] if v["slot"] == err["slot"])
        spans = [v for v in r["rejected_values"] if v["type"] == ty]
        assert len(spans) >= 2  # data v2: a swap sits among at least two values of its type
        inside = np.array(token_labels(r["rejected"], spans, tiny_tokenizer), bool)
        assert np.all(~np.array(cand, bool) | inside)  # candidates lie in the same-type values
        assert (np.array(cand, bool) & lab).any() and (np.array(cand, bool) & ~lab).any()
        assert sum(first) == 1 and np.flatnonzero(first)[0] == np.flatnonzero(lab)[0]


def test_chance_levels_and_paired_differences(table_records, tiny_tokenizer):
    targets = credit_targets([planted_labels(r, tiny_tokenizer) for r in table_records])
    rng = np.random.default_rng(3)
    methods = {
        "dpo_reward": [-t["labels"] + 0.1 * rng.random(t["n_tokens"]) for t in targets],
        "random": random_scores([t["n_tokens"] for t in targets]),
        "uniform_share": [np.zeros(t["n_tokens"]) for t in targets],
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        df = credit_table(methods, targets, n_boot=200)
    for kind in TABLE_KINDS:
        assert df.loc["uniform_share", (kind, "top1")] == pytest.approx(df.loc["dpo_reward", (kind, "top1_chance")])
        assert math.isnan(df.loc["dpo_reward", (kind, "delta_rec")])  # the reference has no difference to itself
        d = df.loc["uniform_share", (kind, "delta_rec")]
        assert d == pytest.approx(df.loc["dpo_reward", (kind, "auroc_rec")] - 0.5)
        lo, hi = df.loc["uniform_share", (kind, "delta_rec_lo")], df.loc["uniform_share", (kind, "delta_rec_hi")]
        assert lo <= d + 1e-12 and d <= hi + 1e-12
    chance = df.loc["dpo_reward", ("two_errors", "stitching_chance")]
    assert chance == pytest.approx(df.loc["uniform_share", ("two_errors", "stitching")])
    assert 0 < chance < 1


def test_held_out_subsets_select_their_records(tiny_tokenizer):
    records = synthetic_tldr(80, seed=4, split="test", kinds=["in_post_swap"])
    targets = credit_targets([planted_labels(r, tiny_tokenizer) for r in records])
    methods = {"dpo_reward": [np.zeros(t["n_tokens"]) for t in targets]}
    for flag in ("heldout_family", "heldout_template"):
        df = credit_table(methods, targets, kinds=["in_post_swap"], subset=flag)
        assert df.loc["dpo_reward", ("in_post_swap", "n")] == sum(r[flag] for r in records) > 0
    seen = credit_table(methods, targets, kinds=["in_post_swap"], subset="seen_template")
    assert seen.loc["dpo_reward", ("in_post_swap", "n")] == sum(not r["heldout_template"] for r in records) > 0
    with pytest.raises(ValueError, match="subset='new'"):
        credit_table(methods, targets, kinds=["in_post_swap"], subset="new")


def test_log_ratio_is_the_difference_of_two_models_logps():
    from qstar_lib.eval.baselines import log_ratio

    a = [{"rejected_per_token_logps": [-1.0, -2.0]}]
    b = [{"rejected_per_token_logps": [-1.5, -1.0]}]
    np.testing.assert_allclose(log_ratio(a, b)[0], [0.5, -1.0])
    with pytest.raises(ValueError, match="row 0 has 2 policy and 1 reference tokens"):
        log_ratio(a, [{"rejected_per_token_logps": [0.0]}])


def test_gap_concentration_known_numbers():
    from qstar_lib.eval.report import gap_concentration, gap_share_curve

    # |contributions|: chosen 3, 1, 0; rejected |-(-1)| = 1, 0 -> total 5; 80% = 4 needs 2 of 5 tokens
    row = {"chosen_rewards": [3.0, 1.0, 0.0], "rejected_rewards": [-1.0, 0.0]}
    flat = {"chosen_rewards": [1.0] * 4, "rejected_rewards": [-1.0] * 4}  # even: 6.4 of 8 needs 7 tokens
    worse = {"chosen_rewards": [0.0], "rejected_rewards": [1.0]}  # one token carries it all (sign ignored)
    zero = {"chosen_rewards": [0.0], "rejected_rewards": [0.0]}  # policy == reference: left out
    np.testing.assert_allclose(gap_concentration([row, flat, worse, zero]), [2 / 5, 7 / 8, 1 / 2])
    x, y, n = gap_share_curve([row, flat, worse, zero])
    assert n == 3 and y[0] == 0.0 and y[-1] == pytest.approx(1.0) and np.all(np.diff(y) >= -1e-12)
    assert y[np.searchsorted(x, 0.2)] == pytest.approx((0.6 + 0.2 + 0.4) / 3)
    # a shared opening token (same id on both sides) cancels in the gap and is left out
    shared = {
        "chosen_rewards": [2.0, 4.0],
        "rejected_rewards": [2.0, 0.5],
        "chosen_ids": [7, 1],
        "rejected_ids": [7, 2],
    }
    np.testing.assert_allclose(gap_concentration([shared]), [1 / 2])  # 4 of 4.5 >= 80%: one of the two tokens


def test_html_report_is_self_contained(tiny_scored):
    from qstar_lib.eval.report import report_html

    records, tok, _, _, moved = tiny_scored
    page = report_html(moved, tok)
    assert page.startswith("<!DOCTYPE html>") and page.count('class="pair"') == len(moved)
    assert "http" not in page and "src=" not in page  # no CDN, no external script or image
    assert "Credit table" in page and "auroc_rec" in page
    with pytest.raises(ValueError, match="at least one"):
        report_html([], tok)
