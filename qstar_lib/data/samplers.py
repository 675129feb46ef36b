"""How each family draws its slot values: one sampler per family, so that the values stay consistent.

A family with values that depend on each other (an offer inside or just below the asked range, a new rent
above the current one) has a sampler of its own in :data:`SAMPLERS`; any other family file gets
:func:`generic_sampler`, which reads only the file's ``range``/``step``/``pool``. The family reader
(:mod:`qstar_lib.data.family`) pairs each file with its sampler and checks that it draws what the file declares.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from typing import Any

from qstar_lib.data.values import (
    CAMERAS,
    CARS,
    FEMALE_NAMES,
    MALE_NAMES,
    PET_NAMES,
    POOLS,
    ROLES,
    SCHOOLS,
    US_CITIES,
    WORLD_CITIES,
)


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
            return dict(
                asked_low=low,
                asked_high=high,
                offered=offered,
                average=average,
                floor=floor,
                others=rng.randint(2, 6),
                role=rng.choice(ROLES),
            )


def _sample_car(rng, style):
    old_year = rng.randint(2004, 2016)
    old, new = rng.sample(CARS, 2)
    price, trade = rng.randrange(9000, 32001, 250), rng.randrange(1000, 8001, 250)
    return dict(
        old_car=(old_year, old),
        new_car=(rng.randint(old_year + 3, 2023), new),
        price=price,
        trade_in=trade,
        miles=rng.randrange(90000, 230001, 1000),
        book_value=_book_value(rng, trade, price),
    )


def _book_value(rng, trade, price):
    while True:  # what the old car is worth sold privately: above the dealer's trade-in offer
        book = trade + rng.randrange(500, 3001, 250)
        if book != price:
            return book


def _sample_move(rng, style):
    a, b, c = rng.sample(US_CITIES, 3)
    weeks, years = _distinct(rng, lambda: rng.randint(2, 10), 2)
    names = FEMALE_NAMES if style["pg"] == "F" else MALE_NAMES
    return dict(from_city=a, to_city=b, family_city=c, partner=rng.choice(names), weeks=weeks, years=years)


def _sample_camera(rng, style):
    old, new = rng.sample(CAMERAS, 2)
    budget = rng.randrange(400, 2001, 50)
    price = budget + rng.choice([-1, 1]) * rng.randrange(100, 451, 50)
    if price < 250:  # v1 could write a negative price here; v2 prices the camera above the budget instead
        price = budget + (budget - price)
    while True:  # what the old body would sell for: at most half the budget
        resale = rng.randrange(100, budget // 2 + 1, 25)
        if resale != price:
            break
    return dict(old_camera=old, new_camera=new, budget=budget, price=price, years=rng.randint(2, 9), resale=resale)


def _sample_rent(rng, style):
    while True:
        current = rng.randrange(800, 2401, 25)
        new = current + rng.randrange(75, 401, 25)
        deposit = rng.randrange(500, 3001, 50)
        if deposit not in (current, new):
            break
    years, days = rng.randint(2, 9), rng.choice([14, 21, 30, 45, 60])
    return dict(
        current_rent=current,
        new_rent=new,
        deposit=deposit,
        years=years,
        days=days,
        landlord=rng.choice(MALE_NAMES + FEMALE_NAMES),
    )


def _sample_relationship(rng, style):
    me = rng.randint(25, 45)  # both adults: the partner is at most 6 years younger
    partner_age = me + rng.choice([-1, 1]) * rng.randint(1, 6)
    p_names = FEMALE_NAMES if style["pg"] == "F" else MALE_NAMES
    partner, other = rng.sample(p_names, 1)[0], rng.choice(MALE_NAMES + FEMALE_NAMES)
    while other == partner:
        other = rng.choice(MALE_NAMES + FEMALE_NAMES)
    cousin = rng.choice(p_names)  # the partner's gender: a partner/cousin swap is not given away by it
    while cousin in (partner, other):
        cousin = rng.choice(p_names)
    years = rng.randint(2, 9)
    return dict(my_age=me, partner_age=partner_age, partner=partner, other=other, years=years, cousin=cousin)


def _sample_fitness(rng, style):
    start = rng.randint(210, 330)
    current = start - rng.randint(20, 60)
    goal = max(140, current - rng.randint(15, 45))
    return dict(
        start_weight=start,
        current_weight=current,
        goal_weight=goal,
        months=rng.randint(3, 14),
        calories=rng.randrange(1500, 2401, 50),
    )


def _sample_college(rng, style):
    dream, backup = rng.sample(SCHOOLS, 2)
    dream_aid, backup_aid = _distinct(rng, lambda: rng.randrange(2000, 30001, 500), 2)
    if dream_aid > backup_aid:
        dream_aid, backup_aid = backup_aid, dream_aid
    return dict(
        dream_school=dream,
        backup_school=backup,
        dream_aid=dream_aid,
        backup_aid=backup_aid,
        loan=rng.randrange(31000, 90001, 1000),
    )


def _sample_pets(rng, style):
    old, new = rng.sample(PET_NAMES, 2)
    vet, savings = _distinct(rng, lambda: rng.randrange(300, 4001, 50), 2)
    trainer = rng.choice([v for v in range(150, 1201, 25) if v not in (vet, savings)])
    old_age = rng.randint(9, 15)
    pup_weeks = rng.choice([w for w in range(8, 17) if w != old_age])
    return dict(
        old_dog=old,
        new_pup=new,
        old_age=old_age,
        pup_weeks=pup_weeks,
        vet_bill=vet,
        savings=savings,
        trainer_fee=trainer,
    )


def _sample_travel(rng, style):
    dest, layover = rng.sample(WORLD_CITIES, 2)
    budget = rng.randrange(1500, 6001, 100)
    flight = rng.randrange(350, 1401, 10)
    return dict(
        home_city=rng.choice(US_CITIES),
        dest_city=dest,
        layover_city=layover,
        days=rng.randint(5, 16),
        budget=budget,
        flight=flight,
    )


def generic_sampler(slots: Mapping[str, Any]) -> Callable[[random.Random, dict], dict]:
    """The sampler of a family without one of its own: every slot drawn independently from its ``range``
    (``randrange(low, high + 1, step)``) or ``pool``, redrawn until the values of one type are distinct.
    A family file alone then makes a new family (data, not code)."""

    def draw(rng: random.Random, style: dict) -> dict:
        while True:
            vals = {
                s: rng.randrange(sl.range[0], sl.range[1] + 1, sl.step)
                if sl.pool is None
                else rng.choice(POOLS[sl.pool])
                for s, sl in slots.items()
            }
            by_type: dict[str, list] = {}
            for s, v in vals.items():
                by_type.setdefault(slots[s].type, []).append(v)
            if all(len(set(vs)) == len(vs) for vs in by_type.values()):
                return vals

    return draw


SAMPLERS = {  # family -> its own sampler (values that depend on each other); the rest use generic_sampler
    "job_offer": _sample_job,
    "car_trade": _sample_car,
    "relocation": _sample_move,
    "camera_upgrade": _sample_camera,
    "rent_increase": _sample_rent,
    "relationship": _sample_relationship,
    "weight_loss": _sample_fitness,
    "college_aid": _sample_college,
    "pets": _sample_pets,
    "travel_budget": _sample_travel,
}
