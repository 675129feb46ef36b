"""The gold judge: a deterministic scorer of a summary against a synthetic record's known facts.

The paper compares summaries with GPT-4 (its Appendix H prompt asks which summary better covers the
post's most important points). Offline we have no GPT-4, but for the synthetic set we have something
better for our purpose: the facts themselves. The judge reads *free text* (model samples, not only our
templates) and counts

* ``n_correct``: key facts (``record["facts"]``) stated with the right value in the right role;
* ``n_contradicted``: slots given a value that the post gives to *another* role (an in-post swap);
* ``n_invented``: numbers that appear nowhere in the post, known names/places/products that are not
  in the post, and known unsupported claims ("management position") that the post does not make;
* ``n_words`` and a length penalty above :data:`WORD_BUDGET` (concise and precise, as the paper's judge
  prompt asks for the most important points, not everything).

The definition, the heuristics and their limits are written out in ``book/gold_judge.md``; change
them there first. This module knows nothing about models.
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass

from qstar_lib.data.family import CLAIM_KEYS, FAMILIES
from qstar_lib.data.numbers import extract_numbers, normalise_number
from qstar_lib.data.values import TYPES, VOCABULARY, text_key

WORD_BUDGET = 40  # words; the synthetic chosen summaries have 15-40, SFT summaries on TL;DR about 30 tokens
LENGTH_PENALTY = 0.02  # score lost per word above the budget
CONTRADICTION_WEIGHT = 1.0  # per contradicted slot, in units of one fact
INVENTION_WEIGHT = 1.0  # per invented number, name, place, product or claim
CUE_WINDOW = 6  # how many words before a value a role cue may stand
AFTER_WINDOW = 2  # how many words after a value a unit cue ("6 years") may stand
TIE_TOL = 1e-9

NUMBER_WORDS = {
    "two": 2,
    "three": 3,
    "four": 4,
    "five": 5,
    "six": 6,
    "seven": 7,
    "eight": 8,
    "nine": 9,
    "ten": 10,
    "eleven": 11,
    "twelve": 12,
    "fifteen": 15,
    "twenty": 20,
    "thirty": 30,
}
"""Number words credited when they state a fact ("three other people"); never counted as invented."""

_WORD_RE = re.compile(r"[A-Za-z]+")


def _alternation(keys, flags=0) -> re.Pattern:
    body = "|".join(re.escape(k) for k in sorted(set(keys), key=len, reverse=True))
    return re.compile(r"(?<![A-Za-z0-9])(?:" + body + r")(?![A-Za-z0-9])", flags)


_VOCAB_RE = _alternation(text_key(v) for v in VOCABULARY)  # case-sensitive: names are capitalised
_CLAIM_RE = _alternation(CLAIM_KEYS, re.IGNORECASE)
_SENTENCE_END_RE = re.compile(r"[.!?;](?=\s|$)")


@dataclass(frozen=True)
class JudgeScore:
    """The judge's counts for one summary and the score that combines them (higher is better)."""

    n_correct: int
    n_contradicted: int
    n_invented: int
    n_words: int
    n_facts: int
    score: float
    invented: tuple[str, ...] = ()
    contradicted: tuple[str, ...] = ()


def _key(v: float) -> float:
    return round(v, 6)


def _find_text(haystack: str, needle: str, flags: int = 0) -> list[tuple[int, int]]:
    pattern = r"(?<![A-Za-z0-9])" + re.escape(needle) + r"(?![A-Za-z0-9])"
    return [(m.start(), m.end()) for m in re.finditer(pattern, haystack, flags)]


class _Slots:
    """A record's slots: type, true value (number or text key) and role cues, from the family spec."""

    def __init__(self, record: dict):
        fam = FAMILIES.get(record.get("family", ""))
        self.slots = fam.slots if fam is not None else {}
        self.post_values = record.get("post_values") or {}
        self.facts = record.get("facts") or {}
        self.number: dict[str, float] = {}
        self.text: dict[str, str] = {}
        for s, v in {**self.facts, **self.post_values}.items():
            kind = (
                TYPES[self.slots[s].type].kind
                if s in self.slots
                else ("number" if normalise_number(v) is not None and text_key(v) == "" else "text")
            )
            if kind == "number" and normalise_number(v) is not None:
                self.number[s] = _key(normalise_number(v))
            elif kind == "text":
                self.text[s] = text_key(v).lower()  # the record's own values match in any case

    def type_of(self, s: str) -> str:
        return self.slots[s].type if s in self.slots else ("number" if s in self.number else "text")

    def cues(self, s: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
        sl = self.slots.get(s)
        return (sl.cues, sl.after) if sl is not None else ((), ())


def _cue_slots(words, sent_of, m_start, m_end, next_start, sentence, candidates, slots: _Slots) -> list[str]:
    """The slots (among ``candidates``) whose role cue is nearest to the mention at [m_start, m_end).

    A unit cue right after the value wins ("6 years"), if it comes before the next value; otherwise
    the nearest role cue in the :data:`CUE_WINDOW` words before it, in the same sentence."""
    after = [w for w in words if m_end <= w[1] < next_start and sent_of(w[1]) == sentence][:AFTER_WINDOW]
    for word, _, _ in after:
        hit = [s for s in candidates if word in slots.cues(s)[1]]
        if hit:
            return hit
    before = [w for w in words if w[2] <= m_start and sent_of(w[1]) == sentence][-CUE_WINDOW:]
    for word, _, _ in reversed(before):
        hit = [s for s in candidates if word in slots.cues(s)[0]]
        if hit:
            return hit
    return []


def score_summary(summary: str, record: dict) -> JudgeScore:
    """Score ``summary`` (free text) against ``record``'s facts; see the module docstring and book/gold_judge.md."""
    prompt = record["prompt"]
    slots = _Slots(record)
    ends = [m.end() for m in _SENTENCE_END_RE.finditer(summary)]

    def sent_of(pos: int) -> int:
        return bisect.bisect_right(ends, pos)

    words = [(m.group().lower(), m.start(), m.end()) for m in _WORD_RE.finditer(summary)]
    post_numbers = {_key(v) for v, _, _ in extract_numbers(prompt)}

    mentions: list[tuple[str, object, int, int, bool]] = []  # (kind, value, start, end, is_digits)
    for v, s, e in extract_numbers(summary):
        mentions.append(("number", _key(v), s, e, True))
    for w, s, e in words:
        if w in NUMBER_WORDS:
            mentions.append(("number", float(NUMBER_WORDS[w]), s, e, False))
    for key in sorted(set(slots.text.values())):
        if key:
            for s, e in _find_text(summary, key, re.IGNORECASE):
                mentions.append(("text", key, s, e, False))

    correct: set[str] = set()
    contradicted: set[str] = set()
    invented: list[str] = []
    number_types = sorted({slots.type_of(s) for s in slots.number})
    starts = sorted(m[2] for m in mentions)
    for kind, value, start, end, is_digits in mentions:
        i_next = bisect.bisect_left(starts, end)
        nxt = starts[i_next] if i_next < len(starts) else len(summary)  # where the next value begins
        pool = slots.number if kind == "number" else slots.text
        owners = [s for s, v in pool.items() if v == value]
        if kind == "number" and is_digits and value not in post_numbers:
            invented.append(summary[start:end])
        types = {slots.type_of(s) for s in owners} if owners else set(number_types if kind == "number" else ())
        candidates = [s for s in pool if slots.type_of(s) in types]
        cued = _cue_slots(words, sent_of, start, end, nxt, sent_of(start), candidates, slots)
        if cued:
            right = [s for s in cued if pool[s] == value]
            if right:
                correct.update(right)
            elif owners:
                contradicted.add(cued[0])
        else:
            correct.update(owners)

    for pattern in (_VOCAB_RE, _CLAIM_RE):  # known names/places/products and claims the post lacks
        in_post = {m.group().lower() for m in pattern.finditer(prompt)}
        for found in dict.fromkeys(m.group() for m in pattern.finditer(summary)):
            if found.lower() not in in_post:
                invented.append(found)

    n_facts = len(slots.facts)
    n_correct = len(correct & set(slots.facts))
    n_words = len(summary.split())
    score = (n_correct - CONTRADICTION_WEIGHT * len(contradicted) - INVENTION_WEIGHT * len(invented)) / max(n_facts, 1)
    score -= LENGTH_PENALTY * max(0, n_words - WORD_BUDGET)
    return JudgeScore(
        n_correct=n_correct,
        n_contradicted=len(contradicted),
        n_invented=len(invented),
        n_words=n_words,
        n_facts=n_facts,
        score=float(score),
        invented=tuple(invented),
        contradicted=tuple(sorted(contradicted)),
    )


def compare(record: dict, summary_a: str, summary_b: str) -> float:
    """1.0 if ``summary_a`` scores higher, 0.0 if ``summary_b`` does, 0.5 for a tie (within 1e-9)."""
    a = score_summary(summary_a, record).score
    b = score_summary(summary_b, record).score
    if abs(a - b) <= TIE_TOL:
        return 0.5
    return 1.0 if a > b else 0.0


def win_rate(records, summaries_a, summaries_b) -> float:
    """Mean of :func:`compare` over aligned lists (ties count one half), as in the paper's win rates."""
    results = [compare(r, a, b) for r, a, b in zip(records, summaries_a, summaries_b, strict=True)]
    return sum(results) / len(results) if results else float("nan")
