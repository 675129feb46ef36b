"""The families of the synthetic set: what each topic's posts are about, read from ``families/<family>.json``.

A family is one Reddit topic (a job offer, a car trade-in, a rent increase, ...). Its prose lives in a data
file shipped with the package, ``qstar_lib/data/families/<family>.json``, read with :mod:`importlib.resources`;
how a family draws its slot values is in :mod:`qstar_lib.data.samplers` (a sampler of its own, or the generic
one for a file alone). This module is the reader that checks every file on load. A file holds:

* ``family``: its name, the same as the file's name;
* ``subreddits``: where such a post is made;
* ``slots``: the facts of a post, in order, each ``{"type", "range" | "pool", "step", "cues", "after"}``:
  ``type`` is a value type of :data:`qstar_lib.data.values.TYPES`; ``range`` the inclusive bounds of the raw
  value the sampler draws (salaries in thousands, a car's model year) and ``step`` its grid (default 1);
  ``pool`` the vocabulary of :data:`qstar_lib.data.values.POOLS` a text value comes from; ``cues`` words
  that, shortly before a value, say which role it plays, and ``after`` words right after it that say the
  same ("6 years", "$900 deposit");
* ``titles`` and ``posts``: templates with a ``{slot}`` field for every fact (a post mentions every slot)
  and the style fields ``{he}``, ``{His}``, ``{bf}``, ...;
* ``summaries``: ``{"text", "omitted", "omits"}``, a faithful summary template (``{claim}`` marks where an
  unsupported claim can be inserted) and the same summary with the ``omits`` slots left out;
* ``claims``: ``{"text", "key"}``, an unsupported claim and the key phrase the judge looks for.

Data v2 reads more out of the lists' order: claim ``i`` belongs to split ``i % 3`` (train, validation,
test: :meth:`Family.claims_for`), and the last :func:`heldout_count` post and summary templates (30%, rounded
up) appear only in the test split (:meth:`Family.heldout_posts`, :meth:`Family.heldout_summaries`).

A text (title, post, summary) is a string or, to keep the lines of a file short, a list of strings joined
with single spaces. A file that breaks these rules fails on import with a :class:`FamilyFileError` that
names the file and the key. Every family's post mentions at least two values of the same type in different
roles; that is what makes an in-post swap possible (see :mod:`qstar_lib.data.synthetic`).
"""

from __future__ import annotations

import importlib.resources
import json
import math
import random
import string
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NoReturn

from qstar_lib.data.samplers import SAMPLERS, generic_sampler
from qstar_lib.data.values import POOLS, STYLE_FIELDS, STYLES, TYPES


@dataclass(frozen=True)
class Slot:
    """A fact in a post. ``cues``: words that, shortly before a value, say which role it plays;
    ``after``: words right after a value that say the same ("6 years", "$900 deposit"); ``range`` and
    ``pool``: what values the family's sampler draws (documentation the tests hold the samplers to)."""

    type: str
    cues: tuple[str, ...] = ()
    after: tuple[str, ...] = ()
    range: tuple[int, int] | None = None
    pool: str | None = None
    step: int = 1


@dataclass(frozen=True)
class Summary:
    """A faithful summary template and the same summary with ``omits`` left out (for omission pairs).
    ``{claim}`` marks where an unsupported claim can be inserted."""

    text: str
    omitted: str
    omits: tuple[str, ...]


S = Summary  # the short name the old in-code tables used


@dataclass(frozen=True)
class Family:
    """One topic of the synthetic set: its file's contents (:data:`FAMILY_TEXTS`) and its sampler."""

    name: str
    subreddits: tuple[str, ...]
    slots: dict[str, Slot]
    sample: Callable[[random.Random, dict], dict]
    titles: tuple[str, ...]
    posts: tuple[str, ...]
    summaries: tuple[Summary, ...]
    claims: tuple[tuple[str, str], ...]  # (inserted text, key phrase the judge looks for)

    def claims_for(self, split: str) -> tuple[int, ...]:
        """Indices of the claims a record of ``split`` may insert: claim ``i`` belongs to split ``i % 3``
        (train, validation, test), so the three splits' inserted phrases are disjoint lists."""
        k = CLAIM_SPLITS.index(split)
        return tuple(i for i in range(len(self.claims)) if i % len(CLAIM_SPLITS) == k)

    def heldout_posts(self) -> tuple[int, ...]:
        """Post templates only the test split uses: the last :func:`heldout_count` of the list."""
        return tuple(range(len(self.posts) - heldout_count(len(self.posts)), len(self.posts)))

    def heldout_summaries(self) -> tuple[int, ...]:
        """Summary templates only the test split uses: the last :func:`heldout_count` of the list."""
        return tuple(range(len(self.summaries) - heldout_count(len(self.summaries)), len(self.summaries)))

    def swap_partners(self, slot: str) -> tuple[str, ...]:
        """Other slots of the same type and a different role cue: the values an in-post swap can put in
        this slot's place. Two ends of one range ("38k to 45k") share their cue, so swapping them would
        be an error that no reader of roles could see; they are not swapped."""
        me = self.slots[slot]
        return tuple(
            s
            for s, sl in self.slots.items()
            if s != slot and sl.type == me.type and (sl.cues, sl.after) != (me.cues, me.after)
        )


CLAIM_SPLITS = ("train", "validation", "test")
HELDOUT_SHARE = 0.3  # at least this share of each family's post and summary templates is test-only


def heldout_count(n_templates: int) -> int:
    """How many of ``n_templates`` the test split holds out: ceil(30%), and at least one kept for training."""
    return min(n_templates - 1, math.ceil(HELDOUT_SHARE * n_templates - 1e-9))


# ---------------------------------------------------------------------------------------------------
# Reading and checking families/<family>.json
# ---------------------------------------------------------------------------------------------------
class FamilyFileError(ValueError):
    """A family file that breaks the format of this module's docstring; the message names file and key."""


_FORMATTER = string.Formatter()


class _File:
    """Where a check is: the file, for messages of the form ``families/pets.json: slots.old_dog.type: ...``."""

    def __init__(self, name: str):
        self.path = f"families/{name}.json"

    def fail(self, key: str, message: str) -> NoReturn:
        raise FamilyFileError(f"{self.path}: {key}: {message}")

    def keys(self, obj: Any, key: str, required: tuple[str, ...], optional: tuple[str, ...] = ()) -> dict:
        if not isinstance(obj, dict):
            self.fail(key, f"expected an object, got {type(obj).__name__}")
        missing = [k for k in required if k not in obj]
        unknown = [k for k in obj if k not in required + optional]
        if missing:
            self.fail(key, f"missing key(s) {', '.join(missing)}")
        if unknown:
            self.fail(key, f"unknown key(s) {', '.join(unknown)}; allowed: {', '.join(required + optional)}")
        return obj

    def strings(self, obj: Any, key: str, empty_ok: bool = False) -> tuple[str, ...]:
        if not isinstance(obj, list) or not (obj or empty_ok):
            self.fail(key, f"expected a {'' if empty_ok else 'non-empty '}list of strings, got {obj!r}")
        for i, v in enumerate(obj):
            if not isinstance(v, str) or not v.strip():
                self.fail(f"{key}[{i}]", f"expected a non-empty string, got {v!r}")
        return tuple(obj)

    def text(self, obj: Any, key: str, fields: set[str]) -> str:
        """A template: a string, or a list of strings joined with single spaces; only ``fields`` may be filled."""
        if isinstance(obj, list):
            pieces = self.strings(obj, key)
            bad = [i for i, v in enumerate(pieces) if v != v.strip()]
            if bad:
                self.fail(f"{key}[{bad[0]}]", "a piece of a text may not start or end with a space")
            obj = " ".join(pieces)
        if not isinstance(obj, str) or not obj:
            self.fail(key, "expected a non-empty string or a list of strings")
        try:
            parsed = list(_FORMATTER.parse(obj))
        except ValueError as err:
            self.fail(key, f"not a template ({err}); write a literal brace as {{{{ or }}}}")
        for _, name, spec, conv in parsed:
            if name is not None and (spec or conv):
                self.fail(key, f"field {{{name}}}: no format spec or conversion allowed")
            if name is not None and name not in fields:
                self.fail(key, f"unknown field {{{name}}}; allowed: {', '.join(sorted(fields))}")
        return obj


def _fields(template: str) -> set[str]:
    return {name for _, name, _, _ in _FORMATTER.parse(template) if name}


def _read_slot(f: _File, obj: Any, key: str) -> Slot:
    f.keys(obj, key, ("type",), ("range", "pool", "cues", "after", "step"))
    t = obj["type"]
    if not isinstance(t, str) or t not in TYPES:
        f.fail(f"{key}.type", f"{t!r} is not a value type; choose from {', '.join(TYPES)}")
    bounds, pool = obj.get("range"), obj.get("pool")
    if TYPES[t].kind == "number" or "range" in obj:
        if not (
            isinstance(bounds, list)
            and len(bounds) == 2
            and all(type(v) is int for v in bounds)
            and bounds[0] <= bounds[1]
        ):
            f.fail(f"{key}.range", f"expected [low, high], two integers with low <= high, got {bounds!r}")
    if TYPES[t].kind == "text" and not (isinstance(pool, str) and pool in POOLS):
        f.fail(f"{key}.pool", f"{pool!r} is not a vocabulary; choose from {', '.join(POOLS)}")
    if TYPES[t].kind == "number" and pool is not None:
        f.fail(f"{key}.pool", f"a {t} slot is a number and takes no pool")
    step = obj.get("step", 1)
    if "step" in obj and (type(step) is not int or step < 1 or TYPES[t].kind != "number"):
        f.fail(f"{key}.step", f"expected a positive integer for a number slot, got {step!r}")
    return Slot(
        t,
        f.strings(obj.get("cues", []), f"{key}.cues", empty_ok=True),
        f.strings(obj.get("after", []), f"{key}.after", empty_ok=True),
        tuple(bounds) if bounds is not None else None,
        pool,
        step,
    )


def _read_summary(f: _File, obj: Any, key: str, slots: dict[str, Slot]) -> Summary:
    f.keys(obj, key, ("text", "omitted", "omits"))
    fields = set(slots) | set(STYLE_FIELDS)
    text = f.text(obj["text"], f"{key}.text", fields | {"claim"})
    omitted = f.text(obj["omitted"], f"{key}.omitted", fields)
    omits = f.strings(obj["omits"], f"{key}.omits")
    for s in omits:
        if s not in _fields(text) or s in _fields(omitted):
            f.fail(f"{key}.omits", f"{s!r} must be a slot of the text and not of the omitted text")
    return Summary(text, omitted, omits)


def _read_claim(f: _File, obj: Any, key: str) -> tuple[str, str]:
    f.keys(obj, key, ("text", "key"))
    text = f.text(obj["text"], f"{key}.text", set(STYLE_FIELDS))
    phrase = obj["key"]
    if not isinstance(phrase, str) or not phrase or phrase.lower() not in text.lower():
        f.fail(f"{key}.key", f"{phrase!r} must be a phrase of the claim's text {text!r}")
    return text, phrase


def _check_swappable(f: _File, key: str, text: str, slots: dict[str, Slot]) -> None:
    """Data v2's rule for a summary: some value type occurs twice in it, and one of those slots has a partner
    of the same type and another role that the summary does not write (what an in-post swap puts in)."""
    in_summary = [s for s in _fields(text) if s in slots]
    for s in in_summary:
        same = [o for o in in_summary if slots[o].type == slots[s].type]
        partners = [
            o
            for o, sl in slots.items()
            if o not in in_summary
            and sl.type == slots[s].type
            and (sl.cues, sl.after) != (slots[s].cues, slots[s].after)
        ]
        if len(same) >= 2 and partners:
            return
    f.fail(key, "no in-post swap possible: no value type occurs twice with a same-type post slot left out")


def _list(f: _File, obj: Any, key: str) -> list:
    if not isinstance(obj, list) or not obj:
        f.fail(key, "expected a non-empty list")
    return obj


def read_family(name: str, raw: str | None = None) -> dict:
    """The checked contents of ``families/<name>.json`` (or of ``raw``, its text) as keyword arguments of
    :class:`Family` (all but ``name`` and ``sample``); raises :class:`FamilyFileError`."""
    f = _File(name)
    if raw is None:
        path = importlib.resources.files("qstar_lib.data") / "families" / f"{name}.json"
        if not path.is_file():
            why = f"family {name!r} has a sampler in qstar_lib.data.samplers" if name in SAMPLERS else "no such family"
            raise FamilyFileError(f"{f.path}: missing; {why}")
        raw = path.read_text(encoding="utf-8")
    try:
        obj = json.loads(raw)
    except json.JSONDecodeError as err:
        raise FamilyFileError(f"{f.path}: not JSON: {err}") from None
    f.keys(obj, "(top level)", ("family", "subreddits", "slots", "titles", "posts", "summaries", "claims"))
    if not isinstance(obj["family"], str) or obj["family"] != name:
        f.fail("family", f"{obj['family']!r} differs from the file's name {name!r}")
    if not isinstance(obj["slots"], dict) or not obj["slots"]:
        f.fail("slots", "expected a non-empty object of slot name -> spec")
    for s in obj["slots"]:
        if not s.isidentifier() or s == "claim" or s in STYLE_FIELDS:
            f.fail(f"slots.{s}", "a slot name is an identifier other than 'claim' and the style fields")
    slots = {s: _read_slot(f, v, f"slots.{s}") for s, v in obj["slots"].items()}
    fields = set(slots) | set(STYLE_FIELDS)
    titles = tuple(f.text(t, f"titles[{i}]", fields) for i, t in enumerate(_list(f, obj["titles"], "titles")))
    posts = tuple(f.text(t, f"posts[{i}]", fields) for i, t in enumerate(_list(f, obj["posts"], "posts")))
    for i, post in enumerate(posts):
        if set(slots) - _fields(post):
            f.fail(f"posts[{i}]", f"does not mention slot(s) {', '.join(sorted(set(slots) - _fields(post)))}")
    summaries = tuple(
        _read_summary(f, v, f"summaries[{i}]", slots) for i, v in enumerate(_list(f, obj["summaries"], "summaries"))
    )
    claims = tuple(_read_claim(f, v, f"claims[{i}]") for i, v in enumerate(_list(f, obj["claims"], "claims")))
    drawn = SAMPLERS[name](random.Random(name), dict(STYLES[0])) if name in SAMPLERS else None
    if drawn is not None and set(drawn) != set(slots):
        f.fail("slots", f"the sampler draws {', '.join(drawn)}; the file declares {', '.join(slots)}")
    for i, summ in enumerate(summaries):
        _check_swappable(f, f"summaries[{i}].text", summ.text, slots)
    if len(claims) < len(CLAIM_SPLITS):
        f.fail("claims", f"{len(claims)} claims; data v2 needs at least one per split ({len(CLAIM_SPLITS)})")
    return dict(
        subreddits=f.strings(obj["subreddits"], "subreddits"),
        slots=slots,
        titles=titles,
        posts=posts,
        summaries=summaries,
        claims=claims,
    )


def _read_all() -> dict[str, dict]:
    """Every file of ``families/``: the families with a sampler of their own first (in that table's order),
    then the others by name."""
    folder = importlib.resources.files("qstar_lib.data") / "families"
    files = sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".json"))
    names = list(SAMPLERS) + [n for n in files if n not in SAMPLERS]
    return {name: read_family(name) for name in names}


FAMILY_TEXTS: dict[str, dict] = _read_all()
"""family -> the checked contents of its file (subreddits, slots, titles, posts, summaries, claims)."""
FAMILIES: dict[str, Family] = {
    name: Family(name=name, sample=SAMPLERS.get(name) or generic_sampler(spec["slots"]), **spec)
    for name, spec in FAMILY_TEXTS.items()
}
CLAIM_KEYS: tuple[str, ...] = tuple(sorted({key for fam in FAMILIES.values() for _, key in fam.claims}))
"""Key phrases of every inserted claim; the judge counts one in a summary but not in the post as invented."""
