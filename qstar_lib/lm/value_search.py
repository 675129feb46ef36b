"""Value-guided search (eq. 12) and likelihood search (eq. 13) on a real language model, beam set by beam set.

Section 5.2 argues that searching for the continuation that maximises the regularised reward plus the
optimal value of where it ends (eq. 12) is, for a DPO policy, the same as searching for the continuation
with the highest likelihood under that policy (eq. 13): substituting the implicit reward of eq. 10 makes
the sum telescope, and what is left differs from ``sum_t beta * log pi_theta(a_t|s_t)`` only by
``V*(s_0)``, a constant of the prompt. So plain beam search on the DPO model *is* value-guided search on
its implicit reward.

This module holds a small hand-written beam search whose step score is either the implicit reward plus the
reference term (:func:`value_guided_beam_search`, eq. 12) or the policy's log-likelihood
(:func:`likelihood_beam_search`, eq. 13), which returns the beams kept at every step so the two can be
compared beam set by beam set; and :func:`hf_beam_search` / :func:`compare_with_generate`, which check the
hand-written search against ``generate(num_beams=k, length_penalty=0, early_stopping="never")``. The
searches stop at EOS and ``max_new_tokens`` only, so that they compare exactly with ``generate``.

It knows nothing about training or judging: it is handed models (``policy``, ``ref_model``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from qstar_lib.lm.decoding import _generation_config, _prompt_ids
from qstar_lib.lm.logps import cache_kwarg, forward_accepts, model_device, per_token_rewards
from qstar_lib.lm.models import eval_mode

# ----------------------------------------------------------------------------------------------- eq. 12-13


@dataclass
class BeamSearchResult:
    """The outcome of a hand-written beam search on one prompt.

    ``steps[t]`` is the tuple of running beams kept after step t (each a tuple of completion token ids, in
    rank order) and ``finished[t]`` the finished hypotheses after step t (ending in EOS, or cut by
    ``max_new_tokens``). ``min_margin`` is the smallest score gap at any decision the search made (which
    candidates may finish, which stay running, which finished ones are kept, the final pick, and the stop
    test): two searches whose scores agree to better than it must make the same choices.
    """

    tokens: list[int]  # the best completion (token ids, EOS included when it ended with one)
    score: float  # its cumulative score (sum of step scores)
    text: str
    steps: list[tuple[tuple[int, ...], ...]] = field(default_factory=list)
    finished: list[tuple[tuple[int, ...], ...]] = field(default_factory=list)
    finished_scores: list[float] = field(default_factory=list)  # of the final finished set, best first
    min_margin: float = math.inf
    max_abs_value: float = 0.0  # value-guided search only: max |V_hat(s)| over expanded states (0 in theory)


def _last_logits(model, sequences: torch.Tensor) -> torch.Tensor:
    """Next-token logits of each row (all rows the same length, no padding), as float32 (like HF)."""
    kw = {"logits_to_keep": 1} if forward_accepts(model, "logits_to_keep") else {}
    logits = model(input_ids=sequences.to(model_device(model)), **kw).logits[:, -1, :]  # (W, V)
    return logits.float().cpu()


class CachedLastLogits:
    """:func:`_last_logits` for a beam search, with a KV cache: each call's rows must extend the previous
    call's rows by one token (a beam search's running beams always do), so only that token is run, on the
    previous cache gathered by parent row. A row whose parent is unknown (the first call, or any other
    pattern) makes the call run every row in full and start a new cache.

    Beam search of width k over T new tokens then runs the prompt once and k tokens per step, instead of
    k prefixes of the prompt's length at every step. The logits agree with :func:`_last_logits` up to
    float32 rounding (tested); the searches of this module report their decisions' smallest margin, which
    says whether rounding of that size could change a choice.
    """

    def __init__(self, model):
        self.model = model
        self.cache = None
        self.rows: dict[tuple[int, ...], int] = {}  # a row's tokens -> its index in the cache's batch
        self.keep = {"logits_to_keep": 1} if forward_accepts(model, "logits_to_keep") else {}

    def __call__(self, sequences: torch.Tensor) -> torch.Tensor:
        from transformers import DynamicCache

        keys = [tuple(row) for row in sequences.tolist()]
        parents = [self.rows.get(key[:-1]) for key in keys]
        device = model_device(self.model)
        name = cache_kwarg(self.model)
        if self.cache is None or any(p is None for p in parents):
            self.cache = DynamicCache(config=self.model.config)
            new = sequences  # (W, T): every row in full
        else:
            self.cache.reorder_cache(torch.tensor(parents, device=device))  # (W, heads, T - 1, head_dim) per layer
            new = sequences[:, -1:]  # (W, 1)
        out = self.model(input_ids=new.to(device), use_cache=True, **{name: self.cache}, **self.keep)
        self.rows = {key: i for i, key in enumerate(keys)}
        return out.logits[:, -1, :].float().cpu()  # (W, V)


def _beam_search(
    step_scores: Callable[[torch.Tensor], torch.Tensor],
    prompt_ids: list[int],
    num_beams: int,
    max_new_tokens: int,
    eos_token_id: int,
) -> dict:
    """Beam search with the bookkeeping of ``transformers`` ``generate`` (5.x, ``length_penalty=0``,
    ``early_stopping="never"``), over an arbitrary additive step score.

    ``step_scores(sequences (W, T)) -> (W, V)`` float64 scores of every next token for the W running beams.
    Each step: all W*V extensions are ranked by cumulative score (ties: lower beam, then lower token id);
    the best 2k are kept; among the top k of them, those ending in EOS (all of them at the last step) are
    offered to the finished set, which keeps its k best; the best k non-EOS extensions become the running
    beams. The search stops at ``max_new_tokens`` or once k hypotheses are finished and the best running
    beam scores no higher than the worst finished one (scores only fall, so none could enter any more).
    """
    if num_beams < 1:
        raise ValueError(f"num_beams must be >= 1, got {num_beams}")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    k = num_beams
    prompt = torch.tensor(prompt_ids, dtype=torch.long)
    running: list[tuple[int, ...]] = [()]
    running_scores = torch.zeros(1, dtype=torch.float64)  # (W,)
    finished: list[tuple[float, tuple[int, ...]]] = []  # (score, tokens), best first
    steps, finished_steps, margins = [], [], []
    for t in range(max_new_tokens):
        seqs = torch.stack([torch.cat([prompt, torch.tensor(r, dtype=torch.long)]) for r in running])  # (W, P+t)
        step = step_scores(seqs).to(torch.float64)  # (W, V)
        vocab = step.shape[1]
        cand = (running_scores[:, None] + step).reshape(-1)  # (W*V,)
        order = torch.sort(-cand, stable=True).indices  # best first; ties keep the lower flat index
        top = order[: 2 * k + 1]
        top_scores = cand[top]
        if len(top) > k:  # which extensions may finish: ranks < k
            margins.append(float(top_scores[k - 1] - top_scores[k]))
        last = t == max_new_tokens - 1
        offered, new_running, new_scores = [], [], []
        for rank, flat in enumerate(top[: 2 * k].tolist()):
            beam, token = divmod(flat, vocab)
            seq = running[beam] + (token,)
            score = float(cand[flat])
            if token == eos_token_id or last:
                if rank < k:
                    offered.append((score, seq))
            elif len(new_running) < k:
                new_running.append(seq)
                new_scores.append(score)
        if not last:  # the boundary between the last running beam kept and the next non-EOS extension
            rest = [float(cand[f]) for f in order[: 2 * k + 2].tolist() if f % vocab != eos_token_id]
            if len(rest) > len(new_running):
                margins.append(new_scores[-1] - rest[len(new_running)])
        merged = sorted(finished + offered, key=lambda x: -x[0])  # stable: earlier finished first on ties
        if len(merged) > k:
            margins.append(merged[k - 1][0] - merged[k][0])
        finished = merged[:k]
        steps.append(tuple(new_running))
        finished_steps.append(tuple(seq for _, seq in finished))
        if last:
            break
        running, running_scores = new_running, torch.tensor(new_scores, dtype=torch.float64)
        if len(finished) == k:
            gap = float(running_scores[0]) - finished[-1][0]
            margins.append(abs(gap))
            if gap <= 0:
                break
    if len(finished) > 1:
        margins.append(finished[0][0] - finished[1][0])
    return {
        "tokens": list(finished[0][1]),
        "score": finished[0][0],
        "steps": steps,
        "finished": finished_steps,
        "finished_scores": [s for s, _ in finished],
        "min_margin": min(margins) if margins else math.inf,
    }


def likelihood_beam_search(
    policy, tokenizer, prompt: str, num_beams: int, max_new_tokens: int, beta: float = 1.0
) -> BeamSearchResult:
    """Eq. 13: beam search on ``beta * sum_t log pi_theta(a_t|s_t)`` (a positive ``beta`` changes no choice).

    This is ``generate(num_beams=k, length_penalty=0, early_stopping="never")`` written out, with the beam
    sets of every step recorded (see :func:`_beam_search`).
    """
    if beta <= 0:
        raise ValueError(f"beta must be > 0, got {beta}")

    logits = CachedLastLogits(policy)

    def step(seqs):
        with torch.inference_mode():
            return beta * torch.log_softmax(logits(seqs), dim=-1).double()  # (W, V)

    with eval_mode(policy):
        out = _beam_search(step, _prompt_ids(tokenizer, prompt), num_beams, max_new_tokens, tokenizer.eos_token_id)
    return _result(tokenizer, out)


def _result(tokenizer, out: dict, max_abs_value: float = 0.0) -> BeamSearchResult:
    return BeamSearchResult(
        text=tokenizer.decode(out["tokens"], skip_special_tokens=True), max_abs_value=max_abs_value, **out
    )


def eq12_step_score(logp: torch.Tensor, ref_logp: torch.Tensor, beta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The step score of eq. 12 for every next token, and the optimal value of its reward at each state.

    ``logp`` and ``ref_logp`` are the next-token log-probs of pi_theta and pi_ref at the W running states,
    (W, V) each. The score of token a at state s is ``r_hat(s, a) + beta * log pi_ref(a|s)``, with the
    implicit reward ``r_hat = beta * log(pi_theta / pi_ref)`` of eq. 10. The value is the soft Bellman
    backup of ``r_hat``, ``V_hat(s) = beta * log sum_a pi_ref(a|s) exp(r_hat(s, a) / beta)``, which is
    ``beta * log sum_a pi_theta(a|s) = 0``: the tail ``V*(s_{K+1})`` of eq. 12 drops out, and the summed
    score telescopes to likelihood search (eq. 13). Returns ``(score (W, V), value (W,))``.
    """
    if logp.shape != ref_logp.shape:
        raise ValueError(
            f"policy and ref_model disagree on the vocabulary: {tuple(logp.shape)} vs {tuple(ref_logp.shape)}"
        )
    r_hat = per_token_rewards(logp, ref_logp, torch.ones_like(logp, dtype=torch.bool), beta)  # (W, V) eq. 10
    value = beta * torch.logsumexp(ref_logp + r_hat / beta, dim=-1)  # (W,) soft value of r_hat: 0
    return r_hat + beta * ref_logp, value  # (W, V) eq. 12 step score, (W,)


def value_guided_beam_search(
    policy, ref_model, tokenizer, prompt: str, beta: float, num_beams: int, max_new_tokens: int
) -> BeamSearchResult:
    """Eq. 12: beam search whose step score is the implicit reward plus the reference term,
    ``r_hat(s, a) + beta * log pi_ref(a|s)`` with ``r_hat = beta * log(pi_theta / pi_ref)`` (eq. 10;
    :func:`eq12_step_score`).

    Eq. 12 also adds the optimal value of the state where the partial expansion ends. For the reward
    ``r_hat`` that value is zero at every state: the soft Bellman backup gives
    ``V_hat(s) = beta * log sum_a pi_ref(a|s) exp(r_hat(s, a) / beta) = beta * log sum_a pi_theta(a|s) = 0``
    (the policy is the optimal policy of its own implicit reward). So the tail drops out, and the score
    telescopes to ``sum_t beta * log pi_theta``: likelihood search (eq. 13). The search computes ``V_hat``
    at every expanded state from the same logits and reports ``max_abs_value`` (zero up to rounding) as a
    check. The scores are computed from both models separately, so the agreement with
    :func:`likelihood_beam_search` is a numerical fact, not a shared code path.
    """
    if beta <= 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    worst = [0.0]
    policy_logits, ref_logits = CachedLastLogits(policy), CachedLastLogits(ref_model)

    def step(seqs):
        with torch.inference_mode():
            logp = torch.log_softmax(policy_logits(seqs), dim=-1).double()  # (W, V)
            ref_logp = torch.log_softmax(ref_logits(seqs), dim=-1).double()  # (W, V)
        score, v_hat = eq12_step_score(logp, ref_logp, beta)  # (W, V), (W,)
        worst[0] = max(worst[0], float(v_hat.abs().max()))
        return score

    with eval_mode(policy, ref_model):
        out = _beam_search(step, _prompt_ids(tokenizer, prompt), num_beams, max_new_tokens, tokenizer.eos_token_id)
    return _result(tokenizer, out, max_abs_value=worst[0])


def hf_beam_search(model, tokenizer, prompt: str, num_beams: int, max_new_tokens: int) -> tuple[list[int], float]:
    """``generate(num_beams=k, length_penalty=0, early_stopping="never")`` on one prompt (no newline stop).

    Returns the best completion's token ids (EOS included if it ended with one) and its score, the sum of
    log-probs. Why these flags: ``length_penalty=0`` ranks finished beams by the plain sum of log-probs
    (eq. 13); ``early_stopping="never"`` stops only when no running beam can still beat a finished one,
    which is exact because with ``length_penalty=0`` scores never rise (HF's docstring calls this the
    canonical beam search). ``early_stopping=True`` would stop as soon as k beams have finished, even when a
    running beam could still finish higher, so it is not the same search.
    """
    ids = torch.tensor([_prompt_ids(tokenizer, prompt)], dtype=torch.long)  # (1, P)
    config = _generation_config(
        tokenizer,
        num_beams=num_beams,
        length_penalty=0.0,
        early_stopping="never",
        do_sample=False,
        temperature=1.0,
        top_k=None,
        max_new_tokens=max_new_tokens,
    )
    config.return_dict_in_generate = True
    config.output_scores = True
    device = model_device(model)
    with eval_mode(model), torch.inference_mode():
        out = model.generate(
            input_ids=ids.to(device), attention_mask=torch.ones_like(ids).to(device), generation_config=config
        )
    if num_beams > 1:
        n_new = int((out.beam_indices[0] >= 0).sum())
        score = float(out.sequences_scores[0])
    else:  # greedy: no beam bookkeeping; the length is up to and including the first EOS
        new = out.sequences[0, ids.shape[1] :].tolist()
        n_new = new.index(tokenizer.eos_token_id) + 1 if tokenizer.eos_token_id in new else len(new)
        score = float(sum(torch.log_softmax(s[0].float(), -1)[tok] for s, tok in zip(out.scores, new[:n_new])))
    tokens = out.sequences[0, ids.shape[1] : ids.shape[1] + n_new].tolist()
    return tokens, score


def compare_with_generate(
    policy, tokenizer, prompt: str, num_beams: int, max_new_tokens: int, tol: float = 1e-4
) -> dict:
    """Run :func:`likelihood_beam_search` and :func:`hf_beam_search` on one prompt and compare.

    The comparison is of token sequences. HF accumulates float32 scores from cached incremental forwards;
    ours accumulates float64 from full forwards, so scores differ by ~1e-6. Where some decision of our
    search was closer than ``tol`` (``near_tie``), a different choice by HF is not an error and
    ``comparable`` is False. Returns ``{"agree", "comparable", "near_tie", "min_margin", "ours", "hf",
    "score_ours", "score_hf"}``.
    """
    ours = likelihood_beam_search(policy, tokenizer, prompt, num_beams, max_new_tokens)
    hf_tokens, hf_score = hf_beam_search(policy, tokenizer, prompt, num_beams, max_new_tokens)
    near_tie = ours.min_margin < tol
    return {
        "agree": ours.tokens == hf_tokens,
        "comparable": not near_tie,
        "near_tie": near_tie,
        "min_margin": ours.min_margin,
        "ours": ours.tokens,
        "hf": hf_tokens,
        "score_ours": ours.score,
        "score_hf": hf_score,
    }
