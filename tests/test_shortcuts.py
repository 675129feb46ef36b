"""The shortcut audit (qstar_lib.eval.shortcuts): no model may be needed to pass the benchmark's swap column.

At ci scale with 2,000 test records, every no-model baseline stays at per-record AUROC <= 0.60 on the in-post
swaps of data v2, and the audit is shown to *fail* on data with a planted shortcut (the v1 flaw: the swapped-in
value written twice), so the bound is a test that could fail.
"""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest

from qstar_lib.data import synthetic_tldr
from qstar_lib.eval.shortcuts import FEATURES, SHORTCUTS, fit_surface_lr, shortcut_audit, token_features, token_words

N = 2000  # records of each split, as the issue asks
BOUND = 0.60  # per-record AUROC any no-model rule may reach on in-post swaps


@pytest.fixture(scope="module")
def tokenizer():
    from qstar_lib.lm.models import load_tokenizer

    return load_tokenizer("tiny")


@pytest.fixture(scope="module")
def splits():
    return synthetic_tldr(N, seed=0, split="train"), synthetic_tldr(N, seed=0, split="test")


@pytest.fixture(scope="module")
def audit(splits, tokenizer):
    train, test = splits
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return shortcut_audit(test, tokenizer, train, kinds=("in_post_swap", "absent_value", "inserted_claim"))


def test_every_no_model_baseline_stays_near_chance_on_in_post_swaps(audit):
    swaps = audit["in_post_swap"]
    print(swaps[["n", "auroc_rec", "auroc_first", "auroc", "top1", "top1_chance"]].round(3))
    assert swaps.loc["surface_lr", "n"] >= 400
    for name in SHORTCUTS:
        assert swaps.loc[name, "auroc_rec"] <= BOUND, (name, swaps.loc[name, "auroc_rec"])
        assert swaps.loc[name, "auroc_first"] <= BOUND, (name, swaps.loc[name, "auroc_first"])


def test_a_rule_that_reads_roles_finds_swaps(audit):
    """The task is solvable by reading roles: a string rule comparing the words before each value in the
    summary and in the post finds the swaps (so the benchmark asks a real question, and the DPO reward has
    a no-model reader to beat, not only chance)."""
    assert audit.loc["context_mismatch", ("in_post_swap", "auroc_rec")] >= 0.55


def test_the_audit_fails_on_data_with_the_v1_shortcut(splits, tokenizer):
    """Write the swapped-in value a second time (outside the candidate values), as v1 often did: the
    repetition rule and the fitted regression must then find the swaps far above the bound."""
    train, test = splits
    swaps = [r for r in test if r["kind"] == "in_post_swap"][:300]
    leaky = []
    for r in swaps:
        r = copy.deepcopy(r)
        r["rejected"] += f" Again: {r['errors'][0]['planted']}."
        leaky.append(r)
    leaky_train = [copy.deepcopy(r) for r in train if r["kind"] == "in_post_swap"][:600]
    for r in leaky_train:
        r["rejected"] += f" Again: {r['errors'][0]['planted']}."
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        table = shortcut_audit(leaky, tokenizer, leaky_train, kinds=("in_post_swap",))
    assert table.loc["repeated_value", ("in_post_swap", "auroc_rec")] >= 0.9
    assert table.loc["surface_lr", ("in_post_swap", "auroc_rec")] >= 0.75


def test_absent_values_and_claims_are_found_by_the_post_rule(audit):
    """The columns that a string rule *can* pass say so: absent values and inserted claims are not in the
    post, so those columns test nothing about preferences, and the chapter reads only the swap column."""
    assert audit.loc["absent_from_post", ("absent_value", "auroc_rec")] >= 0.8
    assert audit.loc["absent_from_post", ("inserted_claim", "auroc_rec")] >= 0.6


def test_token_features_and_words(splits, tokenizer):
    r = splits[1][0]
    F = token_features(r, tokenizer)
    words = token_words(r["rejected"], tokenizer)
    ids = tokenizer(r["rejected"], add_special_tokens=False).input_ids
    assert F.shape == (len(ids), len(FEATURES)) and len(words) == len(ids)
    assert set(np.unique(F[:, [0, 1, 3, 4]])) <= {0.0, 1.0}
    assert F[0, 2] == 0.0 and F[-1, 2] == 1.0  # relative position
    for w, f in zip(words, F):
        if w is not None and w.isdigit():
            assert f[0] == 1.0


def test_surface_lr_learns_the_planted_direction(splits, tokenizer):
    """On all kinds, "not in the post" is the strongest surface cue of a planted token (absent values and
    claims): the fitted weight of in_post is negative."""
    w = fit_surface_lr(splits[0][:400], tokenizer)
    assert w.shape == (1 + len(FEATURES),) and np.isfinite(w).all()
    assert w[1 + FEATURES.index("in_post")] < 0


def test_shortcut_scores_need_training_records(splits, tokenizer):
    from qstar_lib.eval.shortcuts import shortcut_scores

    with pytest.raises(ValueError, match="train_records is empty"):
        shortcut_scores(splits[1][:3], tokenizer, [])
