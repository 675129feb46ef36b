"""The one dial: ``QSTAR_SCALE`` = ``ci`` | ``cpu`` | ``gpu``, plus device, dtype and seeding.

This is the only module that reads environment variables, so a notebook that runs at one scale runs
the same cells at every other; only sizes change. Unset, the dial is ``gpu`` when CUDA is available
and ``cpu`` otherwise.

It knows nothing about what the sizes are used for: each chapter asks for its own numbers with
:func:`pick`, so the choice is visible where it is used::

    depth = pick(ci=2, cpu=4, gpu=5)
"""

from __future__ import annotations

import os
import random
from typing import TypeVar

SCALES = ("ci", "cpu", "gpu")
ENV_VAR = "QSTAR_SCALE"

T = TypeVar("T")


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:  # the exact chapters run without torch
        return False
    return bool(torch.cuda.is_available())


def active_scale() -> str:
    """The scale this process runs at: ``$QSTAR_SCALE`` if set, else ``gpu`` with CUDA, else ``cpu``."""
    value = os.environ.get(ENV_VAR, "").strip().lower()
    if not value:
        return "gpu" if _cuda_available() else "cpu"
    if value not in SCALES:
        raise ValueError(f"{ENV_VAR}={value!r} is not a scale; choose one of {', '.join(SCALES)}")
    return value


def pick(*, ci: T, cpu: T, gpu: T, scale: str | None = None) -> T:
    """Return the value for the active scale (or for ``scale`` when given)."""
    scale = scale or active_scale()
    if scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r}; choose one of {', '.join(SCALES)}")
    return {"ci": ci, "cpu": cpu, "gpu": gpu}[scale]


def device() -> str:
    """``cuda`` when a GPU is present, else ``cpu`` (the ci and cpu scales stay on the CPU)."""
    return "cuda" if active_scale() == "gpu" and _cuda_available() else "cpu"


_active_device = device  # for the functions below, whose ``device`` argument hides it


def native_bf16(device: str | None = None) -> bool:
    """Whether ``device`` (default :func:`device`) computes bfloat16 natively rather than by emulation.

    A GPU needs compute capability >= 8 (Ampere): ``torch.cuda.is_bf16_supported()`` also counts the emulated
    bf16 of a T4 (7.5), which is slow. A CPU needs AVX512_BF16 or AMX (``torch.backends.cpu.get_cpu_capability``).
    The one place that decides precision by capability: :func:`dtype` and :func:`mixed_precision` use it.
    """
    import torch

    dev = torch.device(device or _active_device())
    if dev.type == "cuda":
        return bool(torch.cuda.is_available()) and torch.cuda.get_device_capability(dev)[0] >= 8
    if dev.type == "cpu":
        capability = str(torch.backends.cpu.get_cpu_capability()).upper()
        return "AVX512_BF16" in capability or "AMX" in capability
    return False


def dtype():
    """bfloat16 on a GPU with native bf16 (compute capability >= 8), else float32.

    Not fp16 on older GPUs (a T4): fp16 overflows in the reference model (DPO repo issue #11). The ci and cpu
    scales stay in float32 even on a CPU with native bf16, so their numbers are the same on every machine.
    """
    import torch

    if device() == "cuda" and native_bf16("cuda"):
        return torch.bfloat16
    return torch.float32


def launcher_mixed_precision() -> str | None:
    """The precision ``accelerate launch`` asked for (``$ACCELERATE_MIXED_PRECISION``: its flag or config
    file), or None when not launched with one."""
    value = os.environ.get("ACCELERATE_MIXED_PRECISION", "").strip().lower()
    return value or None


def mixed_precision(device: str | None = None) -> str:
    """Training autocast when a config leaves it open: the launcher's choice, else ``bf16`` on a GPU with
    native bf16, else ``no`` (float32; a T4 is not given fp16, see :func:`dtype`)."""
    import torch

    launched = launcher_mixed_precision()
    if launched:
        return launched
    dev = torch.device(device or _active_device())
    return "bf16" if dev.type == "cuda" and native_bf16(str(dev)) else "no"


def seed_everything(seed: int = 0) -> None:
    """Seed Python, NumPy and (if installed) torch, so the same seed gives the same numbers."""
    import numpy as np

    random.seed(seed)
    np.random.seed(seed)
    try:
        import torch
    except ImportError:
        return
    torch.manual_seed(seed)


def cache_dir() -> str:
    """Where converted models and trained checkpoints are cached (``$QSTAR_CACHE`` or ``~/.cache/qstar``)."""
    path = os.environ.get("QSTAR_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "qstar"
    )
    os.makedirs(path, exist_ok=True)
    return path


def judge_endpoint() -> dict:
    """The LLM judge's OpenAI-compatible endpoint: ``$QSTAR_JUDGE_BASE_URL``, ``$QSTAR_JUDGE_MODEL`` and
    ``$QSTAR_JUDGE_API_KEY`` (each "" when unset). The key is only passed on, never printed."""
    return {
        "base_url": os.environ.get("QSTAR_JUDGE_BASE_URL", ""),
        "model": os.environ.get("QSTAR_JUDGE_MODEL", ""),
        "api_key": os.environ.get("QSTAR_JUDGE_API_KEY", ""),
    }
