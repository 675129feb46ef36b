"""A finite token-level MDP shaped as a complete K-ary tree, solved exactly by soft Bellman backward induction.

The token MDP of the paper (Section 3.1) has deterministic dynamics ``s' = s|a``: a state is the prefix
of tokens chosen so far, so no state is ever reached twice and the state space is a tree. Here the tree
is complete, with branching ``K`` (the vocabulary) and depth ``D`` (the length of every answer); the
states at depth ``D`` are terminal (EOS) and have ``V*(terminal) = 0``.

Storage, level by level (this is what makes backward induction a handful of vectorised lines):

* the states at depth ``d`` are numbered ``0 .. K**d - 1``; action ``a`` in state ``i`` leads to state
  ``i * K + a`` at depth ``d + 1`` (the prefix read as a base-``K`` number);
* ``reward[d]``, ``pi_ref[d]``, ``q_star[d]``, ``pi_star[d]`` have shape ``(K**d, K)`` for ``d < D``;
* ``v_star[d]`` has shape ``(K**d,)`` for ``d <= D``, with ``v_star[D] == 0``.

Convention (the paper's eq. 2 and eq. 7): the KL penalty ``beta * log pi_ref`` is part of the per-step
reward *inside* ``Q*``::

    Q*(s, a) = r(s, a) + beta * log pi_ref(a|s) + V*(s|a)          # eq. 7, V*(terminal) = 0
    V*(s)    = beta * log sum_a exp(Q*(s, a) / beta)                # eq. 6
    pi*(a|s) = exp((Q*(s, a) - V*(s)) / beta)                       # eq. 5

Under it the optimal advantage (eq. 10) and the telescoping sum (Section 4.1, before eq. 8) hold exactly::

    beta * log pi*(a|s) / pi_ref(a|s) = r(s, a) + V*(s|a) - V*(s)   # eq. 10
    sum_t beta * log pi*/pi_ref       = sum_t r - V*(s_0)           # complete trajectory from the root

This module knows nothing about search or learning (see ``tree_search`` and ``tree_dpo``).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
from scipy.special import expit, logsumexp

Levels = tuple  # tuple of np.ndarray, one per depth


# ---------------------------------------------------------------------------------------------------------
# validation


def _check_beta(beta: float) -> float:
    if not np.isfinite(beta) or beta <= 0:
        raise ValueError(f"beta must be a finite number > 0, got {beta!r}")
    return float(beta)


def _check_levels(name: str, levels, branching: int | None = None, depth: int | None = None) -> Levels:
    """Check that ``levels[d]`` has shape ``(K**d, K)`` and finite entries; return float64 arrays."""
    try:
        arrays = tuple(np.asarray(x, dtype=np.float64) for x in levels)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be a sequence of arrays, one per depth: {err}") from None
    if len(arrays) == 0:
        raise ValueError(f"{name} is empty: a tree needs depth >= 1")
    if depth is not None and len(arrays) != depth:
        raise ValueError(f"{name} has {len(arrays)} levels, expected depth {depth}")
    k = branching if branching is not None else (arrays[0].shape[-1] if arrays[0].ndim == 2 else None)
    if k is None or k < 1:
        raise ValueError(f"{name}[0] must have shape (1, K), got {arrays[0].shape}")
    for d, x in enumerate(arrays):
        if x.shape != (k**d, k):
            raise ValueError(f"{name}[{d}] must have shape (K**d, K) = {(k**d, k)}, got {x.shape}")
        if not np.all(np.isfinite(x)):
            raise ValueError(f"{name}[{d}] has non-finite entries")
    return arrays


def _check_policy(name: str, levels, branching: int | None = None, depth: int | None = None) -> Levels:
    """A policy: every row is a probability vector with strictly positive entries (log pi_ref must exist)."""
    arrays = _check_levels(name, levels, branching, depth)
    for d, p in enumerate(arrays):
        if np.any(p <= 0):
            raise ValueError(f"{name}[{d}] has entries <= 0; every action needs positive probability")
        worst = np.max(np.abs(p.sum(axis=1) - 1.0))
        if worst > 1e-9:
            raise ValueError(f"{name}[{d}] rows must sum to 1 (worst row is off by {worst:.3g})")
    return arrays


# ---------------------------------------------------------------------------------------------------------
# the tree


@dataclass(frozen=True)
class TreeMDP:
    """A complete K-ary token tree: dense reward, reference policy and the KL weight beta.

    Attributes:
        reward: ``reward[d]`` (K**d, K): r(s, a) for the states at depth d.
        pi_ref: ``pi_ref[d]`` (K**d, K): the reference policy, rows sum to 1, entries > 0.
        beta: the KL weight of eq. 2 (> 0).
    """

    reward: Levels
    pi_ref: Levels
    beta: float

    def __post_init__(self):
        reward = _check_levels("reward", self.reward)
        k, depth = reward[0].shape[1], len(reward)
        object.__setattr__(self, "reward", reward)
        object.__setattr__(self, "pi_ref", _check_policy("pi_ref", self.pi_ref, k, depth))
        object.__setattr__(self, "beta", _check_beta(self.beta))

    @property
    def depth(self) -> int:
        """D: number of actions in every complete trajectory."""
        return len(self.reward)

    @property
    def branching(self) -> int:
        """K: number of actions (tokens) in every non-terminal state."""
        return self.reward[0].shape[1]

    @property
    def n_trajectories(self) -> int:
        return self.branching**self.depth


@dataclass(frozen=True)
class SoftSolution:
    """The exact soft-optimal quantities of a tree (all float64, stored level by level)."""

    q_star: Levels  # q_star[d]: (K**d, K), eq. 7
    v_star: Levels  # v_star[d]: (K**d,), d = 0..D, v_star[D] == 0, eq. 6
    pi_star: Levels  # pi_star[d]: (K**d, K), eq. 5


def random_tree(
    depth: int,
    branching: int,
    beta: float = 1.0,
    seed: int = 0,
    reward_scale: float = 1.0,
    ref_temperature: float = 1.0,
) -> TreeMDP:
    """A random tree: rewards ~ N(0, reward_scale^2), pi_ref = softmax(N(0, 1) / ref_temperature) per state."""
    if depth < 1 or branching < 2:
        raise ValueError(f"need depth >= 1 and branching >= 2, got depth={depth}, branching={branching}")
    rng = np.random.default_rng(seed)
    reward, pi_ref = [], []
    for d in range(depth):
        reward.append(reward_scale * rng.standard_normal((branching**d, branching)))  # (K**d, K)
        logits = rng.standard_normal((branching**d, branching)) / ref_temperature  # (K**d, K)
        pi_ref.append(np.exp(logits - logsumexp(logits, axis=1, keepdims=True)))
    return TreeMDP(tuple(reward), tuple(pi_ref), beta)


def with_trap(tree: TreeMDP, bait: float = 1.0, penalty: float = 5.0, ref_mass: float = 0.7) -> TreeMDP:
    """Plant a garden path at the root: a tempting first token that leads into a bad subtree.

    Action 0 at the root gets the largest immediate reward (by ``bait``) and the largest reference
    probability (``ref_mass``), but every reward at depth 1 below it is lowered by ``penalty``. A decoder
    that looks one token ahead, on r or on pi_ref, walks in; one that uses V* (eq. 12) does not.
    """
    if tree.depth < 2:
        raise ValueError(f"with_trap needs depth >= 2, got {tree.depth}")
    if not 0 < ref_mass < 1:
        raise ValueError(f"ref_mass must be in (0, 1), got {ref_mass}")
    k = tree.branching
    reward = [r.copy() for r in tree.reward]
    pi_ref = [p.copy() for p in tree.pi_ref]
    reward[0][0, 0] = reward[0][0, 1:].max() + bait
    reward[1][0, :] -= penalty
    others = pi_ref[0][0, 1:] / pi_ref[0][0, 1:].sum()
    pi_ref[0][0] = np.concatenate([[ref_mass], (1 - ref_mass) * others])
    if pi_ref[0][0, 0] <= pi_ref[0][0, 1:].max():
        raise ValueError(f"ref_mass={ref_mass} does not make action 0 the reference's favourite (K={k})")
    return TreeMDP(tuple(reward), tuple(pi_ref), tree.beta)


# ---------------------------------------------------------------------------------------------------------
# soft Bellman backward induction and its inverse (Lemma 1)


def soft_bellman(reward, pi_ref, beta: float) -> tuple[Levels, Levels]:
    """Exact Q* and V* of a tree by backward induction from the leaves (eq. 6 and eq. 7).

    Args:
        reward: ``reward[d]`` (K**d, K), the dense reward r(s, a).
        pi_ref: ``pi_ref[d]`` (K**d, K), the reference policy (rows sum to 1).
        beta: the KL weight (> 0).

    Returns:
        ``(q_star, v_star)`` with ``q_star[d]`` (K**d, K) and ``v_star[d]`` (K**d,), ``v_star[D] = 0``.
    """
    beta = _check_beta(beta)
    reward = _check_levels("reward", reward)
    k, depth = reward[0].shape[1], len(reward)
    pi_ref = _check_policy("pi_ref", pi_ref, k, depth)
    v_star = [None] * depth + [np.zeros(k**depth)]  # V*(terminal) = 0
    q_star = [None] * depth
    for d in reversed(range(depth)):
        v_next = v_star[d + 1].reshape(k**d, k)  # (K**d, K): V*(s|a), children of state i are i*K + a
        q_star[d] = reward[d] + beta * np.log(pi_ref[d]) + v_next  # eq. 7
        v_star[d] = beta * logsumexp(q_star[d] / beta, axis=1)  # eq. 6
    return tuple(q_star), tuple(v_star)


def values_from_q(q_star, beta: float) -> Levels:
    """V*(s) = beta * logsumexp(Q*(s, .) / beta) at every depth, with V*(terminal) = 0 appended (eq. 6)."""
    beta = _check_beta(beta)
    q_star = _check_levels("q_star", q_star)
    k, depth = q_star[0].shape[1], len(q_star)
    return tuple(beta * logsumexp(q / beta, axis=1) for q in q_star) + (np.zeros(k**depth),)


def policy_from_q(q_star, beta: float) -> Levels:
    """pi*(a|s) = exp((Q*(s, a) - V*(s)) / beta): the softmax of Q* at temperature beta (eq. 5)."""
    v_star = values_from_q(q_star, beta)
    return tuple(np.exp((q - v[:, None]) / beta) for q, v in zip(q_star, v_star))


def reward_from_q(q_star, pi_ref, beta: float) -> Levels:
    """Invert eq. 7: r(s, a) = Q*(s, a) - beta * log pi_ref(a|s) - V*(s|a), with V* computed from Q* (eq. 6).

    This is the surjective half of Lemma 1 (Appendix A): any table ``q_star`` is the optimal soft Q-function
    of exactly this reward.
    """
    q_star = _check_levels("q_star", q_star)
    k, depth = q_star[0].shape[1], len(q_star)
    pi_ref = _check_policy("pi_ref", pi_ref, k, depth)
    v_star = values_from_q(q_star, beta)
    return tuple(q_star[d] - beta * np.log(pi_ref[d]) - v_star[d + 1].reshape(k**d, k) for d in range(depth))


def solve(tree: TreeMDP) -> SoftSolution:
    """Q*, V* and pi* of a tree (eq. 5-7)."""
    q_star, v_star = soft_bellman(tree.reward, tree.pi_ref, tree.beta)
    pi_star = tuple(np.exp((q - v[:, None]) / tree.beta) for q, v in zip(q_star, v_star))  # eq. 5
    return SoftSolution(q_star, v_star, pi_star)


# ---------------------------------------------------------------------------------------------------------
# advantages, log-ratios and potential shaping


def optimal_advantage(reward, v_star) -> Levels:
    """r(s, a) + V*(s|a) - V*(s) at every state-action: the right-hand side of eq. 10."""
    k = reward[0].shape[1]
    return tuple(r + v_star[d + 1].reshape(k**d, k) - v_star[d][:, None] for d, r in enumerate(reward))


def log_ratio(pi, pi_ref, beta: float) -> Levels:
    """beta * log pi(a|s) / pi_ref(a|s) at every state-action: the implicit per-token reward (eq. 10/11)."""
    beta = _check_beta(beta)
    pi_ref = _check_policy("pi_ref", pi_ref)
    pi = _check_policy("pi", pi, pi_ref[0].shape[1], len(pi_ref))
    return tuple(beta * (np.log(p) - np.log(q)) for p, q in zip(pi, pi_ref))


def shape_reward(reward, potential) -> Levels:
    """Potential-based shaping (Definition 1; Ng et al. 1999): r'(s, a) = r(s, a) + Phi(s|a) - Phi(s).

    Args:
        reward: ``reward[d]`` (K**d, K).
        potential: ``potential[d]`` (K**d,) for d = 0..D (one more level than ``reward``). For the shaped
            trajectory returns to differ from the original ones by the *same* constant for every complete
            trajectory (so that Bradley-Terry preferences are unchanged, Theorem 1), ``potential[D]`` must be
            constant over the leaves; the paper fixes it to 0 (``V*(terminal) = 0``). We do not enforce it
            here, so that the failure can be shown.
    """
    reward = _check_levels("reward", reward)
    k, depth = reward[0].shape[1], len(reward)
    if len(potential) != depth + 1:
        raise ValueError(f"potential needs depth + 1 = {depth + 1} levels (the leaves included), got {len(potential)}")
    potential = tuple(np.asarray(p, dtype=np.float64) for p in potential)
    for d, p in enumerate(potential):
        if p.shape != (k**d,):
            raise ValueError(f"potential[{d}] must have shape (K**d,) = {(k**d,)}, got {p.shape}")
    return tuple(r + potential[d + 1].reshape(k**d, k) - potential[d][:, None] for d, r in enumerate(reward))


def random_potential(depth: int, branching: int, seed: int = 0, scale: float = 1.0, leaves: str = "zero") -> Levels:
    """A random potential Phi(s) per state; ``leaves="zero"`` sets Phi(terminal) = 0, ``"random"`` does not."""
    if leaves not in ("zero", "random"):
        raise ValueError(f"leaves must be 'zero' or 'random', got {leaves!r}")
    rng = np.random.default_rng(seed)
    phi = [scale * rng.standard_normal(branching**d) for d in range(depth + 1)]
    if leaves == "zero":
        phi[depth] = np.zeros(branching**depth)
    return tuple(phi)


# ---------------------------------------------------------------------------------------------------------
# complete trajectories and preferences


def enumerate_trajectories(depth: int, branching: int) -> tuple[np.ndarray, np.ndarray]:
    """Every complete trajectory from the root, in lexicographic order of its actions.

    Returns:
        actions (K**D, D): the action at each step; row n is n written in base K.
        states (K**D, D): the index, within its depth, of the state each action is taken in.
    """
    if depth < 1 or branching < 1:
        raise ValueError(f"need depth >= 1 and branching >= 1, got depth={depth}, branching={branching}")
    actions = np.array(list(itertools.product(range(branching), repeat=depth)), dtype=np.int64)  # (N, D)
    leaf = np.arange(branching**depth)  # (N,): row n ends in leaf n
    states = np.stack([leaf // branching ** (depth - d) for d in range(depth)], axis=1)  # (N, D)
    return actions, states


def trajectory_states(actions, branching: int) -> np.ndarray:
    """The state index at each depth before each action: (..., T) actions -> (..., T) states."""
    actions = np.asarray(actions, dtype=np.int64)
    if actions.size and (actions.min() < 0 or actions.max() >= branching):
        raise ValueError(f"actions must lie in 0..{branching - 1}")
    states = np.zeros_like(actions)
    for t in range(1, actions.shape[-1]):
        states[..., t] = states[..., t - 1] * branching + actions[..., t - 1]
    return states


def trajectory_sums(per_step, actions, states=None) -> np.ndarray:
    """Sum over steps of a per-state-action table along trajectories.

    Args:
        per_step: ``per_step[d]`` (K**d, K), e.g. a reward or beta log pi/pi_ref.
        actions: (N, T) action sequences from the root, T <= D.
        states: (N, T) their state indices (computed from ``actions`` when omitted).

    Returns:
        (N,) the sums.
    """
    actions = np.atleast_2d(np.asarray(actions, dtype=np.int64))  # (N, T)
    k = per_step[0].shape[1]
    if states is None:
        states = trajectory_states(actions, k)
    if actions.shape[1] > len(per_step):
        raise ValueError(f"actions have {actions.shape[1]} steps but the table has only {len(per_step)} levels")
    return sum(per_step[t][states[:, t], actions[:, t]] for t in range(actions.shape[1]))  # (N,)


def bradley_terry(returns) -> np.ndarray:
    """P(tau_i preferred to tau_j) = sigmoid(R_i - R_j) for every pair (eq. 1): (N,) -> (N, N)."""
    returns = np.asarray(returns, dtype=np.float64)
    if returns.ndim != 1:
        raise ValueError(f"returns must be a 1-d array of trajectory returns, got shape {returns.shape}")
    return expit(returns[:, None] - returns[None, :])  # (N, N)


def max_abs_diff(a, b) -> float:
    """Largest absolute difference between two level-by-level tables of the same shapes."""
    if len(a) != len(b):
        raise ValueError(f"tables have {len(a)} and {len(b)} levels")
    return float(max(np.max(np.abs(np.asarray(x) - np.asarray(y))) for x, y in zip(a, b)))
