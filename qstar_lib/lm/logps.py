"""Per-token and sequence log-probabilities, and the per-token implicit rewards of DPO (paper eq. 10).

It knows nothing about optimisers or training loops: it runs a causal LM forward and reads log-probs.

Alignment convention used everywhere: a (B, T) tensor of per-token values is aligned with ``input_ids``;
entry t is ``log p(input_ids[t] | input_ids[:t])`` where ``completion_mask[t] == 1`` and 0 elsewhere. Entry 0
is always 0 (the first token has no context), which is why :mod:`qstar_lib.lm.collate` requires a non-empty
prompt.

Size exception: module -- the log-prob routes (stacked, shared-prompt, PairScorer) and eq. 16 share private helpers; split next
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from qstar_lib.data import validate_records
from qstar_lib.lm.collate import collate_pairs, collate_shared_prompt, encode_pairs, pad_token_id, planted_labels
from qstar_lib.lm.models import eval_mode


def selective_log_softmax(logits: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``log_softmax(logits)`` read at ``index``, without materialising the full (B, T, V) log-softmax.

    Equals the naive one-liner::

        torch.gather(logits.log_softmax(-1), dim=-1, index=index.unsqueeze(-1)).squeeze(-1)

    but holds at most one row's (T, V) temporary at a time. In float32/float64 it subtracts a per-row
    ``logsumexp`` from the gathered logit; in half precision that subtraction loses digits, so it computes
    ``log_softmax`` row by row instead (the same choice as TRL's ``selective_log_softmax``).

    Args:
        logits: (B, T, V). index: (B, T) token ids.
    Returns:
        (B, T) log-probabilities, in the dtype of ``logits``.
    """
    if logits.dtype in (torch.float32, torch.float64):
        selected = torch.gather(logits, dim=-1, index=index.unsqueeze(-1)).squeeze(-1)  # (B, T)
        lse = torch.stack([torch.logsumexp(row, dim=-1) for row in logits])  # (B, T)
        return selected - lse
    rows = []
    for row_logits, row_index in zip(logits, index):  # (T, V), (T,)
        row_logps = F.log_softmax(row_logits, dim=-1)  # (T, V)
        rows.append(row_logps.gather(dim=-1, index=row_index.unsqueeze(-1)).squeeze(-1))  # (T,)
    return torch.stack(rows)  # (B, T)


def forward_accepts(model, name: str) -> bool:
    """Whether ``model.forward`` takes keyword ``name`` (looking through DDP-style ``.module`` wrappers).

    The one signature probe of the library: optional arguments (``logits_to_keep``, ``position_ids``,
    ``use_cache``) are passed only to models that take them."""
    inner = getattr(model, "module", model)
    try:
        return name in inspect.signature(inner.forward).parameters
    except (TypeError, ValueError):
        return False


def cache_kwarg(model) -> str:
    """The keyword under which ``model`` takes a KV cache: ``cache`` (transformers >= 5.2x, where
    ``past_key_values`` is deprecated) or ``past_key_values`` (earlier releases)."""
    return "cache" if forward_accepts(model, "cache") else "past_key_values"


def output_cache(output):
    """The KV cache a forward pass returned, under either name (see :func:`cache_kwarg`)."""
    cache = getattr(output, "cache", None)
    return cache if cache is not None else getattr(output, "past_key_values", None)


def per_token_logps(
    model,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    completion_mask: torch.Tensor,
    logits_from: int | None = None,
) -> torch.Tensor:
    """Per-token log-probs of the completion tokens under ``model``, aligned with ``input_ids``.

    Args:
        model: a causal LM returning ``.logits``.
        input_ids, attention_mask, completion_mask: (B, T), padded left or right.
        logits_from: the first completion column, when already known from the batch on the CPU
            (:meth:`PairScorer.collate`): the checks and the search that read the mask (device syncs) are skipped.
    Returns:
        (B, T): entry t = log p(input_ids[t] | input_ids[:t]) where completion_mask[t] == 1, else 0.

    Position ids are computed from the attention mask (``cumsum - 1``), so a left-padded row gets the same
    positions, and hence the same values, as its right-padded twin. Only the logits from the first
    completion position onwards are computed (``logits_to_keep``) when the model supports it: with a 49k
    vocabulary the prompt's logits would otherwise dominate memory. Gradients flow when called outside
    ``torch.no_grad``.
    """
    if input_ids.shape != attention_mask.shape or input_ids.shape != completion_mask.shape:
        raise ValueError(
            f"input_ids {tuple(input_ids.shape)}, attention_mask {tuple(attention_mask.shape)} and "
            f"completion_mask {tuple(completion_mask.shape)} must have the same (B, T) shape"
        )
    B, T = input_ids.shape
    device = input_ids.device
    completion_mask = completion_mask.bool() & attention_mask.bool()  # (B, T)
    out = torch.zeros((B, T), dtype=torch.float32, device=device)
    start = _first_completion_column(completion_mask) if logits_from is None else logits_from
    if start is None:
        return out
    position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)  # (B, T)
    keep = T - start + 1
    kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
    optional = {"position_ids": position_ids, "logits_to_keep": keep, "use_cache": False}  # no KV cache needed
    kwargs.update({k: v for k, v in optional.items() if forward_accepts(model, k)})
    logits = model(**kwargs).logits  # (B, keep or T, V)
    logits = logits[:, -keep:-1]  # (B, T - start, V): predictions for columns start..T-1
    logps = selective_log_softmax(logits, input_ids[:, start:])  # (B, T - start)
    # where, not multiply: a padded row's logits may be NaN (fully masked attention) and NaN * 0 = NaN.
    out = out.to(logps.dtype)
    out[:, start:] = torch.where(completion_mask[:, start:], logps, torch.zeros_like(logps))
    return out


def _first_completion_column(completion_mask: torch.Tensor) -> int | None:
    """First column holding a completion token in any row (logits are needed from the column before it),
    None for no completion token; (B, T) boolean mask (completion and attention)."""
    if bool(completion_mask[:, 0].any()):
        raise ValueError("completion_mask[:, 0] is set: the first token has no context to predict it from")
    if not bool(completion_mask.any()):
        return None
    return int(completion_mask.any(dim=0).nonzero()[0])


def _first_logit_column(batch: Mapping[str, torch.Tensor]) -> int:
    """Of a shared-prompt batch: the first column whose logits predict a completion token."""
    src = torch.cat([batch["chosen_src"], batch["rejected_src"]], dim=1)  # (B, Tc + Tr)
    mask = torch.cat([batch["chosen_mask"], batch["rejected_mask"]], dim=1).bool()  # (B, Tc + Tr)
    return int(src[mask].min()) if bool(mask.any()) else batch["input_ids"].shape[1] - 1


def sequence_logps(per_token_logps: torch.Tensor, completion_mask: torch.Tensor) -> torch.Tensor:
    """Summed completion log-prob log pi(y|x), (B,): TRL's ``logps/chosen`` before the batch mean."""
    return (per_token_logps * completion_mask.to(per_token_logps.dtype)).sum(-1)  # (B,)


def prompt_shared_sequence_logps(
    model, prompt_ids: Sequence[int], completions: Sequence[Sequence[int]]
) -> torch.Tensor:
    """Summed log-probs log pi(c | prompt) of several completions of ONE prompt, (n,) float64: the prompt
    runs through the model once and its KV cache serves every completion.

    The same numbers as :func:`sequence_logps` of :func:`per_token_logps` on each ``[prompt; completion]`` row
    (tested, up to float32 rounding), for a fraction of the cost when completions are short beside their
    prompt: scoring the 16 decodes a TL;DR prompt of ~190 tokens gets in a beam sweep, the prompt is ~3/4 of
    every row. The first completion token is predicted by the prompt's last logits, the others by the
    completion rows' own (right-padded, positions continuing the prompt's). No gradients.
    """
    from transformers import DynamicCache

    if len(prompt_ids) == 0:
        raise ValueError("prompt_ids is empty: the first completion token would have no context")
    if any(len(c) == 0 for c in completions):
        raise ValueError("every completion needs at least one token (encode_completion appends the EOS)")
    n = len(completions)
    if n == 0:
        return torch.zeros(0, dtype=torch.float64)
    device = model_device(model)
    P, L = len(prompt_ids), max(len(c) for c in completions)
    ids = torch.zeros((n, L), dtype=torch.long)  # (n, L) right-padded completions
    mask = torch.zeros((n, L), dtype=torch.long)  # (n, L)
    for i, c in enumerate(completions):
        ids[i, : len(c)], mask[i, : len(c)] = torch.tensor(list(c)), 1
    ids, mask = ids.to(device), mask.to(device)
    key = cache_kwarg(model)
    cache = DynamicCache(config=model.config)
    with torch.inference_mode():
        prompt = torch.tensor([list(prompt_ids)], dtype=torch.long, device=device)  # (1, P)
        first = model(input_ids=prompt, use_cache=True, **{key: cache}).logits[:, -1:]  # (1, 1, V)
        cache.batch_repeat_interleave(n)  # (n, heads, P, head_dim) per layer
        attention = torch.cat([torch.ones((n, P), dtype=torch.long, device=device), mask], dim=1)  # (n, P + L)
        positions = torch.arange(P, P + L, device=device).expand(n, L)  # (n, L)
        rest = model(
            input_ids=ids, attention_mask=attention, position_ids=positions, use_cache=True, **{key: cache}
        ).logits  # (n, L, V)
        logits = torch.cat([first.expand(n, 1, -1), rest[:, :-1]], dim=1).float()  # (n, L, V): predicts ids
        logps = selective_log_softmax(logits, ids)  # (n, L)
    return torch.where(mask.bool(), logps, torch.zeros_like(logps)).double().sum(-1).cpu()  # (n,)


def per_token_rewards(
    policy_logps: torch.Tensor,
    ref_logps: torch.Tensor,
    completion_mask: torch.Tensor,
    beta: float,
) -> torch.Tensor:
    """The implicit per-token reward beta * log(pi_theta / pi_ref) on completion tokens (eq. 10), else 0.

    All arguments (B, T); returns (B, T) (it is elementwise: any one shape works). Summed over a completion
    it is the sequence reward ``beta * (log pi_theta(y|x) - log pi_ref(y|x))`` that DPO's loss compares
    (TRL's ``rewards/chosen``); given summed log-probs it is that sequence reward directly. The library's
    one implementation of eq. 10: score pairs, states of eq. 16, eq. 12's step score and best-of-n use it.
    """
    mask = completion_mask.bool()
    return torch.where(mask, beta * (policy_logps - ref_logps), torch.zeros_like(policy_logps))  # (B, T)


def logits_as_soft_q(logits: torch.Tensor, beta: float = 1.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Read a language model's logits as a soft Q-function over the next token (eq. 5-7).

    Q(s, a) = logits, V(s) = beta * logsumexp(Q(s, .) / beta), pi(a|s) = softmax(Q(s, .) / beta)
    = exp((Q(s, a) - V(s)) / beta). With beta = 1 pi is the model's own next-token distribution.

    Args:
        logits: (..., V). Returns q (..., V), v (...), pi (..., V).
    """
    if beta <= 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    q = logits
    v = beta * torch.logsumexp(q / beta, dim=-1)  # (...)
    pi = torch.softmax(q / beta, dim=-1)  # (..., V)
    return q, v, pi


def to_device(batch: Mapping[str, Any], device) -> dict[str, Any]:
    """A batch with its tensors on ``device`` (non-blocking); other entries (``logits_from``) as they are."""
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def model_device(model) -> torch.device:
    """The device of a model's first parameter (CPU for a model without parameters)."""
    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


def supports_shared_prompt(model) -> bool:
    """Whether ``model`` can run a :func:`qstar_lib.lm.collate.collate_shared_prompt` batch.

    The block-causal mask is a custom 4D mask: sdpa and eager attention take one, flash-attention does not
    (those models fall back to the ``[chosen; rejected]`` batch).
    """
    inner = getattr(model, "module", model)
    return getattr(getattr(inner, "config", None), "_attn_implementation", None) in ("sdpa", "eager")


def shared_prompt_per_token_logps(model, batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token completion log-probs from a shared-prompt batch: (B, Tc) chosen and (B, Tr) rejected.

    ``batch`` comes from :func:`qstar_lib.lm.collate.collate_shared_prompt` (one row ``[prompt | chosen |
    rejected]`` per pair). Entry j of a side is log p(token j | prompt, earlier tokens of that side),
    0 where ``{side}_mask`` is 0: the same numbers as :func:`per_token_logps` on the ``[chosen; rejected]``
    batch, for the prompt's tokens run once. Only the columns from the first one that predicts a completion
    token onwards go through the LM head (``logits_to_keep``), and the log-softmax is read at the target
    tokens without a (B, T, V) gather.
    """
    L = batch["input_ids"].shape[1]
    src = torch.cat([batch["chosen_src"], batch["rejected_src"]], dim=1)  # (B, Tc + Tr)
    ids = torch.cat([batch["chosen_ids"], batch["rejected_ids"]], dim=1)  # (B, Tc + Tr)
    mask = torch.cat([batch["chosen_mask"], batch["rejected_mask"]], dim=1).bool()  # (B, Tc + Tr)
    visible = batch["attention_mask"]  # (B, 1, L, L) boolean
    inner = getattr(model, "module", model)
    if getattr(inner.config, "_attn_implementation", None) == "eager":
        # eager attention adds the mask to the scores: 0 where visible, the dtype's minimum elsewhere
        dtype = next(model.parameters()).dtype
        visible = torch.zeros(visible.shape, dtype=dtype, device=visible.device).masked_fill(
            ~visible, torch.finfo(dtype).min
        )
    first = batch.get("logits_from")
    first = _first_logit_column(batch) if first is None else first  # known from the CPU batch: no device sync
    kwargs = dict(
        input_ids=batch["input_ids"], attention_mask=visible, position_ids=batch["position_ids"], use_cache=False
    )
    offset = 0
    if forward_accepts(model, "logits_to_keep"):
        kwargs["logits_to_keep"] = L - first
        offset = first
    logits = model(**kwargs).logits  # (B, L - offset, V)
    rows = (src - offset).clamp(min=0)  # (B, Tc + Tr)
    b = torch.arange(src.shape[0], device=src.device)[:, None]  # (B, 1)
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))  # float32 at least, float64 kept
    target_logits = logits[b, rows, ids]  # (B, Tc + Tr)
    lse = torch.logsumexp(logits, dim=-1)  # (B, L - offset)
    logps = torch.where(mask, target_logits - lse.gather(1, rows), torch.zeros_like(target_logits))  # (B, Tc + Tr)
    Tc = batch["chosen_src"].shape[1]
    return logps[:, :Tc], logps[:, Tc:]


def shared_prompt_logps(model, batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed chosen and rejected log-probs, (B,) and (B,), of a shared-prompt batch (see above)."""
    chosen, rejected = shared_prompt_per_token_logps(model, batch)  # (B, Tc), (B, Tr)
    return chosen.sum(-1), rejected.sum(-1)


def stacked_pair_logps(model, batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed completion log-probs of a ``[chosen; rejected]`` batch: one forward, split in two (B,), (B,)."""
    per_token = per_token_logps(
        model,
        batch["input_ids"],
        batch["attention_mask"],
        batch["completion_mask"],
        logits_from=batch.get("logits_from"),
    )
    per_token = per_token.to(torch.promote_types(per_token.dtype, torch.float32))  # float32 at least, float64 kept
    logps = sequence_logps(per_token, batch["completion_mask"])  # (2B,)
    return logps.chunk(2)


class PairScorer:
    """The one route from encoded pairs to their log-probs, chosen once per model.

    The shared-prompt batch (:func:`qstar_lib.lm.collate.collate_shared_prompt`, the prompt run once) when
    ``share_prompt`` and the model's attention takes a custom mask (:func:`supports_shared_prompt`), else
    the ``[chosen; rejected]`` batch of the DPO reference code. Both give the same numbers (tested to 1e-5);
    training (:func:`qstar_lib.lm.train.train_dpo`, the reference pass) and :func:`pair_logps` use this class.
    """

    def __init__(self, model, pad_token_id: int, share_prompt: bool = True) -> None:
        self.pad_token_id = pad_token_id
        self.shared = share_prompt and supports_shared_prompt(model)

    def collate(self, pairs: Sequence[Mapping]) -> dict[str, torch.Tensor]:
        """The batch of ``pairs`` (outputs of :func:`qstar_lib.lm.collate.encode_pairs`) for this route.

        Its ``logits_from`` (a Python int, computed here on the CPU) is where the LM head starts, so the forward
        on a GPU needs no device-to-host sync to find it."""
        if self.shared:
            batch = collate_shared_prompt(pairs, self.pad_token_id)
            return {**batch, "logits_from": _first_logit_column(batch)}
        batch = collate_pairs(pairs, self.pad_token_id)
        mask = batch["completion_mask"].bool() & batch["attention_mask"].bool()  # (2B, T)
        return {**batch, "logits_from": _first_completion_column(mask)}

    def __call__(self, model, batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Summed chosen and rejected completion log-probs, (B,) and (B,)."""
        return shared_prompt_logps(model, batch) if self.shared else stacked_pair_logps(model, batch)

    def per_token(self, model, batch: Mapping[str, torch.Tensor]) -> dict[str, tuple[torch.Tensor, ...]]:
        """Per side, on the CPU: ``(values, mask, ids)``, each (B, T); pair j's completion log-probs (float32)
        are ``values[j][mask[j]]``, at the tokens ``ids[j][mask[j]]``."""
        if self.shared:
            sides = dict(zip(("chosen", "rejected"), shared_prompt_per_token_logps(model, batch)))  # (B, Ts) each
            return {
                side: (sides[side].float().cpu(), batch[f"{side}_mask"].bool().cpu(), batch[f"{side}_ids"].cpu())
                for side in sides
            }
        logps = per_token_logps(model, **batch).float().cpu()  # (2B, T): chosen rows, then rejected
        mask, ids = batch["completion_mask"].bool().cpu(), batch["input_ids"].cpu()  # (2B, T) each
        b = logps.shape[0] // 2
        return {"chosen": (logps[:b], mask[:b], ids[:b]), "rejected": (logps[b:], mask[b:], ids[b:])}


def pair_logps(
    model,
    tokenizer,
    records: Sequence[Mapping],
    batch_size: int = 8,
    max_length: int = 512,
    max_prompt_length: int | None = None,
    progress: bool = True,
    share_prompt: bool = True,
) -> list[dict]:
    """Per-token log-probs of the chosen and rejected completions of preference records, one dict per record.

    Each dict has, for ``side`` in chosen/rejected: ``{side}_per_token_logps`` (list[float] aligned with the
    completion tokens: ``tokenizer(completion, add_special_tokens=False).input_ids[:n]`` then the EOS if it
    was kept), ``{side}_logps`` (their sum), ``{side}_ids`` (the token ids of those positions) and
    ``{side}_has_eos``. Runs under ``torch.inference_mode()`` with a tqdm bar.

    Pairs go through the model in batches of similar length, and (``share_prompt``, when the model's
    attention takes a custom mask) with their prompt encoded once for both completions
    (:func:`qstar_lib.lm.collate.collate_shared_prompt`); the values do not depend on either choice (tested to
    1e-5), only the time does. Compute this once for the reference model and pass it as ``ref_scores`` to
    :func:`score_pairs` to score several policies against the same reference.
    """
    from tqdm.auto import tqdm

    validate_records(records, tokenizer=tokenizer, max_length=max_length, max_prompt_length=max_prompt_length)
    encoded = encode_pairs(records, tokenizer, max_length=max_length, max_prompt_length=max_prompt_length)
    device = model_device(model)
    scorer = PairScorer(model, pad_token_id(tokenizer), share_prompt)
    order = sorted(
        range(len(encoded)), key=lambda i: len(encoded[i]["chosen_input_ids"]) + len(encoded[i]["rejected_input_ids"])
    )
    results: list[dict | None] = [None] * len(encoded)
    with eval_mode(model), torch.inference_mode():
        for lo in tqdm(range(0, len(order), batch_size), desc="log-probs", disable=not progress):
            chunk = order[lo : lo + batch_size]
            pairs = [encoded[i] for i in chunk]
            batch = to_device(scorer.collate(pairs), device)
            sides = scorer.per_token(model, batch)  # side -> (values, mask, ids), (b, T) each
            for j, (i, pair) in enumerate(zip(chunk, pairs)):
                row = {}
                for side, (values, mask, ids) in sides.items():
                    kept = values[j][mask[j]]
                    row[f"{side}_per_token_logps"] = kept.tolist()
                    row[f"{side}_logps"] = float(kept.double().sum())
                    row[f"{side}_ids"] = ids[j][mask[j]].tolist()
                    row[f"{side}_has_eos"] = bool(pair[f"{side}_has_eos"])
                results[i] = row
    return results


def score_pairs(
    model,
    ref_model,
    tokenizer,
    records: Sequence[Mapping],
    beta: float,
    batch_size: int = 8,
    max_length: int = 512,
    max_prompt_length: int | None = None,
    ref_scores: Sequence[Mapping] | None = None,
    progress: bool = True,
    scores: Sequence[Mapping] | None = None,
) -> list[dict]:
    """Per-token implicit rewards (eq. 10) of the chosen and rejected completions of each record.

    The reference log-probs come from ``ref_model`` or, when ``ref_model`` is None, from ``ref_scores``:
    the output of :func:`pair_logps` for the reference model on the same records and lengths. Likewise
    the policy's come from ``model`` or, when ``scores`` is given (``model`` is then ignored), from its
    :func:`pair_logps` rows, e.g. read from disk by :func:`qstar_lib.lm.logps_cache.cached_score_pairs`.

    Returns one dict per record with, for ``side`` in chosen/rejected:
        ``{side}_rewards`` list[float], beta * (log pi - log pi_ref) per completion token (aligned as in
        :func:`pair_logps`); ``{side}_reward`` their sum (TRL's ``rewards/{side}`` for this pair);
        ``{side}_logps``, ``ref_{side}_logps`` (sums); ``{side}_ids``; and ``margin`` =
        chosen_reward - rejected_reward. A record with planted ``errors`` also gets its token labels
        (:func:`qstar_lib.lm.collate.planted_labels`: ``rejected_labels``, ``rejected_error_labels``,
        ``rejected_errors``, ``id``, ``kind``), so the credit metrics and heatmaps read one row, not a record
        and a row matched by index.
    """
    if beta <= 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    if (ref_model is None) == (ref_scores is None):
        raise ValueError("give exactly one of ref_model and ref_scores (the pair_logps output of the reference)")
    kw = dict(batch_size=batch_size, max_length=max_length, max_prompt_length=max_prompt_length, progress=progress)
    policy = pair_logps(model, tokenizer, records, **kw) if scores is None else list(scores)
    ref = pair_logps(ref_model, tokenizer, records, **kw) if ref_model is not None else list(ref_scores)
    if len(ref) != len(records) or len(policy) != len(records):
        raise ValueError(f"{len(policy)} policy and {len(ref)} reference rows for {len(records)} records")
    out = []
    for i, (p, r) in enumerate(zip(policy, ref)):
        row = {}
        for side in ("chosen", "rejected"):
            if list(r[f"{side}_ids"]) != p[f"{side}_ids"]:
                raise ValueError(
                    f"ref_scores[{i}] {side}_ids differ from record {i}'s tokens (another tokenizer or max_length?)"
                )
            pol = torch.tensor(p[f"{side}_per_token_logps"], dtype=torch.float64)  # (T,)
            rf = torch.tensor(r[f"{side}_per_token_logps"], dtype=torch.float64)  # (T,)
            rewards = per_token_rewards(pol, rf, torch.ones_like(pol, dtype=torch.bool), beta)  # (T,) eq. 10
            row[f"{side}_rewards"] = rewards.tolist()
            row[f"{side}_reward"] = float(rewards.sum())
            row[f"{side}_logps"] = p[f"{side}_logps"]
            row[f"ref_{side}_logps"] = r[f"{side}_logps"]
            row[f"{side}_ids"] = p[f"{side}_ids"]
        row["margin"] = row["chosen_reward"] - row["rejected_reward"]
        if "errors" in records[i]:
            row.update(planted_labels(records[i], tokenizer))
        out.append(row)
    return out


def eq16_per_state(policy, reference, tokenizer, records, beta: float, max_length: int = 512) -> list[dict]:
    """Eq. 16 at every state along each record's *chosen* completion, for two trained models.

    For each record (one forward per model, float64 log-softmax over the completion states only) returns
    a dict of (T,) arrays, T = completion tokens + EOS:

    - ``expected``: sum_a pi_ref(a|s) * beta * log(pi(a|s) / pi_ref(a|s)), an explicit sum over the vocabulary;
    - ``neg_beta_kl``: -beta * KL(pi_ref(.|s) || pi(.|s)) from ``torch.distributions.kl_divergence``
      (independent code: eq. 16 says the two are equal);
    - ``realised``: beta * log(pi / pi_ref) of the chosen token itself (eq. 10, :func:`per_token_rewards`;
      summed, it is the ``rewards/chosen`` of this pair).
    """
    from qstar_lib.lm.collate import encode_sft

    Categorical = torch.distributions.Categorical
    out = []
    for enc in encode_sft(records, tokenizer, max_length=max_length):
        ids = torch.tensor([enc["input_ids"]])  # (1, L)
        n_prompt, L = enc["n_prompt"], len(enc["input_ids"])
        with torch.inference_mode():
            pol = policy(ids.to(policy.device)).logits[0, n_prompt - 1 : L - 1].double().cpu()  # (T, V)
            ref = reference(ids.to(reference.device)).logits[0, n_prompt - 1 : L - 1].double().cpu()  # (T, V)
        lp_pol, lp_ref = pol.log_softmax(-1), ref.log_softmax(-1)  # (T, V) each
        taken = ids[0, n_prompt:L]  # (T,) the chosen tokens (and EOS)
        at = torch.arange(len(taken)), taken
        out.append(
            {
                "expected": (lp_ref.exp() * beta * (lp_pol - lp_ref)).sum(-1).numpy(),  # eq. 16, left side
                "neg_beta_kl": (
                    -beta * torch.distributions.kl_divergence(Categorical(logits=ref), Categorical(logits=pol))
                ).numpy(),
                "realised": per_token_rewards(
                    lp_pol[at], lp_ref[at], torch.ones_like(taken, dtype=torch.bool), beta
                ).numpy(),  # eq. 10 of the taken tokens
            }
        )
    return out
