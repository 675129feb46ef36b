"""SFT and DPO training loops on ``accelerate``, a metric history, and exact resume.

It knows nothing about where the data comes from or what the model is: it takes records
(``prompt``/``chosen``/``rejected`` strings), a causal LM and its tokenizer, and a config.

- :class:`SFTConfig`, :class:`DPOConfig`: dataclasses with TRL's field names; ``DPOConfig.paper()`` and
  ``SFTConfig.paper()`` are the paper's settings (Appendix G).
- :func:`train_sft`: maximum likelihood on the chosen completions (prompt tokens masked out).
- :func:`train_dpo`: the DPO loss of :mod:`qstar_lib.dpo` on one forward pass per micro-batch, with the
  reference log-probs computed once for the whole data set before training. By default each pair is one
  row ``[prompt | chosen | rejected]`` with a block-causal mask (:func:`collate_shared_prompt`: the same
  log-probs as the ``[chosen; rejected]`` batch, with the prompt run once); ``share_prompt=False`` uses the
  ``[chosen; rejected]`` batch of the DPO reference code.
- Both return a :class:`History` (a list of metric dicts with TRL's keys, one per logged step) and save
  checkpoints through :mod:`qstar_lib.lm.checkpoint` (safetensors + JSON, no pickles). Resuming gives the same
  weights as an uninterrupted run, because the data order, optimizer, scheduler and RNG states are saved.

``accelerate`` places tensors on the device, handles mixed precision and, under ``accelerate launch``,
DDP/FSDP; gradient accumulation is done here explicitly (a weighted sum over micro-batches, so batch 4
equals 2 x 2 accumulation exactly for DPO and, for SFT, normalises by all completion tokens of the step).
"""

from __future__ import annotations

import dataclasses
import math
import random
import warnings
from collections.abc import Callable, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from qstar_lib.lm import checkpoint as ckpt
from qstar_lib.lm.collate import collate_pairs, collate_shared_prompt, encode_pairs, encode_sft, pad_batch, pad_token_id
from qstar_lib.data import validate_records
from qstar_lib.dpo import dpo_loss
from qstar_lib.lm.logps import per_token_logps, sequence_logps, shared_prompt_logps, supports_shared_prompt

OPTIMIZERS = ("adamw", "rmsprop")
SCHEDULERS = ("constant_with_warmup", "linear")
MIXED_PRECISION = ("no", "bf16", "fp16")

#: A callback gets the optimizer step just finished, that step's metrics and the (unwrapped) model.
Callback = Callable[[int, dict, torch.nn.Module], None]


# ----------------------------------------------------------------------------- configs


@dataclass
class TrainConfig:
    """Fields shared by SFT and DPO (TRL names). Sizes are for the caller to choose (see ``paper()``)."""

    output_dir: str | None = None  # where checkpoint-{step}/ folders go; None saves nothing
    learning_rate: float = 1e-5
    per_device_train_batch_size: int = 4  # sequences (SFT) or pairs (DPO) per micro-batch and device
    gradient_accumulation_steps: int = 1
    max_steps: int = -1  # > 0 overrides num_train_epochs
    num_train_epochs: float = 1.0
    warmup_steps: int = 0  # linear warm-up from 0
    lr_scheduler_type: str = "constant_with_warmup"  # the DPO reference code's schedule; or "linear" decay
    max_grad_norm: float | None = 10.0  # None: no clipping (the norm is still logged)
    optim: str = "adamw"  # "adamw" | "rmsprop"
    weight_decay: float = 0.0
    max_length: int = 512
    max_prompt_length: int | None = None
    seed: int = 0
    logging_steps: int = 1  # history gets the mean of each window of this many steps
    save_steps: int = 0  # save checkpoint-{step} every this many steps (0: only at the end, if output_dir)
    mixed_precision: str = "no"  # "no" | "bf16" | "fp16"
    disable_tqdm: bool = False

    def __post_init__(self) -> None:
        if self.optim not in OPTIMIZERS:
            raise ValueError(f"optim={self.optim!r}; choose one of {OPTIMIZERS}")
        if self.lr_scheduler_type not in SCHEDULERS:
            raise ValueError(f"lr_scheduler_type={self.lr_scheduler_type!r}; choose one of {SCHEDULERS}")
        if self.mixed_precision not in MIXED_PRECISION:
            raise ValueError(f"mixed_precision={self.mixed_precision!r}; choose one of {MIXED_PRECISION}")
        for name in ("per_device_train_batch_size", "gradient_accumulation_steps", "logging_steps", "max_length"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.learning_rate < 0:
            raise ValueError(f"learning_rate must be >= 0, got {self.learning_rate}")
        if self.max_steps <= 0 and self.num_train_epochs <= 0:
            raise ValueError("set max_steps > 0 or num_train_epochs > 0")
        if self.save_steps < 0 or self.warmup_steps < 0:
            raise ValueError("save_steps and warmup_steps must be >= 0")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class SFTConfig(TrainConfig):
    """Supervised fine-tuning on ``prompt + completion_field`` with the prompt masked out of the loss."""

    completion_field: str = "chosen"

    @classmethod
    def paper(cls, **overrides) -> SFTConfig:
        """The paper's SFT (Appendix G / DPO reference code): RMSprop, lr 5e-7, batch 64 x 2, clip 10, 512 tokens."""
        base = dict(
            optim="rmsprop", learning_rate=5e-7, per_device_train_batch_size=64, gradient_accumulation_steps=2,
            warmup_steps=150, max_grad_norm=10.0, max_length=512, num_train_epochs=1.0,
        )
        return cls(**{**base, **overrides})


@dataclass
class DPOConfig(TrainConfig):
    """DPO (eq. 4 / 9): beta, the loss variant, and how the reference log-probs are computed."""

    beta: float = 0.1
    loss_type: str = "sigmoid"  # "sigmoid" | "ipo" (see qstar_lib.dpo)
    label_smoothing: float = 0.0
    precompute_ref_batch_size: int | None = None  # default: 2 x per_device_train_batch_size
    share_prompt: bool = True  # one row [prompt | chosen | rejected] per pair (same numbers, fewer tokens)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.beta <= 0:
            raise ValueError(f"beta must be > 0, got {self.beta}")

    @classmethod
    def paper(cls, **overrides) -> DPOConfig:
        """The paper's DPO: beta 0.1, RMSprop, lr 5e-7, linear warm-up 150 steps, clip 10, batch 32 x 2, 512 tokens."""
        base = dict(
            optim="rmsprop", learning_rate=5e-7, per_device_train_batch_size=32, gradient_accumulation_steps=2,
            warmup_steps=150, max_grad_norm=10.0, beta=0.1, max_length=512, num_train_epochs=1.0,
        )
        return cls(**{**base, **overrides})


def config_from_dict(cls, values: Mapping) -> TrainConfig:
    """Rebuild a config from ``to_dict()`` output, ignoring keys the class does not have."""
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in values.items() if k in names})


# ----------------------------------------------------------------------------- history


class History(list):
    """Logged metrics, one dict per logged optimizer step (``step`` plus TRL's keys)."""

    def to_dataframe(self):
        """A pandas DataFrame indexed by ``step`` (what the notebooks plot)."""
        import pandas as pd

        frame = pd.DataFrame(list(self))
        return frame.set_index("step") if "step" in frame else frame

    def column(self, key: str) -> list[float]:
        """Values of one metric, in step order (rows without it are skipped)."""
        return [row[key] for row in self if key in row]


def history_to_dataframe(history: Sequence[Mapping]):
    """Turn a history (list of dicts with ``step``) into a pandas DataFrame indexed by step."""
    return History(history).to_dataframe()


# ----------------------------------------------------------------------------- shared machinery


def _make_optimizer(model: torch.nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters (all requires_grad=False)")
    if config.optim == "rmsprop":  # the DPO reference code: torch defaults besides lr
        return torch.optim.RMSprop(params, lr=config.learning_rate, weight_decay=config.weight_decay)
    try:  # the fused kernel (transformers' default "adamw_torch_fused"): ~5x faster than the per-tensor loop on a CPU
        return torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay, fused=True)
    except (RuntimeError, ValueError, TypeError):  # a device or dtype without a fused kernel
        return torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay)


def _lr_factor(step: int, config: TrainConfig, total_steps: int) -> float:
    """Multiplier of the learning rate at optimizer step ``step`` (0-based)."""
    warm = config.warmup_steps
    if warm and step < warm:  # linear warm-up, reaching 1 after `warm` steps, as in the DPO reference code
        return (step + 1) / (warm + 1)
    if config.lr_scheduler_type == "linear":
        return max(0.0, (total_steps - step) / max(1, total_steps - warm))
    return 1.0


def _set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def _epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The data order of one epoch: a permutation that depends only on (seed, epoch), (n,)."""
    gen = torch.Generator().manual_seed(seed * 100_003 + epoch)
    return torch.randperm(n, generator=gen)


@dataclass
class _Schedule:
    """Which records each optimizer step uses: a list of per-step global index lists."""

    steps_per_epoch: int
    total_steps: int
    global_batch: int
    n: int
    seed: int

    def indices(self, step: int) -> list[int]:
        epoch, within = divmod(step, self.steps_per_epoch)
        order = _epoch_order(self.n, self.seed, epoch)
        return order[within * self.global_batch : (within + 1) * self.global_batch].tolist()


def _make_schedule(n: int, config: TrainConfig, num_processes: int) -> _Schedule:
    if n == 0:
        raise ValueError("no training records")
    global_batch = config.per_device_train_batch_size * config.gradient_accumulation_steps * num_processes
    if num_processes > 1:  # every process needs a full share: the last partial batch is not used
        steps_per_epoch = n // global_batch
        if steps_per_epoch == 0:
            raise ValueError(f"{n} records < one global batch of {global_batch} on {num_processes} processes")
        if n % global_batch:
            warnings.warn(
                f"{n % global_batch} of {n} records per epoch are not used: {num_processes} processes need "
                f"full global batches of {global_batch}",
                stacklevel=3,
            )
    else:  # a single process uses every record (the last batch of an epoch may be smaller)
        steps_per_epoch = math.ceil(n / global_batch)
    if config.max_steps > 0:
        total = config.max_steps
    else:
        total = max(1, math.ceil(steps_per_epoch * config.num_train_epochs))
    return _Schedule(steps_per_epoch, total, global_batch, n, config.seed)


def _local_micro_batches(indices: list[int], config: TrainConfig, rank: int, world: int) -> list[list[int]]:
    """This process's share of one step's indices, cut into micro-batches."""
    share = indices[rank::world]
    b = config.per_device_train_batch_size
    return [share[i : i + b] for i in range(0, len(share), b)]


def _accelerator(config: TrainConfig):
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    try:
        accelerator = Accelerator(mixed_precision=config.mixed_precision)
    except ValueError:
        # accelerate keeps one process-wide state; a notebook that trains once in fp32 and then in bf16 would
        # otherwise need a restart. Only the precision is reset; the process group (if any) is kept.
        AcceleratorState._reset_state(reset_partial_state=False)
        accelerator = Accelerator(mixed_precision=config.mixed_precision)
    world = torch.distributed.get_world_size() if torch.distributed.is_available() and torch.distributed.is_initialized() else 1
    if world > accelerator.num_processes:
        # e.g. an FSDP config with use_cpu: accelerate starts the processes but falls back to distributed
        # type NO, and every process would silently train its own full copy on all the data
        raise RuntimeError(
            f"{world} processes were launched but accelerate set up {accelerator.num_processes} "
            f"(distributed_type={accelerator.distributed_type}); this launch config is not supported here "
            "(FSDP needs GPUs; on CPUs use distributed_type: MULTI_CPU)"
        )
    return accelerator


def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class _MetricWindow:
    """Averages each metric over a logging window (as TRL does); counters and the learning rate keep their last value."""

    LAST = ("num_tokens", "learning_rate")

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.last: dict[str, float] = {}
        self.count = 0

    def add(self, metrics: Mapping[str, float]) -> None:
        for k, v in metrics.items():
            if k in self.LAST:
                self.last[k] = float(v)
            else:
                self.sums[k] = self.sums.get(k, 0.0) + float(v)
        self.count += 1

    def flush(self) -> dict[str, float]:
        out = {k: v / self.count for k, v in self.sums.items()}
        out.update(self.last)
        self.sums, self.last, self.count = {}, {}, 0
        return out


def _run_loop(
    *,
    kind: str,
    model: torch.nn.Module,
    tokenizer: Any,
    config: TrainConfig,
    accelerator,
    n_records: int,
    micro_step: Callable[[torch.nn.Module, list[int], float], dict[str, torch.Tensor]],
    step_weight: Callable[[list[int]], float],
    extra_tensors: dict[str, torch.Tensor],
    callbacks: Sequence[Callback],
    resume_from: str | None,
) -> History:
    """The loop both trainers share: schedule, accumulation, clipping, logging, saving, resuming.

    ``micro_step(model, idx, weight)`` runs forward + backward on one micro-batch with its loss multiplied
    by ``weight`` and returns its metric *sums* (tensors) plus ``"count"``; ``step_weight(indices)`` gives
    the normaliser of a whole step (pairs for DPO, completion tokens for SFT) over all processes.
    """
    from tqdm.auto import tqdm

    world, rank = accelerator.num_processes, accelerator.process_index
    schedule = _make_schedule(n_records, config, world)
    model.to(accelerator.device)  # before the optimizer, so loaded optimizer state lands on the same device
    optimizer = _make_optimizer(model, config)
    history = History()
    start_step = 0
    tokens_seen = 0.0  # TRL's num_tokens: non-padding tokens seen so far

    if resume_from is not None:
        tensors, meta = ckpt.load_training_state(resume_from)
        if meta.get("kind") != kind:
            raise ValueError(f"{resume_from} is a {meta.get('kind')} checkpoint, not {kind}")
        if meta.get("optimizer") is None:
            raise ValueError(f"{resume_from} was saved under FSDP without optimizer state: it holds the weights "
                             "(load it as a model) but cannot resume a run")
        ckpt.load_model_weights(model, resume_from)
        optimizer.load_state_dict(ckpt.optimizer_state_from_flat(tensors, meta["optimizer"]))
        start_step = int(meta["step"])
        tokens_seen = float(meta.get("num_tokens", 0.0))
        history = History(meta.get("history", []))
        saved_order = tensors.get("data.order")
        if saved_order is not None and not torch.equal(
            saved_order, _epoch_order(n_records, config.seed, start_step // schedule.steps_per_epoch)
        ):
            raise ValueError(f"{resume_from}: the data order differs (other records, seed or batch size?)")
        ckpt.rng_state_from_flat(tensors, meta["rng"])

    was_training = model.training
    model, optimizer = accelerator.prepare(model, optimizer)
    model.train()
    unwrapped = accelerator.unwrap_model(model)
    window = _MetricWindow()

    def save(step: int) -> None:
        if not config.output_dir:
            return
        accelerator.wait_for_everyone()
        # Under FSDP the weights are sharded: gathering the full state dict is a collective every rank joins.
        # The optimizer moments stay sharded and are not written (resuming such a checkpoint is refused).
        sharded = str(accelerator.distributed_type).endswith("FSDP")
        full_state = accelerator.get_state_dict(model) if sharded else None
        if accelerator.is_main_process:
            opt_tensors, opt_meta = ({}, None) if sharded else ckpt.optimizer_state_to_flat(optimizer.state_dict())
            rng_tensors, rng_meta = ckpt.rng_state_to_flat()
            order = _epoch_order(n_records, config.seed, step // schedule.steps_per_epoch)
            tensors = {**opt_tensors, **rng_tensors, "data.order": order, **extra_tensors}
            meta = {
                "kind": kind, "step": step, "num_tokens": tokens_seen, "epoch": step / schedule.steps_per_epoch,
                "total_steps": schedule.total_steps, "optimizer": opt_meta, "rng": rng_meta,
                "config": config.to_dict(), "history": list(history),
            }
            folder = ckpt.checkpoint_dir(config.output_dir, step)
            ckpt.save_checkpoint(folder, accelerator.unwrap_model(model), tokenizer, tensors, meta, state_dict=full_state)
        accelerator.wait_for_everyone()

    bar = tqdm(
        total=schedule.total_steps, initial=start_step, desc=kind,
        disable=config.disable_tqdm or not accelerator.is_local_main_process,
    )
    for step in range(start_step, schedule.total_steps):
        lr = config.learning_rate * _lr_factor(step, config, schedule.total_steps)
        _set_lr(optimizer, lr)
        indices = schedule.indices(step)
        norm = step_weight(indices)
        micro = _local_micro_batches(indices, config, rank, world)
        sums: dict[str, torch.Tensor] = {}
        for i, idx in enumerate(micro):
            sync = nullcontext() if i == len(micro) - 1 else accelerator.no_sync(model)
            with sync:
                out = micro_step(model, idx, world / norm)  # DDP averages over processes: undo it
            for k, v in out.items():
                sums[k] = sums.get(k, 0) + v.detach().float()
        params = [p for p in model.parameters() if p.requires_grad]
        max_norm = config.max_grad_norm if config.max_grad_norm else float("inf")
        grad_norm = accelerator.clip_grad_norm_(params, max_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

        keys = sorted(sums)
        totals = accelerator.reduce(torch.stack([sums[k].to(accelerator.device) for k in keys]), "sum")
        totals = dict(zip(keys, totals.tolist()))
        tokens_seen += totals.pop("num_tokens")
        metrics = _finish_metrics(kind, totals)
        metrics["num_tokens"] = tokens_seen
        metrics["grad_norm"] = float(grad_norm)
        metrics["learning_rate"] = lr
        window.add(metrics)
        done = step + 1
        if done % config.logging_steps == 0 or done == schedule.total_steps:
            row = {"step": done, "epoch": done / schedule.steps_per_epoch, **window.flush()}
            history.append(row)
            bar.set_postfix(loss=f"{row['loss']:.4f}")
        for callback in callbacks:
            callback(done, metrics, unwrapped)
        if (config.save_steps and done % config.save_steps == 0) or done == schedule.total_steps:
            save(done)
        bar.update(1)
    bar.close()
    unwrapped.train(was_training)
    return history


def _finish_metrics(kind: str, totals: Mapping[str, float]) -> dict[str, float]:
    """Turn summed metrics into TRL's batch means."""
    if kind == "sft":
        return {"loss": totals["nll_sum"] / max(totals["tokens"], 1.0)}
    n = max(totals["count"], 1.0)
    chosen, rejected = totals["rewards/chosen"] / n, totals["rewards/rejected"] / n
    return {
        "loss": totals["loss"] / n,
        "rewards/chosen": chosen,
        "rewards/rejected": rejected,
        "rewards/margins": chosen - rejected,
        "rewards/accuracies": totals["rewards/accuracies"] / n,
        "logps/chosen": totals["logps/chosen"] / n,
        "logps/rejected": totals["logps/rejected"] / n,
    }


def _to_device(batch: Mapping[str, torch.Tensor], device) -> dict[str, torch.Tensor]:
    return {k: v.to(device) for k, v in batch.items()}


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
    validate_records(records, tokenizer=tokenizer, max_length=config.max_length,
                     max_prompt_length=config.max_prompt_length, fields=("prompt", config.completion_field))
    _seed_all(config.seed)
    encoded = encode_sft(
        records, tokenizer, max_length=config.max_length, max_prompt_length=config.max_prompt_length,
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
        return {"nll_sum": nll_sum, "tokens": batch["completion_mask"].sum(), "num_tokens": batch["attention_mask"].sum()}

    def step_weight(indices):
        return float(n_tokens[indices].sum())

    return _run_loop(
        kind="sft", model=model, tokenizer=tokenizer, config=config, accelerator=accelerator,
        n_records=len(encoded), micro_step=micro_step, step_weight=step_weight, extra_tensors={},
        callbacks=callbacks, resume_from=resume_from,
    )


# ----------------------------------------------------------------------------- DPO


def _pair_logps(model, batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed completion log-probs of a ``[chosen; rejected]`` batch: one forward, split in two (B,), (B,)."""
    per_token = per_token_logps(model, batch["input_ids"], batch["attention_mask"], batch["completion_mask"])
    per_token = per_token.to(torch.promote_types(per_token.dtype, torch.float32))  # float32 at least, float64 kept
    logps = sequence_logps(per_token, batch["completion_mask"])  # (2B,)
    return logps.chunk(2)


class _PairScorer:
    """Chooses the shared-prompt or the ``[chosen; rejected]`` path once per run and collates for it."""

    def __init__(self, model, pad_token_id: int, share_prompt: bool) -> None:
        self.pad_token_id = pad_token_id
        self.shared = share_prompt and supports_shared_prompt(model)

    def collate(self, pairs: Sequence[Mapping]) -> dict[str, torch.Tensor]:
        return collate_shared_prompt(pairs, self.pad_token_id) if self.shared else collate_pairs(pairs, self.pad_token_id)

    def __call__(self, model, batch) -> tuple[torch.Tensor, torch.Tensor]:
        return shared_prompt_logps(model, batch) if self.shared else _pair_logps(model, batch)


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
    autocast = accelerator.autocast if accelerator else nullcontext
    chunks = [order[lo : lo + batch_size] for lo in range(0, n, batch_size)][rank::world]
    scorer = _PairScorer(ref_model, pad_token_id, share_prompt)
    was_training = ref_model.training
    ref_model.eval()
    local: list[tuple[int, float, float]] = []
    try:
        with torch.inference_mode(), autocast():
            for chunk in tqdm(chunks, desc="reference log-probs", disable=not progress or rank != 0):
                batch = _to_device(scorer.collate([encoded_pairs[i] for i in chunk]), device)
                chosen, rejected = scorer(ref_model, batch)
                local += list(zip(chunk, chosen.tolist(), rejected.tolist()))
    finally:
        ref_model.train(was_training)
    rows = gather_object(local) if world > 1 else local
    ref_chosen = torch.zeros(n, dtype=torch.float64)
    ref_rejected = torch.zeros(n, dtype=torch.float64)
    for i, c, r in rows:
        ref_chosen[i], ref_rejected[i] = c, r
    return ref_chosen, ref_rejected


def train_dpo(
    model: torch.nn.Module,
    ref_model: torch.nn.Module | None,
    tokenizer: Any,
    records: Sequence[Mapping],
    config: DPOConfig,
    resume_from: str | None = None,
    callbacks: Sequence[Callback] = (),
) -> History:
    """Train ``model`` with DPO against ``ref_model`` on preference records ``{prompt, chosen, rejected}``.

    The reference log-probs of every pair are computed once, before the first update (with ``ref_model``,
    or with ``model`` itself when ``ref_model`` is None: before any update the policy *is* the reference, so
    no copy is needed). They are stored in each checkpoint, so resuming does not need the reference model.
    Each micro-batch is one forward over ``[chosen; rejected]`` (2B rows); the loss is
    :func:`qstar_lib.dpo.dpo_loss` averaged over the pairs of the optimizer step. At step 1 policy ==
    reference, so the logged loss is ln 2.

    Returns a :class:`History` with TRL's keys: ``loss``, ``rewards/chosen``, ``rewards/rejected``,
    ``rewards/margins``, ``rewards/accuracies``, ``logps/chosen``, ``logps/rejected``, ``grad_norm``,
    ``learning_rate`` (plus ``step`` and ``epoch``).
    """
    if not isinstance(config, DPOConfig):
        raise TypeError(f"config must be a DPOConfig, got {type(config).__name__}")
    validate_records(records, tokenizer=tokenizer, max_length=config.max_length,
                     max_prompt_length=config.max_prompt_length)
    _seed_all(config.seed)
    encoded = encode_pairs(records, tokenizer, max_length=config.max_length, max_prompt_length=config.max_prompt_length)
    pad_id = pad_token_id(tokenizer)
    accelerator = _accelerator(config)

    if resume_from is not None:
        tensors, _ = ckpt.load_training_state(resume_from)
        if "ref.chosen_logps" not in tensors:
            raise KeyError(f"{resume_from} holds no reference log-probs (ref.chosen_logps)")
        ref_chosen, ref_rejected = tensors["ref.chosen_logps"], tensors["ref.rejected_logps"]
        if len(ref_chosen) != len(encoded):
            raise ValueError(f"{resume_from} has reference log-probs for {len(ref_chosen)} pairs, got {len(encoded)}")
    else:
        reference = model if ref_model is None else ref_model
        reference.to(accelerator.device)
        ref_chosen, ref_rejected = precompute_ref_logps(
            reference, encoded, pad_id, config.precompute_ref_batch_size or 2 * config.per_device_train_batch_size,
            accelerator=accelerator, progress=not config.disable_tqdm, share_prompt=config.share_prompt,
        )
    scorer = _PairScorer(model, pad_id, config.share_prompt)

    def micro_step(model, idx, weight):
        batch = _to_device(scorer.collate([encoded[i] for i in idx]), accelerator.device)
        with accelerator.autocast():
            chosen_logps, rejected_logps = scorer(model, batch)  # (b,), (b,)
        ref_c = ref_chosen[idx].to(chosen_logps)  # (b,)
        ref_r = ref_rejected[idx].to(chosen_logps)  # (b,)
        losses, chosen_rewards, rejected_rewards = dpo_loss(
            chosen_logps, rejected_logps, ref_c, ref_r, beta=config.beta, loss_type=config.loss_type,
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
            "num_tokens": torch.tensor(float(sum(len(encoded[i]["chosen_input_ids"]) + len(encoded[i]["rejected_input_ids"])
                                                 for i in idx))),
        }

    def step_weight(indices):
        return float(len(indices))

    extra = {"ref.chosen_logps": ref_chosen, "ref.rejected_logps": ref_rejected}
    return _run_loop(
        kind="dpo", model=model, tokenizer=tokenizer, config=config, accelerator=accelerator,
        n_records=len(encoded), micro_step=micro_step, step_weight=step_weight, extra_tensors=extra,
        callbacks=callbacks, resume_from=resume_from,
    )
