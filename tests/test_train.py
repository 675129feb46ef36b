"""The SFT/DPO loops: ln 2 at step 1, exact resume, determinism, overfitting, masking, accumulation."""

from __future__ import annotations

import contextlib
import math
import os

import pytest
import torch
from word_pairs import word_llama, word_records, word_tokenizer

from qstar_lib.data import RecordError
from qstar_lib.lm import checkpoint as ckpt
from qstar_lib.lm.collate import collate_pairs, collate_shared_prompt, encode_pairs, encode_sft
from qstar_lib.lm.logps import per_token_logps, sequence_logps
from qstar_lib.lm.train import train_dpo, train_sft
from qstar_lib.lm.train_config import DPOConfig, History, SFTConfig


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """A 32-wide model is faster on one thread than two fighting over a busy machine.

    ``QSTAR_TEST_THREADS=2`` runs the module on two threads: every tolerance below holds for both."""
    threads = torch.get_num_threads()
    torch.set_num_threads(int(os.environ.get("QSTAR_TEST_THREADS", "1")))
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tokenizer():
    return word_tokenizer()


_records = word_records
_model = word_llama  # tied embeddings, float32 unless a test asks for float64


def _params(model) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()])


# Two batchings of one optimizer step (batch 4 vs 2 x 2 accumulation) add the same gradient terms in another order.
# In float32 that rounding is ~1e-7 of the terms, and Adam's first steps divide each gradient by sqrt(v) + 1e-8 ~ |g|,
# so a coordinate whose gradient is ~0 moves by up to ~lr in either direction: after 2 steps the float32 weights
# differ by 1.4e-5 on an AMD EPYC and by other amounts on other CPUs (other kernels, other summation order). So the
# accumulation tests train in float64 (eps 2.2e-16, 5e8 x float32's): 1.4e-5 becomes ~3e-14 (observed 6e-15 on 1 and 2
# threads); 1e-9 leaves > 1e5 headroom and is 1e6 x below what a wrong weighting does (one micro-batch x 2: 4e-3).
F64_WEIGHT_TOL = 1e-9


@contextlib.contextmanager
def _step_gradients():
    """Collect the gradient each ``optimizer.step()`` applies (one flat float64 tensor per step)."""
    from torch.optim.optimizer import register_optimizer_step_pre_hook

    grads: list[torch.Tensor] = []

    def hook(optimizer, args, kwargs):
        params = [p for group in optimizer.param_groups for p in group["params"]]
        grads.append(
            torch.cat([(torch.zeros_like(p) if p.grad is None else p.grad).detach().flatten().double() for p in params])
        )

    handle = register_optimizer_step_pre_hook(hook)
    try:
        yield grads
    finally:
        handle.remove()


def _dpo(**kw) -> DPOConfig:
    base = dict(learning_rate=1e-3, per_device_train_batch_size=4, max_steps=4, disable_tqdm=True, max_length=64)
    return DPOConfig(**{**base, **kw})


def test_dpo_loss_is_ln2_at_step_one(tokenizer):
    model = _model(tokenizer)
    history = train_dpo(model, None, tokenizer, _records(8), _dpo(max_steps=1))
    first = history[0]
    assert first["step"] == 1
    assert abs(first["loss"] - math.log(2)) < 1e-5  # policy == reference before the first update
    assert abs(first["rewards/chosen"]) < 1e-5 and abs(first["rewards/margins"]) < 1e-5
    for key in (
        "rewards/rejected",
        "rewards/accuracies",
        "logps/chosen",
        "logps/rejected",
        "grad_norm",
        "learning_rate",
    ):
        assert key in first


def test_separate_reference_model_gives_the_same_first_step(tokenizer):
    from qstar_lib.lm.models import clone_model

    model = _model(tokenizer)
    ref = clone_model(model)
    h_ref = train_dpo(model, ref, tokenizer, _records(8), _dpo(max_steps=1))
    assert abs(h_ref[0]["loss"] - math.log(2)) < 1e-5
    assert not any(p.requires_grad for p in ref.parameters())


def test_same_seed_same_metrics(tokenizer):
    runs = [train_dpo(_model(tokenizer), None, tokenizer, _records(16), _dpo(max_steps=3, seed=7)) for _ in range(2)]
    assert runs[0] == runs[1]
    other = train_dpo(_model(tokenizer), None, tokenizer, _records(16), _dpo(max_steps=3, seed=8))
    assert other != runs[0]  # the seed changes the data order


def test_resume_gives_the_same_weights(tokenizer, tmp_path):
    records = _records(12)
    config = _dpo(
        max_steps=6,
        optim="adamw",
        warmup_steps=2,
        lr_scheduler_type="linear",
        gradient_accumulation_steps=2,
        per_device_train_batch_size=2,
    )
    straight = _model(tokenizer)
    h_straight = train_dpo(straight, None, tokenizer, records, config)

    first = _model(tokenizer)
    saving = DPOConfig(**{**config.to_dict(), "output_dir": str(tmp_path), "save_steps": 3})
    train_dpo(first, None, tokenizer, records, saving)
    folder = ckpt.checkpoint_dir(str(tmp_path), 3)
    assert os.path.isfile(os.path.join(folder, "model.safetensors"))
    assert not [f for f in os.listdir(folder) if f.endswith((".bin", ".pt", ".pkl"))]  # no pickles

    torch.manual_seed(1234)  # a "new process": other RNG state, other initial weights
    resumed = _model(tokenizer, seed=99)
    h_resumed = train_dpo(resumed, None, tokenizer, records, config, resume_from=folder)
    # the same ops on the same batches and shapes in one process: bitwise equal (observed 0), not a rounding allowance
    assert (_params(resumed) - _params(straight)).abs().max().item() <= 1e-6
    assert [r["step"] for r in h_resumed] == list(range(1, 7))
    assert h_resumed[-1]["loss"] == pytest.approx(h_straight[-1]["loss"], abs=1e-6)


class _Stop(Exception):
    pass


def test_resume_after_interrupt(tokenizer, tmp_path):
    """Training stopped right after the checkpoint at step 3 (a crash) resumes to the same weights."""
    records = _records(12)
    config = _dpo(max_steps=6, optim="rmsprop", per_device_train_batch_size=3)
    straight = _model(tokenizer)
    train_dpo(straight, None, tokenizer, records, config)

    interrupted = _model(tokenizer)
    cfg = DPOConfig(**{**config.to_dict(), "output_dir": str(tmp_path), "save_steps": 3})

    def crash(done, metrics, model):
        if done == 4:
            raise _Stop

    with pytest.raises(_Stop):
        train_dpo(interrupted, None, tokenizer, records, cfg, callbacks=[crash])
    assert ckpt.latest_checkpoint(str(tmp_path)).endswith("checkpoint-3")
    resumed = _model(tokenizer, seed=5)
    train_dpo(resumed, None, tokenizer, records, config, resume_from=ckpt.latest_checkpoint(str(tmp_path)))
    assert (_params(resumed) - _params(straight)).abs().max().item() <= 1e-6  # same computation: bitwise (observed 0)


def test_dpo_overfits_a_tiny_set(tokenizer):
    model = _model(tokenizer)
    history = train_dpo(model, None, tokenizer, _records(4), _dpo(max_steps=25, learning_rate=3e-3, beta=0.5))
    losses = history.column("loss")
    assert losses[-1] < 0.5 * losses[0]
    assert history[-1]["rewards/accuracies"] == 1.0
    assert history[-1]["rewards/margins"] > 0


def test_gradient_accumulation_matches_one_big_batch(tokenizer):
    records = _records(8)
    big, small = _model(tokenizer, dtype=torch.float64), _model(tokenizer, dtype=torch.float64)  # see F64_WEIGHT_TOL
    h_big = train_dpo(big, None, tokenizer, records, _dpo(max_steps=2, per_device_train_batch_size=4))
    h_acc = train_dpo(
        small, None, tokenizer, records, _dpo(max_steps=2, per_device_train_batch_size=2, gradient_accumulation_steps=2)
    )
    assert (_params(big) - _params(small)).abs().max().item() < F64_WEIGHT_TOL  # observed 6e-15; x2 bug: 4e-3
    # float64 gradient norm: observed 0; one micro-batch weighted x2 changes it by 37%
    assert h_big[0]["grad_norm"] == pytest.approx(h_acc[0]["grad_norm"], rel=1e-10)
    for step in (0, 1):  # logged losses are summed in float32: <= a few ulp of 2.8 (4 pairs) / 4 ~ 1e-7 (observed 6e-8)
        assert h_big[step]["loss"] == pytest.approx(h_acc[step]["loss"], abs=1e-6)  # x2 bug at step 2: 1.2e-3


def test_sft_gradient_accumulation_matches_one_big_batch(tokenizer):
    records = _records(8)
    cfg = dict(learning_rate=1e-3, max_steps=2, disable_tqdm=True, max_length=64)
    big, small = _model(tokenizer, dtype=torch.float64), _model(tokenizer, dtype=torch.float64)  # see F64_WEIGHT_TOL
    train_sft(big, tokenizer, records, SFTConfig(per_device_train_batch_size=4, **cfg))
    train_sft(small, tokenizer, records, SFTConfig(per_device_train_batch_size=1, gradient_accumulation_steps=4, **cfg))
    assert (_params(big) - _params(small)).abs().max().item() < F64_WEIGHT_TOL  # observed 1e-16; x2 bug: 4e-3


def test_sft_masks_prompt_tokens(tokenizer):
    """Changing the prompt's *targets* cannot change the SFT gradient: only completion tokens are scored."""
    records = _records(4)
    enc = encode_sft(records, tokenizer, max_length=64)
    assert all(sum(e["completion_mask"]) == e["n_completion"] + 1 for e in enc)  # completion + EOS only

    model = _model(tokenizer)
    history = train_sft(
        model,
        tokenizer,
        records,
        SFTConfig(max_steps=1, per_device_train_batch_size=4, disable_tqdm=True, learning_rate=1e-3),
    )
    assert history[0]["num_tokens"] == sum(len(e["input_ids"]) for e in enc)  # TRL's count: every non-pad token
    # The logged loss is the mean NLL of completion tokens under the initial model, computed by hand:
    from qstar_lib.lm.collate import pad_batch

    fresh = _model(tokenizer)
    batch = pad_batch(enc, tokenizer.pad_token_id)
    with torch.no_grad():
        logits = fresh(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    logp = torch.log_softmax(logits[:, :-1], -1).gather(-1, batch["input_ids"][:, 1:, None])[..., 0]
    mask = batch["completion_mask"][:, 1:].bool()
    assert history[0]["loss"] == pytest.approx(-(logp[mask]).mean().item(), rel=1e-5)
    everything = -(logp[batch["attention_mask"][:, 1:].bool()]).mean().item()
    assert history[0]["loss"] != pytest.approx(everything, rel=1e-3)  # the prompt is not in the loss


def test_sft_loss_decreases(tokenizer):
    model = _model(tokenizer)
    history = train_sft(model, tokenizer, _records(4), SFTConfig(max_steps=30, learning_rate=1e-2, disable_tqdm=True))
    assert history[-1]["loss"] < 0.5 * history[0]["loss"]


def test_history_dataframe_and_logging_window(tokenizer):
    history = train_dpo(_model(tokenizer), None, tokenizer, _records(8), _dpo(max_steps=4, logging_steps=2))
    assert [row["step"] for row in history] == [2, 4]
    frame = history.to_dataframe()
    assert list(frame.index) == [2, 4] and "rewards/margins" in frame.columns
    assert isinstance(history, History)


def test_paper_presets():
    dpo = DPOConfig.paper()
    assert (dpo.optim, dpo.learning_rate, dpo.warmup_steps, dpo.max_grad_norm, dpo.beta, dpo.max_length) == (
        "rmsprop",
        5e-7,
        150,
        10.0,
        0.1,
        512,
    )
    assert (dpo.per_device_train_batch_size, dpo.gradient_accumulation_steps) == (32, 2)
    assert DPOConfig.paper(max_steps=3).max_steps == 3
    sft = SFTConfig.paper()
    assert (sft.optim, sft.learning_rate, sft.per_device_train_batch_size) == ("rmsprop", 5e-7, 64)


def test_warmup_schedule_and_bad_config(tokenizer):
    history = train_dpo(
        _model(tokenizer), None, tokenizer, _records(8), _dpo(max_steps=3, warmup_steps=3, learning_rate=4e-3)
    )
    assert history.column("learning_rate") == pytest.approx([1e-3, 2e-3, 3e-3])
    with pytest.raises(ValueError, match="optim"):
        DPOConfig(optim="sgd")
    with pytest.raises(ValueError, match="beta"):
        DPOConfig(beta=0)
    with pytest.raises(RecordError, match="record 0: field 'chosen' is missing"):
        train_dpo(_model(tokenizer), None, tokenizer, [{"prompt": "a"}], _dpo())


def test_save_steps_write_several_checkpoints(tokenizer, tmp_path):
    from transformers import AutoModelForCausalLM

    cfg = _dpo(max_steps=5, save_steps=1, output_dir=str(tmp_path))
    seen = []
    model = _model(tokenizer)
    train_dpo(model, None, tokenizer, _records(8), cfg, callbacks=[lambda step, m, mdl: seen.append(step)])
    assert seen == [1, 2, 3, 4, 5]
    assert sorted(os.listdir(tmp_path)) == [f"checkpoint-{i}" for i in range(1, 6)]
    reloaded = AutoModelForCausalLM.from_pretrained(ckpt.checkpoint_dir(str(tmp_path), 5))
    assert (_params(reloaded) - _params(model)).abs().max().item() == 0


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_shared_prompt_rows_give_the_concatenated_log_probs(tokenizer, attn):
    """[prompt | chosen | rejected] with a block mask == the naive [chosen; rejected] batch, pair by pair."""
    from qstar_lib.lm.logps import PairScorer

    model = _model(tokenizer)
    model.config._attn_implementation = attn
    records = _records(5, seed=3)
    records[1]["chosen"] = " a much longer chosen answer than the others here"
    pairs = encode_pairs(records, tokenizer, max_length=64)
    with torch.no_grad():
        naive = collate_pairs(pairs, tokenizer.pad_token_id)
        expected = sequence_logps(per_token_logps(model, **naive), naive["completion_mask"])  # (2B,)
        scorer = PairScorer(model, tokenizer.pad_token_id, share_prompt=True)
        assert scorer.shared
        chosen, rejected = scorer(model, scorer.collate(pairs))
    assert torch.allclose(torch.cat([chosen, rejected]), expected, atol=1e-4, rtol=1e-5)
    packed = collate_shared_prompt(pairs, tokenizer.pad_token_id)
    n_naive = int(naive["attention_mask"].sum())
    n_packed = int((packed["input_ids"] != tokenizer.pad_token_id).sum())
    assert n_packed < n_naive  # the prompt is run once


def test_shared_prompt_and_concatenated_training_agree(tokenizer):
    records = _records(8)
    a, b = _model(tokenizer), _model(tokenizer)
    with _step_gradients() as grad_a:
        h_a = train_dpo(a, None, tokenizer, records, _dpo(max_steps=3, share_prompt=True))
    with _step_gradients() as grad_b:
        h_b = train_dpo(b, None, tokenizer, records, _dpo(max_steps=3, share_prompt=False))
    # The claim is the gradient (the weights after AdamW amplify rounding, see F64_WEIGHT_TOL; float64 does not help
    # here: HF's LlamaRMSNorm computes in float32 whatever the dtype, and the shared row adds the prompt's chosen and
    # rejected gradients before that cast, [chosen; rejected] after). Each entry of the first step's float32 gradient
    # sums ~200 terms (8 pairs x ~20 positions): rounding ~sqrt(200) x 1.2e-7 = 2e-6 of the largest entry, 2e-5 at
    # worst; 1e-5 of it (observed 2e-7 on 1 thread, 1.3e-7 on 2: 50x headroom; one dropped completion token: 0.26).
    gap = (grad_a[0] - grad_b[0]).abs().max().item()
    assert gap <= 1e-5 * grad_b[0].abs().max().item()
    # Adam's amplified moves are on ~0-gradient coordinates, which barely move the loss: observed <= 1.2e-7 after 2
    # updates (1 and 2 threads), a dropped token: 6e-2
    assert h_a[-1]["loss"] == pytest.approx(h_b[-1]["loss"], abs=1e-5)
    assert h_a[-1]["num_tokens"] == h_b[-1]["num_tokens"]


def test_bf16_autocast_runs_and_the_precision_can_change(tokenizer):
    """accelerate keeps one process-wide precision; train_* may switch it between runs (a notebook does)."""
    h16 = train_dpo(_model(tokenizer), None, tokenizer, _records(4), _dpo(max_steps=2, mixed_precision="bf16"))
    assert abs(h16[0]["loss"] - math.log(2)) < 1e-2  # bf16 log-probs round, so ln 2 only approximately
    h32 = train_dpo(_model(tokenizer), None, tokenizer, _records(4), _dpo(max_steps=1))
    assert abs(h32[0]["loss"] - math.log(2)) < 1e-5
