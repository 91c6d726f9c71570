"""Metrics, dataset loading and the split files."""

from __future__ import annotations

import json

import pytest

from tutti.errors import TuttiError
from tutti.evaluation.datasets import Example, load_split, write_split
from tutti.evaluation.metrics import exact_match, normalize_text, parse_choice, parse_number, token_f1


@pytest.mark.parametrize(("pred", "target", "want"), [
    ("15", "5", 0.0),                      # the official code's substring test would say 1
    ("The answer is 15.", "15", 1.0),
    ("1,000 apples", "1000", 1.0),
    ("5.0", "5", 1.0),
    ("$12", "12", 1.0),
    ("-3", "3", 0.0),
    ("Paris.", "paris", 1.0),
    ("The Eiffel tower", "eiffel  Tower", 1.0),
    ("Paris, France", "Paris", 0.0),
    ("#### 42\nmore text", "42", 1.0),
    ("", "0", 0.0),
])
def test_exact_match(pred, target, want):
    assert exact_match(pred, target) == want


def test_normalisation_and_numbers():
    assert normalize_text("  The  Quick, brown FOX! ") == "quick brown fox"
    assert parse_number("1,234.5") == 1234.5 and parse_number("50%") == 50.0 and parse_number("12 apples") is None


def test_token_f1():
    assert token_f1("the cat sat", "cat sat down") == pytest.approx(2 * (1.0 * 2 / 3) / (1.0 + 2 / 3))
    assert token_f1("dog", "cat") == 0.0 and token_f1("", "") == 1.0


@pytest.mark.parametrize(("text", "want"), [
    ("B", 1), ("(C) because", 2), ("A. Rome", 0), ("The answer is B", 1), ("Paris", 1),
    ("Answer: something", None), ("I think D", None), ("", None),
])
def test_parse_choice_is_strict(text, want):
    assert parse_choice(text, ["Rome", "Paris", "Oslo", "Bern"]) == want


def test_load_split_reads_the_zoo_format(tmp_path):
    write_split(tmp_path / "t" / "dev.jsonl", [Example("a", "2+3?", "5"), Example("b", "Capital?", "Paris", ("Rome", "Paris"))])
    (tmp_path / "t" / "test.jsonl").write_text(json.dumps({"id": "c", "input": "q", "target": "B", "choices": ["x", "y"]}) + "\n\n")
    dev = load_split(tmp_path / "t", "dev")
    assert [e.id for e in dev] == ["a", "b"] and dev[1].answer_index == 1 and dev[0].choices is None
    test = load_split(tmp_path / "t", "test")
    assert test[0].target == "y"  # a choice letter is read as an index
    assert len(load_split(tmp_path / "t", "dev", limit=1)) == 1


@pytest.mark.parametrize(("line", "msg"), [
    ("not json", "not valid JSON"),
    ('{"id": "a", "input": "x"}', "'target'"),
    ('{"id": "a", "input": "x", "target": "z", "choices": ["p", "q"]}', "neither one of the choices"),
    ('{"id": "a", "input": "x", "target": "p", "choices": "pq"}', "list of at least 2"),
    ('[1, 2]', "JSON object"),
])
def test_bad_lines_name_file_and_line(tmp_path, line, msg):
    (tmp_path / "dev.jsonl").write_text('{"id": "ok", "input": "x", "target": "y"}\n' + line + "\n")
    with pytest.raises(TuttiError, match=msg) as e:
        load_split(tmp_path, "dev")
    assert "dev.jsonl:2" in str(e.value)


def test_missing_split_and_duplicates(tmp_path):
    (tmp_path / "dev.jsonl").write_text('{"id": "a", "input": "x", "target": "y"}\n' * 2)
    with pytest.raises(TuttiError, match="duplicate id"):
        load_split(tmp_path, "dev")
    with pytest.raises(TuttiError, match=r"no test\.jsonl"):
        load_split(tmp_path, "test")
    with pytest.raises(TuttiError, match="not found"):
        load_split(tmp_path / "nope", "dev")
    with pytest.raises(TuttiError, match="unknown split"):
        load_split(tmp_path, "validation")
