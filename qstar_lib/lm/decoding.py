"""Decoding with ``transformers``' ``generate``: greedy, beam search and sampling, in left-padded batches.

:func:`generate_summaries` runs each prompt's prefill once and repeats its KV cache across the beams or
samples of that prompt (same tokens as plain ``generate``, tested). It knows nothing about judging or
training: it is handed a model, a tokenizer and prompts.

Stopping rules of :func:`generate_summaries` (our decision, documented): a summary ends at the EOS token,
at ``max_new_tokens``, or -- with ``stop_at_newline=True``, the default -- at the first newline that comes
*after some text*. TL;DR summaries are one paragraph, and a model that starts a new line after writing
has left the summary (it begins a new post or another "TL;DR:"). Newlines *before* any text are not a
stop: an untuned instruct model often opens with a blank line, and stopping there would return empty
summaries. The rule is part of the search (a ``StoppingCriteria`` in ``generate``, so a beam that starts a
new paragraph is finished, like one that writes EOS); the returned text is the first paragraph, with
leading blank lines replaced by the single leading space TL;DR completions carry.

Size exception: decode_summaries -- argument checks and one generate call for greedy, beam and sampled decoding; split next
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from transformers import LogitsProcessorList, StoppingCriteria, StoppingCriteriaList

from qstar_lib.lm.collate import pad_batch, pad_token_id
from qstar_lib.lm.logps import cache_kwarg, model_device
from qstar_lib.lm.models import eval_mode

#: The paper's sampling parameters (Appendix G / the PPO comparison): temperature 1 and top-k 50.
PAPER_TOP_K = 50


# ----------------------------------------------------------------------------------------------- helpers


def _prompt_ids(tokenizer, prompt: str, what: str = "prompt") -> list[int]:
    """Prompt token ids as :mod:`qstar_lib.lm.collate` makes them (no special tokens), so the model sees at
    decoding time exactly the context it was trained on."""
    if not isinstance(prompt, str):
        raise TypeError(f"{what} must be a str, got {type(prompt).__name__}")
    ids = list(tokenizer(prompt, add_special_tokens=False).input_ids)
    if not ids:
        raise ValueError(f"{what} tokenises to 0 tokens; generation needs a context")
    return ids


def first_paragraph(text: str) -> str:
    """The summary inside a generated text: up to the first newline after the first non-space character.

    Leading spaces are kept (TL;DR completions start with one); leading whitespace that contains a
    newline becomes a single space. Trailing whitespace is removed. ``"\n\nA b.\nC"`` -> ``" A b."``.
    """
    body = text.lstrip()
    lead = text[: len(text) - len(body)]
    body = body.split("\n", 1)[0].rstrip()
    if not body:
        return ""
    return (" " if "\n" in lead else lead) + body


class _NewParagraphStop(StoppingCriteria):
    """Stops a row once its generated part has a newline after some text (see :func:`first_paragraph`).

    ``generate`` left-pads a batch, so every row's generated tokens start at column ``prompt_width``; beam
    search calls this on its candidate rows, which share that layout.
    """

    def __init__(self, tokenizer, prompt_width: int):
        self.tokenizer, self.prompt_width = tokenizer, prompt_width

    def __call__(self, input_ids: torch.Tensor, scores=None, **kwargs) -> torch.Tensor:
        texts = self.tokenizer.batch_decode(input_ids[:, self.prompt_width :], skip_special_tokens=True)
        return torch.tensor(["\n" in t.lstrip() for t in texts], dtype=torch.bool, device=input_ids.device)  # (B,)


# ----------------------------------------------------------------------------------------------- generate

#: How a decode ended (:attr:`Decoded.stop`): the EOS token, a new paragraph (``stop_at_newline``), or
#: ``max_new_tokens`` with neither (the answer was cut off).
STOP_REASONS = ("eos", "newline", "cap")


@dataclass(frozen=True)
class Decoded:
    """One decoded completion: the returned ``text``, the ``n_tokens`` generated (up to and including the
    stopping token, padding excluded) and the ``stop`` reason, one of :data:`STOP_REASONS`."""

    text: str
    n_tokens: int
    stop: str


def _stop_reason(row: list[int], tokenizer, *, max_new_tokens: int, stop_at_newline: bool) -> tuple[str, int]:
    """``(stop, n_tokens)`` of one generated row (prompt columns removed).

    ``generate`` pads a finished row with the pad token (SmolLM2: the EOS id itself), so the row is cut at
    its first EOS. A newline after some text means the paragraph rule stopped it (checked first: that row
    is then padded too, and trailing padding is dropped from its count); an EOS, that the model ended it;
    otherwise it ran into ``max_new_tokens`` (a generated pad id is then an ordinary token)."""
    eos, pad = tokenizer.eos_token_id, pad_token_id(tokenizer)
    cut = row.index(eos) if eos in row else len(row)
    body = row[:cut]
    if stop_at_newline and "\n" in tokenizer.decode(body, skip_special_tokens=True).lstrip():
        if cut == len(row) and pad != eos:  # the padding after the paragraph stop is not generated text
            while body and body[-1] == pad:
                body = body[:-1]
        return "newline", len(body)
    if cut < len(row):
        return "eos", cut + 1
    return "cap", len(row)  # neither EOS nor a paragraph stop: only the token limit ends a row


def _generation_config(
    tokenizer,
    *,
    num_beams,
    length_penalty,
    early_stopping,
    do_sample,
    temperature,
    top_k,
    max_new_tokens,
    num_return_sequences=1,
):
    """Every knob explicit, so a model's ``generation_config.json`` cannot change what we measure."""
    from transformers import GenerationConfig

    kw = dict(
        max_new_tokens=max_new_tokens,
        num_beams=num_beams,
        do_sample=do_sample,
        num_return_sequences=num_return_sequences,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=pad_token_id(tokenizer),
        repetition_penalty=1.0,
        no_repeat_ngram_size=0,
        min_length=0,
    )
    if num_beams > 1:  # only beam search reads these; setting them for greedy/sampling makes HF warn
        kw.update(length_penalty=float(length_penalty), early_stopping=early_stopping)
    if do_sample:
        kw.update(temperature=float(temperature), top_k=int(top_k or 0), top_p=1.0)
    return GenerationConfig(**kw)


def generate_summaries(model, tokenizer, prompts: Sequence[str], **kwargs) -> list[str]:
    """The texts of :func:`decode_summaries` (same arguments): one summary per prompt and returned sequence."""
    return [d.text for d in decode_summaries(model, tokenizer, prompts, **kwargs)]


def decode_summaries(
    model,
    tokenizer,
    prompts: Sequence[str],
    *,
    num_beams: int = 1,
    length_penalty: float = 1.0,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_k: int | None = PAPER_TOP_K,
    max_new_tokens: int = 64,
    batch_size: int = 8,
    rows_per_call: int | None = None,
    seed: int = 0,
    early_stopping: bool | str = False,
    stop_at_newline: bool = True,
    num_return_sequences: int = 1,
    share_prefill: bool = True,
    logits_processors: Callable[[torch.Tensor], list] | None = None,
    progress: bool = True,
) -> list[Decoded]:
    """Decode one summary per prompt with ``model.generate``: a :class:`Decoded` per completion (its text with
    the prompt stripped, the tokens generated and why it stopped).

    Decoding: greedy (``num_beams=1``), beam search (``num_beams>1``) or sampling (``do_sample=True``;
    ``temperature`` and ``top_k``, default 50 as in the paper; ``top_k=None`` or 0 samples from the full
    distribution). ``length_penalty`` only matters for beam search: a finished beam is ranked by
    ``sum log p / length ** length_penalty``, so 0 is pure likelihood search (eq. 13) and HF's default 1.0
    ranks by the mean log-prob per token, which favours long answers. ``early_stopping`` is HF's (default
    ``False``); with ``length_penalty=0`` its ``False`` and ``"never"`` settings give the same, exact beam
    search (see :func:`hf_beam_search`).

    Prompts are tokenised without special tokens (as in :mod:`qstar_lib.lm.collate`) and left-padded in
    batches of ``batch_size`` (a decoder-only model continues from the last column, so padding must come
    first). Stopping: EOS, ``max_new_tokens``, and with ``stop_at_newline`` the first newline after some
    text (see the module docstring); the text returned is then :func:`first_paragraph` of the generation,
    otherwise the generation with trailing whitespace removed. Sampling is seeded per batch
    (``seed + batch index``) inside a forked RNG, so the global torch RNG is untouched and a call is
    reproducible for a fixed ``batch_size``.

    ``num_return_sequences`` (as in ``generate``): that many completions per prompt, prompt ``i``'s at
    positions ``i * n .. i * n + n - 1`` of the returned list (independent samples when sampling, the best
    finished beams for beam search, where it must not exceed ``num_beams``).

    ``rows_per_call``: when given, it replaces ``batch_size`` by ``max(1, rows_per_call // rows per prompt)``
    prompts per ``generate`` call (rows per prompt: ``num_beams`` for beam search, else
    ``num_return_sequences``), so that greedy decoding, wide beams and many samples all run about as many
    rows per step. Decoding a small model on a CPU is bound by reading the weights once per step, not by
    arithmetic: on 2 AVX2 cores a SmolLM2-135M step costs 0.28 s for 16 rows and 1.1 s for 160
    (``benchmarks/bench_phases.py``), so ~100 rows per call decode 2-4x more tokens per second than 8.

    ``share_prefill`` (default on): beam search keeps ``num_beams`` rows per prompt, and ``generate`` would
    run the whole prompt through the model once per row. Here the prompt (all but its last token) is run
    once per prompt and its key/value cache repeated across the beams (:func:`_shared_prefill`), so
    ``generate`` starts from the last prompt token. Same tokens as without it (tested token for token); with
    20 beams and 64 new tokens it removes most of the cost of a TL;DR prompt of ~170 tokens.

    ``logits_processors``: called once per batch with that batch's prompt attention mask (B, T) and
    returning the ``LogitsProcessor`` list for its ``generate`` call -- per batch because a processor that
    runs other models on the sequences (proxy tuning, :func:`qstar_lib.lm.proxy.steered_summaries`) needs the
    left-padding mask of exactly those prompts.
    """
    from tqdm.auto import tqdm

    _check_generation(
        prompts,
        num_beams=num_beams,
        batch_size=batch_size,
        rows_per_call=rows_per_call,
        max_new_tokens=max_new_tokens,
        do_sample=do_sample,
        temperature=temperature,
        num_return_sequences=num_return_sequences,
    )
    encoded = []
    for i, prompt in enumerate(prompts):
        ids = _prompt_ids(tokenizer, prompt, what=f"prompts[{i}]")
        encoded.append({"input_ids": ids, "completion_mask": [0] * len(ids)})
    config = _generation_config(
        tokenizer,
        num_beams=num_beams,
        length_penalty=length_penalty,
        early_stopping=early_stopping,
        do_sample=do_sample,
        temperature=temperature,
        top_k=top_k,
        max_new_tokens=max_new_tokens,
        num_return_sequences=num_return_sequences,
    )
    rows_per_prompt = num_beams if num_beams > 1 else num_return_sequences  # how generate expands the batch
    if rows_per_call is not None:
        batch_size = max(1, rows_per_call // rows_per_prompt)
    device = model_device(model)
    out: list[Decoded] = []
    with eval_mode(model):
        n_batches = math.ceil(len(encoded) / batch_size)
        for b in tqdm(range(n_batches), desc=f"generate (beams={num_beams})", disable=not progress):
            chunk = encoded[b * batch_size : (b + 1) * batch_size]
            out += _generate_batch(
                model,
                tokenizer,
                chunk,
                config,
                device,
                seed=seed + b,
                stop_at_newline=stop_at_newline,
                max_new_tokens=max_new_tokens,
                logits_processors=logits_processors,
                prefill_rows=rows_per_prompt if share_prefill else 1,
            )
    return out


def _check_generation(
    prompts,
    *,
    num_beams: int,
    batch_size: int,
    rows_per_call: int | None,
    max_new_tokens: int,
    do_sample: bool,
    temperature: float,
    num_return_sequences: int,
) -> None:
    """The argument checks of :func:`generate_summaries` (an error naming the argument)."""
    if isinstance(prompts, str):
        raise TypeError("prompts must be a sequence of str, not one str")
    if num_beams < 1:
        raise ValueError(f"num_beams must be >= 1, got {num_beams}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if rows_per_call is not None and rows_per_call < 1:
        raise ValueError(f"rows_per_call must be >= 1 (or None), got {rows_per_call}")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if do_sample and temperature <= 0:
        raise ValueError(f"temperature must be > 0 when sampling, got {temperature}")
    if num_return_sequences < 1:
        raise ValueError(f"num_return_sequences must be >= 1, got {num_return_sequences}")
    if num_beams > 1 and num_return_sequences > num_beams:
        raise ValueError(f"num_return_sequences ({num_return_sequences}) must be <= num_beams ({num_beams})")
    if num_beams == 1 and not do_sample and num_return_sequences > 1:
        raise ValueError("greedy decoding returns one sequence per prompt; sample or use beams for more")


def _generate_batch(
    model,
    tokenizer,
    chunk: list[dict],
    config,
    device: torch.device,
    *,
    seed: int,
    stop_at_newline: bool,
    max_new_tokens: int,
    logits_processors,
    prefill_rows: int,
) -> list[Decoded]:
    """One left-padded batch of :func:`decode_summaries` through ``generate``: its completions.

    ``prefill_rows`` > 1 shares the prompt's prefill across that many rows per prompt (:func:`_shared_prefill`).
    """
    batch = pad_batch(chunk, pad_token_id(tokenizer), padding_side="left")
    width = batch["input_ids"].shape[1]
    extra = {}
    if stop_at_newline:
        extra["stopping_criteria"] = StoppingCriteriaList([_NewParagraphStop(tokenizer, width)])
    if logits_processors is not None:
        extra["logits_processor"] = LogitsProcessorList(logits_processors(batch["attention_mask"]))
    input_ids = batch["input_ids"].to(device)  # (B, T)
    attention_mask = batch["attention_mask"].to(device)  # (B, T)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), torch.inference_mode():
        if prefill_rows > 1 and width > 1:
            extra[cache_kwarg(model)] = _shared_prefill(model, input_ids, attention_mask, prefill_rows)
        torch.manual_seed(seed)
        generated = model.generate(
            input_ids=input_ids,
            attention_mask=attention_mask,
            generation_config=config,
            **extra,
        )  # (B, T + new)
    out = []
    for row in generated[:, width:].cpu().tolist():
        text = tokenizer.decode(row, skip_special_tokens=True)
        stop, n_tokens = _stop_reason(row, tokenizer, max_new_tokens=max_new_tokens, stop_at_newline=stop_at_newline)
        out.append(Decoded(first_paragraph(text) if stop_at_newline else text.rstrip(), n_tokens, stop))
    return out


def _shared_prefill(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, repeats: int):
    """Key/value cache of every prompt but its last token, computed once per prompt and repeated
    ``repeats`` times per row (``repeat_interleave`` order, the order in which ``generate`` expands a batch
    into beams).

    ``generate`` given this cache and the full ``input_ids`` runs only the last prompt column, then decodes
    as usual. Positions are the ones ``generate`` itself uses under left padding (count of real tokens
    before each one), so the cache holds the same keys and values it would have computed per beam.
    """
    from transformers import DynamicCache

    positions = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)  # (B, T): padding sits at 0, masked anyway
    cache = DynamicCache(config=model.config)
    model(
        input_ids=input_ids[:, :-1],
        attention_mask=attention_mask[:, :-1],
        position_ids=positions[:, :-1],
        **{cache_kwarg(model): cache},
        use_cache=True,
    )  # fills the cache: (B, heads, T - 1, head_dim) per layer
    cache.batch_repeat_interleave(repeats)  # (B * repeats, heads, T - 1, head_dim) per layer
    return cache
