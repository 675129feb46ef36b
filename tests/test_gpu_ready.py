"""What a GPU run depends on, checked on the CPU: precision by capability (torch.cuda patched), the launcher's
mixed precision reaching the Accelerator, the paper's global batch on any number of processes, the chapters'
tolerances by dtype, device placement of what the chapters build (meta models), and the run's bookkeeping
(checkpoint limit, reference release, gradient checkpointing, peak tables, memory plan)."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from word_pairs import word_llama, word_records, word_tokenizer

from qstar_lib import scale
from qstar_lib.dpo import step1_tolerance
from qstar_lib.lm.train_config import DPOConfig, SFTConfig


@pytest.fixture(scope="module")
def tok():
    return word_tokenizer()


_records = word_records


def _model(tok, seed: int = 0):
    return word_llama(tok, seed, tie_word_embeddings=False)


@pytest.fixture
def fake_gpu(monkeypatch):
    """A 'GPU' of a chosen compute capability: torch.cuda patched, QSTAR_SCALE=gpu."""

    def make(capability):
        monkeypatch.setenv("QSTAR_SCALE", "gpu")
        monkeypatch.delenv("ACCELERATE_MIXED_PRECISION", raising=False)
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)  # what a T4 reports too

    return make


# ----------------------------------------------------------------------------- precision by capability


@pytest.mark.parametrize("capability, native", [((7, 5), False), ((8, 0), True), ((9, 0), True), ((6, 1), False)])
def test_gpu_bf16_needs_compute_capability_8(fake_gpu, capability, native):
    fake_gpu(capability)
    assert scale.device() == "cuda"
    assert scale.native_bf16("cuda") is native
    # a T4 gets float32 (not emulated bf16, not fp16, which overflows in Pythia's reference log-probs)
    assert scale.dtype() == (torch.bfloat16 if native else torch.float32)
    assert scale.mixed_precision() == ("bf16" if native else "no")


@pytest.mark.parametrize(
    "capability, native", [("AVX2", False), ("AVX512", False), ("AVX512_BF16", True), ("AMX", True), ("DEFAULT", False)]
)
def test_cpu_bf16_needs_avx512_bf16_or_amx(monkeypatch, capability, native):
    monkeypatch.setenv("QSTAR_SCALE", "cpu")
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
    assert scale.native_bf16("cpu") is native
    assert scale.dtype() == torch.float32  # the ci and cpu scales stay float32 on every machine
    monkeypatch.delenv("ACCELERATE_MIXED_PRECISION", raising=False)
    assert scale.mixed_precision("cpu") == "no"


def test_launcher_precision_wins_over_capability(fake_gpu, monkeypatch):
    fake_gpu((7, 5))
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")
    assert scale.launcher_mixed_precision() == "bf16"
    assert scale.mixed_precision() == "bf16"


# ----------------------------------------------------------------------------- the Accelerator


@pytest.fixture
def fresh_accelerate():
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=False)
    yield
    AcceleratorState._reset_state(reset_partial_state=False)


def test_launcher_mixed_precision_reaches_the_accelerator(monkeypatch, fresh_accelerate):
    from qstar_lib.lm.loop import _accelerator

    monkeypatch.setenv("QSTAR_SCALE", "ci")
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")  # what `accelerate launch --mixed_precision bf16` sets
    assert DPOConfig().mixed_precision is None and SFTConfig().mixed_precision is None
    assert _accelerator(DPOConfig()).mixed_precision == "bf16"
    assert _accelerator(SFTConfig()).mixed_precision == "bf16"
    assert _accelerator(DPOConfig(mixed_precision="no")).mixed_precision == "no"  # an explicit choice wins
    monkeypatch.delenv("ACCELERATE_MIXED_PRECISION")
    assert _accelerator(DPOConfig()).mixed_precision == "no"  # CPU, not launched: float32


def test_ci_scale_keeps_the_accelerator_on_the_cpu(monkeypatch, fake_gpu):
    """With a GPU present, the ci/cpu scales still train on the CPU (the Accelerator is told cpu=True)."""
    import accelerate

    from qstar_lib.lm import loop

    seen = {}

    class Recorder:
        num_processes = 1

        def __init__(self, mixed_precision=None, cpu=False):
            seen.update(mixed_precision=mixed_precision, cpu=cpu)

    fake_gpu((9, 0))
    monkeypatch.setattr(accelerate, "Accelerator", Recorder)
    monkeypatch.setenv("QSTAR_SCALE", "ci")
    loop._accelerator(DPOConfig())
    assert seen == {"mixed_precision": "no", "cpu": True}
    monkeypatch.setenv("QSTAR_SCALE", "gpu")
    loop._accelerator(DPOConfig())
    assert seen == {"mixed_precision": "bf16", "cpu": False}  # an H100: bf16 autocast on the GPU


# ----------------------------------------------------------------------------- the global batch


@pytest.mark.parametrize("world", [1, 2, 4, 8])
def test_paper_presets_keep_the_global_batch(world):
    from qstar_lib.lm.loop import _local_micro_batches, _make_schedule

    dpo = DPOConfig.paper(max_steps=1).resolve_batch(world)
    assert dpo.global_batch(world) == 64  # the paper's 64 pairs, whatever the number of processes
    assert SFTConfig.paper(max_steps=1).resolve_batch(world).global_batch(world) == 128
    schedule = _make_schedule(1024, dpo, world)
    assert schedule.global_batch == 64
    shares = [sum(map(len, _local_micro_batches(schedule.indices(0), dpo, rank, world))) for rank in range(world)]
    assert shares == [64 // world] * world  # split over the ranks, not multiplied by them
    assert all(
        len(m) <= dpo.per_device_train_batch_size for m in _local_micro_batches(schedule.indices(0), dpo, 0, world)
    )


def test_per_device_semantics_without_a_global_batch():
    config = DPOConfig(per_device_train_batch_size=4, gradient_accumulation_steps=2, max_steps=1)
    assert config.resolve_batch(2) is config and config.global_batch(2) == 16  # TRL: per device x accum x processes
    with pytest.raises(ValueError, match="does not split"):
        DPOConfig.paper().resolve_batch(3)
    with pytest.raises(ValueError, match="not a multiple"):
        DPOConfig.paper(per_device_train_batch_size=24).resolve_batch(1)


def test_cli_paper_uses_the_global_batch():
    from qstar_lib.__main__ import _config, build_parser

    args = build_parser().parse_args(["dpo", "--model", "tiny", "--data", "x", "--paper"])
    assert _config(args, DPOConfig).global_train_batch_size == 64
    args = build_parser().parse_args(
        ["dpo", "--model", "tiny", "--data", "x", "--paper", "--gradient-accumulation-steps", "4"]
    )
    assert _config(args, DPOConfig).global_train_batch_size is None  # the user's accumulation, TRL semantics


# ----------------------------------------------------------------------------- tolerances by dtype


def test_step1_tolerance_by_dtype():
    assert step1_tolerance("no") == 1e-4 and step1_tolerance(None) == 1e-4
    assert step1_tolerance("bf16") == 1e-2  # the training tests' bf16 tolerance
    assert step1_tolerance("bf16", "rewards/margins") == 2e-2


def test_bf16_step1_within_tolerance(tok, fresh_accelerate):
    from qstar_lib.lm.train import train_dpo

    config = DPOConfig(max_steps=1, per_device_train_batch_size=4, mixed_precision="bf16", disable_tqdm=True)
    h = train_dpo(_model(tok), None, tok, _records(8), config)
    assert abs(h[0]["loss"] - math.log(2)) < step1_tolerance("bf16")
    assert abs(h[0]["rewards/margins"]) < step1_tolerance("bf16", "rewards/margins")


# ----------------------------------------------------------------------------- device placement (chapter 8)


def test_chapter8_functions_follow_the_models_device(tok):
    from qstar_lib.lm.proxy import advantage_along, implicit_advantage, logits_at_states

    models = [_model(tok, seed) for seed in (0, 1, 2)]
    prompt, completion = "the cat sat on a mat TL;DR:", " the cat sat"
    states, logits = logits_at_states(models, tok, prompt, completion, n_states=5)
    ids = tok(prompt + completion, return_tensors="pt", add_special_tokens=False).input_ids
    n_prompt = len(tok(prompt, add_special_tokens=False).input_ids)
    want = torch.linspace(n_prompt - 1, ids.shape[1] - 1, 5).long()
    assert torch.equal(states, want)
    with torch.inference_mode():
        assert torch.equal(logits[1], models[1](input_ids=ids).logits[0][want].double())
    per_token, taken = advantage_along(models[1], models[2], tok, prompt, completion, 1.0)
    with torch.inference_mode():
        adv = implicit_advantage(models[1](input_ids=ids).logits[0], models[2](input_ids=ids).logits[0], 1.0)
    assert torch.equal(taken, ids[0, n_prompt:])
    assert torch.allclose(per_token, adv[n_prompt - 1 : -1].gather(-1, taken[:, None])[:, 0])
    per_token.cpu().numpy()  # what the chapter plots

    meta = [copy.deepcopy(m).to("meta") for m in models]  # a model on another device than the CPU-built ids
    states, logits = logits_at_states(meta, tok, prompt, completion)
    assert states.device.type == "meta" and all(x.device.type == "meta" for x in logits)
    per_token, taken = advantage_along(meta[1], meta[2], tok, prompt, completion, 1.0)
    assert per_token.device.type == "meta" and taken.device.type == "meta"
    per_token, taken = advantage_along(models[1], models[2], tok, prompt, completion, 1.0, device="cpu")
    assert per_token.device.type == "cpu"


def test_pair_scorer_knows_the_logit_start_on_the_cpu(tok):
    """The collate computes where the LM head starts, so a GPU forward needs no device sync; same numbers."""
    from qstar_lib.lm.collate import encode_pairs
    from qstar_lib.lm.logps import PairScorer

    model = _model(tok).eval()
    pairs = encode_pairs(_records(4), tok, max_length=64)
    for share in (True, False):
        scorer = PairScorer(model, tok.pad_token_id, share)
        batch = scorer.collate(pairs)
        assert isinstance(batch["logits_from"], int)
        plain = {k: v for k, v in batch.items() if k != "logits_from"}
        with torch.inference_mode():
            for a, b in zip(scorer(model, batch), scorer(model, plain)):
                assert torch.equal(a, b)


# ----------------------------------------------------------------------------- run bookkeeping


def test_save_total_limit_and_reference_release(tok, tmp_path, fresh_accelerate):
    from qstar_lib.lm.train import train_dpo

    ref = _model(tok, 1)
    released = []
    ref.to = lambda device, _to=ref.to: released.append(str(device)) or _to(device)
    config = DPOConfig(
        max_steps=3,
        save_steps=1,
        save_total_limit=1,
        per_device_train_batch_size=2,
        output_dir=str(tmp_path),
        disable_tqdm=True,
    )
    train_dpo(_model(tok), ref, tok, _records(6), config)
    assert sorted(p.name for p in tmp_path.glob("checkpoint-*")) == ["checkpoint-3"]
    assert released[-1] == "cpu" or released == ["cpu"]  # moved to the device, then off it


def test_gradient_checkpointing_gives_the_same_step(tok, fresh_accelerate):
    from qstar_lib.lm.train import train_dpo

    rows = []
    for flag in (False, True):
        model = _model(tok)
        config = DPOConfig(
            max_steps=2,
            per_device_train_batch_size=2,
            learning_rate=1e-3,
            gradient_checkpointing=flag,
            disable_tqdm=True,
        )
        rows.append(train_dpo(model, None, tok, _records(4), config))
        assert not _checkpointing(model)  # switched off again afterwards
    for a, b in zip(*rows):
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-6)
        assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-5)


def _checkpointing(model) -> bool:
    from qstar_lib.lm.loop import _checkpointing as read

    return read(model, None)


def test_metric_window_reads_device_tensors_once():
    from qstar_lib.lm.loop import _MetricWindow

    window = _MetricWindow()
    for v in (1.0, 3.0):
        window.add(
            {
                "loss": torch.tensor(v),
                "grad_norm": torch.tensor(2 * v),
                "num_tokens": torch.tensor(10 * v),
                "learning_rate": 0.1,
            }
        )
    assert window.flush() == {"loss": 2.0, "grad_norm": 4.0, "num_tokens": 30.0, "learning_rate": 0.1}


# ----------------------------------------------------------------------------- benchmark and peaks


def test_peak_tables_by_card_and_dtype():
    from qstar_lib.lm.throughput import peak_flops

    bf16 = {
        "NVIDIA H200 NVL": 835e12,
        "NVIDIA H200": 989.4e12,
        "NVIDIA H100 80GB HBM3": 989.4e12,
        "NVIDIA H100 PCIe": 756e12,
        "NVIDIA L4": 121e12,
        "Tesla T4": 65e12,
        "NVIDIA B200": 2250e12,
        "NVIDIA GH200 480GB": 989.4e12,
        "NVIDIA A100-SXM4-40GB": 312e12,
        "NVIDIA L40": None,
    }
    for name, peak in bf16.items():
        assert peak_flops("cuda", torch.bfloat16, name=name) == (name, peak), name
    matmul, before = torch.backends.cuda.matmul, torch.backends.cuda.matmul.allow_tf32
    try:
        matmul.allow_tf32 = False
        assert peak_flops("cuda", torch.float32, name="NVIDIA H100 80GB HBM3")[1] == 66.9e12  # not the bf16 peak
        matmul.allow_tf32 = True
        assert peak_flops("cuda", torch.float32, name="NVIDIA H100 80GB HBM3")[1] == 494.7e12
    finally:
        matmul.allow_tf32 = before


def test_benchmark_plan_fits_the_card():
    from qstar_lib.lm.throughput import benchmark_plan

    assert benchmark_plan(141e9) == ("pythia-2.8b", 16)  # an H200: the chapter's full benchmark
    for memory in (40e9, 24e9, 16e9):  # A100-40GB, A10/L4, T4: no 2.8B with AdamW state (45 GB)
        assert benchmark_plan(memory)[0] != "pythia-2.8b"


def test_benchmark_step_is_the_training_step():
    from transformers import AutoModelForCausalLM

    from qstar_lib.lm.throughput import benchmark_dpo_step, pythia_config

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(
        pythia_config("pythia-70m", vocab_size=512), dtype=torch.float32, attn_implementation="sdpa"
    )
    r = benchmark_dpo_step(
        model,
        batch_size=1,
        prompt_tokens=8,
        completion_tokens=4,
        steps=1,
        warmup=0,
        progress=False,
        mixed_precision="bf16",
    )
    assert r["dtype"] == "float32" and r["mixed_precision"] == "bf16"  # fp32 master weights, bf16 autocast
    assert abs(r["loss1"] - math.log(2)) < step1_tolerance("bf16")
