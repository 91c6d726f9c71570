"""Every committed answer re-derived by a check written independently of the generators (regexes over the
question, Python's own evaluator, calendar dates, the fact and lexicon tables)."""

from __future__ import annotations

import calendar
import datetime as dt
import re

import pytest

from tutti.zoo import TASKS, load_task
from tutti.zoo.generators.tables import ANTONYMS, COUNTRIES, NEGATIVE, POSITIVE

FACTOR = {  # smaller units in one larger unit, written out again here on purpose
    ("meters", "centimeters"): 100, ("kilometers", "meters"): 1000, ("kilograms", "grams"): 1000,
    ("liters", "milliliters"): 1000, ("hours", "minutes"): 60, ("minutes", "seconds"): 60, ("days", "hours"): 24,
    ("weeks", "days"): 7, ("feet", "inches"): 12, ("years", "months"): 12, ("centimeters", "millimeters"): 10,
    ("meters", "millimeters"): 1000, ("yards", "feet"): 3, ("gallons", "quarts"): 4, ("pounds", "ounces"): 16,
    ("dollars", "cents"): 100, ("tons", "kilograms"): 1000, ("decades", "years"): 10,
    ("centuries", "years"): 100, ("quarters", "cents"): 25,
}


def weekday_after(day: str, k: int) -> str:
    """The weekday ``k`` days after ``day`` by the calendar (2024-01-01 was a Monday)."""
    monday = dt.date(2024, 1, 1)
    start = monday + dt.timedelta(days=list(calendar.day_name).index(day))
    return (start + dt.timedelta(days=k)).strftime("%A")


def solve(task: str, q: str) -> str:
    """An independent solver for one question of ``task``."""
    nums = [int(x) for x in re.findall(r"\d+", q)]
    if task == "arithmetic":
        a, b = nums
        return str(a + b if "more" in q else a - b if "gave away" in q else a * b)
    if task == "unit_conversion":
        n, small, big = re.match(r"How many (\w+) are in (\d+) (\w+)\?", q).group(2, 1, 3)
        f = FACTOR.get((big, small))
        return str(int(n) * f) if f else str(int(n) // FACTOR[(small, big)])
    if task == "compare_numbers":
        return str(max(nums) if "larger" in q else min(nums))
    if task in ("weekday", "weekday_word_problems"):
        day = re.search(r"(Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday)", q).group(1)
        if task == "weekday_word_problems":
            return weekday_after(day, 7 * nums[0] + nums[1])
        return weekday_after(day, -nums[0] if ("ago?" in q or "before" in q) else nums[0])
    if task == "string_ops":
        w = re.search(r'"(\w+)"', q).group(1)
        if q.startswith("How many"):
            return str(len(w))
        pos = {"first": 0, "second": 1, "third": 2, "last": -1}[re.search(r"the (\w+) letter", q).group(1)]
        return w[pos]
    if task == "antonyms":
        cue = re.search(r'"(\w+)"', q).group(1)
        return next(b if a == cue else a for a, b in ANTONYMS if cue in (a, b))
    if task == "sentiment":
        score = 0
        for neg, adj in re.findall(r"was (not )?(\w+)", q):
            score += (1 if adj in POSITIVE else -1) * (-1 if neg else 1)
            assert adj in POSITIVE or adj in NEGATIVE
        return "positive" if score > 0 else "negative"
    if task == "logic":
        expr = re.search(r"false: (.*)\? Answer", q).group(1)
        assert re.fullmatch(r"[()a-zA-Z ]+", expr) and set(re.findall(r"\w+", expr)) <= {"True", "False", "and",
                                                                                       "or", "not"}
        return str(eval(expr, {"__builtins__": {}}, {})).lower()  # Python's precedence is the oracle
    if task == "country_facts":
        what, country = re.match(r"What is the (capital|currency) of (.+)\? Options", q).groups()
        row = next(c for c in COUNTRIES if c[0] == country)
        return row[1] if what == "capital" else row[2]
    if task == "unit_word_problems":
        a, b = nums[0], nums[1]
        if "ribbon" in q:
            return str(a * 100 - b)
        if "walks" in q:
            return str(a * 1000 + b)
        if "film" in q:
            return str(a * 60 + b)
        return str(a * 1000 - b)
    if task == "compare_conversions":
        (n1, u1), (n2, u2) = re.findall(r"(\d+) (\w+)", q)
        if (u1, u2) in FACTOR:
            return f"{n1} {u1}" if int(n1) * FACTOR[(u1, u2)] > int(n2) else f"{n2} {u2}"
        return f"{n2} {u2}" if int(n2) * FACTOR[(u2, u1)] > int(n1) else f"{n1} {u1}"
    raise AssertionError(f"no independent solver for {task}")


@pytest.mark.parametrize("name", TASKS.names())
def test_every_answer_is_right(name: str) -> None:
    splits = ("train", "dev", "test") if TASKS.get(name).trained else ("dev", "test")
    for split in splits:
        for r in load_task(name, split):
            assert solve(name, r["input"]) == r["target"], r


def test_answer_classes_are_balanced() -> None:
    """No trivial majority answer: the most common target of a yes/no-like task stays under 70%."""
    for name in ("sentiment", "logic", "compare_numbers"):
        targets = [r["target"] for r in load_task(name, "test")]
        top = max(targets.count(t) for t in set(targets))
        assert top / len(targets) < 0.7, name
