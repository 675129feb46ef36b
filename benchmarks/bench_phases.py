"""Every phase of the book's pipeline against this machine's measured matmul rate.

First it measures the rate of float32 matmuls (and bfloat16 where the device computes it natively,
:func:`qstar_lib.scale.native_bf16`) at the shapes of the model's layers (tokens x d_model -> d_ff and back,
the LM head). Then it times each phase of the pipeline on the model -- an SFT step, a DPO step, reference
log-probs, per-token scoring against cached reference log-probs, beam-search decoding -- and prints for each
its model FLOP rate (counted by :func:`qstar_lib.lm.throughput.step_flops`: padding and recomputation never
count) as a fraction of the best measured matmul rate of the precision the phase runs in, and its tokens per
second. Targets (issue "cpu book"): training and scoring >= 0.5 of the measured rate, decoding >= 0.25.
Fractions are ratios measured side by side in one run on one machine; the table says which machine.

Usage::

    python benchmarks/bench_phases.py --model smollm2-135m          # the cpu book's model
    python benchmarks/bench_phases.py --model tiny --quick           # seconds: the smoke test of the command
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

TARGETS = {"sft step": 0.5, "dpo step": 0.5, "reference log-probs": 0.5, "per-token scoring": 0.5, "beam search": 0.25}


def matmul_rates(config, dtype: torch.dtype, tokens: int = 2048, repeats: int = 3) -> dict[str, float]:
    """FLOP/s of ``x @ W.T`` at the model's layer shapes (best of ``repeats`` after a warm-up)."""
    h, ff, vocab = config.hidden_size, config.intermediate_size, config.vocab_size
    shapes = {"d->d_ff": (h, ff), "d_ff->d": (ff, h), "d->d": (h, h), "head": (h, min(vocab, 16384))}
    rates = {}
    for name, (n_in, n_out) in shapes.items():
        x = torch.randn(tokens, n_in, dtype=dtype)  # (T, in)
        w = torch.randn(n_out, n_in, dtype=dtype)  # (out, in)
        torch.nn.functional.linear(x, w)
        best = min(_time(lambda x=x, w=w: torch.nn.functional.linear(x, w)) for _ in range(repeats))
        rates[name] = 2 * tokens * n_in * n_out / best
    return rates


def _time(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _attended(lengths) -> int:
    return sum(n * (n + 1) // 2 for n in lengths)


def sft_step(model, lengths: list[int], repeats: int) -> tuple[float, int, dict]:
    """Seconds of one SFT step (forward, cross-entropy, backward, AdamW) on random sequences of ``lengths``."""
    from qstar_lib.lm.throughput import step_flops

    vocab, t = model.config.vocab_size, max(lengths)
    ids = torch.randint(0, vocab, (len(lengths), t))  # (B, T)
    mask = torch.zeros_like(ids)
    for i, n in enumerate(lengths):
        mask[i, :n] = 1
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-6)
    model.train()

    def step():
        out = model(input_ids=ids, attention_mask=mask, labels=ids.masked_fill(mask == 0, -100))
        out.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    step()  # warm-up
    seconds = statistics.median(_time(step) for _ in range(repeats))
    model.eval()
    n = sum(lengths)
    return seconds, n, step_flops(model.config, n, _attended(lengths), n, training=True)


def logps_phase(model, tokenizer, records, ref_rows=None) -> tuple[float, int, dict, list]:
    """Seconds of :func:`pair_logps` (``ref_rows`` None) or of :func:`score_pairs` against ``ref_rows`` (the
    policy's forward; the rewards are arithmetic on cached rows), tokens, FLOPs and the rows."""
    from qstar_lib.lm.logps import pair_logps, score_pairs
    from qstar_lib.lm.throughput import step_flops

    opts = dict(max_length=1024, progress=False)
    t0 = time.perf_counter()
    if ref_rows is None:
        rows = pair_logps(model, tokenizer, records, **opts)
    else:
        rows = score_pairs(model, None, tokenizer, records, 0.1, ref_scores=ref_rows, **opts)
    seconds = time.perf_counter() - t0
    enc = [len(tokenizer(r["prompt"], add_special_tokens=False).input_ids) for r in records]
    comp = [len(row["chosen_ids"]) + len(row["rejected_ids"]) for row in rows]
    n = sum(enc) + sum(comp)  # the prompt once per pair (shared-prompt rows)
    # shared-prompt rows: chosen tokens see the prompt and the chosen prefix, rejected ones the prompt and the
    # rejected prefix (never the chosen tokens)
    sides = [(len(row["chosen_ids"]), len(row["rejected_ids"])) for row in rows]
    attended = sum(_attended([p + c]) + p * r + r * (r + 1) // 2 for p, (c, r) in zip(enc, sides))
    flops = step_flops(model.config, n, attended, sum(comp), training=False)
    return seconds, n, flops, rows


def beam_phase(model, tokenizer, prompts, num_beams: int, max_new_tokens: int, batch: int = 4):
    """Seconds of :func:`decode_summaries` with ``num_beams``; FLOPs of the prompt prefill plus one forward of
    every beam row per decoding step, a batch running for as many steps as its longest returned decode. An
    estimate: with ``early_stopping=False`` HF may step a batch a little further than that."""
    from qstar_lib.lm.decoding import decode_summaries
    from qstar_lib.lm.throughput import step_flops

    t0 = time.perf_counter()
    out = decode_summaries(
        model, tokenizer, prompts, num_beams=num_beams, max_new_tokens=max_new_tokens, batch_size=batch, progress=False
    )
    seconds = time.perf_counter() - t0
    lens = [len(tokenizer(p, add_special_tokens=False).input_ids) for p in prompts]
    n_new = attended = 0
    for lo in range(0, len(prompts), batch):
        steps = max(d.n_tokens for d in out[lo : lo + batch])  # the batch's longest decode
        n_new += len(lens[lo : lo + batch]) * num_beams * steps
        # a new token at step t attends to the prompt and the t - 1 tokens before it, and itself
        attended += sum(num_beams * (p * steps + steps * (steps + 1) // 2) for p in lens[lo : lo + batch])
    prefill = step_flops(model.config, sum(lens), _attended(lens), len(prompts), training=False)
    decode = step_flops(model.config, n_new, attended, n_new, training=False)
    return seconds, n_new, {k: prefill[k] + decode[k] for k in decode}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m", help="a qstar_lib.lm.models.load_model name")
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke test of the command)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from qstar_lib import scale
    from qstar_lib.data import synthetic_tldr
    from qstar_lib.lm.models import load_model
    from qstar_lib.lm.throughput import benchmark_dpo_step

    model, tokenizer = load_model(args.model, dtype=torch.float32)
    n_pairs, repeats, beams, new = (4, 1, 2, 8) if args.quick else (32, 3, 5, 48)
    print(f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
          f"capability {torch.backends.cpu.get_cpu_capability()}, native bf16: {scale.native_bf16('cpu')}")  # fmt: skip
    rates = {"float32": matmul_rates(model.config, torch.float32, tokens=256 if args.quick else 2048)}
    if scale.native_bf16("cpu"):
        rates["bfloat16"] = matmul_rates(model.config, torch.bfloat16, tokens=256 if args.quick else 2048)
    for dtype, r in rates.items():
        print(f"matmul {dtype}: " + ", ".join(f"{k} {v / 1e9:.1f} GFLOP/s" for k, v in r.items()))
    peak = max(rates["float32"].values())  # every phase below runs in float32 on this CPU path
    records = synthetic_tldr(n_pairs, seed=0, split="test")
    lengths = [len(tokenizer(r["prompt"] + r["chosen"]).input_ids) for r in records[: 2 if args.quick else 8]]
    phases = {}
    phases["sft step"] = sft_step(model, lengths, repeats)
    dpo = benchmark_dpo_step(model, batch_size=2 if args.quick else 4, prompt_tokens=64 if args.quick else 240,
                             completion_tokens=16 if args.quick else 48, steps=repeats, warmup=1, progress=False,
                             mixed_precision="no")  # fmt: skip
    phases["dpo step"] = (dpo["seconds_per_step"], dpo["n_tokens"], {"total": dpo["model_flops_per_step"]})
    ref = logps_phase(model, tokenizer, records)
    phases["reference log-probs"] = ref[:3]
    phases["per-token scoring"] = logps_phase(model, tokenizer, records, ref[3])[:3]
    prompts = [r["prompt"] for r in records[: 2 if args.quick else 8]]
    phases["beam search"] = beam_phase(model, tokenizer, prompts, beams, new)
    print(f"{'phase':<22}{'seconds':>9}{'tokens/s':>11}{'GFLOP/s':>10}{'of matmul':>11}{'target':>8}  met")
    for name, (seconds, n_tokens, flops) in phases.items():
        rate = flops["total"] / seconds
        frac = rate / peak
        met = "yes" if frac >= TARGETS[name] else "no"
        print(f"{name:<22}{seconds:>9.2f}{n_tokens / seconds:>11.0f}{rate / 1e9:>10.1f}{frac:>11.2f}"
              f"{TARGETS[name]:>8.2f}  {met}")  # fmt: skip
    print(f"measured float32 matmul rate: {peak / 1e9:.1f} GFLOP/s (best layer shape)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
