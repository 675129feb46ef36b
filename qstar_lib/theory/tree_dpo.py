"""Token-level DPO on a tree, with a tabular policy, from Bradley-Terry preference pairs.

The experiment behind the paper's credit-assignment claim (Section 5.1), made exact: preference pairs of
complete trajectories are labelled by the dense Bradley-Terry model of a *known* reward (eq. 1); a policy
with one free logit per state-action is fitted with the DPO loss (eq. 9, :func:`qstar_lib.dpo.dpo_loss`);
and its implicit per-token reward ``beta * log pi_theta / pi_ref`` is compared with the true optimal
advantage ``r + V*(s') - V*(s)`` (eq. 10), state-action by state-action.

This module knows nothing about language models: a "policy" is ``logits[d]`` of shape (K**d, K).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.special import softmax

from qstar_lib.dpo import dpo_loss
from qstar_lib.theory.tree import TreeMDP, enumerate_trajectories, log_ratio, optimal_advantage, solve, trajectory_sums


@dataclass(frozen=True)
class PreferencePairs:
    """Pairs of complete trajectories from the root, indexed into ``enumerate_trajectories`` order."""

    chosen: np.ndarray  # (P,) trajectory index of the preferred one
    rejected: np.ndarray  # (P,) trajectory index of the other
    weight: np.ndarray | None = None  # (P,) optional non-negative weights (None: every pair counts once)


def sample_trajectories(tree: TreeMDP, n: int, rng: np.random.Generator, proposal: str = "pi_ref") -> np.ndarray:
    """Indices (n,) of complete trajectories drawn from pi_ref (token by token) or uniformly over leaves."""
    if proposal == "uniform":
        return rng.integers(0, tree.n_trajectories, size=n)
    if proposal != "pi_ref":
        raise ValueError(f"proposal must be 'pi_ref' or 'uniform', got {proposal!r}")
    k, states = tree.branching, np.zeros(n, dtype=np.int64)
    for p in tree.pi_ref:
        cdf = np.cumsum(p[states], axis=1)  # (n, K)
        u = rng.random((n, 1))
        actions = np.minimum((u > cdf).sum(axis=1), k - 1)  # (n,) inverse-CDF sampling
        states = states * k + actions
    return states  # at depth D the state index is the trajectory index


def sample_preferences(tree: TreeMDP, n_pairs: int, seed: int = 0, proposal: str = "pi_ref") -> PreferencePairs:
    """Draw two trajectories per pair from ``proposal`` and label them with the dense Bradley-Terry model.

    P(tau_1 preferred) = sigmoid(sum_t r(tau_1) - sum_t r(tau_2))  (eq. 1). Pairs of identical
    trajectories are redrawn (they carry no information and DPO's loss for them is constant).
    """
    if n_pairs < 1:
        raise ValueError(f"n_pairs must be >= 1, got {n_pairs}")
    if tree.n_trajectories < 2:
        raise ValueError("the tree has a single trajectory: no pair can be formed")
    rng = np.random.default_rng(seed)
    actions, states = enumerate_trajectories(tree.depth, tree.branching)
    returns = trajectory_sums(tree.reward, actions, states)  # (N,)
    first = sample_trajectories(tree, n_pairs, rng, proposal)
    second = sample_trajectories(tree, n_pairs, rng, proposal)
    same = first == second
    while same.any():  # redraw ties so that every pair compares two different answers
        second[same] = sample_trajectories(tree, int(same.sum()), rng, proposal)
        same = first == second
    p_first = 1.0 / (1.0 + np.exp(-(returns[first] - returns[second])))  # (P,) eq. 1
    first_wins = rng.random(n_pairs) < p_first
    return PreferencePairs(np.where(first_wins, first, second), np.where(first_wins, second, first))


def exact_preferences(tree: TreeMDP) -> PreferencePairs:
    """Every ordered pair (i, j), i != j, weighted by its Bradley-Terry probability sigmoid(R_i - R_j) (eq. 1).

    The limit of infinitely many sampled pairs (with a uniform proposal): the DPO objective over these
    weights is the cross-entropy to the true preference model, whose minimiser is pi* itself.
    """
    actions, states = enumerate_trajectories(tree.depth, tree.branching)
    returns = trajectory_sums(tree.reward, actions, states)  # (N,)
    i, j = np.nonzero(~np.eye(tree.n_trajectories, dtype=bool))  # (N*(N-1),) each
    return PreferencePairs(i, j, 1.0 / (1.0 + np.exp(-(returns[i] - returns[j]))))


def _sequence_logps(logits, actions_t, states_t):
    """Summed log pi(a_t|s_t) of the given trajectories under a tabular policy: (N,)."""
    logps = [torch.log_softmax(x, dim=1) for x in logits]  # each (K**d, K)
    return sum(lp[states_t[:, d], actions_t[:, d]] for d, lp in enumerate(logps))


@dataclass
class DPOFit:
    logits: tuple  # logits[d]: (K**d, K) numpy float64, the fitted pi_theta = softmax(logits)
    loss_history: list  # mean DPO loss after each optimiser step
    init_loss: float  # mean DPO loss at pi_theta = pi_ref (ln 2)

    @property
    def policy(self) -> tuple:
        """pi_theta(a|s) = softmax of the logits, level by level: (K**d, K)."""
        return tuple(softmax(x, axis=1) for x in self.logits)


def _checked_pairs(tree: TreeMDP, pairs: PreferencePairs, beta: float, prior: float):
    """The pairs' chosen and rejected trajectory indices as arrays, after checking the fit's arguments."""
    if beta <= 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    if prior < 0:
        raise ValueError(f"prior must be >= 0, got {prior}")
    n = tree.n_trajectories
    chosen, rejected = np.asarray(pairs.chosen), np.asarray(pairs.rejected)
    if chosen.shape != rejected.shape or chosen.ndim != 1:
        raise ValueError(
            f"pairs.chosen and pairs.rejected must be 1-d of equal length, got {chosen.shape}, {rejected.shape}"
        )
    for name, idx in (("pairs.chosen", chosen), ("pairs.rejected", rejected)):
        if idx.size and (idx.min() < 0 or idx.max() >= n):
            raise ValueError(f"{name} must index trajectories 0..{n - 1}")
    return chosen, rejected


def fit_tabular_dpo(
    tree: TreeMDP, pairs: PreferencePairs, beta: float | None = None, prior: float = 0.1, max_iter: int = 100
) -> DPOFit:
    """Fit a tabular policy to preference pairs with the DPO loss (eq. 9), full batch, by L-BFGS in float64.

    The policy starts at pi_ref (logits = log pi_ref), where every pair's loss is ln 2. The objective is
    the mean DPO loss plus ``prior / (2 P) * sum (logits - log pi_ref)**2`` over P pairs: a Gaussian prior of
    precision ``prior`` on each logit, i.e. a maximum a posteriori fit. It keeps the optimum finite when
    few pairs are separable (otherwise the loss is driven to 0 by sending log-ratios to infinity), fixes
    the values of state-actions that no pair visits (they stay at pi_ref), and fades as P grows.
    Identical pairs are merged with their counts, so the cost does not grow with P.

    Args:
        beta: the DPO beta; defaults to ``tree.beta`` so that the target of the fit is pi* of the tree.
        prior: precision of the Gaussian prior on the logits (>= 0; 0 is plain maximum likelihood).
        max_iter: L-BFGS iterations per step (up to 5 steps, until the loss stops changing).
    """
    beta = tree.beta if beta is None else beta
    chosen, rejected = _checked_pairs(tree, pairs, beta, prior)
    actions, states = enumerate_trajectories(tree.depth, tree.branching)
    act_t, st_t = torch.from_numpy(actions), torch.from_numpy(states)  # (N, D) each
    ref_logits = [torch.log(torch.from_numpy(p)) for p in tree.pi_ref]
    ref_logps = _sequence_logps(ref_logits, act_t, st_t)  # (N,)
    logits = [x.clone().requires_grad_(True) for x in ref_logits]
    w = np.ones(len(chosen)) if pairs.weight is None else np.asarray(pairs.weight, dtype=np.float64)
    if w.shape != chosen.shape or np.any(w < 0) or w.sum() <= 0:
        raise ValueError("pairs.weight must be non-negative, not all zero, one per pair")
    unique, inverse = np.unique(np.stack([chosen, rejected], axis=1), axis=0, return_inverse=True)  # (U, 2)
    counts = np.bincount(inverse.reshape(-1), weights=w, minlength=len(unique))  # (U,) merged weights
    c, r = torch.from_numpy(unique[:, 0]), torch.from_numpy(unique[:, 1])
    weight = torch.from_numpy(counts / counts.sum())  # (U,) so that the weighted sum is the mean over pairs
    l2 = prior / (2 * w.sum())

    def objective():
        logps = _sequence_logps(logits, act_t, st_t)  # (N,) every trajectory, then gather the pairs
        losses, _, _ = dpo_loss(logps[c], logps[r], ref_logps[c], ref_logps[r], beta=beta)
        penalty = sum(((x - x0) ** 2).sum() for x, x0 in zip(logits, ref_logits))
        return (weight * losses).sum() + l2 * penalty

    optimiser = torch.optim.LBFGS(
        logits,
        lr=1.0,
        max_iter=max_iter,
        tolerance_grad=1e-10,
        tolerance_change=1e-13,
        history_size=50,
        line_search_fn="strong_wolfe",
    )

    def closure():
        optimiser.zero_grad()
        loss = objective()
        loss.backward()
        return loss

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tensors of a few hundred entries: threads cost more than they give
    try:
        with torch.no_grad():
            init_loss = float(objective())
        history = []
        for _ in range(5):  # L-BFGS restarts; each step runs up to max_iter inner iterations
            optimiser.step(closure)
            with torch.no_grad():
                history.append(float(objective()))
            if len(history) > 1 and abs(history[-2] - history[-1]) < 1e-13:
                break
    finally:
        torch.set_num_threads(threads)
    return DPOFit(tuple(x.detach().numpy().copy() for x in logits), history, init_loss)


def visited_mask(tree: TreeMDP, pairs: PreferencePairs) -> tuple:
    """mask[d] (K**d, K) bool: the state-actions that some trajectory in the pairs takes."""
    actions, states = enumerate_trajectories(tree.depth, tree.branching)
    used = np.unique(np.concatenate([pairs.chosen, pairs.rejected]))
    mask = [np.zeros((tree.branching**d, tree.branching), dtype=bool) for d in range(tree.depth)]
    for d in range(tree.depth):
        mask[d][states[used, d], actions[used, d]] = True
    return tuple(mask)


def dpo_credit_assignment(
    tree: TreeMDP, n_pairs: int, seed: int = 0, prior: float = 0.1, proposal: str = "pi_ref"
) -> dict:
    """Sample ``n_pairs`` Bradley-Terry pairs, fit tabular DPO, compare beta log pi_theta/pi_ref with eq. 10.

    Returns ``advantage_agreement`` on the visited state-actions plus ``coverage`` (fraction of all
    state-actions visited) and ``corr_all`` (correlation over every state-action, visited or not).
    """
    target = optimal_advantage(tree.reward, solve(tree).v_star)
    pairs = sample_preferences(tree, n_pairs, seed=seed, proposal=proposal)
    fit = fit_tabular_dpo(tree, pairs, prior=prior)
    learned = log_ratio(fit.policy, tree.pi_ref, tree.beta)
    mask = visited_mask(tree, pairs)
    out = advantage_agreement(learned, target, mask)
    out["coverage"] = float(np.mean(np.concatenate([m.ravel() for m in mask])))
    out["corr_all"] = advantage_agreement(learned, target)["corr"]
    out["n_pairs"] = n_pairs
    return out


def advantage_agreement(learned, target, mask=None) -> dict:
    """Pearson correlation, RMSE and max error between two per-state-action tables, on ``mask`` if given."""
    if mask is None:
        mask = tuple(np.ones(np.shape(a), dtype=bool) for a in target)
    x = np.concatenate([np.asarray(a)[m] for a, m in zip(learned, mask)])  # (M,) the compared entries
    y = np.concatenate([np.asarray(b)[m] for b, m in zip(target, mask)])  # (M,)
    if x.size < 2:
        raise ValueError("need at least two state-actions to compare")
    corr = float(np.corrcoef(x, y)[0, 1]) if x.std() > 0 and y.std() > 0 else float("nan")
    err = x - y
    return {
        "corr": corr,
        "rmse": float(np.sqrt(np.mean(err**2))),
        "max_err": float(np.max(np.abs(err))),
        "n": int(x.size),
    }
