"""Tabular token-level DPO on the tree: sampling, the ln 2 start, convergence to the optimal advantage."""

import math

import numpy as np
import pytest

from qstar_lib.theory.tree import log_ratio, optimal_advantage, random_tree, solve
from qstar_lib.theory.tree_dpo import (
    PreferencePairs,
    advantage_agreement,
    dpo_credit_assignment,
    exact_preferences,
    fit_tabular_dpo,
    sample_preferences,
    sample_trajectories,
    visited_mask,
)


def test_sample_trajectories_follows_pi_ref():
    tree = random_tree(2, 3, seed=0)
    idx = sample_trajectories(tree, 40000, np.random.default_rng(0))
    freq = np.bincount(idx, minlength=9) / len(idx)
    exact = (tree.pi_ref[0][0][:, None] * tree.pi_ref[1]).reshape(-1)  # (9,) pi_ref(a0) pi_ref(a1|a0)
    np.testing.assert_allclose(freq, exact, atol=0.01)


def test_preferences_follow_bradley_terry():
    tree = random_tree(1, 2, seed=1)  # two trajectories, one pair type
    pairs = sample_preferences(tree, 20000, seed=0)
    assert np.all(pairs.chosen != pairs.rejected)
    p_first = 1 / (1 + math.exp(-(tree.reward[0][0, 0] - tree.reward[0][0, 1])))
    assert abs(np.mean(pairs.chosen == 0) - p_first) < 0.015


def test_initial_loss_is_ln2_and_fit_lowers_it():
    tree = random_tree(3, 2, beta=0.5, seed=2)
    fit = fit_tabular_dpo(tree, sample_preferences(tree, 300, seed=0))
    assert abs(fit.init_loss - math.log(2)) < 1e-12
    assert fit.loss_history[-1] < fit.init_loss
    for p in fit.policy:
        np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-12)


@pytest.mark.parametrize("seed", [0, 1])
def test_more_pairs_recover_the_advantage(seed):
    tree = random_tree(3, 2, beta=0.5, seed=seed)
    adv = optimal_advantage(tree.reward, solve(tree).v_star)
    results = []
    for n in (30, 30000):
        pairs = sample_preferences(tree, n, seed=seed)
        fit = fit_tabular_dpo(tree, pairs, prior=0.1)
        learned = log_ratio(fit.policy, tree.pi_ref, tree.beta)
        results.append(advantage_agreement(learned, adv, visited_mask(tree, pairs)))
    assert results[1]["corr"] > 0.97
    assert results[1]["rmse"] < results[0]["rmse"]
    assert results[1]["rmse"] < 0.2


def test_exact_preferences_give_exact_advantage():
    """With every ordered pair weighted by its Bradley-Terry probability, the DPO optimum is pi* itself."""
    tree = random_tree(3, 2, beta=0.5, seed=3)
    pairs = exact_preferences(tree)
    assert len(pairs.chosen) == 8 * 7
    i, j = pairs.chosen, pairs.rejected
    lookup = {(a, b): w for a, b, w in zip(i, j, pairs.weight)}
    assert all(abs(lookup[(a, b)] + lookup[(b, a)] - 1) < 1e-12 for a, b in lookup)
    fit = fit_tabular_dpo(tree, pairs, prior=0.0)
    learned = log_ratio(fit.policy, tree.pi_ref, tree.beta)
    agreement = advantage_agreement(learned, optimal_advantage(tree.reward, solve(tree).v_star))
    assert agreement["max_err"] < 1e-4


def test_weights_equal_repeated_pairs():
    tree = random_tree(2, 2, beta=0.5, seed=1)
    repeated = fit_tabular_dpo(tree, PreferencePairs(np.array([0, 0, 0, 3]), np.array([3, 3, 3, 0])))
    weighted = fit_tabular_dpo(tree, PreferencePairs(np.array([0, 3]), np.array([3, 0]), np.array([3.0, 1.0])))
    for a, b in zip(repeated.logits, weighted.logits):
        np.testing.assert_allclose(a, b, atol=1e-8)


def test_dpo_credit_assignment_reports():
    tree = random_tree(3, 2, beta=0.5, seed=0)
    out = dpo_credit_assignment(tree, 200, seed=0)
    assert set(out) >= {"corr", "rmse", "max_err", "coverage", "corr_all", "n_pairs"}
    assert 0 < out["coverage"] <= 1


def test_visited_mask():
    tree = random_tree(2, 2, seed=0)
    mask = visited_mask(tree, PreferencePairs(np.array([0]), np.array([3])))  # actions (0,0) and (1,1)
    assert mask[0].tolist() == [[True, True]]
    assert mask[1].tolist() == [[True, False], [False, True]]


def test_bad_arguments():
    tree = random_tree(2, 2, seed=0)
    with pytest.raises(ValueError, match="n_pairs"):
        sample_preferences(tree, 0)
    with pytest.raises(ValueError, match="proposal"):
        sample_preferences(tree, 3, proposal="nope")
    pairs = sample_preferences(tree, 3)
    with pytest.raises(ValueError, match="beta"):
        fit_tabular_dpo(tree, pairs, beta=0.0)
    with pytest.raises(ValueError, match="prior"):
        fit_tabular_dpo(tree, pairs, prior=-1.0)
    with pytest.raises(ValueError, match="pairs.chosen"):
        fit_tabular_dpo(tree, PreferencePairs(np.array([7]), np.array([0])))
    with pytest.raises(ValueError, match="weight"):
        fit_tabular_dpo(tree, PreferencePairs(np.array([0]), np.array([1]), np.array([-1.0])))
    with pytest.raises(ValueError, match="equal length"):
        fit_tabular_dpo(tree, PreferencePairs(np.array([0, 1]), np.array([2])))
