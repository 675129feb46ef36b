"""Shared pytest fixtures: a tiny tokenizer and language model built in memory, and a network guard.

Fixtures (all cheap; none touches the network or the user's cache):

``tiny_corpus`` (session)
    the short texts the test tokenizer is trained on (a list of str).
``tiny_tokenizer`` (session)
    a byte-level BPE ``PreTrainedTokenizerFast`` (vocab 320) trained on :data:`TINY_CORPUS`, with
    ``<|endoftext|>`` as BOS/EOS and ``<|pad|>`` as pad (the recipe of ``qstar_lib.lm.models`` "tiny").
``tiny_lm`` (session)
    ``(model, tokenizer)``: a seeded 2-layer, 64-wide ``LlamaForCausalLM`` in float32 eval mode on that
    tokenizer. Treat it as read-only (use ``qstar_lib.lm.models.clone_model`` to get a copy to modify).
``pair_records`` (function)
    four preference records ``{"prompt", "chosen", "rejected"}`` of different lengths.
``isolated_cache`` (function)
    points ``$QSTAR_CACHE`` at an empty temporary folder for one test.
``no_network`` (function)
    makes every socket connection and name lookup fail, so a test proves it never reaches the network.
"""

from __future__ import annotations

import socket

import pytest
import torch

#: Short texts the in-memory test tokenizer is trained on (not the synthetic set, so no dependency on data).
TINY_CORPUS = [
    "SUBREDDIT: r/relationships TITLE: My boyfriend earns 38k and wants to move POST: We have been together",
    "for three years and he was offered a management position in another city. I am not sure what to do.",
    "TL;DR: boyfriend got a job offer in another city, should I move with him?",
    "TL;DR: my partner earns 250k and I do not want to leave my family.",
    "The quick brown fox jumps over the lazy dog. 0123456789 !?.,;:'\"()[]{}",
] * 4


@pytest.fixture(scope="session")
def tiny_corpus():
    """The list of short texts :data:`TINY_CORPUS` (tests cannot import conftest as a module)."""
    return list(TINY_CORPUS)


@pytest.fixture(scope="session")
def tiny_tokenizer():
    """A byte-level BPE tokenizer with a 320-token vocabulary; EOS ``<|endoftext|>``, pad ``<|pad|>``."""
    from qstar_lib.lm.models import train_tiny_tokenizer

    return train_tiny_tokenizer(TINY_CORPUS, vocab_size=320)


@pytest.fixture(scope="session")
def tiny_lm(tiny_tokenizer):
    """(model, tokenizer): a seeded 2-layer, 64-wide LlamaForCausalLM (float32, eval). Do not modify it."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tiny_tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        eos_token_id=tiny_tokenizer.eos_token_id,
        pad_token_id=tiny_tokenizer.pad_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1234)
        model = LlamaForCausalLM(config)
    return model.float().eval(), tiny_tokenizer


@pytest.fixture
def pair_records():
    """Four preference records of different lengths (short and long prompts and completions)."""
    return [
        {"prompt": "POST: He earns 38k. TL;DR:", "chosen": " he earns 38k", "rejected": " he earns 250k"},
        {
            "prompt": "POST: We have been together for three years and he got an offer. TL;DR:",
            "chosen": " boyfriend got a job offer in another city",
            "rejected": " boyfriend got a management position",
        },
        {"prompt": "Q:", "chosen": " yes", "rejected": " no, not at all, never"},
        {"prompt": "The quick brown fox", "chosen": " jumps over the lazy dog.", "rejected": " sleeps."},
    ]


@pytest.fixture
def isolated_cache(tmp_path, monkeypatch):
    """An empty ``$QSTAR_CACHE`` for this test (returns its path)."""
    path = tmp_path / "qstar_cache"
    monkeypatch.setenv("QSTAR_CACHE", str(path))
    return path


@pytest.fixture
def no_network(monkeypatch):
    """Every ``socket.connect`` raises, so any network access fails loudly inside the test."""

    def refuse(self, *args, **kwargs):
        raise OSError("network access attempted inside a test")

    def refuse_lookup(*args, **kwargs):
        raise OSError("network name lookup attempted inside a test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse_lookup)


@pytest.fixture(scope="session")
def random_lm():
    """A builder ``random_lm(tokenizer, seed, boost=None)`` of seeded random 2-layer LlamaForCausalLMs (float32,
    eval) over ``tokenizer``'s vocabulary. ``boost`` scales output rows (token id -> factor) so that those tokens
    become likely in some contexts and unlikely in others (a random model never ends otherwise)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    def build(tokenizer, seed: int, boost: dict[int, float] | None = None):
        config = LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=256,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = LlamaForCausalLM(config).float().eval()
        with torch.no_grad():
            for token, factor in (boost or {}).items():
                model.lm_head.weight[token] *= factor
        return model

    return build
