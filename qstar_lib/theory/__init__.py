"""The mathematics on exact toy problems: sympy derivations, the finite tree MDP, tabular DPO, tree search.

Imports nothing of ``data``, ``lm`` or ``eval``; only the shared floor (``dpo``, ``plots``).

Names are exported lazily (PEP 562): ``from qstar_lib.theory import X`` loads only the module that
defines ``X``."""

from __future__ import annotations

import importlib

#: exported name -> the module of this package that defines it
_EXPORTS = {
    "M": "symbolic",
    "N": "symbolic",
    "T": "symbolic",
    "bandit_dpo_loss": "symbolic",
    "bandit_reduction_residual": "symbolic",
    "bellman_q": "symbolic",
    "bradley_terry": "symbolic",
    "concrete_expansion": "symbolic",
    "dpo_loss_residual": "symbolic",
    "evaluate": "symbolic",
    "expected_implicit_reward": "symbolic",
    "implicit_return": "symbolic",
    "implicit_reward": "symbolic",
    "induction_proof": "symbolic",
    "kl_divergence": "symbolic",
    "kl_identity_residual": "symbolic",
    "normalisation": "symbolic",
    "numeric_function": "symbolic",
    "numeric_kl_check": "symbolic",
    "numeric_trajectory_check": "symbolic",
    "policy_preference": "symbolic",
    "policy_preference_sigmoid": "symbolic",
    "q_from_policy": "symbolic",
    "reduce_identity": "symbolic",
    "reward_from_bellman": "symbolic",
    "reward_from_policy": "symbolic",
    "reward_sum": "symbolic",
    "reward_sum_in_policy": "symbolic",
    "sigmoid": "symbolic",
    "simplex_substitution": "symbolic",
    "soft_value": "symbolic",
    "telescope": "symbolic",
    "telescoped_return": "symbolic",
    "telescoping_residual": "symbolic",
    "token_bradley_terry": "symbolic",
    "token_dpo_loss": "symbolic",
    "token_margin": "symbolic",
    "trajectory_identity_residual": "symbolic",
    "v0_cancellation_residual": "symbolic",
    "SoftSolution": "tree",
    "TreeMDP": "tree",
    "enumerate_trajectories": "tree",
    "log_ratio": "tree",
    "max_abs_diff": "tree",
    "optimal_advantage": "tree",
    "policy_from_q": "tree",
    "random_potential": "tree",
    "random_tree": "tree",
    "reward_from_q": "tree",
    "shape_reward": "tree",
    "soft_bellman": "tree",
    "solve": "tree",
    "trajectory_states": "tree",
    "trajectory_sums": "tree",
    "values_from_q": "tree",
    "with_trap": "tree",
    "DPOFit": "tree_dpo",
    "PreferencePairs": "tree_dpo",
    "advantage_agreement": "tree_dpo",
    "dpo_credit_assignment": "tree_dpo",
    "exact_preferences": "tree_dpo",
    "fit_tabular_dpo": "tree_dpo",
    "sample_preferences": "tree_dpo",
    "sample_trajectories": "tree_dpo",
    "visited_mask": "tree_dpo",
    "PATH_STYLES": "tree_plot",
    "node_positions": "tree_plot",
    "plot_advantage_recovery": "tree_plot",
    "plot_tree": "tree_plot",
    "BeamResult": "tree_search",
    "MCTSResult": "tree_search",
    "beam_search": "tree_search",
    "exhaustive_search": "tree_search",
    "first_stable_hit": "tree_search",
    "greedy_decode": "tree_search",
    "mcts": "tree_search",
    "regularised_reward": "tree_search",
    "search_margin": "tree_search",
}
__all__ = sorted(_EXPORTS) + ["symbolic", "tree", "tree_dpo", "tree_search", "tree_plot"]


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    if name in ("symbolic", "tree", "tree_dpo", "tree_search", "tree_plot"):
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
