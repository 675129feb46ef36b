"""Proxy tuning (paper Section 5.3): steer a base model at decoding time with a small tuned/untuned pair.

Proxy tuning (Mitchell et al. 2023; Liu et al. 2024a,b) re-weights the base model's next-token
distribution by how much a tuned *proxy* model moved away from its own *reference* model::

    pi(a|s) ∝ pi_base(a|s) * (pi_proxy(a|s) / pi_ref(a|s)) ** beta                         # eq. 14

If the proxy was trained with DPO against that reference, the paper's token-level view reads the proxy's
logits as an optimal Q-function, and the log-ratio is its optimal advantage, so eq. 14 becomes::

    pi(a|s) ∝ pi_base(a|s) * exp(beta * (Q*(s, a) - V*(s)))                                 # eq. 15

In log space both are one addition: ``base_logits + implicit_advantage(proxy_logits, ref_logits, beta)``.
Softmax ignores a per-state constant, so neither the base model's normaliser nor the proxy's V*(s) (the
log-sum-exp of its logits, eq. 15's baseline) matters: only *differences between tokens* survive.

:class:`ProxyTuningLogitsProcessor` does this inside ``model.generate``. It knows nothing about how the
proxy was trained, about tokenisation, or about judging the output: the three models must share one
vocabulary (same token ids), which is checked on the logits' last dimension. :func:`steered_summaries`
plugs it into the batched summary decoding of :mod:`qstar_lib.search` (same prompts, padding and stopping
rules as every other decoding in the book).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import Cache, LogitsProcessor

from qstar_lib.lm.logps import cache_kwarg, output_cache

__all__ = [
    "implicit_advantage",
    "proxy_logits",
    "proxy_distribution",
    "ProxyTuningLogitsProcessor",
    "steered_summaries",
    "logits_at_states",
    "advantage_along",
]


def _check_same_shape(**tensors: torch.Tensor) -> None:
    shapes = {name: tuple(t.shape) for name, t in tensors.items()}
    if len(set(shapes.values())) != 1:
        raise ValueError(f"proxy tuning needs logits of one shape (B, V) over a shared vocabulary; got {shapes}")


def _at_least_float32(x: torch.Tensor) -> torch.Tensor:
    """float16/bfloat16 logits are upcast (their log_softmax loses digits); float64 stays float64."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def implicit_advantage(proxy_logits: torch.Tensor, ref_logits: torch.Tensor, beta: float) -> torch.Tensor:
    """``beta * (log pi_proxy - log pi_ref)``, the log of eq. 14's re-weighting factor, shape (B, V).

    Eq. 15 reads the proxy as a Q-function measured against its reference (Section 4 of the paper,
    in units where the proxy's training beta is 1): ``Q*(s, a) = log pi_proxy(a|s) - log pi_ref(a|s) + V*(s)``
    with ``V*(s) = log sum_a pi_ref(a|s) exp Q*(s, a)``. Then this function returns exactly
    ``beta * (Q*(s, a) - V*(s))``, the optimal advantage. A per-state shift of ``proxy_logits`` or
    ``ref_logits`` (which moves Q* and V* together) leaves it unchanged: ``log_softmax`` removes it.
    """
    _check_same_shape(proxy_logits=proxy_logits, ref_logits=ref_logits)
    log_pi_proxy = F.log_softmax(_at_least_float32(proxy_logits), dim=-1)  # (B, V)
    log_pi_ref = F.log_softmax(_at_least_float32(ref_logits), dim=-1)  # (B, V)
    return beta * (log_pi_proxy - log_pi_ref)  # (B, V), eq. 14 in log space


def proxy_logits(
    base_logits: torch.Tensor, proxy_logits: torch.Tensor, ref_logits: torch.Tensor, beta: float
) -> torch.Tensor:
    """Unnormalised log-probabilities of eq. 14: ``base_logits + beta * (log pi_proxy - log pi_ref)``, (B, V).

    ``softmax`` of the result is exactly the normalised product ``pi_base * (pi_proxy / pi_ref)**beta``;
    ``base_logits`` may be raw logits or log-probabilities (a per-state shift does not change the softmax).
    Entries of ``base_logits`` that are ``-inf`` (tokens masked by another processor) stay ``-inf``.
    """
    _check_same_shape(base_logits=base_logits, proxy_logits=proxy_logits, ref_logits=ref_logits)
    advantage = implicit_advantage(proxy_logits, ref_logits, beta)  # (B, V)
    return _at_least_float32(base_logits) + advantage  # (B, V), eq. 14/15


def proxy_distribution(
    base_logits: torch.Tensor, proxy_logits: torch.Tensor, ref_logits: torch.Tensor, beta: float
) -> torch.Tensor:
    """The naive eq. 14 in probability space, for checking :func:`proxy_logits` against it, (B, V).

    ``pi_base * (pi_proxy / pi_ref)**beta`` divided by its sum over the vocabulary, in float64.
    """
    _check_same_shape(base_logits=base_logits, proxy_logits=proxy_logits, ref_logits=ref_logits)
    pi_base = torch.softmax(base_logits.double(), dim=-1)  # (B, V)
    pi_proxy = torch.softmax(proxy_logits.double(), dim=-1)  # (B, V)
    pi_ref = torch.softmax(ref_logits.double(), dim=-1)  # (B, V)
    unnormalised = pi_base * (pi_proxy / pi_ref) ** beta  # (B, V), eq. 14
    return unnormalised / unnormalised.sum(dim=-1, keepdim=True)  # (B, V)


class _CachedScorer:
    """Next-token logits of one causal LM for a growing batch of sequences, reusing its KV cache.

    Each call gets the full ``input_ids`` (B, T). When they extend the sequences of the previous call
    (same batch, same prefix) only the new tokens are run through the model; otherwise (a new
    ``generate`` call, beam search reordering its beams, ...) the cache is dropped and the whole prefix
    is recomputed, so the answer is always the no-cache answer.
    """

    def __init__(self, model: torch.nn.Module, use_cache: bool):
        self.model = model
        self.use_cache = use_cache
        self.reset()

    def reset(self) -> None:
        self._seen: torch.Tensor | None = None  # (B, T_seen) ids already in the cache
        self._cache: Cache | None = None

    @torch.no_grad()
    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        # position ids as generate() builds them for left padding: count only real tokens
        position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)  # (B, T)
        device = next(self.model.parameters()).device
        start = 0
        if (
            self.use_cache
            and self._seen is not None
            and self._seen.shape[0] == input_ids.shape[0]
            and self._seen.shape[1] < input_ids.shape[1]
            and torch.equal(self._seen, input_ids[:, : self._seen.shape[1]])
        ):
            start = self._seen.shape[1]
        else:
            self._cache = None  # the model starts a fresh DynamicCache when use_cache is True
        out = self.model(
            input_ids=input_ids[:, start:].to(device),  # (B, T - start)
            attention_mask=attention_mask.to(device),  # (B, T): past and new tokens
            position_ids=position_ids[:, start:].to(device),  # (B, T - start)
            **{cache_kwarg(self.model): self._cache},
            use_cache=self.use_cache,
        )
        if self.use_cache:
            self._cache = output_cache(out)
            self._seen = input_ids.clone()
        return out.logits[:, -1, :].float()  # (B, V)


class ProxyTuningLogitsProcessor(LogitsProcessor):
    """A ``transformers`` logits processor that turns the base model's step into eq. 14.

    ``generate`` calls it with the sequences so far, ``input_ids`` (B, T), and the base model's scores
    (B, V). It runs the proxy and the reference model on the same ``input_ids`` and returns::

        scores + beta * (log_softmax(proxy_logits) - log_softmax(ref_logits))       # eq. 14 in log space

    *Where it sits.* ``generate`` applies user processors to the base model's **raw** next-token logits
    (after built-in processors such as a repetition penalty, before temperature/top-k/top-p), so with no
    other processor and ``temperature=1`` sampling draws exactly from eq. 14, and greedy decoding takes
    its argmax. A temperature ``tau`` is then applied to the *combined* logits (``pi ** (1/tau)`` of
    eq. 14). In beam search ``scores`` are the base log-probabilities; the sum is eq. 14 again, because a
    per-state constant does not change a softmax.

    Args:
        proxy_model: the tuned small model (for eq. 15, a DPO model read as ``Q*``).
        ref_model: the proxy's reference (its SFT starting point); must share the base model's vocabulary.
        beta: strength of the re-weighting; ``beta=0`` returns ``scores`` unchanged without running the
            two models.
        attention_mask: (B, T0) mask of the prompt batch passed to ``generate`` (needed with left
            padding); generated tokens count as real. With beam search or ``num_return_sequences``, rows
            are repeated to match. If ``None``, leading ``pad_token_id`` tokens are masked (when
            ``pad_token_id`` is given) and otherwise nothing is.
        pad_token_id: used only when ``attention_mask`` is ``None``.
        use_cache: keep each model's KV cache between steps (default); ``False`` recomputes the prefix
            every step (the naive version the cached one is tested against).
    """

    def __init__(
        self,
        proxy_model: torch.nn.Module,
        ref_model: torch.nn.Module,
        beta: float,
        *,
        attention_mask: torch.Tensor | None = None,
        pad_token_id: int | None = None,
        use_cache: bool = True,
    ):
        if not (beta >= 0.0):
            raise ValueError(f"beta must be a number >= 0, got {beta!r}")
        if attention_mask is not None and attention_mask.dim() != 2:
            raise ValueError(f"attention_mask must be (B, T0), got shape {tuple(attention_mask.shape)}")
        self.beta = float(beta)
        self.attention_mask = attention_mask
        self.pad_token_id = pad_token_id
        self.proxy = _CachedScorer(proxy_model, use_cache)
        self.ref = _CachedScorer(ref_model, use_cache)

    def reset(self) -> None:
        """Forget both KV caches (done automatically when a new prefix arrives)."""
        self.proxy.reset()
        self.ref.reset()

    def _mask(self, input_ids: torch.Tensor) -> torch.Tensor:
        """(B, T) attention mask: the prompt's mask (or inferred left padding), then ones for generated ids."""
        batch, length = input_ids.shape
        if self.attention_mask is None:
            if self.pad_token_id is None:
                return torch.ones_like(input_ids)
            # leading pads only: a pad after the first real token (finished rows) stays attended
            return ((input_ids != self.pad_token_id).long().cumsum(-1) > 0).long()  # (B, T)
        prompt_mask = self.attention_mask.to(input_ids.device).long()  # (B0, T0)
        if batch % prompt_mask.shape[0] != 0 or prompt_mask.shape[1] > length:
            raise ValueError(
                f"attention_mask of shape {tuple(prompt_mask.shape)} does not fit input_ids of shape {(batch, length)}"
            )
        prompt_mask = prompt_mask.repeat_interleave(batch // prompt_mask.shape[0], dim=0)  # (B, T0)
        generated = torch.ones(batch, length - prompt_mask.shape[1], dtype=torch.long, device=input_ids.device)
        return torch.cat([prompt_mask, generated], dim=-1)  # (B, T)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self.beta == 0.0:
            return scores
        mask = self._mask(input_ids)  # (B, T)
        proxy = self.proxy(input_ids, mask)  # (B, V)
        ref = self.ref(input_ids, mask)  # (B, V)
        if proxy.shape[-1] != scores.shape[-1]:
            # models may pad their embedding matrices differently; only a shared vocabulary makes sense
            raise ValueError(
                f"proxy/ref vocabulary ({proxy.shape[-1]}) differs from the base model's ({scores.shape[-1]})"
            )
        return proxy_logits(scores, proxy.to(scores.device), ref.to(scores.device), self.beta)  # (B, V)


def steered_decodes(base_model, proxy_model, ref_model, tokenizer, prompts, beta: float, **generate_kwargs):
    """One :class:`qstar_lib.lm.decoding.Decoded` per prompt from ``base_model`` steered by eq. 14 with
    strength ``beta`` (0: unsteered).

    :func:`qstar_lib.lm.decoding.decode_summaries` (batched, left-padded prompts, greedy by default, stopping
    at EOS or a new paragraph) with a fresh :class:`ProxyTuningLogitsProcessor` per batch, built on that
    batch's prompt mask so the proxy and reference see the same positions as the base model. All three
    models run in evaluation mode for the duration. ``generate_kwargs`` go to ``decode_summaries``.
    """
    from qstar_lib.lm.decoding import decode_summaries
    from qstar_lib.lm.models import eval_mode

    def processors(attention_mask: torch.Tensor) -> list:
        return [ProxyTuningLogitsProcessor(proxy_model, ref_model, beta, attention_mask=attention_mask)]

    with eval_mode(proxy_model, ref_model):
        return decode_summaries(base_model, tokenizer, prompts, logits_processors=processors, **generate_kwargs)


def steered_summaries(base_model, proxy_model, ref_model, tokenizer, prompts, beta: float, **generate_kwargs):
    """The texts of :func:`steered_decodes` (same arguments)."""
    return [
        d.text for d in steered_decodes(base_model, proxy_model, ref_model, tokenizer, prompts, beta, **generate_kwargs)
    ]


def _model_device(model) -> torch.device:
    return next(model.parameters()).device


def _encode(tokenizer, prompt: str, completion: str) -> tuple[torch.Tensor, int]:
    """``(ids (1, T), n_prompt)`` of ``prompt + completion`` on the CPU (no special tokens)."""
    ids = tokenizer(prompt + completion, return_tensors="pt", add_special_tokens=False).input_ids  # (1, T)
    return ids, len(tokenizer(prompt, add_special_tokens=False).input_ids)


def logits_at_states(
    models, tokenizer, prompt: str, completion: str, n_states: int = 5, device: torch.device | str | None = None
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Chapter 8's states: ``n_states`` positions from the prompt's last token to the completion's last, (S,),
    and each model's float64 logits there, (S, V) each, all on ``device`` (default: the first model's).

    The token ids go to each model's own device (a GPU model is not handed CPU ids).
    """
    ids, n_prompt = _encode(tokenizer, prompt, completion)
    device = torch.device(device) if device is not None else _model_device(models[0])
    states = torch.linspace(n_prompt - 1, ids.shape[1] - 1, n_states).long()  # (S,)
    out = []
    with torch.inference_mode():
        for model in models:
            logits = model(input_ids=ids.to(_model_device(model))).logits[0]  # (T, V)
            out.append(logits[states.to(logits.device)].double().to(device))  # (S, V)
    return states.to(device), out


def advantage_along(
    proxy, ref, tokenizer, prompt: str, completion: str, beta: float, device: torch.device | str | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The advantage proxy tuning adds at each token of ``completion`` after ``prompt``, for the token taken:
    ``(per_token (n,), taken ids (n,))`` on ``device`` (default: the proxy's); ``.cpu()`` before ``.numpy()``."""
    ids, start = _encode(tokenizer, prompt, completion)
    device = torch.device(device) if device is not None else _model_device(proxy)
    with torch.inference_mode():
        proxy_logits = proxy(input_ids=ids.to(_model_device(proxy))).logits[0].to(device)  # (T, V)
        ref_logits = ref(input_ids=ids.to(_model_device(ref))).logits[0].to(device)  # (T, V)
        adv = implicit_advantage(proxy_logits, ref_logits, beta)  # (T, V)
    taken = ids[0, start:].to(device)  # (n,) the completion's tokens
    before = adv[start - 1 : ids.shape[1] - 1]  # (n, V): the states that chose them
    return before.gather(-1, taken[:, None])[:, 0], taken
