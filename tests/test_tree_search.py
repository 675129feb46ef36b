"""Search on the tree: eq. 12 == eq. 13 for every horizon, beams, MCTS, and where greedy decoding differs."""

import itertools

import numpy as np
import pytest

from qstar_lib.theory.tree import random_tree, solve, with_trap
from qstar_lib.theory.tree_search import (
    beam_search,
    exhaustive_search,
    first_stable_hit,
    greedy_decode,
    mcts,
    regularised_reward,
    search_margin,
)

CASES = [(3, 2, 0), (3, 3, 1), (4, 3, 2), (4, 3, 3), (5, 3, 4), (3, 4, 5)]  # (depth, branching, seed)


def make(depth, k, seed, trap=True):
    tree = random_tree(depth, k, beta=0.5, seed=seed)
    return with_trap(tree) if trap else tree


def naive_best(tree, v_star, horizon):
    """Brute force over itertools.product with a scalar loop: eq. 12."""
    k, best, best_seq = tree.branching, -np.inf, None
    for seq in itertools.product(range(k), repeat=horizon):
        i, total = 0, 0.0
        for d, a in enumerate(seq):
            total += tree.reward[d][i, a] + tree.beta * np.log(tree.pi_ref[d][i, a])
            i = i * k + a
        total += v_star[horizon][i]
        if total > best:
            best, best_seq = total, seq
    return np.array(best_seq), best


@pytest.mark.parametrize("depth,k,seed", CASES)
def test_eq12_equals_eq13_for_every_horizon(depth, k, seed):
    tree = make(depth, k, seed)
    sol = solve(tree)
    g = regularised_reward(tree)
    beta_log_pi_star = tuple(tree.beta * np.log(p) for p in sol.pi_star)
    for h in range(1, depth + 1):
        a12, s12 = exhaustive_search(g, h, sol.v_star)
        a13, s13 = exhaustive_search(beta_log_pi_star, h)
        np.testing.assert_array_equal(a12, a13)
        assert abs(s12 - (s13 + sol.v_star[0][0])) < 1e-10  # eq. 13 with +V*(s_0)
        assert search_margin(g, h, sol.v_star) > 1e-9  # the argmax is not a near-tie
        naive_a, naive_s = naive_best(tree, sol.v_star, h)
        np.testing.assert_array_equal(a12, naive_a)
        assert abs(s12 - naive_s) < 1e-10


@pytest.mark.parametrize("depth,k,seed", CASES)
def test_value_guided_beam_equals_likelihood_beam(depth, k, seed):
    tree = make(depth, k, seed)
    sol = solve(tree)
    g = regularised_reward(tree)
    log_pi_star = tuple(np.log(p) for p in sol.pi_star)
    optimum, _ = exhaustive_search(g, depth)
    for width in range(1, k ** (depth - 1) + 1):
        guided = beam_search(g, width, tail=sol.v_star)
        likelihood = beam_search(log_pi_star, width)
        for b1, b2 in zip(guided.beams, likelihood.beams):
            np.testing.assert_array_equal(b1, b2)
    # the widest beam is exhaustive
    np.testing.assert_array_equal(beam_search(g, k ** (depth - 1), tail=sol.v_star).actions, optimum)


@pytest.mark.parametrize("depth,k,seed", CASES)
def test_mcts_reaches_the_optimum(depth, k, seed):
    tree = make(depth, k, seed)
    sol = solve(tree)
    optimum, _ = exhaustive_search(regularised_reward(tree), depth)
    n_states = (k**depth - 1) // (k - 1)
    result = mcts(tree, sol.v_star, n_simulations=n_states, c_uct=0.5, seed=seed)
    np.testing.assert_array_equal(result.actions, optimum)
    assert first_stable_hit(result.history, optimum) is not None
    assert result.n_expanded <= n_states


@pytest.mark.parametrize("depth,k,seed", [(3, 3, 1), (4, 3, 2), (5, 3, 4), (6, 4, 0)])
def test_greedy_on_r_and_on_pi_ref_fall_into_the_trap(depth, k, seed):
    tree = make(depth, k, seed)
    sol = solve(tree)
    optimum, _ = exhaustive_search(regularised_reward(tree), depth)
    assert optimum[0] != 0
    assert greedy_decode(tree.reward)[0] == 0
    assert greedy_decode(tree.pi_ref)[0] == 0
    assert not np.array_equal(greedy_decode(tree.reward), optimum)
    # one step of eq. 12 (greedy on Q*, i.e. on pi*) already avoids the trap
    assert greedy_decode(sol.q_star)[0] != 0
    np.testing.assert_array_equal(greedy_decode(sol.q_star), greedy_decode(sol.pi_star))


def test_first_stable_hit():
    assert first_stable_hit([(0,), (1,), (1,)], [1]) == 2
    assert first_stable_hit([(1,), (0,), (1,)], [1]) == 3
    assert first_stable_hit([(1,), (0,)], [1]) is None


def test_bad_arguments():
    tree = make(3, 2, 0)
    sol = solve(tree)
    g = regularised_reward(tree)
    with pytest.raises(ValueError, match="horizon"):
        exhaustive_search(g, 0)
    with pytest.raises(ValueError, match="horizon"):
        exhaustive_search(g, 4)
    with pytest.raises(ValueError, match="width"):
        beam_search(g, 0)
    with pytest.raises(ValueError, match="n_simulations"):
        mcts(tree, sol.v_star, -1)
    with pytest.raises(ValueError, match="c_uct"):
        mcts(tree, sol.v_star, 1, c_uct=-1.0)
