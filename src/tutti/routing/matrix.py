"""The correctness matrix routers train on: prompts x models -> score (1/0 for exact match, or any utility).

``tutti eval MODEL_A MODEL_B ... --task T`` writes one as JSONL, one line per prompt::

    {"id": "q1", "input": "What is 2+3?", "task": "arithmetic", "scores": {"a": 1.0, "b": 0.0},
     "confidence": {"a": 0.81, "b": 0.42}}

``confidence`` (optional) is each model's own answer probability (exp of the mean token log-probability),
which cascades learn their thresholds from.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from tutti.errors import TuttiError


@dataclass(frozen=True)
class CorrectnessMatrix:
    """Per-prompt scores of several models.

    Args:
        ids: example ids.
        prompts: prompt texts (what routers read).
        models: column names.
        scores: ``(n_prompts, n_models)`` float tensor.
        tasks: task of each prompt ("" when unknown).
        confidence: optional ``(n_prompts, n_models)`` answer probabilities.
    """

    ids: tuple[str, ...]
    prompts: tuple[str, ...]
    models: tuple[str, ...]
    scores: torch.Tensor
    tasks: tuple[str, ...] = ()
    confidence: torch.Tensor | None = None

    def __post_init__(self) -> None:
        n, m = len(self.prompts), len(self.models)
        if tuple(self.scores.shape) != (n, m) or len(self.ids) != n:
            raise TuttiError(f"correctness matrix: scores {tuple(self.scores.shape)} do not match {n} prompts x {m} models")
        if not self.tasks:
            object.__setattr__(self, "tasks", ("",) * n)

    def __len__(self) -> int:
        return len(self.prompts)

    def column(self, name: str) -> int:
        """Index of model ``name``."""
        if name not in self.models:
            raise TuttiError(f"correctness matrix has no model {name!r} (has: {', '.join(self.models)})")
        return self.models.index(name)

    def select(self, rows: Sequence[int] | None = None, models: Sequence[str] | None = None) -> CorrectnessMatrix:
        """A sub-matrix of some rows and/or some models (in the given order)."""
        r = list(range(len(self))) if rows is None else list(rows)
        c = list(range(len(self.models))) if models is None else [self.column(x) for x in models]
        conf = self.confidence[r][:, c] if self.confidence is not None else None
        return CorrectnessMatrix(tuple(self.ids[i] for i in r), tuple(self.prompts[i] for i in r),
                                 tuple(self.models[j] for j in c), self.scores[r][:, c],
                                 tuple(self.tasks[i] for i in r), conf)

    def save(self, path: str | Path) -> Path:
        """Write as JSONL."""
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        with p.open("w", encoding="utf-8") as fh:
            for i in range(len(self)):
                row: dict[str, object] = {"id": self.ids[i], "input": self.prompts[i], "task": self.tasks[i],
                                          "scores": {m: float(self.scores[i, j]) for j, m in enumerate(self.models)}}
                if self.confidence is not None:
                    row["confidence"] = {m: float(self.confidence[i, j]) for j, m in enumerate(self.models)}
                fh.write(json.dumps(row) + "\n")
        return p

    @classmethod
    def load(cls, path: str | Path) -> CorrectnessMatrix:
        """Read a JSONL matrix (every line must score the same models)."""
        p = Path(path)
        if not p.is_file():
            raise TuttiError(f"correctness matrix {str(p)!r} not found; write one with 'tutti eval A B ... --task T'")
        rows = []
        for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
                rows[-1]["scores"].items()
            except (json.JSONDecodeError, KeyError, AttributeError):
                raise TuttiError(f"{p}:{n}: expected a JSON object with 'input' and a 'scores' mapping") from None
        if not rows:
            raise TuttiError(f"{p}: empty correctness matrix")
        models = tuple(rows[0]["scores"])
        for n, r in enumerate(rows, start=1):
            if tuple(r["scores"]) != models:
                raise TuttiError(f"{p}: line {n} scores models {list(r['scores'])}, line 1 scores {list(models)}")
        scores = torch.tensor([[float(r["scores"][m]) for m in models] for r in rows])
        conf = None
        if all("confidence" in r for r in rows):
            conf = torch.tensor([[float(r["confidence"][m]) for m in models] for r in rows])
        return cls(tuple(str(r.get("id", i)) for i, r in enumerate(rows)), tuple(str(r["input"]) for r in rows),
                   models, scores, tuple(str(r.get("task", "")) for r in rows), conf)

    @classmethod
    def concat(cls, parts: Sequence[CorrectnessMatrix]) -> CorrectnessMatrix:
        """Stack matrices over the same models (e.g. several tasks into one mixed set)."""
        if not parts:
            raise TuttiError("nothing to concatenate")
        models = parts[0].models
        if any(p.models != models for p in parts):
            raise TuttiError("matrices to concatenate must score the same models in the same order")
        conf = torch.cat([p.confidence for p in parts]) if all(p.confidence is not None for p in parts) else None
        return cls(sum((p.ids for p in parts), ()), sum((p.prompts for p in parts), ()), models,
                   torch.cat([p.scores for p in parts]), sum((p.tasks for p in parts), ()), conf)
