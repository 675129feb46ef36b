"""Language models: loading, collation, log-probs and implicit rewards, training, checkpoints, decoding,
value-guided search, proxy tuning, throughput.

Imports nothing of ``eval``: it never judges what it decodes.

Names are exported lazily (PEP 562): ``from qstar_lib.lm import X`` loads only the module that
defines ``X``."""

from __future__ import annotations

import importlib

#: exported name -> the module of this package that defines it
_EXPORTS = {
    "STATE_JSON": "checkpoint",
    "STATE_TENSORS": "checkpoint",
    "checkpoint_dir": "checkpoint",
    "latest_checkpoint": "checkpoint",
    "load_model_weights": "checkpoint",
    "load_training_state": "checkpoint",
    "optimizer_state_from_flat": "checkpoint",
    "optimizer_state_to_flat": "checkpoint",
    "rng_state_from_flat": "checkpoint",
    "rng_state_to_flat": "checkpoint",
    "save_checkpoint": "checkpoint",
    "collate_pairs": "collate",
    "collate_shared_prompt": "collate",
    "encode_completion": "collate",
    "encode_pairs": "collate",
    "encode_sft": "collate",
    "pad_batch": "collate",
    "pad_token_id": "collate",
    "planted_labels": "collate",
    "record_field": "collate",
    "PAPER_TOP_K": "decoding",
    "first_paragraph": "decoding",
    "generate_summaries": "decoding",
    "PairScorer": "logps",
    "eq16_per_state": "logps",
    "forward_accepts": "logps",
    "logits_as_soft_q": "logps",
    "model_device": "logps",
    "pair_logps": "logps",
    "per_token_logps": "logps",
    "per_token_rewards": "logps",
    "score_pairs": "logps",
    "selective_log_softmax": "logps",
    "sequence_logps": "logps",
    "shared_prompt_logps": "logps",
    "shared_prompt_per_token_logps": "logps",
    "stacked_pair_logps": "logps",
    "supports_shared_prompt": "logps",
    "OFFLINE_DEFAULT": "models",
    "SMOLLM2_GGUF": "models",
    "SMOLLM2_GGUF_SHA256": "models",
    "SMOLLM2_PACKAGE": "models",
    "SMOLLM2_WHEEL": "models",
    "TINY": "models",
    "TINY_CONFIG": "models",
    "TINY_N_TEXTS": "models",
    "TINY_SPECIAL_TOKENS": "models",
    "TINY_VERSION": "models",
    "TINY_VOCAB_SIZE": "models",
    "build_tiny_model": "models",
    "clone_model": "models",
    "default_model_name": "models",
    "ensure_pad_token": "models",
    "eval_mode": "models",
    "hub_reachable": "models",
    "load_model": "models",
    "load_tokenizer": "models",
    "model_path": "models",
    "sha256_file": "models",
    "smollm2_cache_path": "models",
    "smollm2_folder": "models",
    "smollm2_gguf_path": "models",
    "tiny_cache_path": "models",
    "tiny_folder": "models",
    "train_mode": "models",
    "train_tiny_tokenizer": "models",
    "verify_sha256": "models",
    "ProxyTuningLogitsProcessor": "proxy",
    "implicit_advantage": "proxy",
    "proxy_distribution": "proxy",
    "proxy_logits": "proxy",
    "steered_summaries": "proxy",
    "PEAK_BF16_FLOPS": "throughput",
    "PYTHIA_SHAPES": "throughput",
    "STATE_BYTES_PER_PARAM": "throughput",
    "benchmark_dpo_step": "throughput",
    "block_matmul_params": "throughput",
    "measured_matmul_flops": "throughput",
    "packed_batch_counts": "throughput",
    "peak_flops": "throughput",
    "pythia_config": "throughput",
    "random_pairs": "throughput",
    "step_flops": "throughput",
    "training_state_bytes": "throughput",
    "DPOConfig": "train_config",
    "History": "train_config",
    "MIXED_PRECISION": "train_config",
    "OPTIMIZERS": "train_config",
    "SCHEDULERS": "train_config",
    "SFTConfig": "train_config",
    "TrainConfig": "train_config",
    "precompute_ref_logps": "train",
    "train_dpo": "train",
    "train_sft": "train",
    "BeamSearchResult": "value_search",
    "compare_with_generate": "value_search",
    "eq12_step_score": "value_search",
    "hf_beam_search": "value_search",
    "likelihood_beam_search": "value_search",
    "value_guided_beam_search": "value_search",
}
__all__ = sorted(_EXPORTS) + ['models', 'collate', 'logps', 'train', 'train_config', 'loop', 'checkpoint', 'decoding', 'value_search', 'proxy', 'throughput']


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    if name in ('models', 'collate', 'logps', 'train', 'train_config', 'loop', 'checkpoint', 'decoding', 'value_search', 'proxy', 'throughput'):
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
