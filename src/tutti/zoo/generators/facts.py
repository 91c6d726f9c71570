"""Fact tasks from the public table in :mod:`tutti.zoo.generators.tables`: capitals and currencies.

Countries are split between train, dev and test by a stable hash, so the expert is tested on countries it never
saw in training: it must recall the fact from the base model, not from its own training set.
"""

from __future__ import annotations

import random
from functools import cache

from tutti.zoo.generators.tables import COUNTRIES
from tutti.zoo.tasks import Example, entity_split, task


@cache
def countries_of(split: str) -> tuple[tuple[str, str, str], ...]:
    """The ``(country, capital, currency)`` rows assigned to ``split``."""
    return tuple(c for c in COUNTRIES if entity_split("country:" + c[0]) == split)


@cache
def _all(column: int) -> tuple[str, ...]:
    return tuple(sorted({c[column] for c in COUNTRIES}))


@task("country_facts", group="reasoning")
def country_facts(rng: random.Random, split: str) -> Example:
    """Capital or currency of a country, chosen among four options."""
    country, capital, currency = rng.choice(countries_of(split))
    if rng.random() < 0.5:
        ans, pool, what = capital, [c for c in _all(1) if c != capital], "capital"
    else:
        ans, pool, what = currency, [c for c in _all(2) if c != currency], "currency"
    choices = [ans, *rng.sample(pool, 3)]
    rng.shuffle(choices)
    q = (f"What is the {what} of {country}? Options: {', '.join(choices)}. "
         f"Answer with one of the options.")
    return Example(q, ans, tuple(choices))
