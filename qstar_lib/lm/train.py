"""SFT and DPO training loops on ``accelerate``, a metric history, and exact resume.

It knows nothing about where the data comes from or what the model is: it takes records
(``prompt``/``chosen``/``rejected`` strings), a causal LM and its tokenizer, and a config.

- :class:`SFTConfig`, :class:`DPOConfig` (:mod:`qstar_lib.lm.train_config`, importable from here too):
  dataclasses with TRL's field names; ``DPOConfig.paper()`` and ``SFTConfig.paper()`` are the paper's
  settings (Appendix G).
- :func:`train_sft`: maximum likelihood on the chosen completions (prompt tokens masked out).
- :func:`train_dpo`: the DPO loss of :mod:`qstar_lib.dpo` on one forward pass per micro-batch, with the
  reference log-probs computed once for the whole data set before training. By default each pair is one
  row ``[prompt | chosen | rejected]`` with a block-causal mask (:func:`collate_shared_prompt`: the same
  log-probs as the ``[chosen; rejected]`` batch, with the prompt run once); ``share_prompt=False`` uses the
  ``[chosen; rejected]`` batch of the DPO reference code. Both routes are :class:`qstar_lib.lm.logps.PairScorer`.
- Both return a :class:`History` (a list of metric dicts with TRL's keys, one per logged step) and save
  checkpoints through :mod:`qstar_lib.lm.checkpoint` (safetensors + JSON, no pickles). Resuming gives the same
  weights as an uninterrupted run, because the data order, optimizer, scheduler and RNG states are saved.

The optimizer loop both share is :mod:`qstar_lib.lm.loop`. ``accelerate`` places tensors on the device,
handles mixed precision and, under ``accelerate launch``, DDP/FSDP; gradient accumulation is done explicitly
(a weighted sum over micro-batches, so batch 4 equals 2 x 2 accumulation exactly for DPO and, for SFT,
normalises by all completion tokens of the step).

Size exception: train_dpo -- resume, reference precompute and the micro-step closure of one run; split next
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from typing import Any

import torch

from qstar_lib.data import validate_records
from qstar_lib.dpo import dpo_loss
from qstar_lib.lm import checkpoint as ckpt
from qstar_lib.lm.collate import encode_pairs, encode_sft, pad_batch, pad_token_id
from qstar_lib.lm.logps import PairScorer, per_token_logps
from qstar_lib.lm.loop import Callback, _accelerator, _run_loop, _seed_all, _to_device
from qstar_lib.lm.models import eval_mode
from qstar_lib.lm.train_config import (  # noqa: F401  (the configs are importable from here, as before)
    MIXED_PRECISION,
    OPTIMIZERS,
    SCHEDULERS,
    DPOConfig,
    History,
    SFTConfig,
    TrainConfig,
)

# ----------------------------------------------------------------------------- SFT


def train_sft(
    model: torch.nn.Module,
    tokenizer: Any,
    records: Sequence[Mapping],
    config: SFTConfig,
    resume_from: str | None = None,
    callbacks: Sequence[Callback] = (),
) -> History:
    """Fine-tune ``model`` on ``prompt + record[config.completion_field]`` (the chosen response).

    The loss is the negative log-likelihood of the completion tokens (and the EOS) only; prompt tokens
    carry ``completion_mask = 0`` and contribute nothing. With gradient accumulation the sum is divided by
    the number of completion tokens of the whole optimizer step, so accumulation equals one big batch.

    Returns a :class:`History` with ``loss``, ``num_tokens``, ``grad_norm``, ``learning_rate``, ``epoch``.
    """
    if not isinstance(config, SFTConfig):
        raise TypeError(f"config must be an SFTConfig, got {type(config).__name__}")
    validate_records(
        records,
        tokenizer=tokenizer,
        max_length=config.max_length,
        max_prompt_length=config.max_prompt_length,
        fields=("prompt", config.completion_field),
    )
    _seed_all(config.seed)
    encoded = encode_sft(
        records,
        tokenizer,
        max_length=config.max_length,
        max_prompt_length=config.max_prompt_length,
        field=config.completion_field,
    )
    n_tokens = torch.tensor([sum(e["completion_mask"]) for e in encoded], dtype=torch.float64)  # (N,)
    pad_id = pad_token_id(tokenizer)
    accelerator = _accelerator(config)

    def micro_step(model, idx, weight):
        batch = _to_device(pad_batch([encoded[i] for i in idx], pad_id), accelerator.device)
        with accelerator.autocast():
            logps = per_token_logps(model, **batch)  # (b, T), 0 off the completion
            nll_sum = -logps.to(torch.promote_types(logps.dtype, torch.float32)).sum()  # float32 at least, float64 kept
        accelerator.backward(nll_sum * weight)
        return {
            "nll_sum": nll_sum,
            "tokens": batch["completion_mask"].sum(),
            "num_tokens": batch["attention_mask"].sum(),
        }

    def step_weight(indices):
        return float(n_tokens[indices].sum())

    return _run_loop(
        kind="sft",
        model=model,
        tokenizer=tokenizer,
        config=config,
        accelerator=accelerator,
        n_records=len(encoded),
        micro_step=micro_step,
        step_weight=step_weight,
        extra_tensors={},
        callbacks=callbacks,
        resume_from=resume_from,
    )


# ----------------------------------------------------------------------------- DPO


def precompute_ref_logps(
    ref_model: torch.nn.Module,
    encoded_pairs: Sequence[Mapping],
    pad_token_id: int,
    batch_size: int = 8,
    accelerator=None,
    progress: bool = True,
    share_prompt: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference log-probs of every pair, once, before training: (N,) chosen and (N,) rejected.

    Runs under ``torch.inference_mode`` in batches of pairs sorted by length (less padding), then puts the
    values back in record order. Under several processes each computes a share and the shares are gathered.
    """
    from accelerate.utils import gather_object
    from tqdm.auto import tqdm

    n = len(encoded_pairs)
    lengths = [max(len(p["chosen_input_ids"]), len(p["rejected_input_ids"])) for p in encoded_pairs]
    order = sorted(range(n), key=lambda i: lengths[i])
    rank, world = (accelerator.process_index, accelerator.num_processes) if accelerator else (0, 1)
    device = accelerator.device if accelerator else next(ref_model.parameters()).device
    # bf16 autocast as in training; never fp16: Pythia's reference log-probs overflow in it (DPO repo issue #11)
    autocast = accelerator.autocast if accelerator and accelerator.mixed_precision == "bf16" else nullcontext
    chunks = [order[lo : lo + batch_size] for lo in range(0, n, batch_size)][rank::world]
    scorer = PairScorer(ref_model, pad_token_id, share_prompt)
    local: list[tuple[int, float, float]] = []
    with eval_mode(ref_model), torch.inference_mode(), autocast():
        for chunk in tqdm(chunks, desc="reference log-probs", disable=not progress or rank != 0):
            batch = _to_device(scorer.collate([encoded_pairs[i] for i in chunk]), device)
            chosen, rejected = scorer(ref_model, batch)
            local += list(zip(chunk, chosen.tolist(), rejected.tolist()))
    rows = gather_object(local) if world > 1 else local
    ref_chosen = torch.zeros(n, dtype=torch.float64)
    ref_rejected = torch.zeros(n, dtype=torch.float64)
    for i, c, r in rows:
        ref_chosen[i], ref_rejected[i] = c, r
    return ref_chosen, ref_rejected


def saved_ref_logps(resume_from: str, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference log-probs stored in a checkpoint, (n,) chosen and (n,) rejected."""
    tensors, _ = ckpt.load_training_state(resume_from)
    if "ref.chosen_logps" not in tensors:
        raise KeyError(f"{resume_from} holds no reference log-probs (ref.chosen_logps)")
    ref_chosen, ref_rejected = tensors["ref.chosen_logps"], tensors["ref.rejected_logps"]
    if len(ref_chosen) != n:
        raise ValueError(f"{resume_from} has reference log-probs for {len(ref_chosen)} pairs, got {n}")
    return ref_chosen, ref_rejected


def _release(ref_model: torch.nn.Module) -> None:
    """Move a separate reference model off the accelerator once its log-probs are cached (11 GB for a 2.8B
    model in float32 would otherwise stay on every GPU for the whole run)."""
    device = next(ref_model.parameters(), torch.empty(0)).device
    if device.type != "cpu":
        ref_model.to("cpu")
        if device.type == "cuda":
            torch.cuda.empty_cache()


def train_dpo(
    model: torch.nn.Module,
    ref_model: torch.nn.Module | None,
    tokenizer: Any,
    records: Sequence[Mapping],
    config: DPOConfig,
    resume_from: str | None = None,
    callbacks: Sequence[Callback] = (),
    ref_logps: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> History:
    """Train ``model`` with DPO against ``ref_model`` on preference records ``{prompt, chosen, rejected}``.

    The reference log-probs of every pair are computed once, before the first update (with ``ref_model``,
    or with ``model`` itself when ``ref_model`` is None: before any update the policy *is* the reference, so
    no copy is needed). They are stored in each checkpoint, so resuming does not need the reference model;
    a separate ``ref_model`` is moved to the CPU once they are computed. ``ref_logps`` (chosen, rejected),
    each (N,) in record order, are reference log-probs computed elsewhere (the same reference on the same
    texts, e.g. by another run): they replace the precompute, and ``ref_model`` is then not used.
    Each micro-batch is one forward over ``[chosen; rejected]`` (2B rows); the loss is
    :func:`qstar_lib.dpo.dpo_loss` averaged over the pairs of the optimizer step. At step 1 policy ==
    reference, so the logged loss is ln 2.

    Returns a :class:`History` with TRL's keys: ``loss``, ``rewards/chosen``, ``rewards/rejected``,
    ``rewards/margins``, ``rewards/accuracies``, ``logps/chosen``, ``logps/rejected``, ``grad_norm``,
    ``learning_rate`` (plus ``step`` and ``epoch``).
    """
    if not isinstance(config, DPOConfig):
        raise TypeError(f"config must be a DPOConfig, got {type(config).__name__}")
    validate_records(
        records, tokenizer=tokenizer, max_length=config.max_length, max_prompt_length=config.max_prompt_length
    )
    _seed_all(config.seed)
    encoded = encode_pairs(records, tokenizer, max_length=config.max_length, max_prompt_length=config.max_prompt_length)
    pad_id = pad_token_id(tokenizer)
    accelerator = _accelerator(config)

    if resume_from is not None:
        ref_chosen, ref_rejected = saved_ref_logps(resume_from, len(encoded))
    elif ref_logps is not None:
        ref_chosen, ref_rejected = (torch.as_tensor(t, dtype=torch.float64) for t in ref_logps)
        if ref_chosen.shape != (len(encoded),) or ref_rejected.shape != (len(encoded),):
            raise ValueError(
                f"ref_logps: shapes {tuple(ref_chosen.shape)} and {tuple(ref_rejected.shape)}, expected "
                f"({len(encoded)},) each (one value per record)"
            )
    else:
        reference = model if ref_model is None else ref_model
        reference.to(accelerator.device)
        ref_chosen, ref_rejected = precompute_ref_logps(
            reference,
            encoded,
            pad_id,
            config.precompute_ref_batch_size or 2 * config.per_device_train_batch_size,
            accelerator=accelerator,
            progress=not config.disable_tqdm,
            share_prompt=config.share_prompt,
        )
        if ref_model is not None:
            _release(ref_model)
    scorer = PairScorer(model, pad_id, config.share_prompt)

    def micro_step(model, idx, weight):
        batch = _to_device(scorer.collate([encoded[i] for i in idx]), accelerator.device)
        with accelerator.autocast():
            chosen_logps, rejected_logps = scorer(model, batch)  # (b,), (b,)
        ref_c = ref_chosen[idx].to(chosen_logps)  # (b,)
        ref_r = ref_rejected[idx].to(chosen_logps)  # (b,)
        losses, chosen_rewards, rejected_rewards = dpo_loss(
            chosen_logps,
            rejected_logps,
            ref_c,
            ref_r,
            beta=config.beta,
            loss_type=config.loss_type,
            label_smoothing=config.label_smoothing,
        )
        accelerator.backward(losses.sum() * weight)
        return {
            "count": torch.tensor(float(len(idx))),
            "loss": losses.sum(),
            "rewards/chosen": chosen_rewards.sum(),
            "rewards/rejected": rejected_rewards.sum(),
            "rewards/accuracies": (chosen_rewards > rejected_rewards).float().sum(),
            "logps/chosen": chosen_logps.detach().sum(),
            "logps/rejected": rejected_logps.detach().sum(),
            # TRL's count: the tokens of the [chosen; rejected] rows (the prompt twice), whatever the packing
            "num_tokens": torch.tensor(
                float(sum(len(encoded[i]["chosen_input_ids"]) + len(encoded[i]["rejected_input_ids"]) for i in idx))
            ),
        }

    def step_weight(indices):
        return float(len(indices))

    extra = {"ref.chosen_logps": ref_chosen, "ref.rejected_logps": ref_rejected}
    return _run_loop(
        kind="dpo",
        model=model,
        tokenizer=tokenizer,
        config=config,
        accelerator=accelerator,
        n_records=len(encoded),
        micro_step=micro_step,
        step_weight=step_weight,
        extra_tensors=extra,
        callbacks=callbacks,
        resume_from=resume_from,
    )
