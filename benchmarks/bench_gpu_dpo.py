"""Throughput and MFU of one DPO step on a Pythia-shaped model with random weights (no download needed).

    python benchmarks/bench_gpu_dpo.py                          # Pythia-2.8B shape, bf16 autocast, on the GPU
    python benchmarks/bench_gpu_dpo.py --shape pythia-70m --mixed-precision no --batch-size 1 --steps 2   # CPU smoke run

A step is what ``qstar_lib.lm.train.train_dpo`` does once the reference log-probs are cached: float32 master
weights, the shared-prompt forward under bf16 autocast, the sigmoid DPO loss, backward, clipping at 10 and
AdamW (``--optim rmsprop``: the paper's; see ``qstar_lib.lm.throughput.benchmark_dpo_step``). Pairs are TL;DR-shaped at the paper's 512-token limit: a
400-token prompt and two 56-token summaries. MFU counts model FLOPs (``qstar_lib.lm.throughput.step_flops``)
against the card's dense peak for the compute dtype (bf16; float32: TF32 or plain); on a CPU it is printed against the measured matmul rate instead.
The last line is ``mfu=<value>`` (or ``matmul_fraction=<value>`` without a known GPU peak).
"""

from __future__ import annotations

import argparse
import json
import sys

import torch


def main(argv=None) -> int:
    from transformers import AutoModelForCausalLM

    from qstar_lib.lm.throughput import PYTHIA_SHAPES, benchmark_dpo_step, measured_matmul_flops, pythia_config

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", default="pythia-2.8b", choices=sorted(PYTHIA_SHAPES))
    parser.add_argument(
        "--mixed-precision",
        default=None,
        choices=("bf16", "no"),
        help="autocast over the float32 weights (default: bf16 on a GPU with native bf16, else no)",
    )
    parser.add_argument(
        "--batch-size", type=int, nargs="+", default=[4, 8, 16], help="pairs per step (several: a sweep)"
    )
    parser.add_argument("--prompt-tokens", type=int, default=400)
    parser.add_argument("--completion-tokens", type=int, default=56)
    parser.add_argument("--steps", type=int, default=5, help="timed steps (median reported)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--optim", default="adamw", choices=("rmsprop", "adamw"))
    parser.add_argument("--json", default=None, help="also write the results to this file")
    args = parser.parse_args(argv)

    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.float32  # master weights, as train_dpo keeps them
    torch.manual_seed(0)
    config = pythia_config(args.shape)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype, attn_implementation="sdpa")
    print(f"{args.shape}: {sum(p.numel() for p in model.parameters()) / 1e9:.3f} B parameters, float32, {device}")
    results = []
    for b in args.batch_size:
        try:
            r = benchmark_dpo_step(
                model,
                batch_size=b,
                prompt_tokens=args.prompt_tokens,
                completion_tokens=args.completion_tokens,
                steps=args.steps,
                warmup=args.warmup,
                optim=args.optim,
                mixed_precision=args.mixed_precision,
            )
        except torch.OutOfMemoryError:
            print(f"batch {b}: out of memory")
            torch.cuda.empty_cache()
            break
        results.append(r)
        mem = f"{r['peak_memory_bytes'] / 2**30:.1f} GiB" if r["peak_memory_bytes"] else "n/a"
        mfu = f"{100 * r['mfu']:.1f}%" if r["mfu"] is not None else "n/a"
        print(
            f"batch {b:3d} pairs: {r['seconds_per_step']:.3f} s/step, {r['tokens_per_s']:,.0f} tokens/s "
            f"({r['trl_tokens_per_s']:,.0f} counting the prompt twice), {r['achieved_flops'] / 1e12:.1f} TFLOP/s, "
            f"MFU {mfu}, peak memory {mem}, step-1 loss {r['loss1']:.6f}"
        )
    if not results:
        return 1
    best = max(results, key=lambda r: r["achieved_flops"])
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    if best["mfu"] is not None:
        print(f"device={best['device_name']} best_batch={best['batch_size']}")
        print(f"mfu={best['mfu']:.4f}")
    else:
        compute = torch.bfloat16 if best["mixed_precision"] == "bf16" else torch.float32
        ceiling = measured_matmul_flops(compute, device=device)
        print(f"device={best['device_name']} (no datasheet peak) matmul={ceiling / 1e12:.3f} TFLOP/s")
        print(f"matmul_fraction={best['achieved_flops'] / ceiling:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
