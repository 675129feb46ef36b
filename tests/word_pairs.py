"""Tiny word-salad preference pairs and a 32-wide Llama for the training-loop tests (one copy for all of them).

Imported by test modules as ``from word_pairs import ...`` (pytest puts ``tests/`` on ``sys.path``).
"""

from __future__ import annotations

import torch

WORDS = "the cat dog sat ran on a mat rug big small red blue my rent is 38k 250k per year and I got job".split()


def word_records(n: int, seed: int = 0) -> list[dict]:
    """``n`` records: a 6-word prompt ending in "TL;DR:", 3-word chosen and rejected completions (seeded)."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        w = [WORDS[i] for i in torch.randint(len(WORDS), (12,), generator=gen).tolist()]
        out.append(
            {
                "prompt": " ".join(w[:6]) + " TL;DR:",
                "chosen": " " + " ".join(w[6:9]),
                "rejected": " " + " ".join(w[9:12]),
            }
        )
    return out


def word_tokenizer():
    """A 300-token BPE tokenizer trained on 50 of those records."""
    from qstar_lib.lm.models import train_tiny_tokenizer

    texts = [r[k] for r in word_records(50) for k in ("prompt", "chosen", "rejected")]
    return train_tiny_tokenizer(texts, vocab_size=300)


def word_llama(tokenizer, seed: int = 0, dtype: torch.dtype = torch.float32, tie_word_embeddings: bool = True):
    """A seeded 2-layer, 32-wide LlamaForCausalLM over ``tokenizer``'s vocabulary."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=128,
        tie_word_embeddings=tie_word_embeddings,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(config).to(dtype)
