"""Task datasets: JSONL files with explicit splits.

A task is a folder holding ``train.jsonl``, ``dev.jsonl`` and ``test.jsonl`` (any subset), one JSON object per
line::

    {"id": "q1", "input": "What is 2+3?", "target": "5"}
    {"id": "q2", "input": "Capital of France?", "target": "Paris", "choices": ["Rome", "Paris", "Oslo"]}

``target`` of a multiple-choice example is the text of the correct choice (a single letter ``A``, ``B``... is
read as the index of the choice when it is not itself one of the choices). A single ``.jsonl`` file is also
accepted as a task; it then is the one split it names.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from tutti.errors import TuttiError

SPLITS = ("train", "dev", "test")


@dataclass(frozen=True)
class Example:
    """One task item.

    Args:
        id: unique id within the split.
        input: the prompt text.
        target: the reference answer (for multiple choice, the correct choice's text).
        choices: the options of a multiple-choice item.
    """

    id: str
    input: str
    target: str
    choices: tuple[str, ...] | None = None

    @property
    def answer_index(self) -> int | None:
        """Index of the target among the choices (None when not multiple choice)."""
        return None if self.choices is None else self.choices.index(self.target)


def split_path(task: str | Path, split: str) -> Path:
    """The JSONL file of ``split`` of ``task`` (a folder or a single file)."""
    p = Path(task)
    if split not in SPLITS:
        raise TuttiError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
    if p.is_file():
        return p
    f = p / f"{split}.jsonl"
    if not p.is_dir():
        raise TuttiError(f"task {str(p)!r} not found; give a folder with {'/'.join(SPLITS)}.jsonl or a .jsonl file")
    if not f.is_file():
        have = sorted(x.stem for x in p.glob("*.jsonl"))
        raise TuttiError(f"task {p}: no {split}.jsonl (found: {', '.join(have) or 'none'}); add the split file")
    return f


def _parse(line: str, where: str) -> Example:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        raise TuttiError(f"{where}: not valid JSON ({e.msg}); one JSON object per line") from None
    if not isinstance(obj, dict):
        raise TuttiError(f"{where}: each line must be a JSON object")
    for key in ("id", "input", "target"):
        if not isinstance(obj.get(key), str | int) or isinstance(obj.get(key), bool):
            raise TuttiError(f"{where}: field {key!r} is missing or not a string")
    choices = obj.get("choices")
    target = str(obj["target"])
    if choices is not None:
        if not isinstance(choices, list) or len(choices) < 2 or not all(isinstance(c, str) for c in choices):
            raise TuttiError(f"{where}: 'choices' must be a list of at least 2 strings")
        if target not in choices:
            idx = ord(target.upper()) - ord("A") if len(target) == 1 and target.isalpha() else -1
            if not 0 <= idx < len(choices):
                raise TuttiError(f"{where}: target {target!r} is neither one of the choices nor a choice letter")
            target = choices[idx]
        choices = tuple(choices)
    return Example(id=str(obj["id"]), input=obj["input"], target=target, choices=choices)


def load_split(task: str | Path, split: str = "dev", *, limit: int | None = None) -> list[Example]:
    """Read one split of a task.

    Args:
        task: a task folder (``<split>.jsonl`` inside) or a single ``.jsonl`` file.
        split: ``train``, ``dev`` or ``test``.
        limit: keep only the first ``limit`` examples.

    Raises:
        TuttiError: a missing file, a malformed line (with its line number), a duplicate id or an empty split.
    """
    f = split_path(task, split)
    out: list[Example] = []
    seen: set[str] = set()
    with f.open(encoding="utf-8") as fh:
        for n, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            ex = _parse(line, f"{f}:{n}")
            if ex.id in seen:
                raise TuttiError(f"{f}:{n}: duplicate id {ex.id!r}; ids must be unique within a split")
            seen.add(ex.id)
            out.append(ex)
            if limit is not None and len(out) >= limit:
                break
    if not out:
        raise TuttiError(f"{f}: no examples")
    return out


def write_split(path: str | Path, examples: list[Example]) -> Path:
    """Write examples as a JSONL split file (for tests and task generators)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    with p.open("w", encoding="utf-8") as fh:
        for e in examples:
            obj: dict[str, object] = {"id": e.id, "input": e.input, "target": e.target}
            if e.choices is not None:
                obj["choices"] = list(e.choices)
            fh.write(json.dumps(obj) + "\n")
    return p
