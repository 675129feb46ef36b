"""The sympy derivation of token-level DPO: every identity reduces to exactly 0, for a symbolic horizon
and for T = 1..6, and agrees with numbers (lambdify) to 1e-12."""

import numpy as np
import pytest
import sympy as sp

from qstar_lib.theory import symbolic as S

HORIZONS = range(1, 7)


def is_zero(expr) -> bool:
    return S.reduce_identity(expr) == 0


# ------------------------------------------------------------------ telescoping, symbolic and concrete
def test_telescoping_for_symbolic_horizon():
    assert is_zero(S.telescoping_residual(S.T))


@pytest.mark.parametrize("horizon", HORIZONS)
def test_telescoping_for_concrete_horizons(horizon):
    assert is_zero(S.telescoping_residual(horizon))


@pytest.mark.parametrize("terminal", [True, False])
def test_sum_of_rewards_identity_for_symbolic_horizon(terminal):
    # sum_t r = V*(s_0) [- V*(s_T)] + sum_t beta log pi*/pi_ref, given eq. 5 and eq. 7
    assert is_zero(S.trajectory_identity_residual(S.T, terminal=terminal))


@pytest.mark.parametrize("horizon", HORIZONS)
def test_sum_of_rewards_identity_for_concrete_horizons(horizon):
    assert is_zero(S.trajectory_identity_residual(horizon))


def test_terminal_value_is_what_is_left_without_the_terminal_condition():
    # without V*(s_T) = 0 the residual is exactly -V*(s_T): the check is not vacuous
    lhs = S.telescope(S.reward_sum_in_policy(S.T))
    assert S.reduce_identity(lhs - S.telescoped_return(S.T, terminal=True) + S.v_star[S.T]) == 0
    assert S.reduce_identity(lhs - S.telescoped_return(S.T, terminal=True)) == -S.v_star[S.T]


def test_induction_base_and_step_vanish():
    proof = S.induction_proof()
    assert set(proof) == {"base", "step"}
    assert is_zero(proof["base"])
    assert is_zero(proof["step"])


def test_induction_step_fails_for_a_wrong_right_side():
    # forgetting -V*(s_T) on the right side must break the step (the proof can fail)
    wrong = lambda h: S.v_star[0] + S.implicit_return(h)  # noqa: E731
    step = (S.reward_sum_in_policy(S.T + 1) - S.reward_sum_in_policy(S.T)) - (wrong(S.T + 1) - wrong(S.T))
    assert S.reduce_identity(step) != 0


@pytest.mark.parametrize("horizon", HORIZONS)
def test_concrete_expansion(horizon):
    out = S.concrete_expansion(horizon)
    assert len(out["steps"]) == horizon
    assert sp.expand(out["terms"].doit() - sum(out["steps"])) == 0
    assert sp.expand(out["telescoped"] - (S.v_star[0] - S.v_star[horizon])) == 0
    assert sp.expand(out["value_terms"].doit() - out["telescoped"]) == 0
    assert is_zero(out["residual"])


def test_bellman_round_trip_and_soft_value_normalises_the_policy():
    # r -> Q* -> r (eq. 7 and its inverse) is the identity
    assert sp.expand(S.bellman_q(S.t).subs(S.r[S.t], S.reward_from_bellman(S.t)) - S.q_star[S.t]) == 0
    # eq. 5 with V* from eq. 6 sums to one over a finite action set
    q = sp.symbols("q0:4", real=True)
    total = sum(sp.exp((qa - S.soft_value(list(q))) / S.beta) for qa in q)
    assert sp.simplify(total - 1) == 0


def test_reward_is_implicit_reward_plus_value_difference():
    expected = S.implicit_reward(S.t) + S.v_star[S.t] - S.v_star[S.t + 1]
    assert is_zero(S.reward_from_policy(S.t) - expected)


# ------------------------------------------------------------------ Bradley-Terry, V*(s_0) cancels, eq. 9, eq. 4
@pytest.mark.parametrize("lengths", [(S.N, S.M), (1, 1), (2, 3), (4, 1)])
def test_v0_cancels_in_bradley_terry(lengths):
    residuals = S.v0_cancellation_residual(*lengths)
    assert is_zero(residuals["difference"])
    assert is_zero(residuals["derivative"])


@pytest.mark.parametrize("lengths", [(S.N, S.M), (1, 1), (3, 2)])
def test_negative_log_likelihood_is_token_level_dpo_loss(lengths):
    assert is_zero(S.dpo_loss_residual(*lengths))


def test_horizon_one_recovers_bandit_dpo():
    assert is_zero(S.bandit_reduction_residual())


def test_token_bradley_terry_has_the_form_of_eq_1():
    p = S.token_bradley_terry(2, 1).doit()
    expected = sp.exp(S.r_w[0] + S.r_w[1]) / (sp.exp(S.r_w[0] + S.r_w[1]) + sp.exp(S.r_l[0]))
    assert sp.simplify(p - expected) == 0


# ------------------------------------------------------------------ eq. 16
def test_eq16_for_symbolic_action_count():
    assert is_zero(S.kl_identity_residual(S.n))


@pytest.mark.parametrize("size", [2, 3, 4, 5])
def test_eq16_on_the_simplex(size):
    residual = S.kl_identity_residual(size, normalised=True)
    assert S.pi_a[size - 1] not in residual.atoms(sp.Indexed)  # the last probability was eliminated
    assert is_zero(residual)


@pytest.mark.parametrize("size", [1, 2, 4])
def test_simplex_substitution_makes_both_distributions_sum_to_one(size):
    sub = S.simplex_substitution(size)
    for constraint in S.normalisation(size).values():
        assert sp.simplify(constraint.doit().xreplace(sub)) == 0


def test_eq16_with_wrong_sign_does_not_vanish():
    assert S.reduce_identity(S.expected_implicit_reward(3) - S.beta * S.kl_divergence(3)) != 0


# ------------------------------------------------------------------ numeric cross-checks (lambdify)
@pytest.mark.parametrize("horizon", HORIZONS)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_numeric_sum_of_rewards(horizon, seed):
    lhs, rhs = S.numeric_trajectory_check(horizon, seed=seed)
    assert np.isclose(lhs, rhs, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("size", [2, 3, 5, 50])
@pytest.mark.parametrize("seed", [0, 1])
def test_numeric_eq16(size, seed):
    lhs, rhs = S.numeric_kl_check(size, seed=seed, beta_value=0.1)
    assert np.isclose(lhs, rhs, rtol=1e-12, atol=1e-12)
    assert lhs <= 0.0  # Gibbs' inequality: the expected implicit reward under pi_ref is never positive


def test_numeric_token_dpo_loss_matches_the_library_loss():
    torch = pytest.importorskip("torch")
    from qstar_lib.dpo import dpo_loss

    rng = np.random.default_rng(0)
    lengths, beta_value = (3, 2), 0.1
    probs = {
        base: rng.uniform(0.01, 1.0, size=k)
        for base, k in zip(
            [S.pi_theta_w, S.pi_ref_w, S.pi_theta_l, S.pi_ref_l], [lengths[0], lengths[0], lengths[1], lengths[1]]
        )
    }
    symbolic = S.evaluate(S.token_dpo_loss(*lengths), {**probs, S.beta: beta_value})
    summed = [
        torch.tensor([np.log(probs[b]).sum()], dtype=torch.float64)
        for b in (S.pi_theta_w, S.pi_theta_l, S.pi_ref_w, S.pi_ref_l)
    ]
    losses, _, _ = dpo_loss(*summed, beta=beta_value)
    assert np.isclose(symbolic, losses.item(), rtol=1e-12, atol=1e-12)
    # eq. 1 with any V*(s_0) gives the same number (V*(s_0) cancels)
    for v0 in (-3.0, 0.0, 7.5):
        values = {**probs, S.beta: beta_value, S.v0_star: v0}
        nll = -sp.log(S.policy_preference(*lengths)).xreplace({S.pi_star_w: S.pi_theta_w, S.pi_star_l: S.pi_theta_l})
        assert np.isclose(S.evaluate(nll, values), symbolic, rtol=1e-12, atol=1e-12)


def test_evaluate_reads_indexed_and_plain_symbols():
    expr = S.beta * (S.v_star[0] + 2 * S.v_star[2])
    assert S.evaluate(expr, {S.v_star: np.array([1.0, 5.0, 3.0]), S.beta: 0.5}) == pytest.approx(3.5, abs=1e-15)


# ------------------------------------------------------------------ bad input
@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "3", sp.Symbol("x"), sp.Integer(0)])
def test_bad_horizon_raises(bad):
    with pytest.raises(ValueError):
        S.telescoping_residual(bad)
    with pytest.raises(ValueError):
        S.trajectory_identity_residual(bad)


def test_other_bad_inputs_raise():
    with pytest.raises(ValueError, match="T must be >= 1"):
        S.reward_sum(0)
    with pytest.raises(ValueError, match="concrete"):
        S.concrete_expansion(S.T)
    with pytest.raises(ValueError, match="M"):
        S.token_dpo_loss(2, 0)
    with pytest.raises(ValueError, match="n"):
        S.kl_identity_residual(0)
    with pytest.raises(ValueError, match="T must be >= 1"):
        S.numeric_trajectory_check(0)
    with pytest.raises(ValueError, match="no value given"):
        S.evaluate(S.v_star[0] + S.beta, {S.v_star: np.zeros(1)})
