"""The families of the synthetic set: what each topic's posts are about, read from ``families/<family>.json``.

A family is one Reddit topic (a job offer, a car trade-in, a rent increase, ...). Its prose lives in a data
file shipped with the package, ``qstar_lib/data/families/<family>.json``, read with :mod:`importlib.resources`;
the code here holds only what is code: how each family draws its slot values (a sampler per family, which
keeps the values consistent with each other, e.g. an offer inside or just below the asked range) and the
reader that checks every file on load. A file holds:

* ``family``: its name, the same as the file's name;
* ``subreddits``: where such a post is made;
* ``slots``: the facts of a post, in order, each ``{"type", "range" | "pool", "cues", "after"}``: ``type``
  is a value type of :data:`qstar_lib.data.values.TYPES`; ``range`` the inclusive bounds of the raw value
  the sampler draws (salaries in thousands, a car's model year); ``pool`` the vocabulary of
  :data:`qstar_lib.data.values.POOLS` a text value comes from; ``cues`` words that, shortly before a value,
  say which role it plays, and ``after`` words right after it that say the same ("6 years", "$900 deposit");
* ``titles`` and ``posts``: templates with a ``{slot}`` field for every fact (a post mentions every slot)
  and the style fields ``{he}``, ``{His}``, ``{bf}``, ...;
* ``summaries``: ``{"text", "omitted", "omits"}``, a faithful summary template (``{claim}`` marks where an
  unsupported claim can be inserted) and the same summary with the ``omits`` slots left out;
* ``claims``: ``{"text", "key"}``, an unsupported claim and the key phrase the judge looks for.

A text (title, post, summary) is a string or, to keep the lines of a file short, a list of strings joined
with single spaces. A file that breaks these rules fails on import with a :class:`FamilyFileError` that
names the file and the key. Every family's post mentions at least two values of the same type in different
roles; that is what makes an in-post swap possible (see :mod:`qstar_lib.data.synthetic`).
"""

from __future__ import annotations

import importlib.resources
import json
import random
import string
from dataclasses import dataclass
from typing import Any, Callable

from qstar_lib.data.values import (
    CAMERAS,
    CARS,
    FEMALE_NAMES,
    MALE_NAMES,
    PET_NAMES,
    POOLS,
    ROLES,
    SCHOOLS,
    STYLE_FIELDS,
    STYLES,
    TYPES,
    US_CITIES,
    WORLD_CITIES,
)


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


_SAMPLERS = {  # family -> its sampler; the order of this table is the order of FAMILIES
    "job_offer": _sample_job, "car_trade": _sample_car, "relocation": _sample_move,
    "camera_upgrade": _sample_camera, "rent_increase": _sample_rent, "relationship": _sample_relationship,
    "weight_loss": _sample_fitness, "college_aid": _sample_college, "pets": _sample_pets,
    "travel_budget": _sample_travel,
}
