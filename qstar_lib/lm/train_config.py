"""The configs of the training loops (TRL's field names, the paper's presets) and their metric history.

- :class:`TrainConfig`: the fields SFT and DPO share; :class:`SFTConfig`, :class:`DPOConfig` add theirs, and
  ``SFTConfig.paper()`` / ``DPOConfig.paper()`` are the paper's settings (Appendix G).
- :class:`History`: what :func:`qstar_lib.lm.train.train_sft` and :func:`qstar_lib.lm.train.train_dpo`
  return, one dict of TRL's metric keys per logged optimizer step.

Plain dataclasses: it knows nothing about models, data or devices.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

OPTIMIZERS = ("adamw", "rmsprop")
SCHEDULERS = ("constant_with_warmup", "linear")
MIXED_PRECISION = ("no", "bf16", "fp16")


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
    save_total_limit: int | None = None  # keep only the newest this many checkpoint-*/ (None: all)
    # None: the launcher's (`accelerate launch --mixed_precision`, its config file), else bf16 on a GPU with
    # native bf16 (qstar_lib.scale.mixed_precision); "no" | "bf16" | "fp16" forces one
    mixed_precision: str | None = None
    # Set: the pairs (sequences) of one optimizer step over ALL processes; gradient_accumulation_steps is then
    # derived from it and the number of processes (resolve_batch). None: TRL's per-device semantics.
    global_train_batch_size: int | None = None
    gradient_checkpointing: bool = False  # recompute activations in the backward (less memory, ~1/3 slower)
    disable_tqdm: bool = False

    def __post_init__(self) -> None:
        if self.optim not in OPTIMIZERS:
            raise ValueError(f"optim={self.optim!r}; choose one of {OPTIMIZERS}")
        if self.lr_scheduler_type not in SCHEDULERS:
            raise ValueError(f"lr_scheduler_type={self.lr_scheduler_type!r}; choose one of {SCHEDULERS}")
        if self.mixed_precision is not None and self.mixed_precision not in MIXED_PRECISION:
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
        for name in ("global_train_batch_size", "save_total_limit"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1 or None, got {getattr(self, name)}")

    def resolve_batch(self, num_processes: int) -> TrainConfig:
        """The config a run on ``num_processes`` uses: itself, or with ``global_train_batch_size`` set, a copy
        whose ``gradient_accumulation_steps`` (and, when it alone is too big, ``per_device_train_batch_size``)
        give exactly that global batch: per-device x accumulation x processes == global_train_batch_size.
        Raises ValueError for a combination that does not divide."""
        if num_processes < 1:
            raise ValueError(f"num_processes must be >= 1, got {num_processes}")
        total = self.global_train_batch_size
        if total is None:
            return self
        if total % num_processes:
            raise ValueError(f"global_train_batch_size={total} does not split over {num_processes} processes")
        share = total // num_processes
        per_device = min(self.per_device_train_batch_size, share)
        if share % per_device:
            raise ValueError(
                f"global_train_batch_size={total} on {num_processes} processes is {share} per process, "
                f"not a multiple of per_device_train_batch_size={per_device}"
            )
        return dataclasses.replace(
            self, per_device_train_batch_size=per_device, gradient_accumulation_steps=share // per_device
        )

    def global_batch(self, num_processes: int) -> int:
        """Pairs (sequences) per optimizer step over all processes (TRL's per-device semantics)."""
        return self.per_device_train_batch_size * self.gradient_accumulation_steps * num_processes

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class SFTConfig(TrainConfig):
    """Supervised fine-tuning on ``prompt + completion_field`` with the prompt masked out of the loss."""

    completion_field: str = "chosen"

    @classmethod
    def paper(cls, **overrides) -> SFTConfig:
        """The paper's SFT (Appendix G / DPO reference code): RMSprop, lr 5e-7, batch 64 x 2, clip 10, 512 tokens.

        The global batch (128 sequences) holds on any number of processes (``global_train_batch_size``)."""
        base = dict(
            optim="rmsprop",
            learning_rate=5e-7,
            per_device_train_batch_size=64,
            gradient_accumulation_steps=2,
            global_train_batch_size=128,
            warmup_steps=150,
            max_grad_norm=10.0,
            max_length=512,
            num_train_epochs=1.0,
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
        """The paper's DPO: beta 0.1, RMSprop, lr 5e-7, linear warm-up 150 steps, clip 10, batch 32 x 2, 512 tokens.

        The global batch (64 pairs) holds on any number of processes (``global_train_batch_size``)."""
        base = dict(
            optim="rmsprop",
            learning_rate=5e-7,
            per_device_train_batch_size=32,
            gradient_accumulation_steps=2,
            global_train_batch_size=64,
            warmup_steps=150,
            max_grad_norm=10.0,
            beta=0.1,
            max_length=512,
            num_train_epochs=1.0,
        )
        return cls(**{**base, **overrides})


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
