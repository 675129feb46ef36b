"""DPO step time: TRL's DPOTrainer vs ``qstar_lib.lm.train.train_dpo``, measured side by side in one process.

Both train the same model (fresh copies of one loaded checkpoint) on the same records, in the same order
(TRL gets them pre-ordered with a sequential sampler), with the same batch size, sequence length,
optimizer (fused AdamW, transformers' default), learning rate, clipping and beta, and both precompute the reference log-probs before
training (TRL: ``precompute_ref_log_probs=True``). TRL's default gradient checkpointing is switched off
so that neither side recomputes activations. Runs alternate (TRL, ours, ours, TRL, ...) and the first
``--warmup`` steps of every run are not timed. A step is timed end to end, from the end of one optimizer
step to the end of the next (batch collation, forward, backward, clipping, optimizer).

It also times per-token scoring (``qstar_lib.lm.logps.score_pairs``: policy and reference log-probs per
token, eq. 10) over ``--n-score`` pairs against two plain forward passes over the same padded batches.

Usage::

    python benchmarks/bench_dpo.py --model smollm2-135m --steps 3 --batch-size 4 --max-length 512

The last lines are ``dpo_step_flop_ratio=<TRL tokens / ours at these shapes>`` (the bound a perfectly
efficient implementation of each would reach, see :func:`flop_ratio`) and
``dpo_step_speedup_vs_trl=<TRL median seconds per step / ours>`` (3 alternating rounds by default).
"""

from __future__ import annotations

import argparse
import copy
import gc
import math
import os
import statistics
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

# ----------------------------------------------------------------------------- memory


class PeakMemory:
    """Peak memory above the level at entry: CUDA allocator stats on a GPU, sampled RSS on a CPU."""

    def __init__(self, device: str) -> None:
        self.device = device
        self.peak_bytes = 0

    @staticmethod
    def _rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def __enter__(self):
        gc.collect()
        _malloc_trim()  # hand freed heap pages back to the OS, so the RSS baseline is not inflated by the last run
        if self.device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
            return self
        self.base = self._rss()
        self.peak = self.base
        self.stop = threading.Event()

        def sample():
            while not self.stop.is_set():
                self.peak = max(self.peak, self._rss())
                time.sleep(0.005)

        self.thread = threading.Thread(target=sample, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc):
        if self.device == "cuda":
            torch.cuda.synchronize()
            self.peak_bytes = torch.cuda.max_memory_allocated() - self.base
        else:
            self.stop.set()
            self.thread.join()
            self.peak_bytes = max(self.peak, self._rss()) - self.base
        return False


def _malloc_trim() -> None:
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


# ----------------------------------------------------------------------------- the two trainers


def run_trl(model, tokenizer, records, args, device: str) -> dict:
    """One TRL run: per-step wall times after warm-up, tokens per step, step-1 loss, peak memory."""
    import trl
    from datasets import Dataset
    from transformers import TrainerCallback

    marks: list[float] = []

    class Clock(TrainerCallback):
        def on_train_begin(self, a, state, control, **kw):
            _sync(device)
            marks.append(time.perf_counter())

        def on_step_end(self, a, state, control, **kw):
            _sync(device)
            marks.append(time.perf_counter())

    with tempfile.TemporaryDirectory() as out:
        config = trl.DPOConfig(
            output_dir=out,
            per_device_train_batch_size=args.batch_size,
            gradient_accumulation_steps=1,
            max_steps=args.warmup + args.steps,
            learning_rate=args.learning_rate,
            lr_scheduler_type="constant",
            warmup_steps=0,
            max_grad_norm=10.0,
            beta=0.1,
            max_length=args.max_length,  # optim: TRL's default (fused AdamW)
            precompute_ref_log_probs=True,
            precompute_ref_batch_size=2 * args.batch_size,
            gradient_checkpointing=False,
            bf16=False,
            use_cpu=device == "cpu",
            report_to="none",
            save_strategy="no",
            logging_steps=1,
            disable_tqdm=True,
            train_sampling_strategy="sequential",
            dataloader_num_workers=0,
            seed=args.seed,
            weight_decay=0.0,
        )
        trainer = trl.DPOTrainer(
            model=model,
            args=config,
            train_dataset=Dataset.from_list(records),
            processing_class=tokenizer,
            callbacks=[Clock()],
        )
        with PeakMemory(device) as mem:
            trainer.train()
    logs = [row for row in trainer.state.log_history if "rewards/chosen" in row]
    totals = [row["num_tokens"] for row in logs]  # cumulative
    per_step = [b - a for a, b in zip([0.0] + totals, totals)]
    times = [b - a for a, b in zip(marks, marks[1:])]
    return {
        "times": times[args.warmup :],
        "tokens": per_step[args.warmup :],
        "loss1": logs[0]["loss"],
        "logps1": logs[0]["logps/chosen"],
        "peak": mem.peak_bytes,
        "optim": str(config.optim),
    }


def run_ours(model, tokenizer, records, args, device: str) -> dict:
    from qstar_lib.lm.train import train_dpo
    from qstar_lib.lm.train_config import DPOConfig

    config = DPOConfig(
        per_device_train_batch_size=args.batch_size,
        max_steps=args.warmup + args.steps,
        learning_rate=args.learning_rate,
        max_grad_norm=10.0,
        beta=0.1,
        max_length=args.max_length,
        optim="adamw",
        seed=args.seed,
        disable_tqdm=True,
        share_prompt=not args.no_share_prompt,
    )
    marks: list[float] = []

    def clock(step, metrics, model):
        _sync(device)
        marks.append(time.perf_counter())

    # train_dpo precomputes the reference log-probs first; mark the start of training with a tiny hook on
    # the optimizer-free part: the first callback ends step 1, so step 1 (warm-up) is never timed anyway.
    with PeakMemory(device) as mem:
        history = train_dpo(model, None, tokenizer, records, config, callbacks=[clock])
    totals = history.column("num_tokens")
    per_step = [b - a for a, b in zip([0.0] + totals, totals)]
    times = [b - a for a, b in zip(marks, marks[1:])]  # steps 2..N
    return {
        "times": times[args.warmup - 1 :],
        "tokens": per_step[args.warmup :],
        "loss1": history[0]["loss"],
        "logps1": history[0]["logps/chosen"],
        "peak": mem.peak_bytes,
    }


# ----------------------------------------------------------------------------- scoring throughput


def bench_scoring(model, ref_model, tokenizer, records, args, device: str) -> dict:
    """score_pairs (two models, per-token log-probs) vs two plain forward passes, chunk by chunk, interleaved."""
    from qstar_lib.lm.collate import collate_pairs, encode_pairs
    from qstar_lib.lm.logps import score_pairs

    b = args.score_batch_size
    t_score = t_plain = 0.0
    n_tokens = 0
    for k, lo in enumerate(range(0, len(records), b)):
        chunk = records[lo : lo + b]
        batch = collate_pairs(encode_pairs(chunk, tokenizer, max_length=args.max_length), tokenizer.pad_token_id)
        batch = {key: v.to(device) for key, v in batch.items()}
        n_tokens += int(batch["attention_mask"].sum())

        def plain(batch=batch):  # bound now: called in this iteration only
            with torch.inference_mode():
                for m in (model, ref_model):
                    m(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.sum().item()

        def score(chunk=chunk):
            score_pairs(
                model, ref_model, tokenizer, chunk, beta=0.1, batch_size=b, max_length=args.max_length, progress=False
            )

        for name, fn in (("plain", plain), ("score", score)) if k % 2 == 0 else (("score", score), ("plain", plain)):
            _sync(device)
            t0 = time.perf_counter()
            fn()
            _sync(device)
            if name == "plain":
                t_plain += time.perf_counter() - t0
            else:
                t_score += time.perf_counter() - t0
    return {"pairs": len(records), "t_score": t_score, "t_plain": t_plain, "tokens": n_tokens}


# ----------------------------------------------------------------------------- main


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny", help="tiny | smollm2-135m | a folder (default: %(default)s)")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per run (default: %(default)s)")
    parser.add_argument(
        "--warmup", type=int, default=1, help="untimed steps at the start of each run (default: %(default)s)"
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="alternating TRL/ours runs of each; the median decides (default: %(default)s)",
    )
    parser.add_argument("--batch-size", type=int, default=4, help="preference pairs per step (default: %(default)s)")
    parser.add_argument(
        "--max-length", type=int, default=512, help="max tokens of prompt + completion (default: %(default)s)"
    )
    parser.add_argument("--learning-rate", type=float, default=1e-6, help="(default: %(default)s)")
    parser.add_argument(
        "--n-score", type=int, default=500, help="pairs for the scoring benchmark; 0 skips it (default: %(default)s)"
    )
    parser.add_argument(
        "--score-batch-size", type=int, default=8, help="pairs per scoring batch (default: %(default)s)"
    )
    parser.add_argument("--no-share-prompt", action="store_true", help="ours on the plain [chosen; rejected] batch")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.warmup < 1:
        parser.error("--warmup must be >= 1 (the first step includes one-off costs)")

    from qstar_lib.data import synthetic_tldr
    from qstar_lib.lm.loop import _epoch_order
    from qstar_lib.lm.models import load_model

    device = "cuda" if torch.cuda.is_available() else "cpu"
    base, tokenizer = load_model(args.model, dtype=torch.float32, device=device)
    n = args.batch_size * (args.warmup + args.steps)
    records = synthetic_tldr(n, seed=args.seed, split="train")
    order = _epoch_order(n, args.seed, 0).tolist()  # our data order; TRL reads the records in it sequentially
    trl_records = [{k: records[i][k] for k in ("prompt", "chosen", "rejected")} for i in order]
    print(
        f"model={args.model} device={device} threads={torch.get_num_threads()} params={sum(p.numel() for p in base.parameters()) / 1e6:.1f}M "
        f"batch={args.batch_size} pairs max_length={args.max_length} steps={args.steps} (+{args.warmup} warm-up) x {args.rounds} rounds"
    )

    results = {"trl": [], "ours": []}
    for r in range(args.rounds):
        for name in ("trl", "ours") if r % 2 == 0 else ("ours", "trl"):
            model = copy.deepcopy(base).train()
            fn = run_trl if name == "trl" else run_ours
            res = fn(model, tokenizer, trl_records if name == "trl" else records, args, device)
            results[name].append(res)
            print(
                f"  round {r} {name:4s}: {statistics.mean(res['times']):.3f} s/step  step-1 loss {res['loss1']:.6f}"
                + (f"  (TRL optim={res['optim']})" if "optim" in res else ""),
                flush=True,
            )
            del model
            gc.collect()

    summary = {}
    for name, runs in results.items():
        times = [t for run in runs for t in run["times"]]
        tokens = [t for run in runs for t in run["tokens"]]
        summary[name] = {
            "s_per_step": sum(times) / len(times),
            "tok_s": sum(tokens) / sum(times),
            "median_s": statistics.median(times),
            "peak_mib": max(run["peak"] for run in runs) / 2**20,
            "loss1": runs[0]["loss1"],
            "logps1": runs[0]["logps1"],
        }
    print(
        f"{'':6s} {'s/step':>8s} {'median':>8s} {'tokens/s':>9s} {'peak MiB':>9s} {'step-1 loss':>12s} {'logps/chosen@1':>15s}"
    )
    for name, s in summary.items():
        print(
            f"{name:6s} {s['s_per_step']:8.3f} {s['median_s']:8.3f} {s['tok_s']:9.1f} {s['peak_mib']:9.1f} "
            f"{s['loss1']:12.6f} {s['logps1']:15.4f}"
        )
    loss_gap = abs(summary["trl"]["loss1"] - summary["ours"]["loss1"])
    print(
        f"step-1 loss |TRL - ours| = {loss_gap:.2e} (ln 2 = {math.log(2):.6f}); equal within 1e-4: {loss_gap <= 1e-4}"
    )

    if args.n_score > 0:
        ref = copy.deepcopy(base).eval()
        policy = copy.deepcopy(base).eval()
        score_records = synthetic_tldr(args.n_score, seed=args.seed + 1, split="train")
        s = bench_scoring(policy, ref, tokenizer, score_records, args, device)
        frac = s["t_plain"] / s["t_score"]
        print(
            f"scoring {s['pairs']} pairs: score_pairs {s['t_score']:.1f} s, two plain forwards {s['t_plain']:.1f} s, "
            f"{s['tokens'] / s['t_score']:.0f} tokens/s per model; throughput fraction of two plain forwards = {frac:.3f}"
        )
        print(f"scoring_throughput_fraction={frac:.3f}")

    bound = flop_ratio(records, order, tokenizer, args)
    speedup = summary["trl"]["median_s"] / summary["ours"]["median_s"]
    print(
        f"FLOP ratio TRL/ours at these shapes (padded tokens through the model, 6 x params per token; attention's "
        f"quadratic term left out) = {bound:.3f}; measured median speedup = {speedup:.3f} = {speedup / bound:.2f} of it"
    )
    print(f"dpo_step_flop_ratio={bound:.3f}")
    print(f"dpo_step_speedup_vs_trl={speedup:.3f}")
    return 0


def flop_ratio(records, order, tokenizer, args) -> float:
    """Tokens the two implementations push through the model for the timed steps, as a ratio: TRL's padded
    ``[prompt + chosen; prompt + rejected]`` rows (2B per step, padded to the longest) over ours (one
    ``[prompt | chosen | rejected]`` row per pair, padded to the longest; the plain layout with
    ``--no-share-prompt``). Training FLOPs are ~6 x params x tokens for both, so this is the speedup a
    perfectly efficient implementation of each would show."""

    def n(text):
        return len(tokenizer(text, add_special_tokens=False).input_ids)

    trl = ours = 0
    for start in range(args.warmup * args.batch_size, len(order), args.batch_size):
        batch = [records[i] for i in order[start : start + args.batch_size]]
        lens = [(n(r["prompt"]), n(r["chosen"]) + 1, n(r["rejected"]) + 1) for r in batch]  # +1: the EOS
        pair_max = max(max(p + c, p + r) for p, c, r in lens)
        trl += 2 * len(batch) * min(pair_max, args.max_length)
        if args.no_share_prompt:
            ours += 2 * len(batch) * min(pair_max, args.max_length)
        else:
            ours += len(batch) * max(p + c + r for p, c, r in lens)
    return trl / ours


if __name__ == "__main__":
    sys.exit(main())
