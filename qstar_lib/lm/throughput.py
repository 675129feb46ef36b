"""Model FLOPs, tokens/s and MFU of one DPO step, for the scaling chapter and ``benchmarks/bench_gpu_dpo.py``.

It knows how to count the arithmetic a DPO step needs and how to time one; it knows nothing about data or
the experiment pipeline. A step here is exactly the computation of :func:`qstar_lib.lm.train.train_dpo` once
the reference log-probs are cached (Sec. 4 of the paper's setup: pi_ref is fixed): one forward over the
shared-prompt rows of :func:`qstar_lib.lm.collate.collate_shared_prompt`, the DPO loss of
:func:`qstar_lib.dpo.dpo_loss`, a backward, gradient-norm clipping and an optimizer step.

**Model FLOPs utilisation** (MFU, as in the PaLM paper) divides the FLOPs the *model* needs by the time and
the accelerator's peak, so recomputation or masked-out attention work never counts in our favour:

- the matmuls of every transformer block, 2 FLOPs per weight per token forward;
- attention scores and the weighted sum, 4 * d_model FLOPs per layer per (query, visible key) pair, counted
  from the block-causal mask itself (a rejected token does not attend to the chosen tokens);
- the LM head, 2 * d_model * V per position whose logits are computed (``logits_to_keep``: only positions
  that predict a completion token);
- training costs three times the forward (the backward computes gradients for activations and weights).

Size exception: benchmark_dpo_step -- one timed step must hold forward, loss, backward and optimizer inline to be timed as one
"""

from __future__ import annotations

import math
import re
import statistics
import time
from collections.abc import Mapping

import torch

#: Dense bf16 tensor-core peaks from the vendors' datasheets, in FLOP/s (no 2:4 sparsity). The T4 has no
#: bf16 tensor cores: its entry is the fp16 peak (its bf16 is emulated, see qstar_lib.scale.native_bf16).
PEAK_BF16_FLOPS = {
    "H100 PCIe": 756e12,
    "H100 NVL": 835e12,
    "H100": 989.4e12,  # SXM
    "H200 NVL": 835e12,
    "H200": 989.4e12,  # SXM
    "GH200": 989.4e12,
    "B200": 2250e12,
    "A100": 312e12,
    "L40S": 362.05e12,
    "L4": 121e12,
    "A10G": 70e12,
    "T4": 65e12,
}

#: Dense TF32 tensor-core peaks (float32 matmuls with ``torch.backends.cuda.matmul.allow_tf32``), FLOP/s.
PEAK_TF32_FLOPS = {
    "H100 PCIe": 378e12,
    "H100 NVL": 417.5e12,
    "H100": 494.7e12,
    "H200 NVL": 417.5e12,
    "H200": 494.7e12,
    "GH200": 494.7e12,
    "B200": 1100e12,
    "A100": 156e12,
    "L40S": 183e12,
    "L4": 60e12,
    "A10G": 35e12,
}

#: Plain float32 (CUDA-core) peaks, FLOP/s: float32 matmuls without TF32 (PyTorch's default).
PEAK_FP32_FLOPS = {
    "H100 PCIe": 51.2e12,
    "H100 NVL": 60e12,
    "H100": 66.9e12,
    "H200 NVL": 60e12,
    "H200": 66.9e12,
    "GH200": 66.9e12,
    "B200": 80e12,
    "A100": 19.5e12,
    "L40S": 91.6e12,
    "L4": 30.3e12,
    "A10G": 31.2e12,
    "T4": 8.1e12,
}

#: The Pythia suite's shapes (Biderman et al. 2023), GPT-NeoX architecture, vocabulary padded to 50304.
PYTHIA_SHAPES = {
    "pythia-70m": dict(hidden_size=512, num_hidden_layers=6, num_attention_heads=8),
    "pythia-160m": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12),
    "pythia-410m": dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16),
    "pythia-1b": dict(hidden_size=2048, num_hidden_layers=16, num_attention_heads=8),
    "pythia-1.4b": dict(hidden_size=2048, num_hidden_layers=24, num_attention_heads=16),
    "pythia-2.8b": dict(hidden_size=2560, num_hidden_layers=32, num_attention_heads=32),
}


def pythia_config(name: str = "pythia-2.8b", vocab_size: int = 50304):
    """A ``GPTNeoXConfig`` with the shape of a Pythia model (for random-init benchmarks: no weights needed)."""
    from transformers import GPTNeoXConfig

    if name not in PYTHIA_SHAPES:
        raise ValueError(f"unknown Pythia shape {name!r}; choose one of {sorted(PYTHIA_SHAPES)}")
    shape = PYTHIA_SHAPES[name]
    return GPTNeoXConfig(
        vocab_size=vocab_size,
        intermediate_size=4 * shape["hidden_size"],
        rotary_pct=0.25,
        max_position_embeddings=2048,
        use_parallel_residual=True,
        tie_word_embeddings=False,
        **shape,
    )


def _dims(config) -> tuple[int, int, int, int]:
    """(d_model, layers, d_ff, vocab) of a transformers config (GPT-NeoX, Llama, ... field names)."""
    h = config.hidden_size
    return h, config.num_hidden_layers, getattr(config, "intermediate_size", None) or 4 * h, config.vocab_size


def block_matmul_params(config) -> int:
    """Weights in the matmuls of all transformer blocks (no embeddings, head, norms or biases).

    Per layer: Q, K, V and output projections (``4 d^2``, fewer for grouped K/V heads) and the MLP
    (``2 d d_ff``, or ``3 d d_ff`` for a gated MLP such as Llama's).
    """
    h, n_layers, d_ff, _ = _dims(config)
    heads = config.num_attention_heads
    kv = getattr(config, "num_key_value_heads", None) or heads
    attn = 2 * h * h + 2 * h * (h * kv // heads)
    gated = getattr(config, "hidden_act", "gelu") in ("silu", "swiglu") or config.model_type in (
        "llama",
        "mistral",
        "qwen2",
    )
    mlp = (3 if gated else 2) * h * d_ff
    return n_layers * (attn + mlp)


def step_flops(config, n_tokens: int, n_attended: int, n_head_positions: int, training: bool = True) -> dict:
    """Model FLOPs of one pass, split into ``blocks``, ``attention``, ``head`` and their ``total``.

    Args:
        n_tokens: tokens that go through the blocks (padding excluded).
        n_attended: (query, key) pairs that attention computes, summed over rows (one layer's count).
        n_head_positions: positions whose logits the LM head computes.
        training: forward + backward (3x the forward) rather than a forward alone.
    """
    if min(n_tokens, n_attended, n_head_positions) < 0:
        raise ValueError("token counts must be >= 0")
    h, n_layers, _, vocab = _dims(config)
    mult = 3 if training else 1
    out = {
        "blocks": mult * 2 * block_matmul_params(config) * n_tokens,
        "attention": mult * 4 * h * n_layers * n_attended,
        "head": mult * 2 * h * vocab * n_head_positions,
    }
    out["total"] = sum(out.values())
    return out


def packed_batch_counts(batch: Mapping[str, torch.Tensor]) -> dict[str, int]:
    """``n_tokens``, ``n_attended`` and ``n_head_positions`` of a shared-prompt batch.

    Reads the batch of :func:`qstar_lib.lm.collate.collate_shared_prompt`: rows are left-padded, so a row's
    padding is every column before its prompt's first token (found from the prompt's last column,
    ``chosen_src[:, 0]``, and its position id). Attention pairs are counted from the block-causal mask
    without the padding rows; the LM head runs from the first position that predicts a completion token to
    the end of the row (``logits_to_keep``).
    """
    B, L = batch["input_ids"].shape
    last_prompt = batch["chosen_src"][:, 0]  # (B,) column of each prompt's last token
    start = last_prompt - batch["position_ids"].gather(1, last_prompt[:, None])[:, 0]  # (B,) its first token
    pad = torch.arange(L, device=start.device)[None, :] < start[:, None]  # (B, L)
    visible = batch["attention_mask"][:, 0]  # (B, L, L) boolean, query x key
    src = torch.cat([batch["chosen_src"], batch["rejected_src"]], 1)  # (B, Tc + Tr)
    mask = torch.cat([batch["chosen_mask"], batch["rejected_mask"]], 1).bool()  # (B, Tc + Tr)
    first = int(src[mask].min()) if bool(mask.any()) else L - 1
    return {
        "n_tokens": int((~pad).sum()),
        "n_attended": int((visible & ~pad[:, :, None]).sum()),
        "n_head_positions": B * (L - first),
    }


def peak_flops(
    device: torch.device | str | None = None, dtype: torch.dtype = torch.bfloat16, name: str | None = None
) -> tuple[str, float | None]:
    """``(device name, dense peak in FLOP/s for matmuls in dtype)``; None off a known GPU.

    bf16/fp16: :data:`PEAK_BF16_FLOPS`; float32: :data:`PEAK_TF32_FLOPS` when TF32 is allowed, else
    :data:`PEAK_FP32_FLOPS`. ``name`` overrides the CUDA device name (for tests).
    """
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type != "cuda" and name is None:
        import platform

        return platform.processor() or platform.machine(), None
    name = name or torch.cuda.get_device_name(device)
    if dtype in (torch.bfloat16, torch.float16):
        table = PEAK_BF16_FLOPS
    else:
        table = PEAK_TF32_FLOPS if torch.backends.cuda.matmul.allow_tf32 else PEAK_FP32_FLOPS
    words = set(re.split(r"[^A-Za-z0-9]+", name))  # "NVIDIA H200 NVL" -> {"NVIDIA", "H200", "NVL"}
    for key in sorted(table, key=len, reverse=True):  # "H100 PCIe" before "H100"
        if all(part in words for part in key.split()):
            return name, table[key]
    return name, None


def measured_matmul_flops(
    dtype: torch.dtype = torch.float32, n: int = 2048, repeats: int = 5, device: torch.device | str = "cpu"
) -> float:
    """FLOP/s of an (n, n) @ (n, n) matmul on ``device``, best of ``repeats``: a practical ceiling on a CPU."""
    a = torch.randn(n, n, device=device, dtype=dtype)  # (n, n)
    b = torch.randn(n, n, device=device, dtype=dtype)  # (n, n)
    a @ b  # warm-up
    best = math.inf
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        a @ b
        _sync(device)
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best


def _sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def random_pairs(n: int, prompt_tokens: int, completion_tokens: int, vocab_size: int, seed: int = 0) -> list[dict]:
    """``n`` encoded pairs (the format of :func:`qstar_lib.lm.collate.encode_pairs`) of random token ids.

    Every pair has a ``prompt_tokens`` prompt and two ``completion_tokens`` completions: with random
    weights, the text does not matter, only the shapes do.
    """
    if min(n, prompt_tokens, completion_tokens) < 1:
        raise ValueError("n, prompt_tokens and completion_tokens must be >= 1")
    gen = torch.Generator().manual_seed(seed)
    pairs = []
    for _ in range(n):
        ids = torch.randint(0, vocab_size, (prompt_tokens + 2 * completion_tokens,), generator=gen).tolist()
        prompt, chosen, rejected = ids[:prompt_tokens], ids[prompt_tokens:-completion_tokens], ids[-completion_tokens:]
        pairs.append(
            {
                "chosen_input_ids": prompt + chosen,
                "chosen_n_prompt": prompt_tokens,
                "chosen_has_eos": False,
                "rejected_input_ids": prompt + rejected,
                "rejected_n_prompt": prompt_tokens,
                "rejected_has_eos": False,
            }
        )
    return pairs


def _benchmark_optimizer(params: list, optim: str, learning_rate: float, device: torch.device) -> torch.optim.Optimizer:
    """The optimizer of :func:`benchmark_dpo_step`: RMSprop (the paper's) or AdamW (fused on CUDA)."""
    fused = {"fused": True} if device.type == "cuda" and optim == "adamw" else {}
    if optim == "adamw":
        return torch.optim.AdamW(params, lr=learning_rate, **fused)
    if optim == "rmsprop":
        return torch.optim.RMSprop(params, lr=learning_rate)
    raise ValueError(f"optim={optim!r}; choose 'rmsprop' or 'adamw'")


def _autocast(model, device: torch.device, mixed_precision: str | None):
    """``(mixed precision, compute dtype, autocast context)`` of a benchmark step, as train_dpo would pick them."""
    from qstar_lib import scale

    mixed_precision = mixed_precision or scale.mixed_precision(str(device))
    if mixed_precision not in ("no", "bf16"):
        raise ValueError(f"mixed_precision={mixed_precision!r}; choose 'no' or 'bf16'")
    compute = torch.bfloat16 if mixed_precision == "bf16" else next(model.parameters()).dtype
    return (
        mixed_precision,
        compute,
        torch.autocast(device.type, dtype=torch.bfloat16, enabled=mixed_precision == "bf16"),
    )


def benchmark_dpo_step(
    model: torch.nn.Module,
    *,
    batch_size: int = 4,
    prompt_tokens: int = 400,
    completion_tokens: int = 56,
    steps: int = 5,
    warmup: int = 2,
    learning_rate: float = 5e-7,
    beta: float = 0.1,
    max_grad_norm: float = 10.0,
    optim: str = "adamw",
    seed: int = 0,
    progress: bool = True,
    mixed_precision: str | None = None,
) -> dict:
    """Time ``warmup + steps`` DPO steps of ``model`` on random pairs; return throughput and MFU.

    A step is what :func:`qstar_lib.lm.train.train_dpo` runs: float32 master weights (load the model in
    float32), the forward under ``mixed_precision`` autocast (None: :func:`qstar_lib.scale.mixed_precision`,
    bf16 on a GPU with native bf16, else ``no``), the sigmoid DPO loss (eq. 7 of DPO, the paper's eq. 9),
    backward, clipping and ``optim`` (AdamW, as the book trains; or the paper's RMSprop). The reference
    log-probs are computed once from ``model`` under the same autocast before the first update (so step 1's
    loss is ln 2, returned as ``loss1``). Only the last ``steps`` steps are timed; MFU is against the peak of
    the compute dtype (bf16 autocast: the bf16 peak; float32: TF32 or plain float32, see :func:`peak_flops`). Returned keys: ``seconds_per_step`` (median), ``tokens_per_s`` (tokens through the
    model, the prompt once per pair), ``trl_tokens_per_s`` (TRL's count: the prompt twice),
    ``model_flops_per_step`` (:func:`step_flops`), ``achieved_flops`` (per second), ``mfu`` (None without a
    known peak), ``peak_flops``, ``device_name``, ``peak_memory_bytes`` (CUDA), ``loss1``, ``params``, ``dtype``
    (of the weights), ``mixed_precision``.
    """
    from tqdm.auto import tqdm

    from qstar_lib.dpo import dpo_loss
    from qstar_lib.lm.collate import collate_shared_prompt
    from qstar_lib.lm.logps import model_device, shared_prompt_logps
    from qstar_lib.lm.models import eval_mode

    if steps < 1 or warmup < 0:
        raise ValueError(f"steps must be >= 1 and warmup >= 0, got steps={steps}, warmup={warmup}")
    device = model_device(model)
    mixed_precision, compute, autocast = _autocast(model, device, mixed_precision)
    pairs = random_pairs(batch_size, prompt_tokens, completion_tokens, model.config.vocab_size, seed)
    batch = {k: v.to(device) for k, v in collate_shared_prompt(pairs, pad_token_id=0).items()}
    counts = packed_batch_counts(batch)
    flops = step_flops(model.config, **counts, training=True)["total"]
    trl_tokens = sum(len(p["chosen_input_ids"]) + len(p["rejected_input_ids"]) for p in pairs)
    with eval_mode(model), torch.inference_mode(), autocast:
        ref_c, ref_r = (t.detach().clone() for t in shared_prompt_logps(model, batch))  # (B,), (B,)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = _benchmark_optimizer(params, optim, learning_rate, device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times, loss1 = [], None
    for step in tqdm(range(warmup + steps), desc="DPO steps", disable=not progress):
        _sync(device)
        t0 = time.perf_counter()
        with autocast:
            chosen, rejected = shared_prompt_logps(model, batch)  # (B,), (B,)
        losses, _, _ = dpo_loss(chosen, rejected, ref_c.to(chosen), ref_r.to(chosen), beta=beta)  # (B,)
        loss = losses.mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
        opt.step()
        opt.zero_grad(set_to_none=True)
        _sync(device)
        loss1 = float(loss.detach()) if step == 0 else loss1
        if step >= warmup:
            times.append(time.perf_counter() - t0)
    seconds = statistics.median(times)
    name, peak = peak_flops(device, compute)
    achieved = flops / seconds
    return {
        "seconds_per_step": seconds,
        "tokens_per_s": counts["n_tokens"] / seconds,
        "trl_tokens_per_s": trl_tokens / seconds,
        "model_flops_per_step": flops,
        "achieved_flops": achieved,
        "mfu": achieved / peak if peak else None,
        "peak_flops": peak,
        "device_name": name,
        "peak_memory_bytes": torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None,
        "loss1": loss1,
        "params": sum(p.numel() for p in model.parameters()),
        **counts,
        "batch_size": batch_size,
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "dtype": str(next(model.parameters()).dtype).replace("torch.", ""),
        "mixed_precision": mixed_precision,
    }


def benchmark_plan(
    memory_bytes: float | None = None, optim: str = "adamw", prompt_tokens: int = 400, completion_tokens: int = 56
) -> tuple[str, int]:
    """``(Pythia shape, pairs)``: the largest benchmark that fits ``memory_bytes`` (default: the current GPU's
    total memory; without a GPU the Pythia-2.8B plan of an 80 GB card).

    Estimated as float32 weights + gradients + moments (:func:`training_state_bytes`) plus bf16-autocast
    activations (~34 bytes per token, layer and d_model, kept for the backward) and float32 head logits,
    against 85% of the memory. Pythia-2.8B with AdamW alone needs ~45 GB, so a 40 GB card (A100-40GB, A10,
    L4, T4) gets a smaller shape instead of an out-of-memory error.
    """
    if memory_bytes is None:
        memory_bytes = torch.cuda.get_device_properties(0).total_memory if torch.cuda.is_available() else 80e9
    budget = 0.85 * memory_bytes
    for shape in sorted(
        PYTHIA_SHAPES, key=lambda s: -(PYTHIA_SHAPES[s]["hidden_size"] ** 2) * PYTHIA_SHAPES[s]["num_hidden_layers"]
    ):
        config = pythia_config(shape)
        h, n_layers, _, vocab = _dims(config)
        n_params = block_matmul_params(config) + 2 * vocab * h
        for pairs in (16, 8, 4, 2, 1):
            tokens = pairs * (prompt_tokens + 2 * completion_tokens)
            activations = 34 * tokens * n_layers * h + 12 * pairs * 2 * completion_tokens * vocab
            if training_state_bytes(n_params, optim) + activations <= budget:
                return shape, pairs
    return "pythia-70m", 1


#: Bytes per parameter of the training state in float32: weights, gradients and the optimizer's moments.
STATE_BYTES_PER_PARAM = {"sgd": 8, "rmsprop": 12, "adamw": 16}


def training_state_bytes(n_params: int, optim: str = "rmsprop", n_shards: int = 1) -> float:
    """Bytes per device of float32 weights + gradients + optimizer moments, sharded over ``n_shards`` (FSDP).

    Activations come on top and depend on the batch; this is the part that sharding divides. RMSprop (the
    paper's optimizer) keeps one moment per weight, AdamW two.
    """
    if optim not in STATE_BYTES_PER_PARAM:
        raise ValueError(f"optim={optim!r}; choose one of {sorted(STATE_BYTES_PER_PARAM)}")
    if n_shards < 1 or n_params < 0:
        raise ValueError("n_shards must be >= 1 and n_params >= 0")
    return STATE_BYTES_PER_PARAM[optim] * n_params / n_shards
