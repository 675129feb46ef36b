"""The DPO loss as a pure function: identities, known numbers, variants and the direction of its gradient."""

from __future__ import annotations

import math

import pytest
import torch

from qstar_lib.dpo import dpo_loss


def _t(*values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


def test_loss_is_ln2_when_policy_equals_reference():
    logps = _t(-12.0, -3.5, -40.0)
    other = _t(-10.0, -7.0, -1.0)
    losses, chosen, rejected = dpo_loss(logps, other, logps, other, beta=0.1)
    assert torch.allclose(losses, torch.full_like(losses, math.log(2)))
    assert torch.equal(chosen, torch.zeros(3, dtype=torch.float64))
    assert torch.equal(rejected, torch.zeros(3, dtype=torch.float64))


def test_known_values():
    # chosen log-ratio +2, rejected log-ratio -3: margin 5, beta 0.1 -> loss = -log sigmoid(0.5)
    losses, chosen, rejected = dpo_loss(_t(-8.0), _t(-13.0), _t(-10.0), _t(-10.0), beta=0.1)
    assert losses.item() == pytest.approx(math.log1p(math.exp(-0.5)), abs=1e-12)
    assert chosen.item() == pytest.approx(0.2) and rejected.item() == pytest.approx(-0.3)
    # beta scales the logit: beta 1 -> -log sigmoid(5)
    losses, _, _ = dpo_loss(_t(-8.0), _t(-13.0), _t(-10.0), _t(-10.0), beta=1.0)
    assert losses.item() == pytest.approx(math.log1p(math.exp(-5.0)), abs=1e-12)


def test_only_the_difference_of_log_ratios_matters():
    """A constant added to both log-ratios (e.g. V*(s_0) in eq. 9) leaves the loss unchanged."""
    a = dpo_loss(_t(-8.0, -2.0), _t(-13.0, -4.0), _t(-10.0, -3.0), _t(-10.0, -1.0), beta=0.3)[0]
    b = dpo_loss(_t(-8.0, -2.0) + 7, _t(-13.0, -4.0) + 7, _t(-10.0, -3.0), _t(-10.0, -1.0), beta=0.3)[0]
    assert torch.allclose(a, b)


def test_ipo():
    # IPO: (logits - 1/(2 beta))^2 with logits the difference of log-ratios (here 5), beta 0.1 -> (5 - 5)^2 = 0
    losses, _, _ = dpo_loss(_t(-8.0), _t(-13.0), _t(-10.0), _t(-10.0), beta=0.1, loss_type="ipo")
    assert losses.item() == pytest.approx(0.0, abs=1e-12)
    losses, _, _ = dpo_loss(_t(-10.0), _t(-10.0), _t(-10.0), _t(-10.0), beta=0.25, loss_type="ipo")
    assert losses.item() == pytest.approx(4.0)  # (0 - 2)^2


def test_label_smoothing():
    eps, z = 0.2, 0.5  # beta * margin
    losses, _, _ = dpo_loss(_t(-8.0), _t(-13.0), _t(-10.0), _t(-10.0), beta=0.1, label_smoothing=eps)
    expected = (1 - eps) * math.log1p(math.exp(-z)) + eps * math.log1p(math.exp(z))
    assert losses.item() == pytest.approx(expected, abs=1e-12)
    # at policy == reference smoothing changes nothing: still ln 2
    losses, _, _ = dpo_loss(_t(-1.0), _t(-2.0), _t(-1.0), _t(-2.0), beta=0.1, label_smoothing=eps)
    assert losses.item() == pytest.approx(math.log(2))


@pytest.mark.parametrize("beta", [0.0, -0.1])
def test_bad_beta_raises(beta):
    with pytest.raises(ValueError, match="beta"):
        dpo_loss(_t(-1.0), _t(-2.0), _t(-1.0), _t(-2.0), beta=beta)


def test_bad_loss_type_and_smoothing_raise():
    with pytest.raises(ValueError, match="loss_type"):
        dpo_loss(_t(-1.0), _t(-2.0), _t(-1.0), _t(-2.0), loss_type="hinge")
    with pytest.raises(ValueError, match="label_smoothing"):
        dpo_loss(_t(-1.0), _t(-2.0), _t(-1.0), _t(-2.0), label_smoothing=0.5)


def test_gradient_raises_chosen_and_lowers_rejected():
    chosen = _t(-5.0, -9.0).requires_grad_()
    rejected = _t(-6.0, -4.0).requires_grad_()
    losses, _, _ = dpo_loss(chosen, rejected, _t(-5.5, -8.0), _t(-5.0, -4.5), beta=0.1)
    losses.sum().backward()
    assert (chosen.grad < 0).all()  # gradient descent increases log pi(y_w|x)
    assert (rejected.grad > 0).all()  # and decreases log pi(y_l|x)
    assert torch.allclose(chosen.grad, -rejected.grad)
    # magnitude: beta * sigmoid(-beta * margin)
    margin = (chosen - _t(-5.5, -8.0)) - (rejected - _t(-5.0, -4.5))
    assert torch.allclose(chosen.grad, -0.1 * torch.sigmoid(-0.1 * margin.detach()))


def test_rewards_are_detached_implicit_rewards():
    chosen = _t(-5.0, -9.0).requires_grad_()
    _, chosen_rewards, rejected_rewards = dpo_loss(chosen, _t(-6.0, -4.0), _t(-5.5, -8.0), _t(-5.0, -4.5), beta=0.1)
    assert not chosen_rewards.requires_grad
    assert torch.allclose(chosen_rewards, _t(0.05, -0.1))  # beta * (logps - ref_logps)
    assert torch.allclose(rejected_rewards, _t(-0.1, 0.05))
