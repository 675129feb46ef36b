"""Checkpoints without pickles: Hugging Face weights plus training state as safetensors + JSON.

A checkpoint folder ``checkpoint-{step}/`` holds

- the model in Hugging Face format (``config.json``, ``model.safetensors``) and the tokenizer, so
  ``AutoModelForCausalLM.from_pretrained(folder)`` loads it like any hub model;
- ``training_state.safetensors``: every tensor needed to resume (optimizer moments, RNG states, the data
  order, precomputed reference log-probs);
- ``training_state.json``: every scalar and the structure (optimizer hyper-parameters, scheduler,
  step, epoch, Python/NumPy RNG scalars, the history so far, the config).

``torch.save`` would be shorter, but a pickle runs code when it is loaded; these two formats cannot.
This module knows nothing about what is trained or why: it turns state dicts into files and back.
"""

from __future__ import annotations

import json
import os
import random
import re
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

STATE_TENSORS = "training_state.safetensors"
STATE_JSON = "training_state.json"
_CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")


# ----------------------------------------------------------------------------- optimizer state


def optimizer_state_to_flat(state_dict: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """Split ``optimizer.state_dict()`` into tensors ``{"opt.<param>.<name>": t}`` and a JSON-able rest."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for param_id, per_param in state_dict["state"].items():
        for name, value in per_param.items():
            if isinstance(value, torch.Tensor):
                tensors[f"opt.{param_id}.{name}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(param_id), {})[name] = value
    groups = [_jsonable(group) for group in state_dict["param_groups"]]
    return tensors, {"param_groups": groups, "scalars": scalars}


def optimizer_state_from_flat(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    """Inverse of :func:`optimizer_state_to_flat`: a dict ``optimizer.load_state_dict`` accepts."""
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if not key.startswith("opt."):
            continue
        _, param_id, name = key.split(".", 2)
        state.setdefault(int(param_id), {})[name] = value
    for param_id, per_param in meta.get("scalars", {}).items():
        state.setdefault(int(param_id), {}).update(per_param)
    groups = []
    for group in meta["param_groups"]:
        group = dict(group)
        if isinstance(group.get("betas"), list):  # JSON has no tuples; Adam expects one
            group["betas"] = tuple(group["betas"])
        groups.append(group)
    return {"state": state, "param_groups": groups}


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, torch.Tensor):
        return value.item() if value.numel() == 1 else value.tolist()
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    raise TypeError(f"cannot store {type(value).__name__} ({value!r}) in JSON")


# ----------------------------------------------------------------------------- RNG state


def rng_state_to_flat() -> tuple[dict[str, torch.Tensor], dict]:
    """Python, NumPy and torch (CPU and CUDA) generator states as tensors + JSON."""
    tensors = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = state
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    tensors["rng.numpy"] = torch.from_numpy(np.asarray(np_keys, dtype=np.uint32).astype(np.int64))
    py_version, py_state, py_gauss = random.getstate()
    meta = {
        "python": {"version": py_version, "state": list(py_state), "gauss_next": py_gauss},
        "numpy": {"name": np_name, "pos": int(np_pos), "has_gauss": int(np_has_gauss), "gauss": float(np_gauss)},
    }
    return tensors, meta


def rng_state_from_flat(tensors: dict[str, torch.Tensor], meta: dict) -> None:
    """Restore the generators saved by :func:`rng_state_to_flat`."""
    torch.set_rng_state(tensors["rng.torch"])
    cuda_states = [tensors[k] for k in sorted(k for k in tensors if k.startswith("rng.cuda."))]
    if cuda_states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda_states)
    py = meta["python"]
    random.setstate((py["version"], tuple(py["state"]), py["gauss_next"]))
    npm = meta["numpy"]
    keys = tensors["rng.numpy"].numpy().astype(np.uint32)
    np.random.set_state((npm["name"], keys, npm["pos"], npm["has_gauss"], npm["gauss"]))


# ----------------------------------------------------------------------------- files


def checkpoint_dir(output_dir: str, step: int) -> str:
    return os.path.join(output_dir, f"checkpoint-{step}")


def latest_checkpoint(output_dir: str) -> str | None:
    """The ``checkpoint-{step}`` folder with the largest step under ``output_dir`` (None if there is none)."""
    if not os.path.isdir(output_dir):
        return None
    steps = [int(m.group(1)) for name in os.listdir(output_dir) if (m := _CHECKPOINT_RE.match(name))]
    return checkpoint_dir(output_dir, max(steps)) if steps else None


def prune_checkpoints(output_dir: str, keep: int) -> list[str]:
    """Delete all but the newest ``keep`` ``checkpoint-{step}`` folders under ``output_dir`` (TRL's
    ``save_total_limit``); returns the deleted folders."""
    import shutil

    if keep < 1:
        raise ValueError(f"keep must be >= 1, got {keep}")
    if not os.path.isdir(output_dir):
        return []
    steps = sorted(int(m.group(1)) for name in os.listdir(output_dir) if (m := _CHECKPOINT_RE.match(name)))
    removed = [checkpoint_dir(output_dir, step) for step in steps[:-keep]]
    for folder in removed:
        shutil.rmtree(folder)
    return removed


def save_checkpoint(
    folder: str,
    model: torch.nn.Module,
    tokenizer: Any | None,
    tensors: dict[str, torch.Tensor],
    meta: dict,
    state_dict: dict[str, torch.Tensor] | None = None,
) -> str:
    """Write weights (HF format, safetensors), tokenizer, and the training state to ``folder``.

    ``state_dict``: the full weights when ``model``'s own are sharded (FSDP gathers them for the main process).
    """
    os.makedirs(folder, exist_ok=True)
    model.save_pretrained(folder, safe_serialization=True, state_dict=state_dict)
    if tokenizer is not None and hasattr(tokenizer, "save_pretrained"):
        tokenizer.save_pretrained(folder)
    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, os.path.join(folder, STATE_TENSORS))
    with open(os.path.join(folder, STATE_JSON), "w") as f:
        json.dump(_jsonable(meta), f, indent=1)
    return folder


def load_training_state(folder: str) -> tuple[dict[str, torch.Tensor], dict]:
    """Read the tensors and the JSON that :func:`save_checkpoint` wrote."""
    tensor_path, json_path = os.path.join(folder, STATE_TENSORS), os.path.join(folder, STATE_JSON)
    for path in (tensor_path, json_path):
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{folder} is not a training checkpoint: {os.path.basename(path)} is missing")
    with open(json_path) as f:
        meta = json.load(f)
    return load_file(tensor_path), meta


def load_model_weights(model: torch.nn.Module, folder: str) -> None:
    """Load HF safetensors weights (single file or sharded) from ``folder`` into ``model`` in place.

    Tied parameters (the LM head sharing the embedding) are absent from the file and are allowed to be
    missing; any other missing or unexpected key is an error.
    """
    single = os.path.join(folder, "model.safetensors")
    index = os.path.join(folder, "model.safetensors.index.json")
    if os.path.isfile(single):
        state = load_file(single)
    elif os.path.isfile(index):
        with open(index) as f:
            shards = sorted(set(json.load(f)["weight_map"].values()))
        state = {}
        for shard in shards:
            state.update(load_file(os.path.join(folder, shard)))
    else:
        raise FileNotFoundError(f"no model.safetensors (or index) in {folder}")
    missing, unexpected = model.load_state_dict(state, strict=False)
    named = dict(model.named_parameters(remove_duplicate=False))
    data_ptrs = {p.data_ptr() for name, p in named.items() if name in state}
    real_missing = [k for k in missing if k not in named or named[k].data_ptr() not in data_ptrs]
    if real_missing or unexpected:
        raise KeyError(f"checkpoint {folder} does not match the model: missing {real_missing}, unexpected {unexpected}")
