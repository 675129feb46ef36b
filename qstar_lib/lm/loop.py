"""The optimizer loop the SFT and DPO trainers share, on ``accelerate``: schedule, gradient accumulation,
clipping, logging, checkpoints and exact resume.

:func:`_run_loop` is handed a ``micro_step`` (forward + backward of one micro-batch, returning metric sums)
and a ``step_weight`` (the normaliser of a whole step) by :mod:`qstar_lib.lm.train`; everything else about an
optimizer step lives here. The data order of an epoch depends only on (seed, epoch) (:func:`_epoch_order`),
and every checkpoint holds the optimizer, RNG states and data order, so a resumed run gives the weights of
an uninterrupted one.

It knows nothing about losses or data: indices in, metric sums out.

Size exception: module -- the loop, its schedule, metric window and checkpoint pruning share the accelerate state; split next
"""

from __future__ import annotations

import math
import random
import warnings
from collections.abc import Callable, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from qstar_lib import scale
from qstar_lib.lm import checkpoint as ckpt
from qstar_lib.lm.models import train_mode
from qstar_lib.lm.train_config import History, TrainConfig

#: A callback gets the optimizer step just finished, that step's metrics and the (unwrapped) model.
Callback = Callable[[int, dict, torch.nn.Module], None]


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
    """The Accelerator of a run: on the CPU when the scale says so (ci/cpu scales, even with a GPU), with the
    config's precision or, left None, the launcher's (``accelerate launch --mixed_precision``, its config file)
    or bf16 on a GPU with native bf16 (:func:`qstar_lib.scale.mixed_precision`)."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    on_cpu = scale.device() == "cpu"
    precision = config.mixed_precision or scale.mixed_precision("cpu" if on_cpu else None)
    try:
        accelerator = Accelerator(mixed_precision=precision, cpu=on_cpu)
    except ValueError:
        # accelerate keeps one process-wide state; a notebook that trains once in fp32 and then in bf16 would
        # otherwise need a restart. Only the precision is reset; the process group (if any) is kept.
        AcceleratorState._reset_state(reset_partial_state=False)
        accelerator = Accelerator(mixed_precision=precision, cpu=on_cpu)
    world = (
        torch.distributed.get_world_size()
        if torch.distributed.is_available() and torch.distributed.is_initialized()
        else 1
    )
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
    """Averages each metric over a logging window (as TRL does); counters and the learning rate keep their last value.

    Values may be device tensors: they are summed where they are and read (one device sync) only in :meth:`flush`.
    """

    LAST = ("num_tokens", "learning_rate")

    def __init__(self) -> None:
        self.sums: dict[str, Any] = {}
        self.last: dict[str, Any] = {}
        self.count = 0

    def add(self, metrics: Mapping[str, Any]) -> None:
        for k, v in metrics.items():
            if k in self.LAST:
                self.last[k] = v
            else:
                self.sums[k] = self.sums.get(k, 0.0) + v
        self.count += 1

    def flush(self) -> dict[str, float]:
        values = {k: v / self.count for k, v in self.sums.items()}
        values.update(self.last)
        self.sums, self.last, self.count = {}, {}, 0
        return _as_floats(values)


def _as_floats(values: Mapping[str, Any]) -> dict[str, float]:
    """Python floats of scalars and 0-dim tensors, the tensors read in one device sync."""
    out = {k: float(v) for k, v in values.items() if not isinstance(v, torch.Tensor)}
    keys = [k for k, v in values.items() if isinstance(v, torch.Tensor)]
    if keys:
        # a DTensor (FSDP's grad norm) is made whole first
        parts = [getattr(values[k], "full_tensor", lambda t=values[k]: t)().detach().double().reshape(()) for k in keys]
        stacked = torch.stack([t.to(parts[0].device) for t in parts])
        out.update(zip(keys, stacked.tolist()))
    return {k: out[k] for k in values}


def _resume(
    resume_from: str,
    kind: str,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    config: TrainConfig,
    schedule: _Schedule,
) -> tuple[int, float, History]:
    """Load a checkpoint of the same run into ``model``, ``optimizer`` and the RNGs.

    Returns the step to continue from, the tokens seen so far and the history up to that step.
    """
    tensors, meta = ckpt.load_training_state(resume_from)
    if meta.get("kind") != kind:
        raise ValueError(f"{resume_from} is a {meta.get('kind')} checkpoint, not {kind}")
    if meta.get("optimizer") is None:
        raise ValueError(
            f"{resume_from} was saved under FSDP without optimizer state: it holds the weights "
            "(load it as a model) but cannot resume a run"
        )
    ckpt.load_model_weights(model, resume_from)
    optimizer.load_state_dict(ckpt.optimizer_state_from_flat(tensors, meta["optimizer"]))
    start_step = int(meta["step"])
    tokens_seen = float(meta.get("num_tokens", 0.0))
    history = History(meta.get("history", []))
    saved_order = tensors.get("data.order")
    if saved_order is not None and not torch.equal(
        saved_order, _epoch_order(schedule.n, config.seed, start_step // schedule.steps_per_epoch)
    ):
        raise ValueError(f"{resume_from}: the data order differs (other records, seed or batch size?)")
    ckpt.rng_state_from_flat(tensors, meta["rng"])
    return start_step, tokens_seen, history


def _save(
    step: int,
    *,
    kind: str,
    model,
    optimizer: torch.optim.Optimizer,
    tokenizer: Any,
    config: TrainConfig,
    accelerator,
    schedule: _Schedule,
    tokens_seen: float,
    history: History,
    extra_tensors: dict[str, torch.Tensor],
) -> None:
    """Write ``checkpoint-{step}`` under ``config.output_dir`` (nothing without one), every rank joining."""
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
        order = _epoch_order(schedule.n, config.seed, step // schedule.steps_per_epoch)
        tensors = {**opt_tensors, **rng_tensors, "data.order": order, **extra_tensors}
        meta = {
            "kind": kind,
            "step": step,
            "num_tokens": tokens_seen,
            "epoch": step / schedule.steps_per_epoch,
            "total_steps": schedule.total_steps,
            "optimizer": opt_meta,
            "rng": rng_meta,
            "config": config.to_dict(),
            "history": list(history),
        }
        folder = ckpt.checkpoint_dir(config.output_dir, step)
        ckpt.save_checkpoint(folder, accelerator.unwrap_model(model), tokenizer, tensors, meta, state_dict=full_state)
        if config.save_total_limit:
            ckpt.prune_checkpoints(config.output_dir, config.save_total_limit)
    accelerator.wait_for_everyone()


def _accumulate_and_step(
    model,
    optimizer: torch.optim.Optimizer,
    accelerator,
    config: TrainConfig,
    micro: list[list[int]],
    micro_step,
    weight: float,
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Forward + backward on every micro-batch of one step (gradients synced on the last), clip, update.

    Returns the summed metrics of the micro-batches and the gradient norm before clipping."""
    sums: dict[str, torch.Tensor] = {}
    for i, idx in enumerate(micro):
        sync = nullcontext() if i == len(micro) - 1 else accelerator.no_sync(model)
        with sync:
            out = micro_step(model, idx, weight)
        for k, v in out.items():
            sums[k] = sums.get(k, 0) + v.detach().float()
    params = [p for p in model.parameters() if p.requires_grad]
    max_norm = config.max_grad_norm if config.max_grad_norm else float("inf")
    grad_norm = accelerator.clip_grad_norm_(params, max_norm)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return sums, grad_norm


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
    config = config.resolve_batch(accelerator.num_processes)  # a global_train_batch_size fixes the accumulation
    schedule = _make_schedule(n_records, config, accelerator.num_processes)
    if accelerator.is_main_process and not config.disable_tqdm:
        print(  # two short lines: they show in the book's cell outputs
            f"{kind}: global batch {schedule.global_batch} = {config.per_device_train_batch_size} per device"
            f" x {config.gradient_accumulation_steps} accumulation x {accelerator.num_processes} processes\n"
            f"{kind}: mixed precision {accelerator.mixed_precision}, device {accelerator.device}"
        )
    model.to(accelerator.device)  # before the optimizer, so loaded optimizer state lands on the same device
    checkpointing = config.gradient_checkpointing and not _checkpointing(model, None)
    if checkpointing:
        _checkpointing(model, True)
    optimizer = _make_optimizer(model, config)
    history = History()
    start_step = 0
    tokens_seen = 0.0  # TRL's num_tokens: non-padding tokens seen so far

    if resume_from is not None:
        start_step, tokens_seen, history = _resume(resume_from, kind, model, optimizer, config, schedule)

    with train_mode(model):  # the caller's mode comes back afterwards
        model, optimizer = accelerator.prepare(model, optimizer)
        model.train()
        _steps(
            kind=kind,
            model=model,
            optimizer=optimizer,
            tokenizer=tokenizer,
            config=config,
            accelerator=accelerator,
            schedule=schedule,
            micro_step=micro_step,
            step_weight=step_weight,
            extra_tensors=extra_tensors,
            callbacks=callbacks,
            start_step=start_step,
            tokens_seen=tokens_seen,
            history=history,
        )
    if checkpointing:
        _checkpointing(accelerator.unwrap_model(model), False)
    return history


def _checkpointing(model: torch.nn.Module, enable: bool | None) -> bool:
    """Read (``enable=None``) or switch transformers' activation (gradient) checkpointing, by either API name."""
    new = hasattr(model, "activation_checkpointing_enable")
    if enable is None:
        return bool(getattr(model, "is_activation_checkpointing" if new else "is_gradient_checkpointing", False))
    if enable:
        if new:
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    else:
        (model.activation_checkpointing_disable if new else model.gradient_checkpointing_disable)()
    return enable


def _steps(
    *,
    kind: str,
    model,
    optimizer: torch.optim.Optimizer,
    tokenizer: Any,
    config: TrainConfig,
    accelerator,
    schedule: _Schedule,
    micro_step,
    step_weight,
    extra_tensors: dict[str, torch.Tensor],
    callbacks: Sequence[Callback],
    start_step: int,
    tokens_seen: float,
    history: History,
) -> None:
    """The optimizer steps ``start_step .. total_steps`` of :func:`_run_loop`, appending to ``history``."""
    from tqdm.auto import tqdm

    world, rank = accelerator.num_processes, accelerator.process_index
    unwrapped = accelerator.unwrap_model(model)
    window = _MetricWindow()

    bar = tqdm(
        total=schedule.total_steps,
        initial=start_step,
        desc=kind,
        disable=config.disable_tqdm or not accelerator.is_local_main_process,
    )
    for step in range(start_step, schedule.total_steps):
        lr = config.learning_rate * _lr_factor(step, config, schedule.total_steps)
        _set_lr(optimizer, lr)
        indices = schedule.indices(step)
        norm = step_weight(indices)
        micro = _local_micro_batches(indices, config, rank, world)
        sums, grad_norm = _accumulate_and_step(
            model, optimizer, accelerator, config, micro, micro_step, world / norm
        )  # DDP averages over processes: undo it

        keys = sorted(sums)
        # the metrics stay device tensors (no sync per step); they are read once per logged step
        totals = accelerator.reduce(torch.stack([sums[k].to(accelerator.device) for k in keys]), "sum")
        totals = dict(zip(keys, totals.unbind()))
        tokens_seen = totals.pop("num_tokens") + tokens_seen
        metrics = _finish_metrics(kind, totals)
        metrics["num_tokens"] = tokens_seen
        metrics["grad_norm"] = grad_norm
        metrics["learning_rate"] = lr
        window.add(metrics)
        done = step + 1
        if done % config.logging_steps == 0 or done == schedule.total_steps:
            row = {"step": done, "epoch": done / schedule.steps_per_epoch, **window.flush()}
            history.append(row)
            bar.set_postfix(loss=f"{row['loss']:.4f}")
        if callbacks:
            metrics = _as_floats(metrics)
        for callback in callbacks:
            callback(done, metrics, unwrapped)
        if (config.save_steps and done % config.save_steps == 0) or done == schedule.total_steps:
            _save(
                done,
                kind=kind,
                model=model,
                optimizer=optimizer,
                tokenizer=tokenizer,
                config=config,
                accelerator=accelerator,
                schedule=schedule,
                tokens_seen=float(tokens_seen),
                history=history,
                extra_tensors=extra_tensors,
            )
        bar.update(1)
    bar.close()


def _finish_metrics(kind: str, totals: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Turn summed metrics into TRL's batch means."""
    if kind == "sft":
        return {"loss": totals["nll_sum"] / totals["tokens"].clamp(min=1.0)}
    n = totals["count"].clamp(min=1.0)
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


def _to_device(batch: Mapping[str, Any], device) -> dict[str, Any]:
    """The batch's tensors on ``device``; other entries (a collate's ``logits_from`` int) as they are."""
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
