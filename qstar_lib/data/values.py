"""What a slot can hold and how it is written: the vocabularies, the writing styles and the value types.

A *value type* (:data:`TYPES`) says how a raw slot value is rendered in a post and in a summary, and how
an absent substitute is drawn for an ``absent_value`` error. A *style* fixes the poster's and partner's
gender (pronoun fields of the templates) and how money is written in the post. The vocabularies are also
what :mod:`qstar_lib.eval.judge` recognises as names, places and products in free text
(:data:`VOCABULARY`); a family file's ``slots.<slot>.pool`` names one of :data:`POOLS`.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

# ---------------------------------------------------------------------------------------------------
# Vocabularies (>= 30 each). Names avoid ordinary English words so a token match means the name.
# ---------------------------------------------------------------------------------------------------
# The vocabularies stay one row of names per line (data, not code for the formatter to reflow).
# fmt: off
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
# fmt: on
POOLS: dict[str, tuple[str, ...]] = {  # the vocabularies a family file's ``pool`` may name
    "NAMES": FEMALE_NAMES + MALE_NAMES,
    "FEMALE_NAMES": FEMALE_NAMES,
    "MALE_NAMES": MALE_NAMES,
    "PET_NAMES": PET_NAMES,
    "US_CITIES": US_CITIES,
    "WORLD_CITIES": WORLD_CITIES,
    "CARS": CARS,
    "CAMERAS": CAMERAS,
    "SCHOOLS": SCHOOLS,
    "ROLES": ROLES,
}


# ---------------------------------------------------------------------------------------------------
# Styles: who is who (pronoun fields of the templates) and how money is written in the post.
# ---------------------------------------------------------------------------------------------------
def make_style(pg: str, mg: str, money: int) -> dict:
    he, his, him = ("he", "his", "him") if pg == "M" else ("she", "her", "her")
    return dict(
        pg=pg,
        mg=mg,
        he=he,
        He=he.capitalize(),
        his=his,
        His=his.capitalize(),
        him=him,
        bf="boyfriend" if pg == "M" else "girlfriend",
        money=money,
    )


STYLES = tuple(make_style(pg, mg, money) for pg in "MF" for mg in "MF" for money in range(3))


def draw_style(rng: random.Random) -> dict:
    """Partner's and poster's gender (pronouns, "(27F)" tags) and how money is written in the post."""
    return dict(rng.choice(STYLES))


STYLE_FIELDS: tuple[str, ...] = tuple(k for k, v in STYLES[0].items() if isinstance(v, str))
"""The template fields a style fills (``{he}``, ``{His}``, ``{bf}``, ...), beside a family's slots."""


def text_key(value: str) -> str:
    """What is matched for a text value: the value without free-standing digits.

    "2012 Honda Civic" -> "Honda Civic"."""
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
    "salary": ValueType(
        "number",
        _salary_post,
        _salary_summary,
        lambda rng, v: rng.choice([rng.randint(15, 28), rng.randrange(100, 305, 5)]),
    ),
    "money": ValueType(
        "number",
        lambda v, s: _money(v),
        lambda v, s: _money(v),
        lambda rng, v: _round_to(v * rng.choice([0.4, 0.55, 1.6, 1.8, 2.5]), 50 if v >= 1000 else 25),
    ),
    "count": ValueType("number", _str, _str, lambda rng, v: v + rng.choice([-1, 1]) * rng.randint(2, 5)),
    "weight": ValueType("number", _str, _str, lambda rng, v: v + rng.choice([-1, 1]) * rng.randint(12, 40)),
    "age": ValueType("number", _str, _str, lambda rng, v: max(19, v + rng.choice([-1, 1]) * rng.randint(3, 9))),
    "miles": ValueType(
        "number",
        lambda v, s: f"{v:,}",
        lambda v, s: f"{v:,}",
        lambda rng, v: _round_to(v * rng.choice([0.3, 0.5, 1.5]), 1000),
    ),
    "calories": ValueType(
        "number",
        lambda v, s: f"{v:,}",
        lambda v, s: f"{v:,}",
        lambda rng, v: v + rng.choice([-1, 1]) * rng.randrange(300, 900, 50),
    ),
    "name": ValueType("text", _str, _str, _name_absent),
    "pet": ValueType("text", _str, _str, _pick_other(PET_NAMES)),
    "city": ValueType("text", _str, _str, _pick_other(US_CITIES + WORLD_CITIES)),
    "car": ValueType(
        "text",
        lambda v, s: f"{v[0]} {v[1]}",
        lambda v, s: f"{v[0]} {v[1]}",
        lambda rng, v: (rng.randint(2004, 2023), rng.choice([c for c in CARS if c != v[1]])),
    ),
    "camera": ValueType("text", _str, _str, _pick_other(CAMERAS)),
    "school": ValueType("text", _str, _str, _pick_other(SCHOOLS)),
    "role": ValueType("text", _str, _str, _pick_other(ROLES)),
}
VOCABULARY = FEMALE_NAMES + MALE_NAMES + PET_NAMES + US_CITIES + WORLD_CITIES + CARS + CAMERAS + SCHOOLS + ROLES
"""Names, places, products and job titles the judge recognises in free text (one absent from the post is
invented)."""
