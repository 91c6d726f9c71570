"""Exact match after normalisation: numbers as numbers, case and punctuation ignored, never a substring test."""

from __future__ import annotations

import pytest

from tutti.zoo.metrics import exact_match, normalize_answer


@pytest.mark.parametrize(("pred", "target"), [
    ("62", "62"), (" 62.", "62"), ("1,000", "1000"), ("62.0", "62"), ("Paris", "paris"), ('"Friday"', "Friday"),
    ("  New   Delhi ", "New Delhi"), ("true.", "true"), ("9 kilometers", "9 Kilometers"),
])
def test_matches(pred: str, target: str) -> None:
    assert exact_match(pred, target)


@pytest.mark.parametrize(("pred", "target"), [
    ("The answer is 62", "62"), ("620", "62"), ("6", "62"), ("Friday!!x", "Friday"), ("not true", "true"),
    ("62 apples", "62"), ("", "62"), ("Saturday", "Sunday"),
])
def test_rejects(pred: str, target: str) -> None:
    assert not exact_match(pred, target)


def test_normal_forms() -> None:
    assert normalize_answer("-3") == "-3"
    assert normalize_answer("2.50") == "2.5"
    assert normalize_answer("Addis Ababa.") == "addis ababa"
