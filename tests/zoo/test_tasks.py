"""The zoo's tasks: deterministic generation, committed files equal to a fresh build, disjoint splits of the
right sizes, and every answer re-derived by an independent check."""

from __future__ import annotations

import hashlib
import json

import pytest

from tutti.errors import TuttiError
from tutti.zoo import (
    TASKS,
    build_task,
    expert_path,
    load_task,
    mixed_tasks,
    task_groups,
    task_path,
    trained_tasks,
)
from tutti.zoo.tasks import SPLIT_SIZES, entity_split, to_jsonl

ALL = TASKS.names()


def test_catalogue_shape() -> None:
    assert len(trained_tasks()) >= 8
    assert len(mixed_tasks()) >= 3
    for name in mixed_tasks():  # each mixed task combines skills that have experts
        skills = TASKS.get(name).skills
        assert len(skills) >= 2 and set(skills) <= set(trained_tasks())
    groups = task_groups()
    assert len(groups) >= 3 and all(len(v) == 3 for v in groups.values())
    from tutti.zoo import SUGGESTED_TARGETS

    single = SUGGESTED_TARGETS["single"]
    assert len(single) >= 4 and set(single) <= set(ALL) and set(mixed_tasks()) <= set(single)
    assert set(SUGGESTED_TARGETS["multi_task"]) <= set(groups)


@pytest.mark.parametrize("name", ALL)
def test_committed_data_is_the_seeded_build(name: str) -> None:
    """Same seed -> same bytes: the committed JSONL equals a fresh build (and a second build)."""
    fresh = build_task(name, seed=0)
    again = build_task(name, seed=0)
    for split, rows in fresh.items():
        text = to_jsonl(rows)
        assert text == to_jsonl(again[split])
        assert task_path(name, split).read_text(encoding="utf-8") == text, f"{name}/{split} is stale"
    other = build_task(name, seed=1)
    assert to_jsonl(other["test"]) != to_jsonl(fresh["test"])


@pytest.mark.parametrize("name", ALL)
def test_splits_disjoint_and_sized(name: str) -> None:
    splits = {s: load_task(name, s) for s in (("train", "dev", "test") if TASKS.get(name).trained else ("dev", "test"))}
    for split, rows in splits.items():
        assert len(rows) == SPLIT_SIZES[split]
        assert len({r["id"] for r in rows}) == len(rows)
        for r in rows:
            assert set(r) <= {"id", "input", "target", "choices"}
            assert r["target"].strip() and len(r["target"].split()) <= 3
            if "choices" in r:
                assert r["target"] in r["choices"] and len(set(r["choices"])) == len(r["choices"])
    inputs = [{r["input"] for r in rows} for rows in splits.values()]
    assert sum(map(len, inputs)) == len(set().union(*inputs)), "an input appears in two splits"
    if not TASKS.get(name).trained:
        with pytest.raises(TuttiError, match="mixed-skill"):
            task_path(name, "train")


def test_entity_split_is_stable() -> None:
    assert [entity_split(f"k{i}") for i in range(6)] == [entity_split(f"k{i}") for i in range(6)]
    shares = [entity_split(f"key{i}") for i in range(4000)]
    assert abs(shares.count("test") / 4000 - 0.45) < 0.03


def test_fact_tasks_never_test_a_trained_entity() -> None:
    """Countries and antonym pairs are split apart: no test (or dev) question asks about a trained one."""
    import re

    for name, pattern in (("country_facts", r"of (.+)\? Options"), ("antonyms", r'opposite of "(\w+)"')):
        seen = {s: {re.search(pattern, r["input"]).group(1) for r in load_task(name, s)}
                for s in ("train", "dev", "test")}
        assert seen["test"] and seen["train"]
        assert not seen["test"] & seen["train"] and not seen["dev"] & seen["train"]


def test_unknown_names_are_one_line_errors() -> None:
    with pytest.raises(TuttiError, match="Did you mean 'arithmetic'"):
        load_task("arithmetc", "dev")
    with pytest.raises(TuttiError, match="unknown split"):
        task_path("arithmetic", "validation")
    with pytest.raises(TuttiError, match="no expert"):
        expert_path("unit_word_problems")


def test_data_hash_pinned() -> None:
    """Pinned digest of all committed test splits; regenerate with `python scripts/build_zoo.py data`."""
    h = hashlib.sha256()
    for name in ALL:
        h.update(json.dumps(load_task(name, "test"), sort_keys=True).encode())
    assert h.hexdigest()[:16] == PINNED


PINNED = "a05a3e3ebb962cc6"
