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
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Mapping

import torch

#: Dense bf16 tensor-core peaks from the vendors' datasheets, in FLOP/s (no 2:4 sparsity).
PEAK_BF16_FLOPS = {
    "H100 PCIe": 756e12,
    "H100 NVL": 835e12,
    "H100": 989.4e12,  # SXM
    "H200": 989.4e12,
    "GH200": 989.4e12,
    "A100": 312e12,
    "L40S": 362.05e12,
    "A10G": 70e12,
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
        vocab_size=vocab_size, intermediate_size=4 * shape["hidden_size"], rotary_pct=0.25,
        max_position_embeddings=2048, use_parallel_residual=True, tie_word_embeddings=False, **shape,
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
    gated = getattr(config, "hidden_act", "gelu") in ("silu", "swiglu") or config.model_type in ("llama", "mistral", "qwen2")
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


def peak_flops(device: torch.device | str | None = None) -> tuple[str, float | None]:
    """``(device name, dense bf16 peak in FLOP/s)``; the peak is None off a known GPU (see PEAK_BF16_FLOPS)."""
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type != "cuda":
        import platform

        return platform.processor() or platform.machine(), None
    name = torch.cuda.get_device_name(device)
    for key in sorted(PEAK_BF16_FLOPS, key=len, reverse=True):  # "H100 PCIe" before "H100"
        if all(part in name for part in key.split()):
            return name, PEAK_BF16_FLOPS[key]
    return name, None


def measured_matmul_flops(dtype: torch.dtype = torch.float32, n: int = 2048, repeats: int = 5,
                          device: torch.device | str = "cpu") -> float:
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
        pairs.append({"chosen_input_ids": prompt + chosen, "chosen_n_prompt": prompt_tokens, "chosen_has_eos": False,
                      "rejected_input_ids": prompt + rejected, "rejected_n_prompt": prompt_tokens,
                      "rejected_has_eos": False})
    return pairs


def _benchmark_optimizer(params: list, optim: str, learning_rate: float, device: torch.device) -> torch.optim.Optimizer:
    """The optimizer of :func:`benchmark_dpo_step`: RMSprop (the paper's) or AdamW (fused on CUDA)."""
    fused = {"fused": True} if device.type == "cuda" and optim == "adamw" else {}
    if optim == "adamw":
        return torch.optim.AdamW(params, lr=learning_rate, **fused)
    if optim == "rmsprop":
        return torch.optim.RMSprop(params, lr=learning_rate)
    raise ValueError(f"optim={optim!r}; choose 'rmsprop' or 'adamw'")


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
    optim: str = "rmsprop",
    seed: int = 0,
    progress: bool = True,
) -> dict:
    """Time ``warmup + steps`` DPO steps of ``model`` on random pairs; return throughput and MFU.

    The reference log-probs are computed once from ``model`` before the first update (so step 1's loss is
    ln 2, returned as ``loss1``); each step then runs the shared-prompt forward, the sigmoid DPO loss
    (eq. 7 of DPO, the paper's eq. 9), backward, clipping and ``optim`` (the paper's RMSprop, or AdamW).
    The model's own dtype is the compute dtype (load it in bf16 for a bf16 run). Only the last ``steps``
    steps are timed. Returned keys: ``seconds_per_step`` (median), ``tokens_per_s`` (tokens through the
    model, the prompt once per pair), ``trl_tokens_per_s`` (TRL's count: the prompt twice),
    ``model_flops_per_step`` (:func:`step_flops`), ``achieved_flops`` (per second), ``mfu`` (None without
    a known peak), ``peak_flops``, ``device_name``, ``peak_memory_bytes`` (CUDA only), ``loss1``, ``params``.
    """
    from tqdm.auto import tqdm

    from qstar_lib.dpo import dpo_loss
    from qstar_lib.lm.collate import collate_shared_prompt
    from qstar_lib.lm.logps import model_device, shared_prompt_logps
    from qstar_lib.lm.models import eval_mode

    if steps < 1 or warmup < 0:
        raise ValueError(f"steps must be >= 1 and warmup >= 0, got steps={steps}, warmup={warmup}")
    device = model_device(model)
    pairs = random_pairs(batch_size, prompt_tokens, completion_tokens, model.config.vocab_size, seed)
    batch = {k: v.to(device) for k, v in collate_shared_prompt(pairs, pad_token_id=0).items()}
    counts = packed_batch_counts(batch)
    flops = step_flops(model.config, **counts, training=True)["total"]
    trl_tokens = sum(len(p["chosen_input_ids"]) + len(p["rejected_input_ids"]) for p in pairs)
    with eval_mode(model), torch.inference_mode():
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
        chosen, rejected = shared_prompt_logps(model, batch)  # (B,), (B,)
        losses, _, _ = dpo_loss(chosen, rejected, ref_c.to(chosen), ref_r.to(chosen), beta=beta)  # (B,)
        loss = losses.mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
        opt.step()
        opt.zero_grad(set_to_none=True)
        _sync(device)
        if step == 0:
            loss1 = float(loss.detach())
        if step >= warmup:
            times.append(time.perf_counter() - t0)
    seconds = statistics.median(times)
    name, peak = peak_flops(device)
    achieved = flops / seconds
    return {
        "seconds_per_step": seconds, "tokens_per_s": counts["n_tokens"] / seconds,
        "trl_tokens_per_s": trl_tokens / seconds, "model_flops_per_step": flops, "achieved_flops": achieved,
        "mfu": achieved / peak if peak else None, "peak_flops": peak, "device_name": name,
        "peak_memory_bytes": torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None,
        "loss1": loss1, "params": sum(p.numel() for p in model.parameters()), **counts,
        "batch_size": batch_size, "prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
        "dtype": str(next(model.parameters()).dtype).replace("torch.", ""),
    }


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
