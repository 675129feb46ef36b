"""Synthetic Reddit TL;DR preference pairs with planted errors and their ground truth: the generator engine.

The paper's Fig. 1 shows a job-offer post whose correct summary says "38k" and whose corrupted summary
says "250k" and adds a "management position"; DPO's per-token reward lights up on exactly those tokens.
To *measure* that credit assignment we need many such pairs where we know, character by character, where
the errors are. This module writes them from templates: a post is filled with slot facts (money, counts,
durations, names, places, products, roles), the chosen summary states the key facts faithfully, and the
rejected summary is the same text with planted errors whose spans we record.

Every family's post mentions at least two values of the same type in different roles (asked vs offered
salary, old vs new car, home vs destination city, ...). That is what makes an *in-post swap* possible: a
value that does appear in the post, stated in the wrong role. An SFT model's own surprisal already flags a
value that is absent from the post, so the swaps are where preference learning has to add something.

Where things live: the Reddit prose (posts, titles, summaries, claims) and each family's slot spec are data,
one file per family in ``qstar_lib/data/families/<family>.json``, read and checked by
:mod:`qstar_lib.data.family` (which also holds each family's sampler); vocabularies, writing styles and value
types are in :mod:`qstar_lib.data.values`; the number parser shared with the judge is
:mod:`qstar_lib.data.numbers`. This module is the engine: the mix of pair kinds, rendering with spans, the
planting of errors, the split assignment and :func:`generate`. The same seed gives byte-identical records.

This module knows nothing about models or tokenizers; :mod:`qstar_lib.data` is the public entry point.
"""

from __future__ import annotations

import functools
import hashlib
import random
import re
import string
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from qstar_lib.data.family import FAMILIES, Family
from qstar_lib.data.numbers import extract_numbers, normalise_number
from qstar_lib.data.values import TYPES, draw_style, text_key

# ---------------------------------------------------------------------------------------------------
# The mix of pair kinds. A "pair kind" says how the rejected summary differs from the chosen one.
# Localised kinds carry character spans; "omission" and "verbosity" do not (start == end == -1).
# ---------------------------------------------------------------------------------------------------
LOCALISED_KINDS = ("in_post_swap", "absent_value", "inserted_claim")
NONLOCAL_KINDS = ("omission", "verbosity")
ERROR_KINDS = LOCALISED_KINDS + NONLOCAL_KINDS  # kinds of a single entry of record["errors"]
ERROR_MIX = {  # pair kind -> share of the synthetic set (sums to 1)
    "in_post_swap": 0.30,
    "absent_value": 0.20,
    "inserted_claim": 0.20,
    "two_errors": 0.15,  # two localised errors in one summary (the paper's "stitching" case)
    "omission": 0.075,
    "verbosity": 0.075,
}
PAIR_KINDS = tuple(ERROR_MIX)
TWO_ERROR_COMBOS = (  # the Fig. 1 pattern first: a wrong value plus an invented claim
    ("absent_value", "inserted_claim"),
    ("in_post_swap", "inserted_claim"),
    ("in_post_swap", "absent_value"),
)
SPLITS = ("train", "validation", "test")
DATA_VERSION = 2  # every record says which version of this generator wrote it (field ``version``)
HELDOUT_FAMILIES = ("rent_increase", "travel_budget")  # whole families only the test split contains
TEST_HELDOUT_FAMILY_SHARE = 0.5  # share of test records drawn from the held-out families
TEST_HELDOUT_TEMPLATE_SHARE = 0.5  # share of the other test records with a held-out post or summary template

PROMPT_TEMPLATE = "SUBREDDIT: r/{subreddit}\n\nTITLE: {title}\n\nPOST: {post}\n\nTL;DR:"

FILLERS = (  # fact-free padding for "verbosity" pairs: no numbers, names, places or claims
    "Anyway, that is basically the whole situation as I see it, and I would really appreciate any "
    "thoughts or advice from people who have been through something similar before.",
    "There is obviously a lot more background to all of this, but I tried to keep the important "
    "parts here so that the question makes sense to people reading it.",
    "I have been going back and forth on this for a while now and I honestly cannot decide what the "
    "right thing to do is, so any perspective at all would help me a lot.",
    "Sorry if this is a bit rambling or confusing, it has been a long week and I am typing this late "
    "at night after thinking about it for hours without getting anywhere.",
    "I know people on here have strong opinions about this kind of thing, and I am open to hearing "
    "all of them, even the ones that tell me I am completely wrong.",
    "To be clear, I am not looking for anyone to make the decision for me, I just want to hear how "
    "other people would think it through in my shoes.",
)


# ---------------------------------------------------------------------------------------------------
# Rendering with spans
# ---------------------------------------------------------------------------------------------------
_FORMATTER = string.Formatter()


@functools.cache
def _parse(template: str) -> tuple[tuple[str, str | None], ...]:
    return tuple((literal, name) for literal, name, _, _ in _FORMATTER.parse(template))


def _fields_of(template: str) -> list[str]:
    return [name for _, name in _parse(template) if name is not None]


def _render(template: str, fields: dict[str, str]) -> tuple[str, dict[str, tuple[int, int]]]:
    """Fill ``template``; return the text and the (start, end) of every field that was filled."""
    parts: list[str] = []
    spans: dict[str, tuple[int, int]] = {}
    pos = 0
    for literal, name in _parse(template):
        parts.append(literal)
        pos += len(literal)
        if name is not None:
            value = fields[name]
            spans[name] = (pos, pos + len(value))
            parts.append(value)
            pos += len(value)
    return "".join(parts), spans


def _common_prefix(a: str, b: str) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


@dataclass
class _Choice:
    """Everything that determines one record; the random sampler fills it, fig1_example fixes it."""

    family: str
    values: dict[str, Any]
    style: dict
    subreddit: str
    title: int
    post: int
    summary: int
    edits: list[tuple] = field(default_factory=list)  # ("absent", slot, raw) | ("swap", slot, other) | ("claim", i)
    pair_kind: str = "in_post_swap"
    fillers: tuple[int, ...] = ()
    heldout_family: bool = False
    heldout_template: bool = False


def _post_fields(fam: Family, values: dict, style: dict) -> dict[str, str]:
    out = {k: v for k, v in style.items() if isinstance(v, str)}
    for s, raw in values.items():
        out[s] = TYPES[fam.slots[s].type].post(raw, style)
    return out


def _prompt(fam: Family, ch: _Choice) -> tuple[str, dict[str, str]]:
    fields = _post_fields(fam, ch.values, ch.style)
    title = fam.titles[ch.title].format(**fields)
    post = fam.posts[ch.post].format(**fields)
    prompt = PROMPT_TEMPLATE.format(subreddit=ch.subreddit, title=title, post=post)
    return prompt, {s: fields[s] for s in fam.slots}


def _build(ch: _Choice, idx: str, prompt: str, post_values: dict[str, str]) -> dict:
    """Render chosen and rejected for a choice whose prompt is already known."""
    fam = FAMILIES[ch.family]
    summ = fam.summaries[ch.summary]
    style_fields = {k: v for k, v in ch.style.items() if isinstance(v, str)}
    true_text = {s: TYPES[fam.slots[s].type].summary(raw, ch.style) for s, raw in ch.values.items()}
    fields = {**style_fields, **true_text, "claim": ""}
    chosen, _ = _render(summ.text, fields)
    in_summary = [n for n in _fields_of(summ.text) if n in fam.slots]
    facts = {s: true_text[s] for s in in_summary}

    errors: list[dict] = []
    if ch.pair_kind == "omission":
        rejected, spans = _render(summ.omitted, fields)
        errors = [dict(kind="omission", start=-1, end=-1, slot=s, true=true_text[s], planted="") for s in summ.omits]
    elif ch.pair_kind == "verbosity":
        filler = " ".join(FILLERS[i] for i in ch.fillers)
        rejected, spans = _render(summ.text, fields)
        rejected += " " + filler
        errors = [dict(kind="verbosity", start=-1, end=-1, slot="", true="", planted=filler)]
    else:
        planted: dict[str, tuple[str, str, str]] = {}  # field -> (kind, slot, planted text)
        rfields = dict(fields)
        for edit in ch.edits:
            if edit[0] == "claim":
                text = fam.claims[edit[1]][0].format(**style_fields)
                rfields["claim"] = " " + text
                planted["claim"] = ("inserted_claim", "claim", text)
            else:
                kind, slot, other = edit
                t = TYPES[fam.slots[slot].type]
                raw = other if kind == "absent" else ch.values[other]
                rfields[slot] = t.summary(raw, ch.style)
                planted[slot] = ("absent_value" if kind == "absent" else "in_post_swap", slot, rfields[slot])
        rejected, spans = _render(summ.text, rfields)
        for name, (kind, slot, text) in planted.items():
            start, end = spans[name]
            if kind == "inserted_claim":
                start += 1  # the span is the claim itself, not the space that joins it
                true = ""
            else:
                true = true_text[slot]
                start += _common_prefix(true, text)  # where the planted value first differs
            errors.append(dict(kind=kind, start=start, end=end, slot=slot, true=true, planted=text))
        errors.sort(key=lambda e: e["start"])
    n_loc = sum(e["kind"] in LOCALISED_KINDS for e in errors)
    values = sorted(
        (dict(slot=n, type=fam.slots[n].type, start=a + 1, end=b + 1) for n, (a, b) in spans.items() if n in fam.slots),
        key=lambda v: v["start"],
    )
    return {
        "version": DATA_VERSION,
        "id": idx,
        "prompt": prompt,
        "chosen": " " + chosen,
        "rejected": " " + rejected,
        "errors": [
            dict(e, start=e["start"] + 1 if e["start"] >= 0 else -1, end=e["end"] + 1 if e["end"] >= 0 else -1)
            for e in errors
        ],
        "n_errors": n_loc,
        "kind": ch.pair_kind,
        "family": ch.family,
        "facts": facts,
        "post_values": post_values,
        "rejected_values": values,
        "heldout_family": ch.heldout_family,
        "heldout_template": ch.heldout_template,
        "templates": {"title": ch.title, "post": ch.post, "summary": ch.summary},
    }


# ---------------------------------------------------------------------------------------------------
# Random choices
# ---------------------------------------------------------------------------------------------------
def _post_numbers(prompt: str) -> set[float]:
    return {round(v, 6) for v, _, _ in extract_numbers(prompt)}


def _absent_ok(fam: Family, slot: str, raw: Any, ch: _Choice, prompt: str, numbers: set[float]) -> bool:
    t = TYPES[fam.slots[slot].type]
    true_s, new_s = t.summary(ch.values[slot], ch.style), t.summary(raw, ch.style)
    if _common_prefix(true_s, new_s) >= len(new_s):
        return False  # the planted text must differ somewhere inside itself
    if t.kind == "number":
        v = normalise_number(new_s)
        return v is not None and v > 0 and round(v, 6) not in numbers
    return re.search(r"(?<![A-Za-z0-9])" + re.escape(text_key(new_s)) + r"(?![A-Za-z0-9])", prompt) is None


def value_slots(fam: Family, summary: int) -> list[str]:
    """The slots of a summary template that can carry a planted value: those whose type occurs at least
    twice in the summary, so that "which of the summary's values of this type is wrong" is a question."""
    slots = [n for n in _fields_of(fam.summaries[summary].text) if n in fam.slots]
    types = [fam.slots[n].type for n in slots]
    return [n for n, ty in zip(slots, types, strict=True) if types.count(ty) >= 2]


def swap_candidates(fam: Family, ch: _Choice, slot: str) -> list[str]:
    """Post slots whose value can replace ``slot``'s in the summary: same type, another role, a different
    text, and **not already written in the summary** (v1 swapped in values the summary already had, so
    the planted value read twice: a string rule found it without any model)."""
    summ_slots = set(_fields_of(fam.summaries[ch.summary].text))
    t = TYPES[fam.slots[slot].type]
    true_s = t.summary(ch.values[slot], ch.style)
    return [
        o
        for o in fam.swap_partners(slot)
        if o not in summ_slots
        and (o_s := t.summary(ch.values[o], ch.style)) != true_s
        and _common_prefix(true_s, o_s) < len(o_s)
    ]


def _plan_edit(
    kind: str, fam: Family, ch: _Choice, rng: random.Random, prompt: str, used: set[str], claims: Sequence[int]
) -> tuple | None:
    """One localised edit of ``kind`` on a value slot of the summary not in ``used`` (None if impossible).

    Absent values are the same slot of a fresh draw of the family's sampler (the same distribution as the
    slot's true values; v1 drew them from ranges no true value took), kept when not in the post."""
    summ = fam.summaries[ch.summary]
    if kind == "inserted_claim":
        if "{claim}" not in summ.text:
            return None
        ok = [i for i in claims if fam.claims[i][1].lower() not in prompt.lower()]
        return ("claim", rng.choice(ok)) if ok else None
    slots = [n for n in value_slots(fam, ch.summary) if n not in used]
    rng.shuffle(slots)
    for slot in slots:
        if kind == "in_post_swap":
            others = swap_candidates(fam, ch, slot)
            if others:
                return ("swap", slot, rng.choice(others))
        else:
            numbers = _post_numbers(prompt)
            for _ in range(50):
                raw = fam.sample(rng, ch.style)[slot]
                if _absent_ok(fam, slot, raw, ch, prompt, numbers):
                    return ("absent", slot, raw)
    return None


def _mix_counts(n: int, weights: dict[str, float]) -> list[str]:
    """Exactly proportional kind counts (largest remainder), so small sets keep the documented mix."""
    total = sum(weights.values())
    exact = {k: n * w / total for k, w in weights.items()}
    counts = {k: int(v) for k, v in exact.items()}
    for k in sorted(exact, key=lambda k: exact[k] - counts[k], reverse=True)[: n - sum(counts.values())]:
        counts[k] += 1
    return [k for k in weights for _ in range(counts[k])]


def _resolve_kinds(kinds: Sequence[str] | dict[str, float] | None) -> dict[str, float]:
    if kinds is None:
        return dict(ERROR_MIX)
    weights = dict(kinds) if isinstance(kinds, dict) else {k: ERROR_MIX.get(k, 0) or 1.0 for k in kinds}
    bad = [k for k in weights if k not in ERROR_MIX]
    if bad or not weights:
        raise ValueError(f"kinds={kinds!r}: choose from {', '.join(PAIR_KINDS)}")
    return weights


def _split_of(prompt: str) -> int:
    """A prompt belongs to exactly one split, whatever the seed: disjointness by construction."""
    return int.from_bytes(hashlib.blake2b(prompt.encode(), digest_size=8).digest(), "big") % len(SPLITS)


def _family_lists(split: str, families: Sequence[str] | None) -> tuple[list[str], list[str]]:
    """(families seen in training, held-out families) that ``split`` may draw from."""
    names = list(families) if families is not None else list(FAMILIES)
    unknown = [f for f in names if f not in FAMILIES]
    if unknown:
        raise ValueError(f"families: unknown {unknown}; choose from {', '.join(FAMILIES)}")
    seen = [f for f in names if f not in HELDOUT_FAMILIES]
    held = [f for f in names if f in HELDOUT_FAMILIES] if split == "test" else []
    if not seen and not held:
        raise ValueError(
            f"families={names!r}: {', '.join(names)} are held out for the test split only "
            f"(HELDOUT_FAMILIES); choose a family seen in training for split={split!r}"
        )
    return seen, held


def _draw_choice(
    rng: random.Random, split: str, seen: list[str], held: list[str], pair_kind: str, coins: tuple[float, float]
) -> _Choice:
    """Family and templates of one record. Train and validation use only the templates the test split does
    not hold out. Half the test records come from held-out families; of the others, half have a held-out
    post or summary template and half only seen ones (a seen-text test record still needs its prompt's hash
    to say "test", so without this draw the held-out templates would crowd out the seen ones)."""
    heldout_family = bool(held) and (not seen or coins[0] < TEST_HELDOUT_FAMILY_SHARE)
    fam = FAMILIES[rng.choice(held if heldout_family else seen)]
    style = draw_style(rng)
    values = fam.sample(rng, style)
    subreddit, title = rng.choice(fam.subreddits), rng.randrange(len(fam.titles))
    seen_posts = [i for i in range(len(fam.posts)) if i not in fam.heldout_posts()]
    seen_summaries = [i for i in range(len(fam.summaries)) if i not in fam.heldout_summaries()]
    post, summary = rng.choice(seen_posts), rng.choice(seen_summaries)
    if split == "test" and (heldout_family or coins[1] < TEST_HELDOUT_TEMPLATE_SHARE):
        while post in seen_posts and summary in seen_summaries:  # any pair with a template no other split uses
            post, summary = rng.randrange(len(fam.posts)), rng.randrange(len(fam.summaries))
    new_text = heldout_family or post in fam.heldout_posts() or summary in fam.heldout_summaries()
    return _Choice(
        fam.name, values, style, subreddit, title, post, summary, pair_kind=pair_kind,
        heldout_family=heldout_family, heldout_template=new_text,
    )  # fmt: skip


def generate(
    n: int,
    seed: int = 0,
    split: str = "train",
    kinds: Sequence[str] | dict[str, float] | None = None,
    families: Sequence[str] | None = None,
) -> list[dict]:
    """``n`` records for ``split``; see :func:`qstar_lib.data.synthetic_tldr` for the schema."""
    if split not in SPLITS:
        raise ValueError(f"split={split!r}: choose one of {', '.join(SPLITS)}")
    if n < 0:
        raise ValueError(f"n={n} must be >= 0")
    seen_fams, held_fams = _family_lists(split, families)
    rng = random.Random(f"qstar-tldr-v{DATA_VERSION}-{seed}-{split}")
    plan = _mix_counts(n, _resolve_kinds(kinds))
    rng.shuffle(plan)
    want, seen, records = SPLITS.index(split), set(), []
    coins: tuple[float, float] | None = None
    attempts = 0
    while len(records) < n:
        attempts += 1
        if attempts > 50 * n + 10_000:  # cannot happen with the shipped families; guards edits to them
            raise RuntimeError(
                f"generate: only {len(records)} of {n} records after {attempts} attempts; "
                f"kinds={kinds!r}, families={families!r} cannot be satisfied"
            )
        pair_kind = plan[len(records)]
        if coins is None:  # drawn once per record, not per attempt: the shares hold whatever gets redrawn
            coins = (rng.random(), rng.random())
        ch = _draw_choice(rng, split, seen_fams, held_fams, pair_kind, coins)
        fam = FAMILIES[ch.family]
        prompt, post_values = _prompt(fam, ch)
        if prompt in seen or (not ch.heldout_template and _split_of(prompt) != want):
            continue  # a text seen in training belongs to one split only, fixed by its hash
        if pair_kind == "verbosity":
            ch.fillers = tuple(rng.sample(range(len(FILLERS)), 2))
        elif pair_kind != "omission":
            combo = rng.choice(TWO_ERROR_COMBOS) if pair_kind == "two_errors" else (pair_kind,)
            claims = range(len(fam.claims)) if ch.heldout_family else fam.claims_for(split)
            used: set[str] = set()
            for kind in combo:
                edit = _plan_edit(kind, fam, ch, rng, prompt, used, claims)
                if edit is None:
                    break
                ch.edits.append(edit)
                used.add(edit[1] if edit[0] != "claim" else "claim")
            if len(ch.edits) != len(combo):
                continue  # this template cannot carry that error: draw again
        seen.add(prompt)
        records.append(_build(ch, f"{split}-{len(records):06d}", prompt, post_values))
        coins = None
    return records


def fig1_example() -> dict:
    """A pair like the paper's Fig. 1 (Appendix C), in our own words: a job-offer post with an
    offer of 38k, summarised once faithfully and once as "250k for a management position"."""
    fam = FAMILIES["job_offer"]
    style = dict(draw_style(random.Random(0)), money=0)
    values = dict(asked_low=38, asked_high=45, offered=38, average=41, floor=30, others=3, role="data analyst")
    claim = next(i for i, (_, key) in enumerate(fam.claims) if key == "management position")
    ch = _Choice(
        "job_offer",
        values,
        style,
        "personalfinance",
        title=0,
        post=0,
        summary=0,
        edits=[("absent", "offered", 250), ("claim", claim)],
        pair_kind="two_errors",
    )
    prompt, post_values = _prompt(fam, ch)
    return _build(ch, "fig1-000000", prompt, post_values)
