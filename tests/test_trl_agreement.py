"""Our DPO step-1 metrics equal TRL's DPOTrainer's on the same tiny model, reference and batch.

The policy is a perturbed copy of the reference, so the rewards are not trivially 0 and the loss not ln 2.
TRL (a dev dependency) logs the metrics of its first step before the update, like our history[0].
"""

from __future__ import annotations

import copy

import pytest
import torch

trl = pytest.importorskip("trl")

KEYS = ("loss", "rewards/chosen", "rewards/rejected", "rewards/margins", "logps/chosen", "logps/rejected")


@pytest.fixture
def policy_and_ref(tiny_lm):
    base, tokenizer = tiny_lm
    ref = copy.deepcopy(base).eval()
    policy = copy.deepcopy(base)
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        for p in policy.parameters():
            p.add_(0.05 * torch.randn_like(p))  # a policy that differs from the reference
    return policy, ref, tokenizer


def _trl_first_step(policy, ref, tokenizer, records, tmp_path, beta: float) -> dict:
    from datasets import Dataset

    args = trl.DPOConfig(
        output_dir=str(tmp_path / "trl"),
        per_device_train_batch_size=len(records),
        max_steps=1,
        learning_rate=1e-6,
        beta=beta,
        logging_steps=1,
        report_to="none",
        save_strategy="no",
        bf16=False,
        use_cpu=True,
        max_length=128,
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    trainer = trl.DPOTrainer(
        model=policy, ref_model=ref, args=args, train_dataset=Dataset.from_list(records), processing_class=tokenizer
    )
    trainer.train()
    logged = [row for row in trainer.state.log_history if "rewards/chosen" in row]
    return logged[0]


def test_rewards_and_loss_match_trl(policy_and_ref, pair_records, tmp_path):
    from qstar_lib.lm.train import train_dpo
    from qstar_lib.lm.train_config import DPOConfig

    policy, ref, tokenizer = policy_and_ref
    beta = 0.3
    ours = train_dpo(
        copy.deepcopy(policy),
        ref,
        tokenizer,
        pair_records,
        DPOConfig(
            per_device_train_batch_size=len(pair_records),
            max_steps=1,
            beta=beta,
            max_length=128,
            disable_tqdm=True,
            learning_rate=1e-6,
        ),
    )[0]
    theirs = _trl_first_step(copy.deepcopy(policy), copy.deepcopy(ref), tokenizer, pair_records, tmp_path, beta)
    assert abs(ours["rewards/margins"]) > 1e-3  # the comparison is not trivial
    for key in KEYS:
        assert ours[key] == pytest.approx(theirs[key], abs=1e-4, rel=1e-4), key
    assert ours["rewards/accuracies"] == pytest.approx(theirs["rewards/accuracies"])
