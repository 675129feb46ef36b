"""Identities of the exact tree MDP: soft Bellman (eq. 5-7), Lemma 1, eq. 10, telescoping, Theorem 1."""

import math

import numpy as np
import pytest

from qstar_lib.theory.tree import (
    TreeMDP,
    bradley_terry,
    enumerate_trajectories,
    log_ratio,
    max_abs_diff,
    optimal_advantage,
    policy_from_q,
    random_potential,
    random_tree,
    reward_from_q,
    shape_reward,
    soft_bellman,
    solve,
    trajectory_states,
    trajectory_sums,
    values_from_q,
    with_trap,
)

SHAPES = [(1, 2), (2, 3), (3, 2), (4, 3), (3, 4)]  # (depth, branching)
SEEDS = [0, 1, 2]
BETAS = [0.1, 0.5, 2.0]


def trees():
    for (depth, k), seed, beta in zip(SHAPES * 3, SEEDS * 5, BETAS * 5):
        yield random_tree(depth, k, beta=beta, seed=seed + 10 * depth)


def naive_soft_values(tree: TreeMDP):
    """Plain recursion over prefixes (tuples of actions), scalar maths only: {prefix: V*}, {(prefix, a): Q*}."""
    k, depth, beta = tree.branching, tree.depth, tree.beta
    v, q = {}, {}

    def index(prefix):
        i = 0
        for a in prefix:
            i = i * k + a
        return i

    def value(prefix):
        if len(prefix) == depth:
            v[prefix] = 0.0
            return 0.0
        d, i = len(prefix), index(prefix)
        for a in range(k):
            q[(prefix, a)] = tree.reward[d][i, a] + beta * math.log(tree.pi_ref[d][i, a]) + value(prefix + (a,))
        m = max(q[(prefix, a)] for a in range(k))
        v[prefix] = m + beta * math.log(sum(math.exp((q[(prefix, a)] - m) / beta) for a in range(k)))
        return v[prefix]

    value(())
    return v, q, index


@pytest.mark.parametrize("tree", list(trees()), ids=lambda t: f"D{t.depth}K{t.branching}b{t.beta}")
def test_soft_bellman_matches_naive_recursion(tree):
    sol = solve(tree)
    v, q, index = naive_soft_values(tree)
    for prefix, value in v.items():
        assert abs(sol.v_star[len(prefix)][index(prefix)] - value) < 1e-12
    for (prefix, a), value in q.items():
        assert abs(sol.q_star[len(prefix)][index(prefix), a] - value) < 1e-12
    assert np.all(sol.v_star[tree.depth] == 0)
    for p in sol.pi_star:
        np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-12)


@pytest.mark.parametrize("tree", list(trees()), ids=lambda t: f"D{t.depth}K{t.branching}b{t.beta}")
def test_lemma1_round_trips(tree):
    sol = solve(tree)
    # r -> Q* -> r
    assert max_abs_diff(reward_from_q(sol.q_star, tree.pi_ref, tree.beta), tree.reward) <= 1e-10
    # Q* -> r -> Q*, starting from an arbitrary table (any logits are the Q* of some reward)
    rng = np.random.default_rng(tree.depth)
    q_any = tuple(3 * rng.standard_normal(q.shape) for q in sol.q_star)
    r_any = reward_from_q(q_any, tree.pi_ref, tree.beta)
    q_back, _ = soft_bellman(r_any, tree.pi_ref, tree.beta)
    assert max_abs_diff(q_back, q_any) <= 1e-10
    # consistency of the helpers with solve()
    assert max_abs_diff(values_from_q(sol.q_star, tree.beta), sol.v_star) <= 1e-12
    assert max_abs_diff(policy_from_q(sol.q_star, tree.beta), sol.pi_star) <= 1e-12


@pytest.mark.parametrize("seed", SEEDS)
def test_lemma1_injective_every_single_entry(seed):
    """Changing the reward at any one state-action changes Q* (at that state-action, by exactly that amount)."""
    tree = random_tree(3, 3, beta=0.7, seed=seed)
    q0 = solve(tree).q_star
    for d in range(tree.depth):
        for i in range(tree.branching**d):
            for a in range(tree.branching):
                reward = [r.copy() for r in tree.reward]
                reward[d][i, a] += 0.25
                q1, _ = soft_bellman(reward, tree.pi_ref, tree.beta)
                assert max_abs_diff(q1, q0) > 0.1
                assert abs(q1[d][i, a] - q0[d][i, a] - 0.25) < 1e-12


@pytest.mark.parametrize("seed", SEEDS)
def test_two_random_rewards_give_different_q(seed):
    a = random_tree(4, 3, beta=0.5, seed=seed)
    b = TreeMDP(random_tree(4, 3, seed=seed + 100).reward, a.pi_ref, a.beta)
    assert max_abs_diff(solve(a).q_star, solve(b).q_star) > 1e-3


@pytest.mark.parametrize("tree", list(trees()), ids=lambda t: f"D{t.depth}K{t.branching}b{t.beta}")
def test_optimal_advantage_eq10(tree):
    sol = solve(tree)
    lhs = log_ratio(sol.pi_star, tree.pi_ref, tree.beta)
    assert max_abs_diff(lhs, optimal_advantage(tree.reward, sol.v_star)) <= 1e-10


@pytest.mark.parametrize("tree", list(trees()), ids=lambda t: f"D{t.depth}K{t.branching}b{t.beta}")
def test_telescoping_every_complete_trajectory(tree):
    sol = solve(tree)
    actions, states = enumerate_trajectories(tree.depth, tree.branching)
    implicit = trajectory_sums(log_ratio(sol.pi_star, tree.pi_ref, tree.beta), actions, states)
    returns = trajectory_sums(tree.reward, actions, states)
    assert np.max(np.abs(implicit - (returns - sol.v_star[0][0]))) <= 1e-10


@pytest.mark.parametrize("tree", list(trees()), ids=lambda t: f"D{t.depth}K{t.branching}b{t.beta}")
def test_theorem1_bradley_terry_agrees(tree):
    sol = solve(tree)
    actions, states = enumerate_trajectories(tree.depth, tree.branching)
    phi = random_potential(tree.depth, tree.branching, seed=tree.depth, scale=2.0, leaves="zero")
    p_r = bradley_terry(trajectory_sums(tree.reward, actions, states))
    p_shaped = bradley_terry(trajectory_sums(shape_reward(tree.reward, phi), actions, states))
    p_pi = bradley_terry(trajectory_sums(log_ratio(sol.pi_star, tree.pi_ref, tree.beta), actions, states))
    assert np.max(np.abs(p_r - p_shaped)) <= 1e-12
    assert np.max(np.abs(p_r - p_pi)) <= 1e-12
    # shaping with the optimal values as the potential gives exactly the implicit reward (eq. 10)
    assert max_abs_diff(shape_reward(tree.reward, sol.v_star), log_ratio(sol.pi_star, tree.pi_ref, tree.beta)) <= 1e-10
    # shaping does not change the optimal policy (Ng et al. 1999)
    shaped = TreeMDP(shape_reward(tree.reward, phi), tree.pi_ref, tree.beta)
    assert max_abs_diff(solve(shaped).pi_star, sol.pi_star) <= 1e-10


def test_shaping_with_random_leaf_potential_changes_preferences():
    tree = random_tree(3, 3, beta=0.5, seed=4)
    actions, states = enumerate_trajectories(tree.depth, tree.branching)
    phi = random_potential(tree.depth, tree.branching, seed=1, scale=2.0, leaves="random")
    p_r = bradley_terry(trajectory_sums(tree.reward, actions, states))
    p_bad = bradley_terry(trajectory_sums(shape_reward(tree.reward, phi), actions, states))
    assert np.max(np.abs(p_r - p_bad)) > 0.1
    # ... but a constant leaf potential cancels again
    phi_const = phi[:-1] + (np.full(tree.branching**tree.depth, 1.7),)
    p_const = bradley_terry(trajectory_sums(shape_reward(tree.reward, phi_const), actions, states))
    assert np.max(np.abs(p_r - p_const)) <= 1e-12


def test_enumeration_order_and_states():
    actions, states = enumerate_trajectories(3, 2)
    assert actions.shape == (8, 3) and states.shape == (8, 3)
    assert actions[5].tolist() == [1, 0, 1]  # 5 in base 2
    assert states[5].tolist() == [0, 1, 2]  # root, then prefix (1,), then prefix (1, 0)
    np.testing.assert_array_equal(trajectory_states(actions, 2), states)
    # leaf index = trajectory index
    assert np.all(states[:, -1] * 2 + actions[:, -1] == np.arange(8))


def test_trajectory_sums_matches_loop():
    tree = random_tree(3, 3, seed=3)
    actions, states = enumerate_trajectories(3, 3)
    fast = trajectory_sums(tree.reward, actions, states)
    for n in range(len(actions)):
        i, total = 0, 0.0
        for d, a in enumerate(actions[n]):
            total += tree.reward[d][i, a]
            i = i * 3 + a
        assert abs(fast[n] - total) < 1e-12


def test_with_trap_tempts_one_step_lookahead():
    tree = with_trap(random_tree(3, 3, seed=0))
    assert np.argmax(tree.reward[0][0]) == 0 and np.argmax(tree.pi_ref[0][0]) == 0
    np.testing.assert_allclose(tree.pi_ref[0].sum(), 1.0)


def test_plots_draw_without_error():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from qstar_lib.theory.tree_plot import node_positions, plot_advantage_recovery, plot_tree

    xs = node_positions(2, 3)
    assert xs[0].tolist() == [4.0] and xs[1].tolist() == [1.0, 4.0, 7.0] and xs[2].tolist() == list(range(9))
    tree = with_trap(random_tree(3, 2, seed=0))
    ax = plot_tree(tree, solve(tree), {"a path": [1, 1, 1], "another": [0, 0]}, title="t")
    assert len(ax.get_legend().get_texts()) == 4
    ax = plot_tree(random_tree(5, 4, seed=0), solve(random_tree(5, 4, seed=0)), max_depth=2)
    assert "of 5" in ax.get_yticklabels()[-1].get_text()
    metrics = [[{"corr": 0.5, "rmse": 1.0}], [{"corr": 0.9, "rmse": 0.3}]]
    plot_advantage_recovery([10, 100], metrics)
    plt.close("all")


# ------------------------------------------------------------------------------------------- bad input


def test_bad_beta():
    tree = random_tree(2, 2)
    for beta in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="beta"):
            soft_bellman(tree.reward, tree.pi_ref, beta)
        with pytest.raises(ValueError, match="beta"):
            TreeMDP(tree.reward, tree.pi_ref, beta)


def test_pi_ref_rows_must_sum_to_one():
    tree = random_tree(2, 3)
    bad = [p.copy() for p in tree.pi_ref]
    bad[1][2] *= 1.1
    with pytest.raises(ValueError, match=r"pi_ref\[1\].*sum to 1"):
        soft_bellman(tree.reward, bad, 1.0)
    bad = [p.copy() for p in tree.pi_ref]
    bad[0][0] = [1.0, 0.0, 0.0]
    with pytest.raises(ValueError, match=r"pi_ref\[0\].*<= 0"):
        TreeMDP(tree.reward, bad, 1.0)


def test_wrong_shapes():
    tree = random_tree(3, 2)
    reward = list(tree.reward)
    reward[2] = np.zeros((3, 2))
    with pytest.raises(ValueError, match=r"reward\[2\].*shape"):
        soft_bellman(reward, tree.pi_ref, 1.0)
    with pytest.raises(ValueError, match="pi_ref has 2 levels"):
        soft_bellman(tree.reward, tree.pi_ref[:2], 1.0)
    with pytest.raises(ValueError, match="potential"):
        shape_reward(tree.reward, [np.zeros(1)])
    with pytest.raises(ValueError, match="returns"):
        bradley_terry(np.zeros((2, 2)))
    with pytest.raises(ValueError, match="reward"):
        soft_bellman([], tree.pi_ref, 1.0)
    reward = list(tree.reward)
    reward[0] = np.array([[np.nan, 0.0]])
    with pytest.raises(ValueError, match=r"reward\[0\].*non-finite"):
        TreeMDP(reward, tree.pi_ref, 1.0)
