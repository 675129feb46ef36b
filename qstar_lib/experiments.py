"""The book's experiment pipeline: SFT, then DPO from the SFT model and DPO from the base model, cached.

Several chapters need the same trained models (credit assignment, search, the falling rewards of Sec. 5.4).
This module trains them once per scale and hands them out:

- :class:`ExperimentPreset` holds every size of a run; :func:`preset` picks it for the active scale.
- :func:`base_model`, :func:`sft_model`, :func:`dpo_model` (final or any saved step),
  :func:`reference_for`, :func:`history`, :func:`dpo_checkpoint_steps`, :func:`train_records`,
  :func:`eval_records` are getters: each one trains what is missing and otherwise loads from the cache.
- :func:`ensure_all` trains everything for a scale (``python -c "from qstar_lib import experiments;
  experiments.ensure_all()"``).
- Measurements on the trained models live beside the code they use (eq. 16 per state:
  :func:`qstar_lib.lm.logps.eq16_per_state`).

Cache layout: ``scale.cache_dir()/experiments/<stage>-<hash>/`` with ``stage`` in ``sft``, ``dpo_sft``,
``dpo_base`` and ``hash`` a digest of the preset's fields and :data:`PIPELINE_VERSION` (bump it when the
training code changes what a run produces). A stage folder holds the ``checkpoint-{step}/`` folders of
:mod:`qstar_lib.lm.train` (Hugging Face format, safetensors), ``history.json``, ``run.json`` (wall-clock time,
sizes) and the ``COMPLETE`` marker of :mod:`qstar_lib.cache`, the one cache protocol of the library: a stage is
trained into a temporary folder and renamed into place under a file lock, so a folder without the marker
(an interrupted run) is never used, and two notebooks can build at once without colliding.

It knows nothing about what the chapters measure on the models it returns.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import platform
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from qstar_lib import __version__, scale
from qstar_lib.cache import COMPLETE, cached_folder, is_complete

#: Bump when the pipeline (or the training code it calls) changes what a cached run contains.
#: 2: stages are built through :func:`qstar_lib.cache.cached_folder` (``COMPLETE`` marker, not ``done``).
PIPELINE_VERSION = 2
STAGES = ("sft", "dpo_sft", "dpo_base")
DONE = COMPLETE  # the marker of a finished stage folder
HISTORY = "history.json"
RUN_INFO = "run.json"

#: How many times each stage was trained in this process (tests use it to prove a cache hit).
TRAIN_COUNTS: Counter = Counter()


@dataclass(frozen=True)
class ExperimentPreset:
    """Every size of one pipeline run (SFT -> DPO from SFT, and DPO from the base model)."""

    model_name: str  # a qstar_lib.lm.models.load_model name: "tiny", "smollm2-135m", a folder or hub id
    n_train_pairs: int  # synthetic_tldr(split="train"): SFT on their chosen side, DPO on the pairs
    n_eval_pairs: int  # synthetic_tldr(split="test"): held out from every training run
    sft_steps: int
    sft_batch_size: int
    sft_lr: float  # AdamW
    dpo_steps: int
    dpo_batch_size: int  # pairs per step
    dpo_lr: float  # AdamW
    beta: float
    max_length: int  # prompt + completion tokens
    save_steps: int  # DPO checkpoint every this many steps (and at the end)
    seed: int

    def key(self) -> str:
        """A short digest of the fields and the pipeline version: the cache folder's suffix."""
        payload = json.dumps(
            {**dataclasses.asdict(self), "pipeline": PIPELINE_VERSION, "qstar_lib": __version__}, sort_keys=True
        )
        return hashlib.sha256(payload.encode()).hexdigest()[:12]


def preset(scale_name: str | None = None) -> ExperimentPreset:
    """The preset of ``scale_name`` (default: the active scale).

    - ``ci``: the random tiny model on 32 pairs, 10 steps per run; the three runs take seconds on 2 cores.
    - ``cpu``: SmolLM2-135M-Instruct, sized from step costs measured on 2 cores (Xeon @ 2.5 GHz, about
      160 GFLOP/s fp32 matmul): 13 s per SFT step of 8 sequences (~210 tokens each), 9.5 s per DPO step of
      4 pairs (shared prompt, ~260 tokens a pair), 0.6 s per pair for the reference log-probs. 20 SFT steps
      (one epoch of the 160 chosen summaries, lr 2e-5), then two DPO runs of 32 steps of 4 pairs (128 pairs,
      each seen once, lr 1e-5) with a checkpoint every 4 steps (8 points for the credit-vs-steps curves):
      about 260 s + 2 x 380 s, under the 20 minutes the chapters promise. A prototype on this model found
      localisation sharpening within ~20-25 DPO steps of 8 pairs at lr 5e-6 to 1e-5 and fading afterwards.
    - ``gpu``: the same model on ten times the data and steps.
    """
    return scale.pick(
        ci=ExperimentPreset(
            model_name="tiny",
            n_train_pairs=32,
            n_eval_pairs=16,
            sft_steps=10,
            sft_batch_size=4,
            sft_lr=2e-3,
            dpo_steps=10,
            dpo_batch_size=4,
            dpo_lr=1e-3,
            beta=0.1,
            max_length=384,
            save_steps=2,
            seed=0,
        ),
        cpu=ExperimentPreset(
            model_name="smollm2-135m",
            n_train_pairs=160,
            n_eval_pairs=64,
            sft_steps=20,
            sft_batch_size=8,
            sft_lr=2e-5,
            dpo_steps=32,
            dpo_batch_size=4,
            dpo_lr=1e-5,
            beta=0.1,
            max_length=384,
            save_steps=4,
            seed=0,
        ),
        gpu=ExperimentPreset(
            model_name="smollm2-135m",
            n_train_pairs=4096,
            n_eval_pairs=512,
            sft_steps=600,
            sft_batch_size=16,
            sft_lr=1e-5,
            dpo_steps=256,
            dpo_batch_size=16,
            dpo_lr=5e-6,
            beta=0.1,
            max_length=512,
            save_steps=16,
            seed=0,
        ),
        scale=scale_name,
    )


def _p(p: ExperimentPreset | None) -> ExperimentPreset:
    return preset() if p is None else p


# ----------------------------------------------------------------------------- data


def train_records(p: ExperimentPreset | None = None) -> list[dict]:
    """The training pairs (synthetic planted-error TL;DR, split ``train``), the same for SFT and DPO."""
    from qstar_lib.data import synthetic_tldr, validate_records

    p = _p(p)
    return validate_records(synthetic_tldr(p.n_train_pairs, seed=p.seed, split="train"))


def eval_records(p: ExperimentPreset | None = None) -> list[dict]:
    """Held-out pairs (split ``test``: no prompt in common with the training pairs)."""
    from qstar_lib.data import synthetic_tldr, validate_records

    p = _p(p)
    return validate_records(synthetic_tldr(p.n_eval_pairs, seed=p.seed, split="test"))


# ----------------------------------------------------------------------------- configs


def _mixed_precision() -> str:
    """bf16 autocast where the scale's dtype is bf16 (a GPU); the weights themselves train in float32."""
    import torch

    return "bf16" if scale.dtype() == torch.bfloat16 else "no"


def sft_config(p: ExperimentPreset | None = None, output_dir: str | None = None):
    """The :class:`qstar_lib.lm.train_config.SFTConfig` of the preset (AdamW, constant lr, clip 10)."""
    from qstar_lib.lm.train_config import SFTConfig

    p = _p(p)
    return SFTConfig(
        output_dir=output_dir,
        learning_rate=p.sft_lr,
        per_device_train_batch_size=p.sft_batch_size,
        max_steps=p.sft_steps,
        max_length=p.max_length,
        seed=p.seed,
        optim="adamw",
        save_steps=0,
        mixed_precision=_mixed_precision(),
    )


def dpo_config(p: ExperimentPreset | None = None, output_dir: str | None = None):
    """The :class:`qstar_lib.lm.train_config.DPOConfig` of the preset (AdamW, constant lr, clip 10, beta)."""
    from qstar_lib.lm.train_config import DPOConfig

    p = _p(p)
    return DPOConfig(
        output_dir=output_dir,
        learning_rate=p.dpo_lr,
        per_device_train_batch_size=p.dpo_batch_size,
        max_steps=p.dpo_steps,
        max_length=p.max_length,
        seed=p.seed,
        optim="adamw",
        beta=p.beta,
        save_steps=p.save_steps,
        mixed_precision=_mixed_precision(),
    )


# ----------------------------------------------------------------------------- cache


def stage_dir(stage: str, p: ExperimentPreset | None = None) -> Path:
    """``cache_dir()/experiments/<stage>-<preset hash>`` (not necessarily built yet)."""
    if stage not in STAGES:
        raise ValueError(f"stage={stage!r}; choose one of {STAGES}")
    return Path(scale.cache_dir()) / "experiments" / f"{stage}-{_p(p).key()}"


def _say(message: str) -> None:
    print(f"[experiments] {message}", file=sys.stderr, flush=True)


def _steps(folder: Path) -> list[int]:
    return sorted(
        int(d.name.split("-", 1)[1]) for d in folder.glob("checkpoint-*") if d.name.split("-", 1)[1].isdigit()
    )


def _prune_training_state(folder: Path) -> None:
    """Drop optimizer moments from all checkpoints but the last: only the weights are needed later."""
    from qstar_lib.lm.checkpoint import STATE_TENSORS

    steps = _steps(folder)
    for step in steps[:-1]:
        path = folder / f"checkpoint-{step}" / STATE_TENSORS
        if path.exists():
            path.unlink()


def _relocate(tmp: Path, folder: Path) -> None:
    """Point the checkpoints' recorded ``output_dir`` at ``folder``, where they live once renamed.

    Training wrote into the temporary folder and its ``training_state.json`` files record that path in their
    config; nothing else in a stage names it (the history, ``run.json`` and the weights do not).
    """
    from qstar_lib.lm.checkpoint import STATE_JSON

    for state in sorted(tmp.glob(f"checkpoint-*/{STATE_JSON}")):
        meta = json.loads(state.read_text())
        if meta.get("config", {}).get("output_dir") == str(tmp):
            meta["config"]["output_dir"] = str(folder)
            state.write_text(json.dumps(meta, indent=1))


def _build(stage: str, p: ExperimentPreset, tmp: Path, folder: Path) -> None:
    """Train ``stage`` into ``tmp`` (renamed onto ``folder`` afterwards): checkpoints, history, run info."""
    import torch

    if folder.exists():
        _say(f"{folder} has no '{DONE}' marker (an interrupted run): training {stage} again")
    _say(f"training {stage} at scale {scale.active_scale()} ({p.model_name})")
    _say(f"cache: {folder.name} in {folder.parent}")
    start = time.perf_counter()
    hist = _train(stage, p, tmp)
    seconds = time.perf_counter() - start
    TRAIN_COUNTS[stage] += 1
    _prune_training_state(tmp)
    _relocate(tmp, folder)
    (tmp / HISTORY).write_text(json.dumps(list(hist), indent=1))
    info = {
        "stage": stage,
        "seconds": seconds,
        "steps": p.sft_steps if stage == "sft" else p.dpo_steps,
        "preset": dataclasses.asdict(p),
        "scale": scale.active_scale(),
        "device": scale.device(),
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
    }
    info["seconds_per_step"] = seconds / info["steps"]
    (tmp / RUN_INFO).write_text(json.dumps(info, indent=1))
    _say(f"{stage} done in {seconds:.1f} s")


def _ensure(stage: str, p: ExperimentPreset) -> Path:
    """Return the stage folder, training the stage first (:func:`qstar_lib.cache.cached_folder`) if it is
    missing or incomplete."""
    folder = stage_dir(stage, p)
    if is_complete(folder):
        return folder
    if stage == "dpo_sft":
        _ensure("sft", p)  # before taking this stage's lock: the SFT stage has its own
    return cached_folder(folder, lambda tmp: _build(stage, p, tmp, folder))


def _train(stage: str, p: ExperimentPreset, folder: Path):
    import torch

    from qstar_lib.lm.train import train_dpo, train_sft

    scale.seed_everything(p.seed)
    records = train_records(p)
    fp32 = torch.float32  # master weights in float32; a GPU adds bf16 autocast (see _mixed_precision)
    if stage == "sft":
        model, tokenizer = _load_base(p, fp32)
        return train_sft(model, tokenizer, records, sft_config(p, str(folder)))
    model, tokenizer = _load_base(p, fp32) if stage == "dpo_base" else _load_folder(_final(_ensure("sft", p)), fp32)
    # ref_model=None: the reference log-probs are computed from the policy before its first update, when
    # it *is* pi_ref (the SFT model for dpo_sft, the base model for dpo_base); no second copy is held.
    # only the last checkpoint's training state is kept (_prune_training_state), and old ones go as soon as a
    # newer one exists: a gpu-scale run keeps ~2 optimizer states on disk, not one per checkpoint
    prune = lambda step, metrics, model: _prune_training_state(folder)  # noqa: E731
    return train_dpo(model, None, tokenizer, records, dpo_config(p, str(folder)), callbacks=[prune])


def _final(folder: Path) -> Path:
    steps = _steps(folder)
    if not steps:
        raise FileNotFoundError(f"no checkpoint-* folder in {folder}")
    return folder / f"checkpoint-{steps[-1]}"


def _load_base(p: ExperimentPreset, dtype=None):
    """The model in float32 unless told otherwise: a bf16 logit step (~1/128 of the logit) is the size of the
    per-token rewards the chapters rank, so evaluation never runs in bf16 (training adds bf16 autocast)."""
    import torch

    from qstar_lib.lm.models import load_model

    return load_model(p.model_name, dtype=dtype or torch.float32)


def _load_folder(path: Path, dtype=None):
    import torch

    from qstar_lib.lm.models import load_model

    return load_model(str(path), dtype=dtype or torch.float32)


# ----------------------------------------------------------------------------- getters


def base_model(p: ExperimentPreset | None = None):
    """``(model, tokenizer)``: the pretrained model before any training (eval mode)."""
    return _load_base(_p(p))


def sft_model(p: ExperimentPreset | None = None):
    """``(model, tokenizer)``: the SFT model (trained on the chosen summaries), eval mode."""
    return _load_folder(_final(_ensure("sft", _p(p))))


def _dpo_stage(from_sft: bool) -> str:
    return "dpo_sft" if from_sft else "dpo_base"


def dpo_checkpoint_steps(from_sft: bool = True, p: ExperimentPreset | None = None) -> list[int]:
    """The DPO steps with a saved checkpoint, ascending (the last one is the final model)."""
    return _steps(_ensure(_dpo_stage(from_sft), _p(p)))


def dpo_model(from_sft: bool = True, step: int | None = None, p: ExperimentPreset | None = None):
    """``(model, tokenizer)``: DPO from the SFT model (``from_sft``) or from the base model.

    ``step=None`` gives the final model, otherwise the checkpoint of that step (see
    :func:`dpo_checkpoint_steps`).
    """
    folder = _ensure(_dpo_stage(from_sft), _p(p))
    if step is None:
        return _load_folder(_final(folder))
    path = folder / f"checkpoint-{step}"
    if not path.is_dir():
        raise ValueError(f"no DPO checkpoint at step {step}; saved steps are {_steps(folder)}")
    return _load_folder(path)


def reference_for(from_sft: bool = True, p: ExperimentPreset | None = None):
    """``(model, tokenizer)``: the pi_ref of a DPO run, frozen (eval mode, no gradients).

    DPO from SFT is regularised towards the SFT model; DPO without SFT towards the base model.
    """
    model, tokenizer = sft_model(p) if from_sft else base_model(p)
    model.requires_grad_(False)
    return model.eval(), tokenizer


def history(stage: str, p: ExperimentPreset | None = None):
    """The metric history of ``stage`` (``sft`` | ``dpo_sft`` | ``dpo_base``) as a DataFrame indexed by step.

    DPO columns are TRL's keys (``loss``, ``rewards/chosen``, ``rewards/rejected``, ``rewards/margins``,
    ``rewards/accuracies``, ``logps/chosen``, ``logps/rejected``, ``grad_norm``, ``learning_rate``...).
    """
    from qstar_lib.lm.train_config import History

    folder = _ensure(stage, _p(p))
    return History(json.loads((folder / HISTORY).read_text())).to_dataframe()


def run_info(stage: str, p: ExperimentPreset | None = None) -> dict:
    """What training ``stage`` cost when it was cached: ``seconds``, ``seconds_per_step``, threads, preset."""
    return json.loads((_ensure(stage, _p(p)) / RUN_INFO).read_text())


def ensure_all(p: ExperimentPreset | None = None) -> dict[str, Path]:
    """Train (or find in the cache) every stage of the active scale; returns the stage folders."""
    p = _p(p)
    return {stage: _ensure(stage, p) for stage in STAGES}
