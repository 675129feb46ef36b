"""The book's experiment pipeline: SFT, DPO from the SFT model and from the base model, and two controls, cached.

Several chapters need the same trained models (credit assignment, search, the falling rewards of Sec. 5.4).
This module trains them once per scale and hands them out:

- :class:`qstar_lib.presets.ExperimentPreset` holds every size of a run; :func:`qstar_lib.presets.preset`
  picks it for the active scale (both re-exported here).
- :func:`base_model`, :func:`sft_model`, :func:`dpo_model`, :func:`control_model`, :func:`stage_model`
  (final or any saved step), :func:`reference_for`, :func:`history`, :func:`checkpoint_steps`,
  :func:`train_records`, :func:`validation_records`, :func:`eval_records` are getters: each one trains what
  is missing and otherwise loads from the cache.
- :func:`ensure_all` trains everything for a scale (``python -c "from qstar_lib import experiments;
  experiments.ensure_all()"``).
- Measurements on the trained models live beside the code they use (eq. 16 per state:
  :func:`qstar_lib.lm.logps.eq16_per_state`).

Cache layout: ``scale.cache_dir()/experiments/<stage>-<hash>/`` with ``stage`` one of :data:`STAGES` and
``hash`` a digest of the preset's fields and :data:`qstar_lib.presets.PIPELINE_VERSION` (bump it when the
training code changes what a run produces). A stage folder holds the ``checkpoint-{step}/`` folders of
:mod:`qstar_lib.lm.train` (Hugging Face format, safetensors), ``history.json``, ``run.json`` (wall-clock time,
sizes) and the ``COMPLETE`` marker of :mod:`qstar_lib.cache`, the one cache protocol of the library: a stage is
trained into a temporary folder and renamed into place under a file lock, so a folder without the marker
(an interrupted run) is never used, and two notebooks can build at once without colliding.

It knows nothing about what the chapters measure on the models it returns.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import sys
import time
from collections import Counter
from pathlib import Path

from qstar_lib import scale
from qstar_lib.cache import COMPLETE, cached_folder, is_complete
from qstar_lib.presets import PIPELINE_VERSION, ExperimentPreset, preset  # noqa: F401 (re-exported)

STAGES = ("sft", "dpo_sft", "dpo_base", "sft_continued", "dpo_shuffled")
#: The control runs of the credit chapter (method name -> stage): log-ratios of the DPO reward's form that saw
#: no preference. ``sft_continued``: the SFT model trained further on the chosen summaries of the DPO pairs,
#: as many steps of as many sequences as DPO ran; ``dpo_shuffled``: DPO from SFT on the same pairs with the
#: preference of a seeded random half of them reversed (labels that carry no information).
CONTROL_STAGES = {"continued_sft": "sft_continued", "shuffled_dpo": "dpo_shuffled"}
DONE = COMPLETE  # the marker of a finished stage folder
HISTORY = "history.json"
RUN_INFO = "run.json"

#: How many times each stage was trained in this process (tests use it to prove a cache hit).
TRAIN_COUNTS: Counter = Counter()


def _p(p: ExperimentPreset | None) -> ExperimentPreset:
    return preset() if p is None else p


# ----------------------------------------------------------------------------- data


def train_records(p: ExperimentPreset | None = None) -> list[dict]:
    """The training pairs (synthetic planted-error TL;DR, split ``train``), the same for SFT and DPO."""
    from qstar_lib.data import synthetic_tldr, validate_records

    p = _p(p)
    return validate_records(synthetic_tldr(p.n_train_pairs, seed=p.seed, split="train"))


def validation_records(p: ExperimentPreset | None = None, kinds=None) -> list[dict]:
    """Pairs of the ``validation`` split (new values, the training families and templates): where a chapter
    chooses a checkpoint, so that the test pairs it reports on never choose anything. ``kinds``: as in
    :func:`qstar_lib.data.synthetic_tldr`."""
    from qstar_lib.data import synthetic_tldr, validate_records

    p = _p(p)
    return validate_records(synthetic_tldr(p.n_val_pairs, seed=p.seed, split="validation", kinds=kinds))


def shuffled_records(records: list[dict], seed: int) -> list[dict]:
    """The DPO pairs with the preference of a seeded random half reversed (``dpo_shuffled``'s data): the same
    texts, labels independent of which summary is right. Planted-error fields are dropped (they described
    the original rejected side)."""
    flip = _flipped(len(records), seed)
    out = []
    for i, r in enumerate(records):
        chosen, rejected = (r["rejected"], r["chosen"]) if i in flip else (r["chosen"], r["rejected"])
        out.append({"id": r["id"], "prompt": r["prompt"], "chosen": chosen, "rejected": rejected})
    return out


def _flipped(n: int, seed: int) -> set[int]:
    """The indices of the pairs whose preference :func:`shuffled_records` reverses (a seeded half)."""
    import random

    return set(random.Random(f"qstar-shuffled-{seed}").sample(range(n), n // 2))


def eval_records(p: ExperimentPreset | None = None, kinds=None) -> list[dict]:
    """Held-out pairs (split ``test``: held-out families and templates, no prompt in common with the
    training pairs). ``kinds``: as in :func:`qstar_lib.data.synthetic_tldr`."""
    from qstar_lib.data import synthetic_tldr, validate_records

    p = _p(p)
    return validate_records(synthetic_tldr(p.n_eval_pairs, seed=p.seed, split="test", kinds=kinds))


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
    """``cache_dir()/experiments/<stage>-<hash>`` (not necessarily built yet): the preset's
    :meth:`~qstar_lib.presets.ExperimentPreset.key`, or for ``sft`` its
    :meth:`~qstar_lib.presets.ExperimentPreset.sft_key` (one SFT run serves every beta)."""
    if stage not in STAGES:
        raise ValueError(f"stage={stage!r}; choose one of {STAGES}")
    p = _p(p)
    return Path(scale.cache_dir()) / "experiments" / f"{stage}-{p.sft_key() if stage == 'sft' else p.key()}"


def _adopt_legacy_sft(p: ExperimentPreset, folder: Path) -> None:
    """An SFT run cached before SFT folders were keyed by :meth:`ExperimentPreset.sft_key` sits under the
    full preset key; its training read only the SFT fields, so it is this run: rename it into place
    instead of training it again (the DPO runs cached beside it started from exactly those weights)."""
    legacy = folder.parent / f"sft-{p.key()}"
    if not is_complete(folder) and is_complete(legacy) and not folder.exists():
        legacy.rename(folder)
        _say(f"reusing {legacy.name} as {folder.name} (SFT folders are now keyed by the SFT fields only)")


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
        "steps": {"sft": p.sft_steps, "sft_continued": p.control_steps, "dpo_shuffled": p.control_steps}.get(stage)
        or p.dpo_steps,
        "pairs_per_step": p.dpo_batch_size,
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
    if stage == "sft":
        _adopt_legacy_sft(p, folder)
    if is_complete(folder):
        return folder
    if stage != "sft" and stage != "dpo_base":
        _ensure("sft", p)  # before taking this stage's lock: the SFT stage has its own
    if stage == "dpo_shuffled":
        _ensure("dpo_sft", p)  # its reference log-probs are dpo_sft's (shuffled_ref_logps)
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
    if stage == "sft_continued":  # DPO's steps and sequences per step, SFT's loss and learning rate
        cfg = dataclasses.replace(
            sft_config(p, str(folder)),
            per_device_train_batch_size=p.dpo_batch_size,
            max_steps=p.control_steps or p.dpo_steps,
            save_steps=p.save_steps,
        )
        return train_sft(model, tokenizer, records, cfg)

    # ref_model=None: the reference log-probs are computed from the policy before its first update, when
    # it *is* pi_ref (the SFT model for dpo_sft, the base model for dpo_base); no second copy is held.
    # only the last checkpoint's training state is kept (_prune_training_state), and old ones go as soon as a
    # newer one exists: a gpu-scale run keeps ~2 optimizer states on disk, not one per checkpoint
    prune = lambda step, metrics, model: _prune_training_state(folder)  # noqa: E731
    cfg = dpo_config(p, str(folder))
    ref_logps = None
    if stage == "dpo_shuffled":
        ref_logps = shuffled_ref_logps(p)
        records = shuffled_records(records, p.seed)
        cfg = dataclasses.replace(cfg, max_steps=p.control_steps or p.dpo_steps)
    return train_dpo(model, None, tokenizer, records, cfg, callbacks=[prune], ref_logps=ref_logps)


def shuffled_ref_logps(p: ExperimentPreset | None = None):
    """The reference log-probs of ``dpo_shuffled``, (N,) chosen and (N,) rejected, without computing them:
    its reference is the SFT model on the same texts as ``dpo_sft``'s, so they are ``dpo_sft``'s (stored in
    its last checkpoint) with chosen and rejected swapped on the reversed pairs."""
    import torch

    from qstar_lib.lm.train import saved_ref_logps

    p = _p(p)
    n = len(train_records(p))
    chosen, rejected = saved_ref_logps(str(_final(_ensure("dpo_sft", p))), n)  # (N,), (N,)
    flip = torch.tensor(sorted(_flipped(n, p.seed)), dtype=torch.long)
    out_chosen, out_rejected = chosen.clone(), rejected.clone()
    out_chosen[flip], out_rejected[flip] = rejected[flip], chosen[flip]
    return out_chosen, out_rejected


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
    return checkpoint_steps(_dpo_stage(from_sft), p)


def checkpoint_steps(stage: str, p: ExperimentPreset | None = None) -> list[int]:
    """The saved steps of any stage, ascending (the last one is the final model)."""
    return _steps(_ensure(stage, _p(p)))


def pairs_seen(step: int, p: ExperimentPreset | None = None) -> int:
    """DPO pairs (or continued-SFT sequences) a run has trained on after ``step`` steps."""
    return step * _p(p).dpo_batch_size


def stage_model(stage: str, step: int | None = None, p: ExperimentPreset | None = None):
    """``(model, tokenizer)`` of any stage: its final model (``step=None``) or a saved checkpoint."""
    folder = _ensure(stage, _p(p))
    if step is None:
        return _load_folder(_final(folder))
    path = folder / f"checkpoint-{step}"
    if not path.is_dir():
        raise ValueError(f"no {stage} checkpoint at step {step}; saved steps are {_steps(folder)}")
    return _load_folder(path)


def control_model(name: str, step: int | None = None, p: ExperimentPreset | None = None):
    """``(model, tokenizer)`` of a control run of :data:`CONTROL_STAGES` (``continued_sft``, ``shuffled_dpo``);
    both are scored against the SFT model, as the DPO policy is."""
    if name not in CONTROL_STAGES:
        raise ValueError(f"control {name!r}; choose one of {', '.join(CONTROL_STAGES)}")
    return stage_model(CONTROL_STAGES[name], step, p)


def dpo_model(
    from_sft: bool = True, step: int | None = None, p: ExperimentPreset | None = None, beta: float | None = None
):
    """``(model, tokenizer)``: DPO from the SFT model (``from_sft``) or from the base model.

    ``step=None`` gives the final model, otherwise the checkpoint of that step (see
    :func:`dpo_checkpoint_steps`). ``beta``: the run with that beta instead of the preset's
    (:meth:`~qstar_lib.presets.ExperimentPreset.with_beta`: its own DPO run, from the same SFT model, which
    stays its reference).
    """
    p = _p(p) if beta is None else _p(p).with_beta(beta)
    return stage_model(_dpo_stage(from_sft), step, p)


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
