"""Tokenise prompt/completion pairs into padded batches with a ``completion_mask``.

It knows nothing about training, losses or models: it turns text into integer lists and pads them.

The contract every other module relies on: the prompt and the completion are tokenised *separately*
(``add_special_tokens=False``) and concatenated as ``prompt ids + completion ids + [eos]``. The completion
part is therefore exactly ``tokenizer(completion, add_special_tokens=False).input_ids`` (or a prefix of it
after truncation), so token labels computed from character spans of the completion alone
(``qstar_lib.data.token_labels``) line up with the completion positions of the batch.

Truncation (never silent, never dropping a record):

1. the prompt is cut from the **left** to ``max_prompt_length`` tokens (the end of a prompt, next to the
   completion, matters most), and in any case to at most ``max_length - 1`` tokens so that at least one
   completion token survives;
2. then ``completion ids + [eos]`` is cut from the **right** so that the total is ``<= max_length``
   (a cut completion loses its EOS, as in TRL).

Each encoded record reports what was cut (``n_prompt_truncated``, ``n_completion_truncated``) and the
batch-level functions emit one warning that counts truncated records.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence

import torch


def _token_ids(tokenizer, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False).input_ids)


def encode_completion(
    prompt: str,
    completion: str,
    tokenizer,
    max_length: int = 512,
    max_prompt_length: int | None = None,
) -> dict:
    """Tokenise one (prompt, completion) pair as ``prompt ids + completion ids + [eos]``.

    Returns a dict with
        ``input_ids`` (list[int], length <= max_length),
        ``completion_mask`` (list[int], 1 on completion tokens including the EOS, 0 on the prompt),
        ``n_prompt`` (int, prompt tokens kept), ``n_completion`` (int, completion tokens kept, EOS excluded;
        they are ``tokenizer(completion, add_special_tokens=False).input_ids[:n_completion]``),
        ``has_eos`` (bool), ``n_prompt_truncated`` and ``n_completion_truncated`` (tokens cut; the EOS
        counts as a completion token).
    """
    if not isinstance(prompt, str):
        raise TypeError(f"prompt must be a str, got {type(prompt).__name__}")
    if not isinstance(completion, str):
        raise TypeError(f"completion must be a str, got {type(completion).__name__}")
    if max_length < 2:
        raise ValueError(f"max_length must be >= 2 (one prompt and one completion token), got {max_length}")
    if max_prompt_length is not None and max_prompt_length < 1:
        raise ValueError(f"max_prompt_length must be >= 1 or None, got {max_prompt_length}")
    eos = tokenizer.eos_token_id
    if eos is None:
        raise ValueError("tokenizer has no eos_token_id; completions end with EOS")

    prompt_ids = _token_ids(tokenizer, prompt)
    if not prompt_ids:
        # Entry 0 of per-token log-probs has no context, so a completion needs at least one token before it.
        raise ValueError("prompt tokenises to 0 tokens; the first completion token would have no context")
    completion_ids = _token_ids(tokenizer, completion)

    prompt_budget = max_length - 1
    if max_prompt_length is not None:
        prompt_budget = min(prompt_budget, max_prompt_length)
    n_prompt_truncated = max(0, len(prompt_ids) - prompt_budget)
    if n_prompt_truncated:
        prompt_ids = prompt_ids[n_prompt_truncated:]  # cut from the left

    full_completion = completion_ids + [eos]
    room = max_length - len(prompt_ids)
    kept = full_completion[:room]  # cut from the right
    n_completion_truncated = len(full_completion) - len(kept)
    has_eos = n_completion_truncated == 0
    n_completion = len(kept) - int(has_eos)

    return {
        "input_ids": prompt_ids + kept,
        "completion_mask": [0] * len(prompt_ids) + [1] * len(kept),
        "n_prompt": len(prompt_ids),
        "n_completion": n_completion,
        "has_eos": has_eos,
        "n_prompt_truncated": n_prompt_truncated,
        "n_completion_truncated": n_completion_truncated,
    }


def record_field(record: Mapping, index: int, name: str) -> str:
    """``record[name]`` as a string, or an error naming the record index and the field."""
    if not isinstance(record, Mapping):
        raise TypeError(f"record {index} is a {type(record).__name__}, expected a dict")
    if name not in record:
        raise KeyError(f"record {index} has no field {name!r} (fields: {sorted(record)})")
    value = record[name]
    if not isinstance(value, str):
        raise TypeError(f"record {index} field {name!r} must be a str, got {type(value).__name__}")
    return value


def planted_labels(record: Mapping, tokenizer) -> dict:
    """The token labels of a record's planted errors, computed once, to travel with its scored row.

    One rule for every reader (the credit metrics, the heatmaps): a token of the *rejected* completion,
    ``tokenizer(rejected, add_special_tokens=False)``, is labelled when it shows part of a *localised* error
    span (:data:`qstar_lib.data.LOCALISED_KINDS`, ``start >= 0``; see :func:`qstar_lib.data.token_labels`).
    Returns ``rejected_labels`` (list[int], the union of the spans, one per completion token, no EOS),
    ``rejected_error_labels`` (one such list per localised error, in span order), ``rejected_first_labels``
    (per error, the token of its first differing character: the digits after it are predictable once it is
    written), ``rejected_candidates`` (per error, the tokens a localiser chooses among, see
    :func:`_candidates`), ``rejected_first_candidates`` (the same for the first-token metric, see
    :func:`_first_candidates`), ``rejected_errors`` (those errors, in the same order), and the record's ``id``,
    ``kind`` and held-out flags when it has them. The labels cover the whole completion: a reader whose
    scores stop early (a completion cut by ``max_length``) raises
    (:func:`qstar_lib.eval.credit.align_scores`) instead of losing error tokens.
    """
    from qstar_lib.data import LOCALISED_KINDS, token_labels

    if "errors" not in record:
        raise KeyError(f"record (id {record.get('id')}) has no field 'errors': token labels need planted-error records")
    errors = sorted(
        (e for e in record["errors"] if e["kind"] in LOCALISED_KINDS and e["start"] >= 0), key=lambda e: e["start"]
    )
    rejected = record["rejected"]
    out = {k: record[k] for k in ("id", "kind", "heldout_family", "heldout_template") if k in record}
    out["rejected_labels"] = token_labels(rejected, errors, tokenizer)
    out["rejected_error_labels"] = [token_labels(rejected, [e], tokenizer) for e in errors]
    out["rejected_first_labels"] = [token_labels(rejected, [(e["start"], e["start"] + 1)], tokenizer) for e in errors]
    out["rejected_candidates"] = [_candidates(record, e, tokenizer) for e in errors]
    out["rejected_first_candidates"] = [
        _first_candidates(record, e, first, tokenizer) for e, first in zip(errors, out["rejected_first_labels"])
    ]
    out["rejected_errors"] = [dict(e) for e in errors]
    return out


def _first_candidates(record: Mapping, error: Mapping, first: list[int], tokenizer) -> list[int]:
    """The candidates of the first-token metric: the error's first differing token and the *first* letter-or-
    digit token of every other value of the same type (comparing a value's first token with the digits that
    follow another would read the position inside a value, not the value). Only errors that differ from
    their first letter or digit on ("38k" -> "250k", not "41k" -> "45k") qualify; the others get no
    candidate (left out of the metric). Every token for a claim."""
    from qstar_lib.data import token_labels

    text, values = record["rejected"], record.get("rejected_values")
    if not values or error["kind"] == "inserted_claim":
        return [1] * len(first)
    offsets = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    own = [v for v in values if v["slot"] == error["slot"]]
    if own and error["start"] > next((i for i in range(own[0]["start"], own[0]["end"]) if text[i].isalnum()), -1):
        return [0] * len(first)  # the error starts inside its value ("41k" -> "45k"): no like-for-like first token
    out = list(first)
    for v in values:
        if own and v["type"] == own[0]["type"] and v["slot"] != error["slot"]:
            lab = token_labels(text, [v], tokenizer)
            j = next((j for j, (a, b) in enumerate(offsets) if lab[j] and any(c.isalnum() for c in text[a:b])), None)
            if j is not None:
                out[j] = 1
    return out


def _candidates(record: Mapping, error: Mapping, tokenizer) -> list[int]:
    """The tokens a localiser must choose among for one error: 1 for each token of the rejected completion
    that is a candidate. For a wrong *value* (swap, absent value) of a record that lists its summary's values
    (``rejected_values``, data v2), the tokens of every value of the same type; the question is then "which
    of this summary's salaries is wrong", and a rule "numbers are suspicious" scores chance. For an inserted
    claim, or a record without value spans, every token."""
    from qstar_lib.data import token_labels

    text, values = record["rejected"], record.get("rejected_values")
    offsets = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    if not values or error["kind"] == "inserted_claim":
        return [1] * len(offsets)
    own = [v for v in values if v["slot"] == error["slot"]]
    same = token_labels(text, [v for v in values if own and v["type"] == own[0]["type"]], tokenizer)
    # a value's "$" or "," cannot be the planted error (every value of the type has one): letters and digits only
    return [int(c and any(ch.isalnum() for ch in text[a:b])) for c, (a, b) in zip(same, offsets, strict=True)]


def _warn_truncations(encoded: Sequence[dict], what: str, max_length: int) -> None:
    n = sum(1 for e in encoded if e["n_prompt_truncated"] or e["n_completion_truncated"])
    if n:
        warnings.warn(
            f"{n} of {len(encoded)} {what} were truncated to max_length={max_length} "
            "(see n_prompt_truncated / n_completion_truncated of each record)",
            stacklevel=3,
        )


def encode_pairs(
    records: Sequence[Mapping],
    tokenizer,
    max_length: int = 512,
    max_prompt_length: int | None = None,
) -> list[dict]:
    """Encode preference records ``{"prompt", "chosen", "rejected"}``.

    Each output dict holds the keys of :func:`encode_completion` prefixed with ``chosen_`` and
    ``rejected_`` (``chosen_input_ids``, ``rejected_completion_mask`` ...). The prompt is cut the same way in
    both, so chosen and rejected always share the same context.
    """
    out = []
    for i, record in enumerate(records):
        prompt = record_field(record, i, "prompt")
        pair = {}
        for side in ("chosen", "rejected"):
            enc = encode_completion(prompt, record_field(record, i, side), tokenizer, max_length, max_prompt_length)
            pair.update({f"{side}_{k}": v for k, v in enc.items()})
        out.append(pair)
    sides = [_side(p, "chosen") for p in out] + [_side(p, "rejected") for p in out]
    _warn_truncations(sides, "completions", max_length)
    return out


def encode_sft(
    records: Sequence[Mapping],
    tokenizer,
    max_length: int = 512,
    max_prompt_length: int | None = None,
    field: str = "chosen",
) -> list[dict]:
    """Encode ``prompt + record[field]`` (the chosen completion by default) for supervised fine-tuning."""
    out = [
        encode_completion(
            record_field(r, i, "prompt"), record_field(r, i, field), tokenizer, max_length, max_prompt_length
        )
        for i, r in enumerate(records)
    ]
    _warn_truncations(out, "completions", max_length)
    return out


def _side(pair: Mapping, side: str) -> dict:
    """The ``chosen_*`` (or ``rejected_*``) entries of an encoded pair, without the prefix."""
    prefix = f"{side}_"
    return {k[len(prefix) :]: v for k, v in pair.items() if k.startswith(prefix)}


def pad_batch(encoded: Sequence[Mapping], pad_token_id: int, padding_side: str = "right") -> dict[str, torch.Tensor]:
    """Pad encoded completions into tensors.

    Returns ``input_ids`` (B, T) padded with ``pad_token_id``, ``attention_mask`` (B, T) and
    ``completion_mask`` (B, T), both 0 on padding; T is the longest row. ``padding_side="left"`` puts
    the padding first (as for generation); :func:`qstar_lib.lm.logps.per_token_logps` gives the same
    per-token values for either side.
    """
    if padding_side not in ("left", "right"):
        raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
    if not encoded:
        raise ValueError("pad_batch needs at least one encoded record")
    if pad_token_id is None:
        raise ValueError("pad_token_id is None; set tokenizer.pad_token (qstar_lib.lm.models does)")
    T = max(len(e["input_ids"]) for e in encoded)
    B = len(encoded)
    input_ids = torch.full((B, T), int(pad_token_id), dtype=torch.long)  # (B, T)
    attention_mask = torch.zeros((B, T), dtype=torch.long)  # (B, T)
    completion_mask = torch.zeros((B, T), dtype=torch.long)  # (B, T)
    for i, e in enumerate(encoded):
        n = len(e["input_ids"])
        if len(e["completion_mask"]) != n:
            raise ValueError(f"record {i}: completion_mask has length {len(e['completion_mask'])}, input_ids {n}")
        cols = slice(0, n) if padding_side == "right" else slice(T - n, T)
        input_ids[i, cols] = torch.as_tensor(e["input_ids"], dtype=torch.long)
        attention_mask[i, cols] = 1
        completion_mask[i, cols] = torch.as_tensor(e["completion_mask"], dtype=torch.long)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "completion_mask": completion_mask}


def collate_pairs(
    encoded_pairs: Sequence[Mapping], pad_token_id: int, padding_side: str = "right"
) -> dict[str, torch.Tensor]:
    """One batch ``[chosen rows; rejected rows]`` so a single forward pass scores both.

    Like the DPO reference implementation's ``concatenated_inputs``: rows ``0..B-1`` are the chosen
    completions and rows ``B..2B-1`` the rejected ones of the same pairs, padded to one length T.
    Returns ``input_ids``, ``attention_mask``, ``completion_mask``, each (2B, T).
    """
    rows = [_side(p, "chosen") for p in encoded_pairs] + [_side(p, "rejected") for p in encoded_pairs]
    return pad_batch(rows, pad_token_id, padding_side)


def pad_token_id(tokenizer) -> int:
    """The id used to pad batches: the tokenizer's pad token, else its EOS (padding is masked out anyway)."""
    pad = getattr(tokenizer, "pad_token_id", None)
    pad = getattr(tokenizer, "eos_token_id", None) if pad is None else pad
    if pad is None:
        raise ValueError("the tokenizer has neither pad_token_id nor eos_token_id")
    return int(pad)


def collate_shared_prompt(encoded_pairs: Sequence[Mapping], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Pack each pair as one row ``[prompt | chosen | rejected]`` with a block-causal attention mask.

    The ``[chosen; rejected]`` batch runs the prompt through the model twice. Here the prompt appears once:
    chosen tokens see the prompt and earlier chosen tokens, rejected tokens see the prompt and earlier
    rejected tokens (never the chosen ones), and the rejected positions restart where the prompt ends. Every
    completion token therefore has exactly the context and position it has in the ``[chosen; rejected]``
    batch, so the log-probs are the same numbers, for about 40% fewer tokens on TL;DR-shaped data.

    Rows are left-padded. Returns ``input_ids`` (B, L), ``position_ids`` (B, L), ``attention_mask`` (B, 1, L, L) boolean
    (True = may attend), and for ``side`` in chosen/rejected: ``{side}_src`` (B, Ts), the position whose
    output predicts each completion token, ``{side}_ids`` (B, Ts) those tokens, ``{side}_mask`` (B, Ts).
    """
    B = len(encoded_pairs)
    parts = []
    for i, p in enumerate(encoded_pairs):
        n_p = p["chosen_n_prompt"]
        prompt = p["chosen_input_ids"][:n_p]
        if p["rejected_n_prompt"] != n_p or p["rejected_input_ids"][:n_p] != prompt:
            raise ValueError(f"pair {i}: chosen and rejected were encoded with different prompts")
        parts.append((prompt, p["chosen_input_ids"][n_p:], p["rejected_input_ids"][n_p:]))
    L = max(len(a) + len(b) + len(c) for a, b, c in parts)
    Tc = max(len(b) for _, b, _ in parts)
    Tr = max(len(c) for _, _, c in parts)
    input_ids = torch.full((B, L), int(pad_token_id), dtype=torch.long)  # (B, L)
    position_ids = torch.zeros((B, L), dtype=torch.long)  # (B, L)
    segment = torch.full((B, L), -1, dtype=torch.long)  # (B, L): 0 prompt, 1 chosen, 2 rejected, -1 pad
    out = {
        f"{side}_{k}": torch.zeros((B, T), dtype=torch.long)
        for side, T in (("chosen", Tc), ("rejected", Tr))
        for k in ("src", "ids", "mask")
    }
    for i, (prompt, chosen, rejected) in enumerate(parts):
        n_p, n_c, n_r = len(prompt), len(chosen), len(rejected)
        o = L - (n_p + n_c + n_r)  # left padding: every row's completions end at column L, so the LM head
        # only needs the last max(n_c + n_r) + 1 columns (logits_to_keep) instead of everything after a short prompt
        input_ids[i, o:] = torch.tensor(prompt + chosen + rejected)
        position_ids[i, o : o + n_p + n_c] = torch.arange(n_p + n_c)
        position_ids[i, o + n_p + n_c :] = torch.arange(n_p, n_p + n_r)  # rejected restarts after the prompt
        segment[i, o : o + n_p], segment[i, o + n_p : o + n_p + n_c], segment[i, o + n_p + n_c :] = 0, 1, 2
        for side, tokens, start in (("chosen", chosen, o + n_p), ("rejected", rejected, o + n_p + n_c)):
            n = len(tokens)
            # token j is predicted by the output at the previous position of its own segment (the prompt's last for j=0)
            out[f"{side}_src"][i, :n] = torch.tensor([o + n_p - 1] + list(range(start, start + n - 1)))
            out[f"{side}_ids"][i, :n] = torch.tensor(tokens)
            out[f"{side}_mask"][i, :n] = 1
    idx = torch.arange(L)
    valid = segment >= 0  # (B, L)
    causal = idx[None, :] <= idx[:, None]  # (L, L): key <= query
    same = (segment[:, None, :] == 0) | (segment[:, None, :] == segment[:, :, None])  # (B, L, L)
    visible = causal[None] & same & valid[:, None, :]  # (B, L, L)
    visible |= torch.eye(L, dtype=torch.bool)[None] & ~valid[:, :, None]  # padding sees itself: no empty rows
    out.update(input_ids=input_ids, position_ids=position_ids, attention_mask=visible[:, None])
    return out
