"""The number parser shared by the synthetic generator and the gold judge ("38k", "$38,000", "38 000" -> 38000).

The rules are documented in book/gold_judge.md. The generator uses them to plant an absent value that is
truly absent from the post; :mod:`qstar_lib.eval.judge` uses the same parser to read a summary, so the two
can never disagree about what a number is.
"""

from __future__ import annotations

import re

__all__ = ["extract_numbers", "normalise_number"]

_NUM_RE = re.compile(
    r"(?P<cur>[$£€]\s?)?(?P<num>\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d{1,3}(?: \d{3})+(?![\d,])|\d+(?:\.\d+)?)"
)
_SUFFIX_RE = re.compile(r"\s?(?P<suf>k|K|grand|thousand|million|mil|mn|bn|billion|M|m)(?![A-Za-z])")
_MULT = {
    "k": 1e3,
    "K": 1e3,
    "grand": 1e3,
    "thousand": 1e3,
    "million": 1e6,
    "mil": 1e6,
    "mn": 1e6,
    "bn": 1e9,
    "billion": 1e9,
}


def extract_numbers(text: str) -> list[tuple[float, int, int]]:
    """All numbers in ``text`` as ``(value, start, end)``, normalised to plain values.

    Rules (documented in book/gold_judge.md): thousands separators "," and a single space
    ("38 000"); suffixes k/K/grand/thousand (x1000), million/mil/mn (x1e6), bn/billion (x1e9);
    a bare "M"/"m" means million only after a currency sign ("$1.2M"), otherwise "27F"/"31M" is a
    Reddit age tag and the number is the age; a range "38-45k" or "38 to 45k" gives the first number
    the second's suffix; ordinals ("2nd") and digits glued to letters ("80D", "A7") are not numbers.
    """
    out: list[tuple[float, int, int, bool]] = []  # value, start, end, had_suffix
    for m in _NUM_RE.finditer(text):
        start, end = m.start(), m.end()
        if start > 0 and (text[start - 1].isalnum() or text[start - 1] in "._"):
            continue  # "A7", "v2.5": part of a word
        value = float(m.group("num").replace(",", "").replace(" ", ""))
        had_suffix = False
        sm = _SUFFIX_RE.match(text, end)
        if sm:
            suf = sm.group("suf")
            if suf in ("M", "m"):
                if m.group("cur"):
                    value, end, had_suffix = value * 1e6, sm.end(), True
            else:
                value, end, had_suffix = value * _MULT[suf], sm.end(), True
        if not had_suffix and end < len(text) and text[end].isalpha():
            rest = text[end : end + 3]
            if re.match(r"(st|nd|rd|th)(?![A-Za-z])", rest):
                continue  # ordinal
            if not re.match(r"[FfMm](?![A-Za-z])", rest):
                continue  # "80D", "4x": a product code, not a quantity
        out.append((value, start, end, had_suffix))
    for i in range(len(out) - 1):  # "38-45k" / "38 to 45k": the suffix belongs to both ends
        v, s, e, suf = out[i]
        v2, s2, _, suf2 = out[i + 1]
        if not suf and suf2 and v < 1000 and text[e:s2].strip().lower() in ("-", "to", "and"):
            out[i] = (v * 1000 if v2 >= 1000 else v, s, e, True)
    return [(v, s, e) for v, s, e, _ in out]


def normalise_number(text: str) -> float | None:
    """The value of a string that holds exactly one number ("$38,000" -> 38000.0), else None."""
    nums = extract_numbers(text)
    return nums[0][0] if len(nums) == 1 else None
