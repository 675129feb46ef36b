"""Synthetic Reddit TL;DR preference pairs with planted errors and their ground truth.

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

This module knows nothing about models or tokenizers; :mod:`qstar_lib.data` is the public entry point.
"""

from __future__ import annotations

import functools
import hashlib
import random
import re
import string
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

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

PROMPT_TEMPLATE = "SUBREDDIT: r/{subreddit}\n\nTITLE: {title}\n\nPOST: {post}\n\nTL;DR:"

# ---------------------------------------------------------------------------------------------------
# Vocabularies (>= 30 each). Names avoid ordinary English words so a token match means the name.
# ---------------------------------------------------------------------------------------------------
FEMALE_NAMES = (
    "Emma", "Olivia", "Sophie", "Lara", "Chloe", "Megan", "Priya", "Hannah", "Jessica", "Natalie",
    "Rachel", "Kayla", "Lauren", "Bianca", "Isabel", "Tessa", "Nadia", "Fiona", "Camila", "Erin",
    "Monica", "Sarah", "Leah", "Alicia", "Vanessa", "Danielle", "Renee", "Yasmin", "Ingrid", "Paige",
    "Mira", "Jenna",
)
MALE_NAMES = (
    "Jake", "Ethan", "Marcus", "Daniel", "Ryan", "Tyler", "Kevin", "Omar", "Lucas", "Nathan",
    "Derek", "Adrian", "Connor", "Diego", "Trevor", "Samuel", "Brandon", "Elliot", "Felix", "Gavin",
    "Isaac", "Jordan", "Kyle", "Liam", "Mateo", "Noah", "Oscar", "Patrick", "Rohan", "Simon",
    "Victor", "Wesley",
)
PET_NAMES = (
    "Biscuit", "Mochi", "Pepper", "Juniper", "Waffles", "Ziggy", "Nala", "Rocco", "Luna", "Milo",
    "Bruno", "Koda", "Winston", "Maple", "Pickles", "Tofu", "Noodle", "Scout", "Ginger", "Hazel",
    "Oreo", "Zeus", "Loki", "Bandit", "Sadie", "Teddy", "Remy", "Marley", "Bentley", "Chewie",
    "Kiwi", "Gizmo",
)
US_CITIES = (
    "Denver", "Austin", "Chicago", "Seattle", "Portland", "Boston", "Atlanta", "Phoenix", "Nashville",
    "Minneapolis", "Pittsburgh", "Raleigh", "Tampa", "Sacramento", "Columbus", "Cleveland", "Detroit",
    "Milwaukee", "Omaha", "Boise", "Richmond", "Baltimore", "Charlotte", "San Diego", "Salt Lake City",
    "Kansas City", "Albuquerque", "Orlando", "Dallas", "Houston", "Miami", "Indianapolis",
)
WORLD_CITIES = (
    "Lisbon", "Prague", "Tokyo", "Seoul", "Mexico City", "Barcelona", "Amsterdam", "Dublin",
    "Reykjavik", "Budapest", "Vienna", "Berlin", "Copenhagen", "Athens", "Istanbul", "Marrakech",
    "Hanoi", "Bangkok", "Lima", "Bogota", "Buenos Aires", "Montreal", "Vancouver", "Edinburgh",
    "Krakow", "Porto", "Seville", "Florence", "Munich", "Oslo", "Helsinki", "Taipei",
)
CARS = (  # make and model; the model year is sampled separately
    "Honda Civic", "Honda Accord", "Honda Fit", "Toyota Corolla", "Toyota Camry", "Toyota Prius",
    "Ford Focus", "Ford Fusion", "Ford Escape", "Chevy Malibu", "Chevy Cruze", "Chevy Equinox",
    "Nissan Altima", "Nissan Sentra", "Nissan Rogue", "Hyundai Elantra", "Hyundai Sonata", "Kia Soul",
    "Kia Optima", "Subaru Outback", "Subaru Impreza", "Subaru Forester", "Volkswagen Jetta",
    "Volkswagen Golf", "Jeep Wrangler", "Jeep Cherokee", "Dodge Charger", "Buick Enclave",
    "Acura Integra", "Mitsubishi Lancer", "Pontiac Vibe", "Mazda Protege",
)
CAMERAS = (  # digits only glued to letters, so no camera name reads as a number
    "Canon EOS 80D", "Canon T7i", "Canon EOS RP", "Canon EOS M50", "Canon 6D", "Canon G7X",
    "Nikon D750", "Nikon D3500", "Nikon D7500", "Nikon Z50", "Nikon D5600", "Sony A7 III", "Sony a6000",
    "Sony RX100", "Sony A7C", "Sony FX3", "Sony HVR-HD1000", "Fujifilm X-T3", "Fujifilm X100V",
    "Fujifilm X-S10", "Fujifilm X-E4", "Panasonic GH5", "Panasonic G85", "Panasonic S5",
    "Olympus E-M10", "Ricoh GR III", "Leica Q2", "Pentax KP", "GoPro Hero", "Canon T2i",
    "Nikon Z fc", "Canon EOS R10",
)
SCHOOLS = (
    "Ohio State", "Penn State", "Purdue", "Northeastern", "Boston University", "NYU", "UCLA", "USC",
    "Georgia Tech", "Rutgers", "Tulane", "Vanderbilt", "Rice", "Emory", "Tufts", "Villanova",
    "Syracuse", "Fordham", "Baylor", "Clemson", "Auburn", "UC Davis", "UC San Diego", "Virginia Tech",
    "Texas A&M", "Arizona State", "Iowa State", "Temple", "Drexel", "Lehigh", "Gonzaga", "Marquette",
)
ROLES = (  # all start with a consonant sound, so "a {role}" reads right
    "junior accountant", "data analyst", "marketing coordinator", "lab technician", "paralegal",
    "UX designer", "payroll specialist", "customer success associate", "QA tester",
    "junior web developer", "research assistant", "logistics coordinator", "benefits assistant",
    "sales associate", "graphic designer", "network technician", "copywriter",
    "social media coordinator", "junior civil engineer", "pharmacy technician", "sales engineer",
    "supply chain analyst", "content writer", "dental assistant", "front desk coordinator",
    "claims adjuster", "procurement assistant", "wedding planner", "junior buyer", "bookkeeper",
    "help desk analyst", "recruiting coordinator",
)
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
# Numbers: one normaliser shared with the judge ("38k", "$38,000", "38 000" -> 38000).
# ---------------------------------------------------------------------------------------------------
_NUM_RE = re.compile(
    r"(?P<cur>[$£€]\s?)?(?P<num>\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d{1,3}(?: \d{3})+(?![\d,])|\d+(?:\.\d+)?)"
)
_SUFFIX_RE = re.compile(
    r"\s?(?P<suf>k|K|grand|thousand|million|mil|mn|bn|billion|M|m)(?![A-Za-z])"
)
_MULT = {"k": 1e3, "K": 1e3, "grand": 1e3, "thousand": 1e3, "million": 1e6, "mil": 1e6, "mn": 1e6,
         "bn": 1e9, "billion": 1e9}


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
            rest = text[end:end + 3]
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


def text_key(value: str) -> str:
    """What is matched for a text value: the value without free-standing digits ("2012 Honda Civic" -> "Honda Civic")."""
    return " ".join(tok for tok in value.split() if not tok.isdigit())


# ---------------------------------------------------------------------------------------------------
# Value types: how a raw value is written in the post and in a summary, and how to draw an absent one.
# ---------------------------------------------------------------------------------------------------
def _money(v: int) -> str:
    return f"${v:,}"


def _salary_post(v: int, style: dict) -> str:
    return (f"${v * 1000:,}", f"{v}k", f"${v}k")[style["money"]]


def _salary_summary(v: int, style: dict) -> str:
    return f"${v}k" if style["money"] == 2 else f"{v}k"


def _round_to(x: float, step: int) -> int:
    return max(step, int(round(x / step)) * step)


@dataclass(frozen=True)
class ValueType:
    """How one kind of slot value is rendered and how an absent substitute is drawn."""

    kind: str  # "number" or "text"
    post: Callable[[Any, dict], str]
    summary: Callable[[Any, dict], str]
    absent: Callable[[random.Random, Any], Any]


def _pick_other(pool: Sequence[str]) -> Callable[[random.Random, Any], Any]:
    return lambda rng, true: rng.choice([p for p in pool if p != true])


def _name_absent(rng: random.Random, true: str) -> str:
    pool = FEMALE_NAMES if true in FEMALE_NAMES else MALE_NAMES
    return rng.choice([p for p in pool if p != true])


def _str(v: Any, style: dict) -> str:
    return str(v)


TYPES: dict[str, ValueType] = {
    "salary": ValueType("number", _salary_post, _salary_summary,
                        lambda rng, v: rng.choice([rng.randint(15, 28), rng.randrange(100, 305, 5)])),
    "money": ValueType("number", lambda v, s: _money(v), lambda v, s: _money(v),
                       lambda rng, v: _round_to(v * rng.choice([0.4, 0.55, 1.6, 1.8, 2.5]), 50 if v >= 1000 else 25)),
    "count": ValueType("number", _str, _str, lambda rng, v: v + rng.choice([-1, 1]) * rng.randint(2, 5)),
    "weight": ValueType("number", _str, _str, lambda rng, v: v + rng.choice([-1, 1]) * rng.randint(12, 40)),
    "age": ValueType("number", _str, _str, lambda rng, v: max(19, v + rng.choice([-1, 1]) * rng.randint(3, 9))),
    "miles": ValueType("number", lambda v, s: f"{v:,}", lambda v, s: f"{v:,}",
                       lambda rng, v: _round_to(v * rng.choice([0.3, 0.5, 1.5]), 1000)),
    "calories": ValueType("number", lambda v, s: f"{v:,}", lambda v, s: f"{v:,}",
                          lambda rng, v: v + rng.choice([-1, 1]) * rng.randrange(300, 900, 50)),
    "name": ValueType("text", _str, _str, _name_absent),
    "pet": ValueType("text", _str, _str, _pick_other(PET_NAMES)),
    "city": ValueType("text", _str, _str, _pick_other(US_CITIES + WORLD_CITIES)),
    "car": ValueType("text", lambda v, s: f"{v[0]} {v[1]}", lambda v, s: f"{v[0]} {v[1]}",
                     lambda rng, v: (rng.randint(2004, 2023), rng.choice([c for c in CARS if c != v[1]]))),
    "camera": ValueType("text", _str, _str, _pick_other(CAMERAS)),
    "school": ValueType("text", _str, _str, _pick_other(SCHOOLS)),
    "role": ValueType("text", _str, _str, _pick_other(ROLES)),
}
VOCABULARY = FEMALE_NAMES + MALE_NAMES + PET_NAMES + US_CITIES + WORLD_CITIES + CARS + CAMERAS + SCHOOLS + ROLES
"""Names, places, products and job titles the judge recognises in free text (one absent from the post is invented)."""


# ---------------------------------------------------------------------------------------------------
# Families
# ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Slot:
    """A fact in a post. ``cues``: words that, shortly before a value, say which role it plays;
    ``after``: words right after a value that say the same ("6 years", "$900 deposit")."""

    type: str
    cues: tuple[str, ...] = ()
    after: tuple[str, ...] = ()


@dataclass(frozen=True)
class Summary:
    """A faithful summary template and the same summary with ``omits`` left out (for omission pairs).
    ``{claim}`` marks where an unsupported claim can be inserted."""

    text: str
    omitted: str
    omits: tuple[str, ...]


@dataclass(frozen=True)
class Family:
    name: str
    subreddits: tuple[str, ...]
    slots: dict[str, Slot]
    sample: Callable[[random.Random, dict], dict]
    titles: tuple[str, ...]
    posts: tuple[str, ...]
    summaries: tuple[Summary, ...]
    claims: tuple[tuple[str, str], ...]  # (inserted text, key phrase the judge looks for)

    def swap_partners(self, slot: str) -> tuple[str, ...]:
        """Other slots of the same type and a different role cue: the values an in-post swap can put in
        this slot's place. Two ends of one range ("38k to 45k") share their cue, so swapping them would
        be an error that no reader of roles could see; they are not swapped."""
        me = self.slots[slot]
        return tuple(s for s, sl in self.slots.items()
                     if s != slot and sl.type == me.type and (sl.cues, sl.after) != (me.cues, me.after))


def _distinct(rng: random.Random, draw: Callable[[], int], k: int) -> list[int]:
    seen: list[int] = []
    while len(seen) < k:
        v = draw()
        if v not in seen:
            seen.append(v)
    return seen


def _sample_job(rng, style):
    while True:
        low = rng.randint(32, 80)
        high = low + rng.choice([4, 5, 6, 7, 8, 10, 12])
        offered = rng.choice([low - rng.randint(1, 3), rng.randint(low + 1, high - 1)])
        average = rng.randint(low - 3, high + 3)
        floor = low - rng.randint(5, 9)
        vals = [low, high, offered, average, floor]
        if len(set(vals)) == 5:
            return dict(asked_low=low, asked_high=high, offered=offered, average=average, floor=floor,
                        others=rng.randint(2, 6), role=rng.choice(ROLES))


def _sample_car(rng, style):
    old_year = rng.randint(2004, 2016)
    old, new = rng.sample(CARS, 2)
    price, trade = rng.randrange(9000, 32001, 250), rng.randrange(1000, 8001, 250)
    return dict(old_car=(old_year, old), new_car=(rng.randint(old_year + 3, 2023), new),
                price=price, trade_in=trade, miles=rng.randrange(90000, 230001, 1000))


def _sample_move(rng, style):
    a, b, c = rng.sample(US_CITIES, 3)
    weeks, years = _distinct(rng, lambda: rng.randint(2, 10), 2)
    names = FEMALE_NAMES if style["pg"] == "F" else MALE_NAMES
    return dict(from_city=a, to_city=b, family_city=c, partner=rng.choice(names), weeks=weeks, years=years)


def _sample_camera(rng, style):
    old, new = rng.sample(CAMERAS, 2)
    budget = rng.randrange(400, 2001, 50)
    price = budget + rng.choice([-1, 1]) * rng.randrange(100, 451, 50)
    return dict(old_camera=old, new_camera=new, budget=budget, price=price, years=rng.randint(2, 9))


def _sample_rent(rng, style):
    while True:
        current = rng.randrange(800, 2401, 25)
        new = current + rng.randrange(75, 401, 25)
        deposit = rng.randrange(500, 3001, 50)
        if deposit not in (current, new):
            break
    years, days = rng.randint(2, 9), rng.choice([14, 21, 30, 45, 60])
    return dict(current_rent=current, new_rent=new, deposit=deposit, years=years, days=days,
                landlord=rng.choice(MALE_NAMES + FEMALE_NAMES))


def _sample_relationship(rng, style):
    me = rng.randint(25, 45)  # both adults: the partner is at most 6 years younger
    partner_age = me + rng.choice([-1, 1]) * rng.randint(1, 6)
    p_names = FEMALE_NAMES if style["pg"] == "F" else MALE_NAMES
    partner, other = rng.sample(p_names, 1)[0], rng.choice(MALE_NAMES + FEMALE_NAMES)
    while other == partner:
        other = rng.choice(MALE_NAMES + FEMALE_NAMES)
    return dict(my_age=me, partner_age=partner_age, partner=partner, other=other, years=rng.randint(2, 9))


def _sample_fitness(rng, style):
    start = rng.randint(210, 330)
    current = start - rng.randint(20, 60)
    goal = max(140, current - rng.randint(15, 45))
    return dict(start_weight=start, current_weight=current, goal_weight=goal, months=rng.randint(3, 14),
                calories=rng.randrange(1500, 2401, 50))


def _sample_college(rng, style):
    dream, backup = rng.sample(SCHOOLS, 2)
    dream_aid, backup_aid = _distinct(rng, lambda: rng.randrange(2000, 30001, 500), 2)
    if dream_aid > backup_aid:
        dream_aid, backup_aid = backup_aid, dream_aid
    return dict(dream_school=dream, backup_school=backup, dream_aid=dream_aid, backup_aid=backup_aid,
                loan=rng.randrange(31000, 90001, 1000))


def _sample_pets(rng, style):
    old, new = rng.sample(PET_NAMES, 2)
    vet, savings = _distinct(rng, lambda: rng.randrange(300, 4001, 50), 2)
    old_age = rng.randint(9, 15)
    pup_weeks = rng.choice([w for w in range(8, 17) if w != old_age])
    return dict(old_dog=old, new_pup=new, old_age=old_age, pup_weeks=pup_weeks,
                vet_bill=vet, savings=savings)


def _sample_travel(rng, style):
    dest, layover = rng.sample(WORLD_CITIES, 2)
    budget = rng.randrange(1500, 6001, 100)
    flight = rng.randrange(350, 1401, 10)
    return dict(home_city=rng.choice(US_CITIES), dest_city=dest, layover_city=layover,
                days=rng.randint(5, 16), budget=budget, flight=flight)


# FAMILY_TEXTS (the prose: posts, titles, summaries, claims) is at the end of this file.
_SAMPLERS = {
    "job_offer": _sample_job, "car_trade": _sample_car, "relocation": _sample_move,
    "camera_upgrade": _sample_camera, "rent_increase": _sample_rent, "relationship": _sample_relationship,
    "weight_loss": _sample_fitness, "college_aid": _sample_college, "pets": _sample_pets,
    "travel_budget": _sample_travel,
}


# ---------------------------------------------------------------------------------------------------
# Rendering with spans
# ---------------------------------------------------------------------------------------------------
_FORMATTER = string.Formatter()


@functools.lru_cache(maxsize=None)
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


def _make_style(pg: str, mg: str, money: int) -> dict:
    he, his, him = ("he", "his", "him") if pg == "M" else ("she", "her", "her")
    return dict(pg=pg, mg=mg, he=he, He=he.capitalize(), his=his, His=his.capitalize(), him=him,
                bf="boyfriend" if pg == "M" else "girlfriend", money=money)


_STYLES = tuple(_make_style(pg, mg, money) for pg in "MF" for mg in "MF" for money in range(3))


def _style(rng: random.Random) -> dict:
    """Partner's and poster's gender (pronouns, "(27F)" tags) and how money is written in the post."""
    return dict(rng.choice(_STYLES))


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
        rejected, _ = _render(summ.omitted, fields)
        errors = [dict(kind="omission", start=-1, end=-1, slot=s, true=true_text[s], planted="") for s in summ.omits]
    elif ch.pair_kind == "verbosity":
        filler = " ".join(FILLERS[i] for i in ch.fillers)
        rejected = chosen + " " + filler
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
    return {
        "id": idx,
        "prompt": prompt,
        "chosen": " " + chosen,
        "rejected": " " + rejected,
        "errors": [dict(e, start=e["start"] + 1 if e["start"] >= 0 else -1,
                        end=e["end"] + 1 if e["end"] >= 0 else -1) for e in errors],
        "n_errors": n_loc,
        "kind": ch.pair_kind,
        "family": ch.family,
        "facts": facts,
        "post_values": post_values,
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


def _plan_edit(kind: str, fam: Family, ch: _Choice, rng: random.Random, prompt: str,
               used: set[str]) -> tuple | None:
    """One localised edit of ``kind`` on a slot of the summary not in ``used`` (None if impossible)."""
    summ = fam.summaries[ch.summary]
    slots = [n for n in _fields_of(summ.text) if n in fam.slots and n not in used]
    if kind == "inserted_claim":
        if "{claim}" not in summ.text:
            return None
        ok = [i for i, (_, key) in enumerate(fam.claims) if key.lower() not in prompt.lower()]
        return ("claim", rng.choice(ok)) if ok else None
    rng.shuffle(slots)
    for slot in slots:
        t = TYPES[fam.slots[slot].type]
        true_s = t.summary(ch.values[slot], ch.style)
        if kind == "in_post_swap":
            others = [o for o in fam.swap_partners(slot)
                      if t.summary(ch.values[o], ch.style) != true_s
                      and _common_prefix(true_s, t.summary(ch.values[o], ch.style)) < len(t.summary(ch.values[o], ch.style))]
            if others:
                return ("swap", slot, rng.choice(others))
        else:
            numbers = _post_numbers(prompt)
            for _ in range(20):
                raw = t.absent(rng, ch.values[slot])
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


def generate(n: int, seed: int = 0, split: str = "train",
             kinds: Sequence[str] | dict[str, float] | None = None,
             families: Sequence[str] | None = None) -> list[dict]:
    """``n`` records for ``split``; see :func:`qstar_lib.data.synthetic_tldr` for the schema."""
    if split not in SPLITS:
        raise ValueError(f"split={split!r}: choose one of {', '.join(SPLITS)}")
    if n < 0:
        raise ValueError(f"n={n} must be >= 0")
    fam_names = list(families) if families is not None else list(FAMILIES)
    unknown = [f for f in fam_names if f not in FAMILIES]
    if unknown:
        raise ValueError(f"families: unknown {unknown}; choose from {', '.join(FAMILIES)}")
    rng = random.Random(f"qstar-tldr-{seed}-{split}")
    plan = _mix_counts(n, _resolve_kinds(kinds))
    rng.shuffle(plan)
    want, seen, records = SPLITS.index(split), set(), []
    attempts = 0
    while len(records) < n:
        attempts += 1
        if attempts > 50 * n + 10_000:  # cannot happen with the shipped families; guards edits to them
            raise RuntimeError(f"generate: only {len(records)} of {n} records after {attempts} attempts; "
                               f"kinds={kinds!r}, families={families!r} cannot be satisfied")
        pair_kind = plan[len(records)]
        fam = FAMILIES[rng.choice(fam_names)]
        style = _style(rng)
        ch = _Choice(fam.name, fam.sample(rng, style), style, rng.choice(fam.subreddits),
                     rng.randrange(len(fam.titles)), rng.randrange(len(fam.posts)),
                     rng.randrange(len(fam.summaries)), pair_kind=pair_kind)
        prompt, post_values = _prompt(fam, ch)
        if _split_of(prompt) != want or prompt in seen:
            continue
        if pair_kind == "verbosity":
            ch.fillers = tuple(rng.sample(range(len(FILLERS)), 2))
        elif pair_kind != "omission":
            combo = rng.choice(TWO_ERROR_COMBOS) if pair_kind == "two_errors" else (pair_kind,)
            used: set[str] = set()
            for kind in combo:
                edit = _plan_edit(kind, fam, ch, rng, prompt, used)
                if edit is None:
                    break
                ch.edits.append(edit)
                used.add(edit[1] if edit[0] != "claim" else "claim")
            if len(ch.edits) != len(combo):
                continue  # this template cannot carry that error: draw again
        seen.add(prompt)
        records.append(_build(ch, f"{split}-{len(records):06d}", prompt, post_values))
    return records


def fig1_example() -> dict:
    """A pair like the paper's Fig. 1 (Appendix C), in our own words: a job-offer post with an
    offer of 38k, summarised once faithfully and once as "250k for a management position"."""
    fam = FAMILIES["job_offer"]
    style = dict(_style(random.Random(0)), money=0)
    values = dict(asked_low=38, asked_high=45, offered=38, average=41, floor=30, others=3, role="data analyst")
    claim = next(i for i, (_, key) in enumerate(fam.claims) if key == "management position")
    ch = _Choice("job_offer", values, style, "personalfinance", title=0, post=0, summary=0,
                 edits=[("absent", "offered", 250), ("claim", claim)], pair_kind="two_errors")
    prompt, post_values = _prompt(fam, ch)
    return _build(ch, "fig1-000000", prompt, post_values)


# ---------------------------------------------------------------------------------------------------
# The prose. Posts use the post rendering of each slot, summaries the summary rendering. A summary
# puts a role cue (Slot.cues) shortly before every value, or a unit cue (Slot.after) right after it,
# so that a value stated in the wrong role can be told from one stated in the right role.
# ---------------------------------------------------------------------------------------------------
S = Summary
_SALARY_ASKED = ("asked", "asking", "said", "expected", "expectations", "range", "gave")
FAMILY_TEXTS: dict[str, dict] = {
    "job_offer": dict(
        subreddits=("personalfinance", "careerguidance", "jobs", "AskHR"),
        slots=dict(
            asked_low=Slot("salary", _SALARY_ASKED), asked_high=Slot("salary", _SALARY_ASKED),
            offered=Slot("salary", ("offered", "offer", "offers", "got")),
            average=Slot("salary", ("average", "rate")), floor=Slot("salary", ("low", "accept", "lowest")),
            others=Slot("count", ("hiring", "openings"), ("other",)), role=Slot("role"),
        ),
        titles=(
            "Gave a range of {asked_low} to {asked_high} in the interview, the offer came back at {offered}. Can I still negotiate?",
            "Job offer came in at {offered} after I gave a range of {asked_low} to {asked_high}. Too late to ask for more?",
            "Got offered {offered} for a {role} job, is it normal to counter?",
        ),
        posts=(
            "I interviewed last week for a {role} position at a mid-sized company. Before going in I looked it up, and the "
            "average for this kind of role in my area is about {average}. When they asked for my salary expectations I gave "
            "a range of {asked_low} to {asked_high}, hoping to land somewhere in the middle. Today the offer arrived and it "
            "is {offered}. I know they are hiring {others} other people for the same job, so I wonder if everyone gets the "
            "same number. Honestly I would have taken anything above {floor}, so I have no real leverage. Is it normal to "
            "negotiate after the offer is already on the table, or could they pull it?",
            "Long time lurker, throwaway account. I just finished my degree and applied for an entry level {role} job. In the "
            "final round the hiring manager asked what I expected to earn, and I said somewhere between {asked_low} and "
            "{asked_high}. They called me this morning and offered {offered}, with decent benefits. A friend in the same "
            "field told me the going rate is closer to {average}. My rent is cheap and I could live on {floor} if I had to, "
            "but I do not want to leave money on the table. They mentioned {others} other new hires starting the same week. "
            "How do I ask for more without sounding ungrateful?",
            "Quick background: I have been job hunting for months and finally got an offer as a {role}. During the phone "
            "screen I was asked about my range and said {asked_low} to {asked_high}. The written offer says {offered}. "
            "Glassdoor puts the average for this title at {average}, and the lowest I would honestly accept is {floor}. The "
            "recruiter said they still have {others} other openings for this role, so they clearly need people. My parents "
            "think I should just be grateful and sign. Should I counter, and if so, how much should I ask for?",
        ),
        summaries=(
            S("I asked for {asked_low} to {asked_high} and was offered {offered}{claim}. Should I negotiate, or could they withdraw the offer?",
              "I asked for {asked_low} to {asked_high} and now have an offer. Should I negotiate, or could they withdraw it?",
              ("offered",)),
            S("Gave a salary range of {asked_low} to {asked_high} for a {role} job and they offered {offered}{claim}. Is it too late to negotiate?",
              "Gave a salary range of {asked_low} to {asked_high} and they offered {offered}. Is it too late to negotiate?",
              ("role",)),
            S("Offered {offered}{claim} as a {role} after saying I expected {asked_low} to {asked_high}. How do I counter without losing the offer?",
              "Offered {offered} as a {role} after telling them my salary range. How do I counter without losing the offer?",
              ("asked_low", "asked_high")),
        ),
        claims=(("for a management position", "management position"), ("with a signing bonus", "signing bonus"),
                ("plus stock options", "stock options"), ("with a company car", "company car"),
                ("after a second interview", "second interview"), ("with full remote work", "remote")),
    ),
    "car_trade": dict(
        subreddits=("personalfinance", "cars", "whatcarshouldIbuy", "askcarsales"),
        slots=dict(
            old_car=Slot("car", ("old", "my", "current", "mine")),
            new_car=Slot("car", ("newer", "new", "found", "toward", "want")),
            price=Slot("money", ("listed", "priced", "costing", "costs", "price", "asking")),
            trade_in=Slot("money", ("offers", "offered", "gives", "give")),
            miles=Slot("miles", (), ("miles",)),
        ),
        titles=(
            "Trading in my {old_car} for a {new_car}, is {trade_in} fair?",
            "Is {price} too much for a {new_car} if they give me {trade_in} for my old car?",
        ),
        posts=(
            "My {old_car} has {miles} miles on it and the transmission is starting to slip. I found a {new_car} at a local "
            "dealer listed at {price}. The salesman offered me {trade_in} for my old car, which feels low, but repairs would "
            "cost a lot. I have some savings but I would need a loan for most of it. My commute is long, so reliability "
            "matters more to me than looks. Is this a reasonable deal, or should I sell the old one privately first?",
            "So I have been driving a {old_car} since college and it finally hit {miles} miles. Last weekend I test drove a "
            "{new_car} and fell in love with it. The sticker price is {price}, and the dealer says they will give me "
            "{trade_in} if I trade in my current car. My dad thinks I should keep driving the old one until it dies. I am not "
            "sure whether the trade-in number is fair or if I am getting played. What would you do in my position?",
            "Need a sanity check before I sign anything tomorrow. Current car: {old_car}, {miles} miles, some rust. Car I "
            "want: {new_car}, asking price {price}. The dealership offered {trade_in} for my car and said the offer expires "
            "at the end of the week. I have already checked a few listings online and similar cars go for a bit less, but "
            "this one has a clean history. I can afford the monthly payment, but I hate feeling rushed. Should I take the "
            "deal or walk away?",
        ),
        summaries=(
            S("Thinking of trading my old {old_car} ({miles} miles) for a newer {new_car} listed at {price}{claim}; the dealer offers {trade_in} for mine. Fair deal?",
              "Thinking of trading my old {old_car} for a newer {new_car} listed at {price}; the dealer offers {trade_in} for mine. Fair deal?",
              ("miles",)),
            S("My old {old_car} is worn out. Found a {new_car} priced at {price}{claim}, and the dealer offered {trade_in} for my car. Should I take it?",
              "My old {old_car} is worn out. Found a {new_car} priced at {price}, and the dealer wants my car as a trade-in. Should I take it?",
              ("trade_in",)),
            S("The dealer offered {trade_in} for my old {old_car} toward a {new_car} costing {price}{claim}. Good deal, or should I walk away?",
              "The dealer offered {trade_in} for my current car toward a {new_car} costing {price}. Good deal, or should I walk away?",
              ("old_car",)),
        ),
        claims=(("with a free extended warranty", "warranty"), ("at zero percent financing", "zero percent"),
                ("that my mechanic already inspected", "mechanic"), ("with only one previous owner", "previous owner"),
                ("after it was in a flood", "flood")),
    ),
    "relocation": dict(
        subreddits=("relationships", "careerguidance", "relationship_advice", "SameGrassButGreener"),
        slots=dict(
            from_city=Slot("city", ("lived", "live", "living", "been", "after", "leave", "leaving", "from")),
            to_city=Slot("city", ("offer", "offered", "job", "role", "position")),
            family_city=Slot("city", ("parents", "family", "rather", "prefers")),
            partner=Slot("name", ("boyfriend", "girlfriend", "partner")),
            weeks=Slot("count", (), ("weeks",)), years=Slot("count", (), ("years",)),
        ),
        titles=(
            "Dream job offer in {to_city} but my {bf} wants to move near {his} family instead",
            "How do couples decide where to live when one gets a job offer in another city?",
        ),
        posts=(
            "I have lived in {from_city} for {years} years and my whole life is here. Last month I interviewed for my dream "
            "job, and they just offered me the position, but it is in {to_city}. They want me to start in {weeks} weeks. My "
            "{bf} {partner} is supportive, but {his} parents live in {family_city} and {he} always hoped we would end up "
            "near them. I love {partner}, and I do not want this to become the thing that breaks us. Has anyone moved across "
            "the country for a job and regretted it?",
            "Throwaway because my {bf} uses Reddit. I got an offer from a company in {to_city}, and I have {weeks} weeks to "
            "decide. We currently live in {from_city}, where I have been for {years} years, and {partner} has a stable job "
            "here. {His} family is in {family_city}, so {he} keeps saying that if we move anywhere it should be there. The "
            "salary would be a big step up and the work is exactly what I trained for. How do couples make this kind of "
            "decision without one person resenting the other?",
            "Need outside perspective. After {years} years in {from_city} I feel stuck, and a recruiter just offered me a "
            "role in {to_city} starting in {weeks} weeks. My {bf} {partner} would have to find a new job. {He} would rather "
            "move to {family_city}, where {his} parents are, but I have no prospects there. I have never lived more than an "
            "hour from where I grew up. We have talked about it every night this week and keep going in circles. Am I being selfish for wanting to take it?",
        ),
        summaries=(
            S("Got a job offer in {to_city}{claim}, but my {bf} {partner} wants to live near {his} parents in {family_city}. We have been in {from_city} for {years} years. What do we do?",
              "Got a job offer in {to_city}, but my {bf} {partner} wants to live near {his} parents in {family_city} instead. What do we do?",
              ("from_city", "years")),
            S("I have lived in {from_city} for {years} years and was offered a job in {to_city}{claim} that starts in {weeks} weeks. My {bf} would rather move to {family_city}. Should I take it?",
              "I have lived in {from_city} for {years} years and was offered a job in {to_city} that starts in {weeks} weeks. My {bf} is not sure about moving. Should I take it?",
              ("family_city",)),
            S("After {years} years in {from_city}, I was offered a role in {to_city}{claim} starting in {weeks} weeks, but my {bf} {partner} prefers {family_city}, near {his} family. Am I selfish?",
              "After {years} years in {from_city}, I was offered a role in {to_city}, but my {bf} {partner} prefers {family_city}, near {his} family. Am I selfish?",
              ("weeks",)),
        ),
        claims=(("with a big relocation package", "relocation package"), ("at twice my current salary", "twice my"),
                ("that I already accepted", "already accepted"), ("as a team lead", "team lead"),
                ("with a company apartment", "company apartment")),
    ),
    "camera_upgrade": dict(
        subreddits=("photography", "videography", "Cameras", "AskPhotography"),
        slots=dict(
            old_camera=Slot("camera", ("old", "from", "current")),
            new_camera=Slot("camera", ("new", "used", "found", "to", "want")),
            budget=Slot("money", ("budget", "saved"), ("budget",)),
            price=Slot("money", ("costs", "listed", "for", "price", "priced")),
            years=Slot("count", (), ("years", "year")),
        ),
        titles=(
            "Upgrade from a {old_camera} to a {new_camera}? Worth it?",
            "Is a {new_camera} at {price} worth it over the {old_camera} I already have?",
        ),
        posts=(
            "I have been shooting weddings on the side with my {old_camera} for {years} years. It still works, but the "
            "autofocus struggles in dim churches and the files are noisy. A local shop has a {new_camera} for {price}, which "
            "is a bit more than my budget of {budget}. I would be selling the old body to cover part of the cost. Clients "
            "have not complained, so part of me thinks this is gear acquisition syndrome talking. Is the upgrade worth it for "
            "paid work, or should I spend the money on lenses instead?",
            "Our media club uses a {old_camera} that we have had for {years} years, and our videos look nowhere near as clean "
            "as what we see online. We saved up a budget of {budget} through bake sales. Someone suggested a {new_camera}, "
            "which I found for {price} used. I know lighting and colour correction matter a lot, so maybe the camera is not "
            "the real problem. Would switching make a visible difference, or should we keep the old one and learn more first?",
            "Hobbyist here, mostly landscapes and some street photography. My {old_camera} is {years} years old and the "
            "sensor has a couple of dead pixels. I set myself a budget of {budget} for an upgrade. The {new_camera} I want "
            "is listed at {price} right now. I mostly shoot at sunrise, so low light performance matters to me. Reviews say the image quality jump is huge, but I am worried about spending that "
            "much on a hobby. Has anyone made the same switch, and did you regret it?",
        ),
        summaries=(
            S("Want to replace my {years}-year-old {old_camera} with a new {new_camera}{claim} that costs {price}, against my {budget} budget. Worth upgrading?",
              "Want to replace my {years}-year-old {old_camera} with a new {new_camera} that costs {price}. Worth upgrading?",
              ("budget",)),
            S("Our old {old_camera} is {years} years old; we saved {budget} and found a used {new_camera}{claim} for {price}. Will switching actually help?",
              "Our old {old_camera} is {years} years old; we saved {budget} and found a used {new_camera}. Will switching actually help?",
              ("price",)),
            S("Thinking of upgrading from my {old_camera} to a {new_camera}{claim} listed at {price}, and my budget is {budget}. Is it worth the money?",
              "Thinking of upgrading to a {new_camera} listed at {price}, and my budget is {budget}. Is it worth the money?",
              ("old_camera",)),
        ),
        claims=(("with a free lens", "free lens"), ("that was recalled", "recalled"), ("from a pawn shop", "pawn shop"),
                ("with a broken screen", "broken screen"), ("that a celebrity once owned", "celebrity")),
    ),
    "rent_increase": dict(
        subreddits=("personalfinance", "legaladvice", "Renters", "Tenant"),
        slots=dict(
            current_rent=Slot("money", ("from", "pay", "paying", "currently", "now")),
            new_rent=Slot("money", ("to", "raising", "raise", "wants", "increase")),
            deposit=Slot("money", ("deposit",), ("deposit",)),
            years=Slot("count", (), ("years",)), days=Slot("count", (), ("days",)),
            landlord=Slot("name", ("landlord",)),
        ),
        titles=(
            "Landlord raising rent from {current_rent} to {new_rent} with {days} days notice, is that allowed?",
            "Rent going up to {new_rent} after {years} years of paying on time. Any options?",
        ),
        posts=(
            "I have rented the same apartment for {years} years and always paid on time. Yesterday my landlord, {landlord}, "
            "left a note saying rent goes from {current_rent} to {new_rent} when the lease renews, with only {days} days of "
            "notice. When I moved in I paid a deposit of {deposit}, and the place has had a leaky ceiling ever since. Similar "
            "units nearby are listed for less than the new price. I like the neighbourhood and moving would be expensive. Is "
            "this kind of increase even legal, and is it worth pushing back?",
            "Renter here, first time posting. I currently pay {current_rent} a month and my landlord {landlord} just told me "
            "it will be {new_rent} starting in {days} days. I have been here {years} years without a single complaint. I also "
            "never got an itemised list of what my {deposit} deposit covers. My roommate moved out last spring, so the whole "
            "rent is on me now. Money is tight and I cannot afford the new amount for long. What are my options besides "
            "moving out?",
            "Our landlord {landlord} texted that rent is going up to {new_rent} next cycle. We pay {current_rent} now and we "
            "have lived here {years} years. The lease says {days} days of written notice is required, and a text message "
            "probably does not count. We also put down a {deposit} deposit that we would like back if we leave. We have always paid on time "
            "and never caused any trouble. Honestly the building is falling apart and nothing gets fixed. Should we fight the increase or start looking elsewhere?",
        ),
        summaries=(
            S("My landlord {landlord} is raising my rent from {current_rent} to {new_rent}{claim} with {days} days notice after {years} years of paying on time. Can I push back?",
              "My landlord {landlord} is raising my rent from {current_rent} to {new_rent} after {years} years of paying on time. Can I push back?",
              ("days",)),
            S("I pay {current_rent} now, but my landlord wants {new_rent}{claim} in {days} days. I have lived here {years} years. What can I do besides moving?",
              "My landlord wants to raise the rent to {new_rent} in {days} days. I have lived here {years} years. What can I do besides moving?",
              ("current_rent",)),
            S("After {years} years, rent goes from {current_rent} to {new_rent}{claim}, notice was {days} days, and my {deposit} deposit is still held. Fight it or move?",
              "After {years} years, rent goes from {current_rent} to {new_rent}, and notice was {days} days. Fight it or move?",
              ("deposit",)),
        ),
        claims=(("because of a new gym in the building", "new gym"), ("even though the lease forbids it", "lease forbids"),
                ("after I complained about mold", "mold"), ("and threatened to evict me", "evict"),
                ("because I got a cat", "got a cat")),
    ),
    "relationship": dict(
        subreddits=("relationships", "relationship_advice", "dating_advice"),
        slots=dict(
            my_age=Slot("age", ("i", "me")), partner_age=Slot("age", ("boyfriend", "girlfriend", "partner", "dated")),
            partner=Slot("name", ("boyfriend", "girlfriend", "partner", "dated")),
            other=Slot("name", ("friend", "coworker")), years=Slot("count", (), ("years",)),
        ),
        titles=(
            "My ({my_age}{mg}) {bf} ({partner_age}{pg}) keeps choosing {his} friend over me",
            "Am I overreacting about my {bf} spending all {his} time with {his} friend?",
        ),
        posts=(
            "My {bf} {partner} ({partner_age}{pg}) and I ({my_age}{mg}) have been together for {years} years. Lately {he} has "
            "been texting {his} friend {other} late at night and gets defensive when I ask about it. I am not the jealous "
            "type, and I have never gone through {his} phone. Last weekend {he} cancelled our plans to help {other} move "
            "apartments. When I brought it up, {he} said I was being controlling. I trust {him}, but this feels different. Am I overreacting, or is this a red flag?",
            "Throwaway. I ({my_age}{mg}) need advice about my {bf} ({partner_age}{pg}), {partner}. We have been dating for "
            "{years} years, and things were great until {his} old friend {other} moved back to town. Now {he} spends most "
            "weekends with {other} and barely answers my messages. I told {him} how I feel and {he} promised to change, but "
            "nothing has changed in a month. I do not want to be the person who controls who {his} friends are. How do I "
            "bring this up again without starting a fight?",
            "Some context: my {bf} {partner} ({partner_age}{pg}) and I ({my_age}{mg}) have lived together for the past "
            "{years} years. Recently {his} friend {other} has been coming over almost every evening, and {partner} cancels "
            "our plans whenever {other} calls. I like {other} fine, but I feel like a guest in my own home. When I said so, "
            "{partner} told me I was being dramatic. I do not want to make {him} choose between us. What is a fair way to ask "
            "for more time together?",
        ),
        summaries=(
            S("My {bf} {partner} ({partner_age}{pg}) and I ({my_age}{mg}), together {years} years; {he} keeps prioritising {his} friend {other}{claim}. Am I overreacting?",
              "My {bf} {partner} ({partner_age}{pg}) and I ({my_age}{mg}), together {years} years; {he} keeps prioritising a friend over me. Am I overreacting?",
              ("other",)),
            S("I ({my_age}{mg}) have dated {partner} ({partner_age}{pg}) for {years} years, and {he} now puts {his} friend {other}{claim} ahead of me. How do I raise it again?",
              "I ({my_age}{mg}) have dated {partner} ({partner_age}{pg}), and {he} now puts {his} friend {other} ahead of me. How do I raise it again?",
              ("years",)),
            S("My {bf} {partner} ({partner_age}{pg}) keeps cancelling on me for {his} friend {other}{claim}, and I ({my_age}{mg}) feel sidelined after {years} years. What should I do?",
              "My {bf} {partner} ({partner_age}{pg}) keeps cancelling on me for {his} friend {other}, and I feel sidelined after {years} years. What should I do?",
              ("my_age",)),
        ),
        claims=(("who used to date {him}", "used to date"), ("whom {he} met at the gym", "met at the gym"),
                ("while I am pregnant", "pregnant"), ("who borrowed money from us", "borrowed money"),
                ("who just got out of prison", "prison")),
    ),
    "weight_loss": dict(
        subreddits=("loseit", "fitness", "progresspics", "CICO"),
        slots=dict(
            start_weight=Slot("weight", ("from", "started", "start", "weighed")),
            current_weight=Slot("weight", ("to", "now", "down")),
            goal_weight=Slot("weight", ("goal", "target")),
            months=Slot("count", (), ("months",)), calories=Slot("calories", (), ("calories",)),
        ),
        titles=(
            "{start_weight} to {current_weight} in {months} months, but stuck on the way to {goal_weight}",
            "Down to {current_weight} lbs, how do I keep going?",
        ),
        posts=(
            "Started my weight loss journey at {start_weight} lbs, and after {months} months of counting calories I am down "
            "to {current_weight} lbs. My goal is {goal_weight}, but the scale has not moved in three weeks. I eat around "
            "{calories} calories a day and walk most evenings. I have not changed anything, so I do not understand why it "
            "stopped working. My friends keep telling me to eat even less, which sounds miserable. Is this a normal plateau, "
            "and what did you do to break through it?",
            "Progress update and a question. When I started I weighed {start_weight} pounds, and today I weighed in at "
            "{current_weight}. It took {months} months of eating about {calories} calories a day and lifting three times a "
            "week. I originally set a goal of {goal_weight}, but now I am not sure it is realistic for my frame. I have more energy now and my "
            "clothes fit much better. My doctor is happy with where I am. Should I keep cutting or switch to maintenance for a while?",
            "I am {months} months in and have gone from {start_weight} to {current_weight} lbs. The last few weeks have been "
            "hard because work got busy and I keep snacking at night. My target is {goal_weight} lbs, and some days it feels "
            "impossible. I track everything in an app and aim for {calories} calories, though I go over on weekends. I also started walking during "
            "lunch breaks. I do not want to lose the momentum I built. How do you stay motivated when progress slows down?",
        ),
        summaries=(
            S("Went from {start_weight} to {current_weight} lbs in {months} months{claim} on about {calories} calories a day, and my goal is {goal_weight}. How do I keep going?",
              "Went from {start_weight} to {current_weight} lbs in {months} months, and my goal is {goal_weight}. How do I keep going?",
              ("calories",)),
            S("Started at {start_weight} lbs and I am now at {current_weight} after {months} months{claim}. My goal is {goal_weight}. Any advice for the next stage?",
              "Started at {start_weight} lbs and I am now at {current_weight}. My goal is {goal_weight}. Any advice for the next stage?",
              ("months",)),
            S("Down to {current_weight} from {start_weight} lbs, eating {calories} calories a day{claim}; my target is {goal_weight}. How do I stay on track?",
              "Down to {current_weight} lbs, eating {calories} calories a day; my target is {goal_weight}. How do I stay on track?",
              ("start_weight",)),
        ),
        claims=(("with a personal trainer", "personal trainer"), ("after gastric surgery", "surgery"),
                ("on a keto diet", "keto"), ("while training for a marathon", "marathon"),
                ("using weight loss pills", "pills")),
    ),
    "college_aid": dict(
        subreddits=("ApplyingToCollege", "college", "StudentLoans", "personalfinance"),
        slots=dict(
            dream_school=Slot("school", ("dream", "into", "admitted", "choice")),
            backup_school=Slot("school", ("backup", "safety")),
            dream_aid=Slot("money", ("with", "only")),
            backup_aid=Slot("money", ("offers", "offered", "gives", "versus")),
            loan=Slot("money", ("borrow", "owe", "about"), ("loans", "debt")),
        ),
        titles=(
            "Dream school ({dream_school}) vs much cheaper backup ({backup_school}), is the debt worth it?",
            "{dream_school} gave me {dream_aid} in aid, {backup_school} gave me {backup_aid}. Help me decide",
        ),
        posts=(
            "I just got into {dream_school}, which has been my dream school since middle school. The problem is money: they "
            "are offering {dream_aid} a year in aid, and I would still need to borrow about {loan} in total. My backup, "
            "{backup_school}, gave me {backup_aid} a year and would leave me almost debt free. My parents say it is my choice "
            "but clearly prefer the cheaper option. Everyone online says prestige does not matter much for my major. Is the "
            "dream school worth the debt?",
            "Decision day is coming and I am torn. {backup_school} offered me {backup_aid} per year, which covers most of "
            "tuition. {dream_school}, the school I have wanted since I toured it, only offered {dream_aid}. To make it work I "
            "would take out roughly {loan} in loans over four years. I am going into engineering, and both programs are "
            "accredited. My parents can help a little, but not much. I visited both campuses and liked them about the "
            "same. How much should the name of the school matter?",
            "Good news and bad news. Good: I was admitted to {dream_school}, my first choice! Bad: the aid package is only "
            "{dream_aid} a year, so I would graduate with about {loan} in debt. Meanwhile {backup_school} is giving me "
            "{backup_aid} a year and is closer to home. I have appealed the aid decision but have not heard back. My older "
            "sister went to a state school and is doing great, which makes me think the name matters less than I think. "
            "What would you do?",
        ),
        summaries=(
            S("Got into my dream school {dream_school} with {dream_aid} a year in aid{claim}, but I would borrow {loan}; my backup {backup_school} offers {backup_aid}. Worth the debt?",
              "Got into my dream school {dream_school} with {dream_aid} a year in aid, but my backup {backup_school} offers {backup_aid}. Worth the debt?",
              ("loan",)),
            S("My backup {backup_school} offers {backup_aid} a year, while my dream school {dream_school} gives only {dream_aid}{claim}, so I would owe about {loan}. Does the name matter?",
              "My dream school {dream_school} gives only {dream_aid} a year, so I would owe about {loan}, while {backup_school} is much cheaper. Does the name matter?",
              ("backup_aid",)),
            S("Admitted to {dream_school} with only {dream_aid} a year in aid{claim} versus {backup_aid} from my backup {backup_school}; I would owe about {loan}. What would you do?",
              "Admitted to {dream_school} with a small aid package versus {backup_aid} from my backup {backup_school}; I would owe about {loan}. What would you do?",
              ("dream_aid",)),
        ),
        claims=(("and a spot on the soccer team", "soccer"), ("plus guaranteed housing", "guaranteed housing"),
                ("through an athletic scholarship", "athletic"), ("after a long waitlist", "waitlist"),
                ("with an honors college invite", "honors")),
    ),
    "pets": dict(
        subreddits=("dogs", "Dogtraining", "Pets", "AskVet"),
        slots=dict(
            old_dog=Slot("pet", ("dog", "senior", "old")), new_pup=Slot("pet", ("puppy", "pup")),
            old_age=Slot("count", (), ("years", "year")), pup_weeks=Slot("count", (), ("week", "weeks")),
            vet_bill=Slot("money", ("bill", "costs", "cost", "quoted"), ("vet",)),
            savings=Slot("money", ("against",), ("saved", "savings")),
        ),
        titles=(
            "My senior dog {old_dog} hates our new puppy {new_pup}. Help?",
            "Old dog and new puppy not getting along, and a big vet bill on top",
        ),
        posts=(
            "My senior dog {old_dog} is {old_age} years old and has always been an only pet. Last week my partner brought home "
            "a puppy, {pup_weeks} weeks old, that we named {new_pup}. {old_dog} growls whenever {new_pup} gets near the food bowl, and "
            "yesterday there was a real scuffle. To make things worse, the vet says {old_dog} needs dental work that will cost "
            "around {vet_bill}, and we only have {savings} saved. I feel terrible for both of them. Should we rehome the "
            "puppy, or is this normal adjustment stuff?",
            "Looking for advice from people with multi-dog homes. We adopted {new_pup}, a lab mix just {pup_weeks} weeks old, to "
            "keep our {old_age}-year-old {old_dog} company. Instead {old_dog} hides in the bedroom all day and has stopped "
            "eating well. The vet visit for {old_dog} came to {vet_bill}, which ate into the {savings} we had set aside. "
            "Everyone told us a puppy would give an older dog new energy. How long does it usually take for an older dog to "
            "accept a new one?",
            "I need help with my two dogs. {old_dog} is {old_age} years old and has arthritis, and {new_pup} is a "
            "puppy, {pup_weeks} weeks old, who never stops jumping on the old guy. The vet quoted {vet_bill} for {old_dog}'s "
            "treatment, and I have {savings} in savings. I am keeping them apart with baby gates, but it is exhausting. My "
            "landlord allows pets, but I worry the neighbours will complain about the barking. Money is tight this month "
            "because of other bills too. Is there a way to help them get along?",
        ),
        summaries=(
            S("My senior dog {old_dog} ({old_age} years) is not coping with our new puppy {new_pup}{claim}, and the vet bill is {vet_bill} with {savings} saved. What should we do?",
              "My senior dog {old_dog} ({old_age} years) is not coping with our new puppy {new_pup}, and money is tight. What should we do?",
              ("vet_bill", "savings")),
            S("Our {old_age}-year-old dog {old_dog} is struggling with the {pup_weeks}-week-old puppy {new_pup}{claim}; vet costs of {vet_bill} against {savings} in savings. How long until they get along?",
              "Our {old_age}-year-old dog {old_dog} is struggling with the new puppy {new_pup}; vet costs of {vet_bill} against {savings} in savings. How long until they get along?",
              ("pup_weeks",)),
            S("Senior dog {old_dog} and puppy {new_pup}{claim} do not get along, and a {vet_bill} vet bill is stretching our {savings} savings. Any tips?",
              "Senior dog {old_dog} and our new puppy do not get along, and a {vet_bill} vet bill is stretching our {savings} savings. Any tips?",
              ("new_pup",)),
        ),
        claims=(("who bit a neighbour", "bit a neighbour"), ("that we bought from a breeder", "breeder"),
                ("who has diabetes", "diabetes"), ("after it ran away twice", "ran away"),
                ("that came from a shelter", "shelter")),
    ),
    "travel_budget": dict(
        subreddits=("travel", "solotravel", "shoestring", "TravelHacks"),
        slots=dict(
            home_city=Slot("city", ("from", "leaving")), dest_city=Slot("city", ("to", "in", "going")),
            layover_city=Slot("city", ("via", "through", "layover")),
            days=Slot("count", (), ("day", "days")),
            budget=Slot("money", ("budget",), ("budget",)),
            flight=Slot("money", ("flight", "flights", "fare"), ("flight",)),
        ),
        titles=(
            "{days} days in {dest_city} on {budget}, realistic?",
            "First big trip: {home_city} to {dest_city}, is my budget enough?",
        ),
        posts=(
            "I am planning my first solo trip, from {home_city} to {dest_city} for {days} days this spring. My total budget is "
            "{budget}, and the cheapest flight I found is {flight} with a long layover in {layover_city}. I am a little nervous "
            "about travelling alone, especially arriving late at night. I like museums, street food and long walks more than "
            "nightlife. Friends say I should cut the trip short to save money. Is the budget realistic, and is the layover "
            "worth it for the savings?",
            "Help me sanity check this plan. Flying out of {home_city}, landing in {dest_city}, staying {days} days. Flights "
            "are {flight} round trip with a stop in {layover_city}, and I have {budget} for everything including the flight. "
            "I will stay in hostels and mostly cook my own food. I have never travelled abroad before, so I have no idea what "
            "I am forgetting. My job only gives me this one window of vacation, so I want to make it count. What would you "
            "change?",
            "After years of saying I would do it, I finally booked time off. The plan is {days} days in {dest_city}, leaving "
            "from {home_city}. The best fare is {flight}, which routes through {layover_city}, and my overall budget is "
            "{budget}. I would rather spend on experiences than a fancy hotel. I have been saving for this since last winter. "
            "I do not speak the language, which makes me a little nervous. "
            "My partner cannot come, so this will be my first time travelling alone. Any tips for making the money stretch?",
        ),
        summaries=(
            S("Planning {days} days away, from {home_city} to {dest_city}{claim}, on a {budget} budget, with a {flight} flight via {layover_city}. Is this realistic?",
              "Planning {days} days away, from {home_city} to {dest_city}, on a {budget} budget, with a {flight} flight. Is this realistic?",
              ("layover_city",)),
            S("Going to {dest_city} from {home_city} for {days} days{claim}; flights are {flight} through {layover_city} and my total budget is {budget}. How can I make it stretch?",
              "Going to {dest_city} from {home_city} for {days} days; flights are {flight} through {layover_city}. How can I make it stretch?",
              ("budget",)),
            S("Spending {days} days in {dest_city}, leaving from {home_city}{claim}; the fare via {layover_city} is {flight} and my budget is {budget}. Tips for saving money?",
              "Spending {days} days in {dest_city}; the fare via {layover_city} is {flight} and my budget is {budget}. Tips for saving money?",
              ("home_city",)),
        ),
        claims=(("with free hotel upgrades", "hotel upgrades"), ("during a music festival", "festival"),
                ("for a friend's wedding", "wedding"), ("on a business visa", "visa"),
                ("with travel insurance already bought", "travel insurance")),
    ),
}
FAMILIES: dict[str, Family] = {
    name: Family(name=name, sample=_SAMPLERS[name], **spec) for name, spec in FAMILY_TEXTS.items()
}
CLAIM_KEYS: tuple[str, ...] = tuple(sorted({key for fam in FAMILIES.values() for _, key in fam.claims}))
"""Key phrases of every inserted claim; the judge counts one in a summary but not in the post as invented."""
