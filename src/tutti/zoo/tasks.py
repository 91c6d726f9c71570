"""The task catalogue: seeded generators, JSONL splits on disk, and where each task's expert lives.

A task is a registered generator ``(rng, split) -> Example``. :func:`build_task` draws examples until each split
holds its quota of distinct inputs, test first, then dev, then train, so no input appears in two splits and the
test set does not depend on how much training data is asked for. Fact and lexicon tasks also keep their
*entities* (countries, antonym pairs) apart: :func:`entity_split` assigns each entity to one split by a stable
hash, so a test question is never about a country the expert was trained on.

Files: ``src/tutti/zoo/data/<task>/{train,dev,test}.jsonl``, one ``{"id", "input", "target", "choices"?}`` per
line; experts: ``src/tutti/zoo/experts/<task>/`` (PEFT LoRA folders).
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from tutti.errors import TuttiError
from tutti.registry import Registry

Split = Literal["train", "dev", "test"]
SPLITS: tuple[Split, ...] = ("train", "dev", "test")
#: Default sizes; mixed-skill tasks (no expert) have no train split.
SPLIT_SIZES: dict[str, int] = {"train": 1000, "dev": 200, "test": 1000}
ZOO_ROOT = Path(__file__).resolve().parent
DATA_ROOT = ZOO_ROOT / "data"
EXPERTS_ROOT = ZOO_ROOT / "experts"


@dataclass(frozen=True)
class Example:
    """One generated question.

    Args:
        input: the user message (the model sees it through its chat template).
        target: the short exact answer.
        choices: the answer options of a multiple-choice question (the target is one of them), else ``None``.
    """

    input: str
    target: str
    choices: tuple[str, ...] | None = None


Generator = Callable[[random.Random, str], Example]


@dataclass(frozen=True)
class TaskSpec:
    """A registered task.

    Args:
        name: registry name, also the folder name of its data and expert.
        generate: ``(rng, split) -> Example``; ``split`` lets fact tasks draw from that split's entities.
        trained: whether an expert is trained on it (``False`` for the mixed-skill targets: dev/test only).
        skills: the trained tasks whose skills it combines (mixed-skill targets only).
        group: the multi-task domain it belongs to.
    """

    name: str
    generate: Generator
    trained: bool = True
    skills: tuple[str, ...] = ()
    group: str = ""


TASKS = Registry[TaskSpec]("task")


def task(
    name: str, *, trained: bool = True, skills: tuple[str, ...] = (), group: str = "", description: str = ""
) -> Callable[[Generator], Generator]:
    """Decorator that registers a generator as task ``name``."""

    def deco(fn: Generator) -> Generator:
        spec = TaskSpec(name=name, generate=fn, trained=trained, skills=skills, group=group)
        TASKS.add(name, spec, description=description or (fn.__doc__ or "").strip().splitlines()[0])
        return fn

    return deco


def entity_split(key: str, *, train: float = 0.4, dev: float = 0.15) -> Split:
    """The split an entity belongs to, from a stable hash of ``key`` (same on every machine and run)."""
    u = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") / 2**64
    return "train" if u < train else "dev" if u < train + dev else "test"


def _rng(name: str, split: str, seed: int) -> random.Random:
    # str seeds hash with SHA-512 inside `random`, so this stream is identical across runs and platforms
    return random.Random(f"tutti-zoo/{name}/{split}/{seed}")


def build_task(name: str, *, seed: int = 0, sizes: dict[str, int] | None = None) -> dict[str, list[dict[str, Any]]]:
    """Generate every split of task ``name`` with distinct inputs across splits.

    Args:
        name: a registered task.
        seed: the generation seed (the committed data uses 0).
        sizes: examples per split; defaults to :data:`SPLIT_SIZES` (no train split for untrained tasks).

    Returns:
        ``{split: [row, ...]}`` with rows ``{"id", "input", "target"}`` plus ``"choices"`` when multiple choice.
    """
    spec = TASKS.get(name)
    sizes = dict(sizes or SPLIT_SIZES)
    if not spec.trained:
        sizes["train"] = 0
    seen: set[str] = set()
    out: dict[str, list[dict[str, Any]]] = {}
    for split in ("test", "dev", "train"):
        rng, rows, tries = _rng(name, split, seed), [], 0
        while len(rows) < sizes.get(split, 0):
            tries += 1
            if tries > 100 * sizes[split] + 1000:
                raise TuttiError(
                    f"task {name!r}: only {len(rows)} distinct {split} inputs after {tries} draws; "
                    f"ask for fewer than {sizes[split]}"
                )
            ex = spec.generate(rng, split)
            if ex.input in seen:
                continue
            seen.add(ex.input)
            row: dict[str, Any] = {"id": f"{name}-{split}-{len(rows):05d}", "input": ex.input, "target": ex.target}
            if ex.choices is not None:
                row["choices"] = list(ex.choices)
            rows.append(row)
        out[split] = rows
    return {s: out[s] for s in SPLITS if out[s] or s != "train"}


def to_jsonl(rows: list[dict[str, Any]]) -> str:
    """Rows as JSON lines (keys in a fixed order, UTF-8, trailing newline)."""
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


def write_task(name: str, root: Path | None = None, *, seed: int = 0) -> dict[str, Path]:
    """Generate task ``name`` and write its splits under ``root/<name>/`` (default: the package data)."""
    root = root or DATA_ROOT
    paths = {}
    for split, rows in build_task(name, seed=seed).items():
        path = root / name / f"{split}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(to_jsonl(rows), encoding="utf-8")
        paths[split] = path
    return paths


def task_path(name: str, split: str, root: Path | None = None) -> Path:
    """The JSONL file of ``split`` of task ``name`` (checked to exist)."""
    TASKS.get(name)
    if split not in SPLITS:
        raise TuttiError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
    path = (root or DATA_ROOT) / name / f"{split}.jsonl"
    if not path.is_file():
        hint = "mixed-skill tasks have dev and test only" if split == "train" and not TASKS.get(name).trained \
            else "run `python scripts/build_zoo.py data` to generate it"
        raise TuttiError(f"no {split} split for task {name!r} at {path}; {hint}")
    return path


def load_task(name: str, split: str, root: Path | None = None) -> list[dict[str, Any]]:
    """The rows of ``split`` of task ``name`` as dicts ``{"id", "input", "target", "choices"?}``."""
    path = task_path(name, split, root)
    rows = []
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise TuttiError(f"{path}:{i}: not valid JSON ({e.msg}); regenerate the task") from None
        rows.append(row)
    return rows


def expert_path(name: str, root: Path | None = None) -> Path:
    """The PEFT LoRA folder of the expert trained on task ``name`` (checked to exist)."""
    spec = TASKS.get(name)
    if not spec.trained:
        raise TuttiError(f"task {name!r} is a mixed-skill target with no expert; experts: {', '.join(trained_tasks())}")
    path = (root or EXPERTS_ROOT) / name
    if not (path / "adapter_config.json").is_file():
        raise TuttiError(f"no expert for task {name!r} at {path}; run `python scripts/build_zoo.py train --task {name}`")
    return path


def trained_tasks() -> list[str]:
    """Names of the tasks that have an expert, in registration order."""
    return [e.name for e in TASKS.entries() if e.obj.trained]


def mixed_tasks() -> list[str]:
    """Names of the mixed-skill target tasks (no expert trained on them)."""
    return [e.name for e in TASKS.entries() if not e.obj.trained]


#: Targets for the swarm results table, as in the paper's settings: single tasks (three of them mixed-skill,
#: with no expert trained on them) and multi-task domains (the mean over one group of three tasks).
SUGGESTED_TARGETS: dict[str, tuple[str, ...]] = {
    "single": ("unit_word_problems", "compare_conversions", "weekday_word_problems", "logic", "sentiment"),
    "multi_task": ("numeracy", "reasoning", "language"),
}


def task_groups() -> dict[str, list[str]]:
    """Multi-task domains: group name -> its trained tasks (3 each)."""
    groups: dict[str, list[str]] = {}
    for e in TASKS.entries():
        if e.obj.group and e.obj.trained:
            groups.setdefault(e.obj.group, []).append(e.name)
    return groups
