"""Model-FLOP counting against torch's own FLOP counter and naive counts; the DPO step benchmark's contract."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import AutoModelForCausalLM, GPTNeoXConfig

from qstar_lib.lm.collate import collate_shared_prompt
from qstar_lib.lm.throughput import (
    PYTHIA_SHAPES,
    benchmark_dpo_step,
    block_matmul_params,
    packed_batch_counts,
    peak_flops,
    pythia_config,
    random_pairs,
    step_flops,
)


def _small_neox(**kw) -> GPTNeoXConfig:
    base = dict(
        vocab_size=96,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=128,
        rotary_pct=0.25,
        max_position_embeddings=256,
        use_parallel_residual=True,
        tie_word_embeddings=False,
    )
    return GPTNeoXConfig(**{**base, **kw})


def test_pythia_2p8b_shape_has_the_published_parameter_count():
    config = pythia_config("pythia-2.8b")
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    total = sum(p.numel() for p in model.parameters())
    assert 2.77e9 < total < 2.78e9  # Pythia-2.8B: 2,775,208,960 parameters
    counted = block_matmul_params(config) + 2 * config.hidden_size * config.vocab_size  # + embedding and head
    assert abs(counted - total) / total < 1e-3  # only biases and norms are left out


def test_unknown_shape_is_refused():
    with pytest.raises(ValueError, match="pythia-2.8b"):
        pythia_config("pythia-3b")
    assert set(PYTHIA_SHAPES) >= {"pythia-70m", "pythia-2.8b"}


def test_forward_flops_equal_torch_flop_counter():
    """Our formula (blocks + attention + head) against torch.utils.flop_counter on one unmasked row."""
    from torch.utils.flop_counter import FlopCounterMode

    config = _small_neox()
    config._attn_implementation = "eager"  # plain matmuls for QK^T and AV: the counter sees the full square
    model = AutoModelForCausalLM.from_config(config).eval()
    T = 24
    ids = torch.randint(0, config.vocab_size, (1, T))  # (1, T)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(input_ids=ids)
    ours = step_flops(config, n_tokens=T, n_attended=T * T, n_head_positions=T, training=False)
    assert ours["total"] == counter.get_total_flops()


def test_training_is_three_forwards():
    config = pythia_config("pythia-70m")
    fwd = step_flops(config, 100, 5000, 40, training=False)
    train = step_flops(config, 100, 5000, 40, training=True)
    assert all(train[k] == 3 * fwd[k] for k in fwd)
    with pytest.raises(ValueError):
        step_flops(config, -1, 0, 0)


def test_packed_counts_equal_a_naive_count():
    pairs = random_pairs(3, prompt_tokens=7, completion_tokens=4, vocab_size=50)
    pairs[1] = {**pairs[1], "chosen_input_ids": pairs[1]["chosen_input_ids"][:9]}  # a shorter chosen side
    batch = collate_shared_prompt(pairs, pad_token_id=0)
    counts = packed_batch_counts(batch)
    n_tokens = n_attended = 0
    for p in pairs:
        n_p = p["chosen_n_prompt"]
        n_c, n_r = len(p["chosen_input_ids"]) - n_p, len(p["rejected_input_ids"]) - n_p
        n_tokens += n_p + n_c + n_r
        n_attended += sum(i + 1 for i in range(n_p))  # causal inside the prompt
        n_attended += sum(n_p + j + 1 for j in range(n_c)) + sum(n_p + j + 1 for j in range(n_r))  # prompt + own side
    assert counts["n_tokens"] == n_tokens and counts["n_attended"] == n_attended
    L = batch["input_ids"].shape[1]
    longest_tail = max(
        len(p["chosen_input_ids"]) + len(p["rejected_input_ids"]) - 2 * p["chosen_n_prompt"] for p in pairs
    )
    assert counts["n_head_positions"] == 3 * (longest_tail + 1) and longest_tail + 1 <= L


def test_benchmark_runs_a_dpo_step_from_ln2():
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(_small_neox())
    before = [p.detach().clone() for p in model.parameters()]
    out = benchmark_dpo_step(
        model,
        batch_size=2,
        prompt_tokens=12,
        completion_tokens=5,
        steps=2,
        warmup=1,
        learning_rate=1e-3,
        progress=False,
    )
    assert math.isclose(out["loss1"], math.log(2), abs_tol=1e-5)  # policy == reference at step 1
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))  # the optimizer stepped
    assert out["n_tokens"] == 2 * (12 + 2 * 5)
    assert out["seconds_per_step"] > 0 and out["achieved_flops"] > 0
    assert out["mfu"] is None and out["peak_flops"] is None  # no GPU peak on a CPU
    assert out["trl_tokens_per_s"] > out["tokens_per_s"]  # TRL counts the prompt twice
    with pytest.raises(ValueError, match="optim"):
        benchmark_dpo_step(
            model, batch_size=1, prompt_tokens=4, completion_tokens=2, steps=1, optim="sgd", progress=False
        )


def test_peak_flops_is_none_on_cpu():
    name, peak = peak_flops("cpu")
    assert isinstance(name, str) and peak is None


def test_training_state_bytes():
    from qstar_lib.lm.throughput import training_state_bytes

    assert training_state_bytes(2_775_208_960, "rmsprop") / 2**30 == pytest.approx(31.0, abs=0.1)
    assert training_state_bytes(1000, "adamw", n_shards=4) == 4000
    with pytest.raises(ValueError, match="optim"):
        training_state_bytes(10, "lion")
    with pytest.raises(ValueError):
        training_state_bytes(10, n_shards=0)


def test_the_phase_benchmark_runs_and_prints_every_phase(capsys):
    """``benchmarks/bench_phases.py`` on the tiny model at its smallest sizes: a smoke test of the command (the
    numbers are measured by running it, never asserted)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_phases.py"
    spec = importlib.util.spec_from_file_location("bench_phases", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.main(["--model", "tiny", "--quick"]) == 0
    out = capsys.readouterr().out
    for phase in bench.TARGETS:
        assert phase in out
    assert "matmul float32" in out and "capability" in out
