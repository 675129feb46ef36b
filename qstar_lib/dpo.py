"""The DPO loss as a pure function of four log-probability tensors and beta.

It knows nothing about models, tokenisers or batches: whoever calls it has already summed per-token
log-probabilities (token-level DPO, paper eq. 9, and bandit DPO, eq. 4, are the same function of the
summed log-ratios because V*(s_0) cancels). Names follow TRL (``chosen_logps`` ...).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

LOSS_TYPES = ("sigmoid", "ipo")


def dpo_loss(
    chosen_logps: torch.Tensor,
    rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    beta: float = 0.1,
    loss_type: str = "sigmoid",
    label_smoothing: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-pair DPO losses and implicit rewards.

    Args:
        chosen_logps, rejected_logps: (B,) summed log pi_theta(y|x) of the chosen / rejected completions.
        ref_chosen_logps, ref_rejected_logps: (B,) the same under pi_ref.
        beta: the KL weight of eq. 2; 0.1 in the paper.
        loss_type: ``"sigmoid"`` (eq. 4/9) or ``"ipo"`` (Azar et al.; squared distance to 1/(2 beta)).
        label_smoothing: conservative DPO: the label is flipped with this probability (sigmoid only).

    Returns:
        losses (B,), chosen_rewards (B,), rejected_rewards (B,), where a reward is
        beta * (logps - ref_logps): the sum of the per-token implicit rewards of eq. 10. The rewards are
        detached, as in TRL, because they are metrics.
    """
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"loss_type={loss_type!r}; choose one of {LOSS_TYPES}")
    if beta <= 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    if not 0.0 <= label_smoothing < 0.5:
        raise ValueError(f"label_smoothing must be in [0, 0.5), got {label_smoothing}")
    chosen_logratios = chosen_logps - ref_chosen_logps  # (B,)
    rejected_logratios = rejected_logps - ref_rejected_logps  # (B,)
    logits = chosen_logratios - rejected_logratios  # (B,) difference of summed eq. 10 rewards / beta
    if loss_type == "sigmoid":
        losses = -(1 - label_smoothing) * F.logsigmoid(beta * logits) - label_smoothing * F.logsigmoid(-beta * logits)
    else:
        losses = (logits - 1 / (2 * beta)) ** 2
    chosen_rewards = beta * chosen_logratios.detach()  # (B,)
    rejected_rewards = beta * rejected_logratios.detach()  # (B,)
    return losses, chosen_rewards, rejected_rewards


def step1_tolerance(mixed_precision: str | None, key: str = "loss") -> float:
    """How far step 1's logged ``loss`` may sit from ln 2 (``key="rewards/margins"``: its margin from 0, twice
    as far, since d loss / d margin = -1/2 there) under ``mixed_precision``.

    At step 1 the policy is the reference, so the loss is ln 2 up to rounding. In float32 that is ~1e-6;
    under bf16 autocast the reference batches (sorted by length) and the policy's micro-batches (random pairs)
    have other shapes, so other kernels round bf16 log-probs (~3 significant digits of sums of ~-100) apart:
    1e-2, as the training tests allow.
    """
    tolerance = 1e-2 if mixed_precision in ("bf16", "fp16") else 1e-4
    return 2 * tolerance if key == "rewards/margins" else tolerance
