"""Number tasks: arithmetic word problems, unit conversion, number comparison, weekdays, and their mixtures.

Every generator returns the exact answer computed by plain integer arithmetic, so a test can re-derive it from
the numbers in the question.
"""

from __future__ import annotations

import random

from tutti.zoo.tasks import Example, task

NAMES = ("Ana", "Ben", "Carla", "David", "Emma", "Farid", "Grace", "Hugo", "Ines", "Jonas", "Kira", "Leo",
         "Maya", "Noah", "Olga", "Pablo", "Rosa", "Sam", "Tara", "Victor")
ITEMS = ("apples", "books", "marbles", "stickers", "pencils", "coins", "cards", "shells", "cookies", "stamps")
NUMBER_ONLY = "Answer with the number only."
DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")

#: (larger unit, smaller unit, how many smaller in one larger)
UNITS: tuple[tuple[str, str, int], ...] = (
    ("meters", "centimeters", 100), ("kilometers", "meters", 1000), ("kilograms", "grams", 1000),
    ("liters", "milliliters", 1000), ("hours", "minutes", 60), ("minutes", "seconds", 60),
    ("days", "hours", 24), ("weeks", "days", 7), ("feet", "inches", 12), ("years", "months", 12),
    ("centimeters", "millimeters", 10), ("meters", "millimeters", 1000), ("yards", "feet", 3),
    ("gallons", "quarts", 4), ("pounds", "ounces", 16), ("dollars", "cents", 100), ("tons", "kilograms", 1000),
    ("decades", "years", 10), ("centuries", "years", 100), ("quarters", "cents", 25),
)


@task("arithmetic", group="numeracy")
def arithmetic(rng: random.Random, split: str) -> Example:
    """Two-digit addition, subtraction and multiplication word problems; the answer is a number."""
    name, item = rng.choice(NAMES), rng.choice(ITEMS)
    kind = rng.randrange(3)
    if kind == 0:
        a, b = rng.randint(10, 99), rng.randint(10, 99)
        q, ans = f"{name} has {a} {item} and gets {b} more. How many {item} does {name} have now?", a + b
    elif kind == 1:
        a = rng.randint(20, 99)
        b = rng.randint(10, a - 1)
        q, ans = f"{name} had {a} {item} and gave away {b}. How many {item} does {name} have left?", a - b
    else:
        a, b = rng.randint(2, 9), rng.randint(3, 15)
        q, ans = f"{name} fills {a} bags with {b} {item} each. How many {item} is that in total?", a * b
    return Example(f"{q} {NUMBER_ONLY}", str(ans))


@task("unit_conversion", group="numeracy")
def unit_conversion(rng: random.Random, split: str) -> Example:
    """Convert a whole quantity between two units (both directions); the answer is a number."""
    big, small, f = rng.choice(UNITS)
    n = rng.randint(2, 99)
    if rng.random() < 0.6:
        return Example(f"How many {small} are in {n} {big}? {NUMBER_ONLY}", str(n * f))
    return Example(f"How many {big} are in {n * f} {small}? {NUMBER_ONLY}", str(n))


def _close_pair(rng: random.Random) -> tuple[int, int]:
    digits = rng.randint(3, 5)
    a = rng.randint(10 ** (digits - 1), 10**digits - 1)
    s = list(str(a))
    for _ in range(rng.randint(1, 2)):  # change one or two digits, keeping the leading digit non-zero
        i = rng.randrange(len(s))
        s[i] = str(rng.randint(1 if i == 0 else 0, 9))
    b = int("".join(s))
    return (a, b) if a != b else _close_pair(rng)


@task("compare_numbers", group="numeracy")
def compare_numbers(rng: random.Random, split: str) -> Example:
    """Pick the larger or smaller of two numbers that differ in one or two digits."""
    a, b = _close_pair(rng)
    word = rng.choice(("larger", "smaller"))
    ans = max(a, b) if word == "larger" else min(a, b)
    return Example(f"Which number is {word}: {a} or {b}? {NUMBER_ONLY}", str(ans), (str(a), str(b)))


@task("weekday", group="reasoning")
def weekday(rng: random.Random, split: str) -> Example:
    """Day of the week some days after or before a given day."""
    d, k = rng.randrange(7), rng.randint(1, 100)
    day = DAYS[d]
    q, sign = rng.choice((
        (f"Today is {day}. What day of the week will it be in {k} days?", 1),
        (f"Today is {day}. What day of the week was it {k} days ago?", -1),
        (f"What day of the week is {k} days after {day}?", 1),
        (f"What day of the week is {k} days before {day}?", -1),
        (f"If it was {day} {k} days ago, what day of the week is it today?", 1),
    ))
    ans = DAYS[(d + sign * k) % 7]
    return Example(f"{q} Answer with the day only.", ans)


# ---------------------------------------------------------------- mixed skills: dev/test only, no expert
@task("unit_word_problems", trained=False, skills=("arithmetic", "unit_conversion"))
def unit_word_problems(rng: random.Random, split: str) -> Example:
    """Word problems that need a unit conversion and then an addition or subtraction."""
    name = rng.choice(NAMES)
    kind = rng.randrange(4)
    if kind == 0:
        m, c = rng.randint(2, 9), rng.randint(10, 99)
        q, ans = (f"A ribbon is {m} meters long. {name} cuts off {c} centimeters. "
                  f"How many centimeters of ribbon are left?", m * 100 - c)
    elif kind == 1:
        k, m = rng.randint(2, 9), rng.randint(10, 999)
        q, ans = f"{name} walks {k} kilometers and then {m} meters more. How many meters is that in total?", k * 1000 + m
    elif kind == 2:
        h, m = rng.randint(1, 4), rng.randint(5, 59)
        q, ans = f"A film lasts {h} hours and {m} minutes. How many minutes long is the film?", h * 60 + m
    else:
        kg, g = rng.randint(2, 9), rng.randint(100, 900)
        q, ans = (f"A bag holds {kg} kilograms of rice. {name} uses {g} grams. "
                  f"How many grams of rice are left?", kg * 1000 - g)
    return Example(f"{q} {NUMBER_ONLY}", str(ans))


@task("compare_conversions", trained=False, skills=("compare_numbers", "unit_conversion"))
def compare_conversions(rng: random.Random, split: str) -> Example:
    """Which of two quantities in different units is larger (multiple choice)."""
    big, small, f = rng.choice(UNITS)
    n = rng.randint(2, 9)
    m = n * f + rng.choice((-1, 1)) * rng.randint(1, f - 1)  # never equal to n * f
    a, b = f"{n} {big}", f"{m} {small}"
    ans = a if n * f > m else b
    first, second = (a, b) if rng.random() < 0.5 else (b, a)
    q = f"Which is more: {first} or {second}? Answer with the quantity exactly as written."
    return Example(q, ans, (first, second))


@task("weekday_word_problems", trained=False, skills=("weekday", "unit_conversion"))
def weekday_word_problems(rng: random.Random, split: str) -> Example:
    """Trips measured in weeks and days: on which weekday do they end."""
    name, d = rng.choice(NAMES), rng.randrange(7)
    w, k = rng.randint(1, 3), rng.randint(1, 6)
    total = 7 * w + k
    weeks = "week" if w == 1 else "weeks"
    days = "day" if k == 1 else "days"
    q = (f"{name} leaves on a {DAYS[d]} for a trip of {w} {weeks} and {k} {days}. "
         f"On what day of the week does {name} come back?")
    return Example(f"{q} Answer with the day only.", DAYS[(d + total) % 7])
