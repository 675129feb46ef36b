"""GPU smoke test: one PASS/FAIL/SKIP line per check, offline, random weights (no downloads, no SmolLM2 wheel).

    bash benchmarks/gpu_smoke.sh                 # on a GPU: real shapes (SmolLM2-135M, Pythia-2.8B), < 8 minutes
    python benchmarks/gpu_smoke.py --cpu-dry-run # tiny shapes on the CPU (automatic without CUDA)

Checks: scale/device/dtype by capability; shared-prompt log-probs against the two-row [chosen; rejected] batch
in fp32 and bf16; a tiny DPO run on the device with save and exact resume; ``accelerate launch`` with each
config in configs/accelerate (FSDP2 full-state save and reload; SKIP with fewer than 2 GPUs); chapter 8's
decoding path; and the training loop's DPO step on a Pythia-2.8B shape (fp32 master weights, bf16 autocast,
AdamW): step-1 loss against ln 2, peak memory, tokens/s, MFU. Exit status 1 if any check FAILs.
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS: list[str] = []


class Skip(Exception):
    """A check that does not apply here (its message says why)."""


def check(name: str):
    def wrap(fn):
        def run(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                detail = fn(*args, **kwargs) or ""
                status = "PASS"
            except Skip as why:
                status, detail = "SKIP", str(why)
            except Exception as err:  # noqa: BLE001 - every failure is one FAIL line
                status, detail = "FAIL", f"{type(err).__name__}: {err}"
                traceback.print_exc(file=sys.stderr)
            line = f"{status} {name}: {detail} ({time.perf_counter() - t0:.1f}s)"
            RESULTS.append(status)
            print(line, flush=True)

        return run

    return wrap


def _tokenizer():
    from qstar_lib.lm.models import load_tokenizer, tiny_folder

    return load_tokenizer(str(tiny_folder()))


def _llama(tok, dry: bool, seed: int = 0):
    """SmolLM2-135M's shape (random weights), or a tiny one for the dry run; float32, sdpa."""
    from transformers import LlamaConfig, LlamaForCausalLM

    shape = (
        dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)
        if dry
        else dict(
            hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3
        )
    )
    config = LlamaConfig(
        vocab_size=len(tok),
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        **shape,
    )
    config._attn_implementation = "sdpa"
    torch.manual_seed(seed)
    return LlamaForCausalLM(config).float()


def _records(n: int):
    from qstar_lib.data import synthetic_tldr

    return synthetic_tldr(n, seed=0, split="train")


@check("scale/device/dtype")
def check_scale(device: str):
    from qstar_lib import scale

    got = (scale.active_scale(), scale.device(), str(scale.dtype()), scale.mixed_precision())
    if device == "cuda":
        cap = torch.cuda.get_device_capability()
        want_bf16 = cap[0] >= 8
        assert got[1] == "cuda", got
        assert (scale.dtype() == torch.bfloat16) == want_bf16 and (got[3] == "bf16") == want_bf16, (cap, got)
        return f"{torch.cuda.get_device_name()} cc {cap[0]}.{cap[1]}: scale={got[0]} device={got[1]} dtype={got[2]} mixed={got[3]}"
    assert got[1] == "cpu" and scale.dtype() == torch.float32, got
    return f"cpu ({torch.backends.cpu.get_cpu_capability()}): scale={got[0]} dtype={got[2]} mixed={got[3]}"


@check("shared-prompt log-probs vs two-row batch (fp32, bf16 autocast)")
def check_logps(device: str, dry: bool):
    from qstar_lib.lm.collate import encode_pairs
    from qstar_lib.lm.logps import PairScorer, to_device

    tok = _tokenizer()
    model = _llama(tok, dry).to(device).eval()
    pairs = encode_pairs(_records(8), tok, max_length=512)
    gaps = {}
    for name, dtype, tol in (("fp32", None, 1e-3), ("bf16", torch.bfloat16, 0.5)):
        autocast = torch.autocast(torch.device(device).type, dtype=dtype or torch.float32, enabled=dtype is not None)
        outs = []
        for shared in (True, False):
            scorer = PairScorer(model, tok.pad_token_id, shared)
            assert scorer.shared == shared
            with torch.inference_mode(), autocast:
                outs.append(torch.cat(scorer(model, to_device(scorer.collate(pairs), device))).double().cpu())
        gaps[name] = float((outs[0] - outs[1]).abs().max())
        assert gaps[name] <= tol, (name, gaps[name], tol)  # summed log-probs of ~50 tokens
    return ", ".join(f"{k} max gap {v:.2e}" for k, v in gaps.items())


@check("tiny DPO on the device: save + exact resume")
def check_resume(device: str):
    from safetensors.torch import load_file

    from qstar_lib.lm.train import train_dpo
    from qstar_lib.lm.train_config import DPOConfig

    tok = _tokenizer()
    records = _records(16)
    with tempfile.TemporaryDirectory() as tmp:
        kw = dict(per_device_train_batch_size=4, learning_rate=1e-3, save_steps=2, disable_tqdm=True, max_length=256)
        full = train_dpo(_llama(tok, True), None, tok, records, DPOConfig(max_steps=4, output_dir=f"{tmp}/a", **kw))
        train_dpo(_llama(tok, True), None, tok, records, DPOConfig(max_steps=2, output_dir=f"{tmp}/b", **kw))
        resumed = train_dpo(
            _llama(tok, True),
            None,
            tok,
            records,
            DPOConfig(max_steps=4, output_dir=f"{tmp}/b", **kw),
            resume_from=f"{tmp}/b/checkpoint-2",
        )
        a, b = (load_file(f"{tmp}/{x}/checkpoint-4/model.safetensors") for x in "ab")
        gap = max(float((a[k].double() - b[k].double()).abs().max()) for k in a)
        assert gap == 0.0, f"resumed weights differ by {gap}"
        assert full[-1]["loss"] == resumed[-1]["loss"]
        assert abs(full[0]["loss"] - math.log(2)) < 1e-2
    return f"4 steps == 2 + resume 2 exactly on {device}; step-1 loss {full[0]['loss']:.6f}"


def _launch(config: str, n_gpus: int, tmp: str, tok_folder: str) -> subprocess.CompletedProcess:
    from qstar_lib.__main__ import main

    data = f"{tmp}/d.jsonl"
    if not os.path.exists(data):
        assert main(["make-data", "--n", "32", "--out", data]) == 0
    cmd = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        config,
        "--num_processes",
        str(n_gpus),
        "-m",
        "qstar_lib",
        "dpo",
        "--model",
        tok_folder,
        "--data",
        data,
        "--output-dir",
        f"{tmp}/{Path(config).stem}",
        "--max-steps",
        "2",
        "--per-device-train-batch-size",
        "2",
        "--disable-tqdm",
        "--max-length",
        "256",
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, cwd=str(ROOT))


def check_launch(device: str, dry: bool):
    from qstar_lib.lm.models import tiny_folder

    n_gpus = torch.cuda.device_count() if device == "cuda" else 0
    for config in sorted((ROOT / "configs" / "accelerate").glob("*.yaml")):
        multi = "fsdp" in config.stem

        @check(f"accelerate launch --config_file {config.name}")
        def run(config=config, multi=multi):
            if n_gpus == 0:
                raise Skip("no CUDA device (the configs are GPU configs)")
            if multi and n_gpus < 2:
                raise Skip(f"{config.name} shards over several GPUs; this machine has {n_gpus}")
            with tempfile.TemporaryDirectory() as tmp:
                n = n_gpus if multi else 1
                out = _launch(str(config), n, tmp, str(tiny_folder()))
                assert out.returncode == 0, out.stderr[-1500:]
                want = "bf16" if torch.cuda.get_device_capability()[0] >= 8 else "no"  # the config's bf16 must apply
                assert f"mixed_precision={want}" in out.stdout or want == "no", out.stdout[-500:]
                from transformers import AutoModelForCausalLM

                folder = Path(tmp) / config.stem / "checkpoint-2"
                model = AutoModelForCausalLM.from_pretrained(folder)  # the full state dict reloads
                assert all(torch.isfinite(p).all() for p in model.parameters())
                line = [x for x in out.stdout.splitlines() if x.startswith("global_batch=")]
                return f"{n} process(es); {line[0] if line else ''}; checkpoint-2 reloads"

        run()


@check("chapter 8 decoding path (states, advantage, steered summaries)")
def check_chapter8(device: str, dry: bool):
    from qstar_lib.lm import advantage_along, logits_at_states, proxy_distribution, steered_summaries

    tok = _tokenizer()
    base, proxy, ref = (_llama(tok, True, seed).to(device).eval() for seed in (0, 1, 2))
    record = _records(1)[0]
    states, logits = logits_at_states((base, proxy, ref), tok, record["prompt"], record["chosen"])
    assert states.device.type == torch.device(device).type
    proxy_distribution(*logits, 1.0)
    per_token, taken = advantage_along(proxy, ref, tok, record["prompt"], record["chosen"], 1.0)
    per_token.cpu().numpy()
    out = steered_summaries(
        base, proxy, ref, tok, [r["prompt"] for r in _records(4)], 1.0, max_new_tokens=8, progress=False
    )
    assert len(out) == 4
    return f"{len(taken)} tokens scored, 4 steered summaries on {device}"


@check("DPO step, Pythia-2.8B shape (fp32 master, bf16 autocast, AdamW)")
def check_pythia(device: str, dry: bool):
    from transformers import AutoModelForCausalLM

    from qstar_lib.lm.throughput import benchmark_dpo_step, benchmark_plan, pythia_config

    if dry:
        shape, batch, lengths = "pythia-70m", 1, (32, 8)
    else:
        shape, batch = benchmark_plan()
        lengths = (400, 56)
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(pythia_config(shape), dtype=torch.float32, attn_implementation="sdpa")
    r = benchmark_dpo_step(
        model,
        batch_size=batch,
        prompt_tokens=lengths[0],
        completion_tokens=lengths[1],
        steps=1 if dry else 3,
        warmup=1,
        progress=False,
        mixed_precision="bf16",
        optim="adamw",
    )
    dev = abs(r["loss1"] - math.log(2))
    assert dev < 1e-2, f"step-1 loss {r['loss1']} is {dev:.2e} from ln 2"
    mem = f"{r['peak_memory_bytes'] / 2**30:.1f} GiB" if r["peak_memory_bytes"] else "n/a (CPU)"
    mfu = f"{100 * r['mfu']:.1f}%" if r["mfu"] is not None else "n/a (no datasheet peak)"
    return (
        f"{shape} x {batch} pairs: |loss1 - ln 2| = {dev:.2e}, peak memory {mem}, "
        f"{r['tokens_per_s']:,.0f} tokens/s, MFU {mfu}"
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cpu-dry-run", action="store_true", help="tiny shapes on the CPU (automatic without CUDA)")
    args = parser.parse_args(argv)
    dry = args.cpu_dry_run or not torch.cuda.is_available()
    device = "cpu" if dry else "cuda"
    os.environ["QSTAR_SCALE"] = "ci" if dry else "gpu"
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    print(f"gpu_smoke: device={device} dry_run={dry} torch={torch.__version__}", flush=True)
    check_scale(device)
    check_logps(device, dry)
    check_resume(device)
    check_launch(device, dry)
    check_chapter8(device, dry)
    check_pythia(device, dry)
    failed = RESULTS.count("FAIL")
    print(f"gpu_smoke: {RESULTS.count('PASS')} PASS, {RESULTS.count('SKIP')} SKIP, {failed} FAIL")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
