"""Chapter 6's two scoring levers, each against the plain computation it replaced, side by side in one run.

1. The eq. 12 / eq. 13 check: value-guided beam search (policy and reference logits at every step) with
   every prefix run again at every step (``_last_logits``) against the KV-cached scorer
   (:class:`qstar_lib.lm.value_search.CachedLastLogits`). Both searches must keep the same beams.
2. Scoring decodes under two models: one padded ``[prompt; summary]`` row per decode
   (:func:`qstar_lib.lm.logps.per_token_logps`) against
   :func:`qstar_lib.eval.sweep.sequence_log_ratios` (each unique pair once, the prompt's forward shared by
   its summaries). The summaries are the chosen and rejected ones of the held-out records, each listed
   twice, as a sweep's settings often find the same summary; both must give the same log-probs (1e-4).

Usage::

    python benchmarks/bench_search.py --model smollm2-135m      # the cpu book's model (minutes)
    python benchmarks/bench_search.py --model tiny               # seconds: the smoke test

The last lines are ``eq12_check_speedup=<plain s / cached s>`` and ``decode_scoring_speedup=<...>``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402


def _timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def bench_check(policy, ref, tokenizer, prompts, beta, num_beams, max_new_tokens) -> tuple[float, float]:
    """Seconds of the value-guided search over ``prompts``: plain, then cached (same beams asserted)."""
    from qstar_lib.lm import value_search as vs
    from qstar_lib.lm.decoding import _prompt_ids

    def search(make):
        scorers = make(policy), make(ref)

        def step(seqs):
            with torch.inference_mode():
                logp, ref_logp = (torch.log_softmax(s(seqs), -1).double() for s in scorers)  # (W, V) each
            return vs.eq12_step_score(logp, ref_logp, beta)[0]

        return [
            vs._beam_search(step, _prompt_ids(tokenizer, p), num_beams, max_new_tokens, tokenizer.eos_token_id)["steps"]
            for p in prompts
        ]

    plain, t_plain = _timed(lambda: search(lambda m: lambda seqs: vs._last_logits(m, seqs)))
    cached, t_cached = _timed(lambda: search(vs.CachedLastLogits))
    assert plain == cached, "the cached scorer changed a beam"
    return t_plain, t_cached


def bench_scoring(models, tokenizer, records, batch_size: int) -> tuple[float, float]:
    """Seconds to score every chosen and rejected summary (each twice) under ``models``: one row per
    decode, then :func:`sequence_log_ratios`; the log-probs agree to 1e-4."""
    from qstar_lib.eval.sweep import sequence_log_ratios
    from qstar_lib.lm.collate import encode_completion, pad_batch, pad_token_id
    from qstar_lib.lm.logps import per_token_logps, sequence_logps

    prompts = [r["prompt"] for r in records for _ in range(4)]
    texts = [r[side] for r in records for side in ("chosen", "rejected", "chosen", "rejected")]

    def rows():
        out = torch.zeros((len(models), len(texts)), dtype=torch.float64)  # (M, N)
        encoded = [encode_completion(p, t, tokenizer, max_length=1024) for p, t in zip(prompts, texts)]
        with torch.inference_mode():
            for lo in range(0, len(texts), batch_size):
                enc = encoded[lo : lo + batch_size]
                batch = pad_batch(enc, pad_token_id(tokenizer))
                for j, m in enumerate(models):
                    out[j, lo : lo + len(enc)] = sequence_logps(
                        per_token_logps(m, **batch).double(), batch["completion_mask"]
                    )
        return out.numpy()

    plain, t_plain = _timed(rows)
    shared, t_shared = _timed(lambda: sequence_log_ratios(models, tokenizer, prompts, texts, batch_size=batch_size))
    gap = float(abs(plain - shared).max())
    assert gap < 1e-3, f"summed log-probs differ by {gap}"
    return t_plain, t_shared


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny", help="tiny | smollm2-135m | a folder (default: %(default)s)")
    parser.add_argument("--prompts", type=int, default=2, help="prompts of the eq. 12 check (default: %(default)s)")
    parser.add_argument("--beams", type=int, default=5, help="(default: %(default)s)")
    parser.add_argument("--tokens", type=int, default=24, help="new tokens of the check (default: %(default)s)")
    parser.add_argument("--records", type=int, default=8, help="held-out records to score (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=8, help="(default: %(default)s)")
    args = parser.parse_args(argv)

    from qstar_lib.data import synthetic_tldr
    from qstar_lib.lm.models import clone_model, load_model

    torch.manual_seed(0)
    policy, tokenizer = load_model(args.model, dtype=torch.float32)
    ref = clone_model(policy)
    with torch.no_grad():  # a policy that differs from its reference, so the two scorers do real work
        for p in policy.parameters():
            p.add_(1e-3 * torch.randn_like(p))
    policy.eval(), ref.eval()
    records = synthetic_tldr(args.records, seed=0, split="test")
    print(f"model={args.model} threads={torch.get_num_threads()} capability={torch.backends.cpu.get_cpu_capability()}")
    prompts = [r["prompt"] for r in records[: args.prompts]]
    t_plain, t_cached = bench_check(policy, ref, tokenizer, prompts, 0.1, args.beams, args.tokens)
    print(
        f"eq. 12 check, {len(prompts)} prompts x {args.beams} beams x {args.tokens} tokens: plain {t_plain:.1f} s, cached {t_cached:.1f} s"
    )
    s_plain, s_shared = bench_scoring([policy, ref], tokenizer, records, args.batch_size)
    print(
        f"scoring {4 * len(records)} decodes (half repeated) under 2 models: plain {s_plain:.1f} s, shared {s_shared:.1f} s"
    )
    print(f"eq12_check_speedup={t_plain / t_cached:.2f}")
    print(f"decode_scoring_speedup={s_plain / s_shared:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
