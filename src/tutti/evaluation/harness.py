"""One evaluation harness for any model or composite: the swarm's utility functions, metered and recorded.

``evaluate(model, task)`` wraps the model in a :class:`MeteredModel` (batches with a progress bar, counts model
calls and generated tokens, records each answer's own probability), runs a registered utility on one split and
writes, under ``out_dir``:

- ``predictions.jsonl``: one line per example (id, input, target, prediction, score, confidence, tokens, calls);
- ``summary.json``: accuracy, examples, generated tokens, model calls, wall time.

``evaluate_many`` runs several models on the same split and also writes ``matrix.jsonl``, the correctness
matrix the routers train on (:class:`tutti.routing.matrix.CorrectnessMatrix`).
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tutti.errors import TuttiError
from tutti.models.interface import (
    GenerationOutput,
    LoglikelihoodResult,
    Model,
    Prompt,
    SamplingParams,
    StreamChunk,
)


class MeteredModel:
    """A model proxy that batches, shows progress, and meters every call.

    Args:
        model: the wrapped model or composite.
        batch_size: prompts per underlying ``generate`` / ``loglikelihood`` call.
        progress: show a rich progress bar.
        record_confidence: ask members for token log-probs to record each answer's probability.
    """

    def __init__(self, model: Model, *, batch_size: int = 16, progress: bool = True,
                 record_confidence: bool = True) -> None:
        self.model = model
        self.name = getattr(model, "name", "model")
        self.batch_size = batch_size
        self.progress = progress
        self.record_confidence = record_confidence
        self.calls = 0.0
        self.tokens = 0.0
        self.records: list[dict[str, float]] = []  # one per generated prompt, in call order

    def _bar(self, total: int, what: str) -> Any:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        return Progress(TextColumn(f"{self.name} {what}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        transient=True, disable=not self.progress)

    def _chunks(self, n: int, what: str) -> Iterator[tuple[int, int, Any]]:
        with self._bar(n, what) as bar:
            task = bar.add_task(what, total=n)
            for s in range(0, n, self.batch_size):
                e = min(n, s + self.batch_size)
                yield s, e, None
                bar.update(task, advance=e - s)

    def generate(self, prompts: Sequence[Prompt], *, params: SamplingParams) -> list[list[GenerationOutput]]:
        """Batched generation; records tokens, calls and confidence per prompt."""
        asked = params
        if self.record_confidence and not params.logprobs:
            params = SamplingParams(**{**params.__dict__, "logprobs": True})
        out: list[list[GenerationOutput]] = []
        for s, e, _ in self._chunks(len(prompts), "generate"):
            res = self.model.generate(list(prompts[s:e]), params=params)
            for row in res:
                o = row[0]
                tokens = float(o.info.get("generated_tokens", o.completion_tokens))
                calls = float(o.info.get("member_calls", 1))
                lps = [t.logprob for t in o.logprobs] if o.logprobs else []
                conf = math.exp(sum(lps) / len(lps)) if lps else float("nan")
                self.records.append({"tokens": tokens, "calls": calls, "confidence": conf})
                self.tokens += sum(float(x.info.get("generated_tokens", x.completion_tokens)) for x in row)
                self.calls += sum(float(x.info.get("member_calls", 1)) for x in row)
            out.extend([[_strip_logprobs(o, asked) for o in row] for row in res])
        return out

    def stream(self, prompt: Prompt, *, params: SamplingParams) -> Iterator[StreamChunk]:
        """Unmetered pass-through."""
        return self.model.stream(prompt, params=params)

    def next_token_logprobs(self, prompts: Sequence[Prompt]) -> Any:
        """Pass-through (counted as one call per prompt)."""
        self.calls += len(prompts)
        return self.model.next_token_logprobs(prompts)

    def loglikelihood(self, requests: Sequence[tuple[Prompt, str]]) -> list[LoglikelihoodResult]:
        """Batched scoring (one call per request)."""
        out: list[LoglikelihoodResult] = []
        for s, e, _ in self._chunks(len(requests), "score"):
            out.extend(self.model.loglikelihood(list(requests[s:e])))
        self.calls += len(requests)
        return out


def _strip_logprobs(o: GenerationOutput, asked: SamplingParams) -> GenerationOutput:
    if asked.logprobs or o.logprobs is None:
        return o
    return GenerationOutput(text=o.text, token_ids=o.token_ids, finish_reason=o.finish_reason,
                            prompt_tokens=o.prompt_tokens, logprobs=None, info=o.info)


@dataclass
class EvalResult:
    """Outcome of one evaluation.

    Args:
        model, task, split, utility: what was evaluated.
        accuracy: the utility value (mean per-example score).
        examples: number of examples.
        generated_tokens, model_calls: totals metered across the run (composites report their members' work).
        wall_seconds: wall-clock time of the evaluation.
        scores, predictions, confidence: per example.
    """

    model: str
    task: str
    split: str
    utility: str
    accuracy: float
    examples: int
    generated_tokens: float
    model_calls: float
    wall_seconds: float
    scores: list[float] = field(default_factory=list)
    predictions: list[str] = field(default_factory=list)
    confidence: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """The JSON summary (no per-example lists)."""
        d = asdict(self)
        for k in ("scores", "predictions", "confidence"):
            d.pop(k)
        d["examples_per_second"] = self.examples / self.wall_seconds if self.wall_seconds > 0 else None
        return d


def resolve_task(task: str | Path, split: str) -> Path:
    """A task folder or JSONL file, or a zoo task name (``tutti.zoo``)."""
    p = Path(task)
    if p.exists():
        return p
    from tutti.zoo.tasks import TASKS, task_path

    if str(task) in TASKS:
        return task_path(str(task), split).parent
    raise TuttiError(f"task {str(task)!r} is neither a folder/JSONL file nor a zoo task "
                     f"({', '.join(TASKS.names())})")


def default_utility(task: Path, split: str) -> str:
    """``mc_loglik`` for multiple-choice tasks, else ``exact_match``."""
    from tutti.evaluation.datasets import load_split

    first = load_split(task, split, limit=1)[0]
    return "mc_loglik" if first.choices is not None else "exact_match"


def evaluate(model: Model, task: str | Path, *, split: str = "dev", utility: str | None = None,
             options: dict[str, Any] | None = None, limit: int | None = None, batch_size: int = 16,
             out_dir: str | Path | None = None, progress: bool = True) -> EvalResult:
    """Evaluate ``model`` on one split of ``task`` with a registered utility.

    Args:
        model: any object with the model interface (model, merge, composite, remote endpoint).
        task: task folder / JSONL file / zoo task name.
        split: ``dev`` or ``test`` (or ``train``).
        utility: registered utility (default: ``mc_loglik`` for multiple choice, else ``exact_match``).
        options: utility options (template, chat, max_new_tokens, stop...). Default ``chat: true``: the zoo's
            inputs are user messages.
        limit: first ``limit`` examples only.
        batch_size: prompts per model call.
        out_dir: where to write ``predictions.jsonl`` and ``summary.json``.
        progress: show a progress bar.
    """
    from tutti.config.swarm import UtilityConfig
    from tutti.evaluation.utilities import build_utility

    path = resolve_task(task, split)
    name = utility or default_utility(path, split)
    opts = {"chat": True, "batch_size": batch_size, **(options or {})}
    cfg = UtilityConfig(name=name, task=str(path), split=split, limit=limit, options=opts)  # type: ignore[arg-type]
    util = build_utility(cfg, allow_test=True)  # evaluation reports test; searches never reach here
    metered = MeteredModel(model, batch_size=batch_size, progress=progress)
    t0 = time.perf_counter()
    res = util(metered)  # type: ignore[arg-type]
    wall = time.perf_counter() - t0
    examples = list(getattr(util, "examples", []))
    scores = [float(s) for s in res.scores]
    conf = [r["confidence"] for r in metered.records] if len(metered.records) == len(examples) else []
    result = EvalResult(model=metered.name, task=str(task), split=split, utility=name, accuracy=float(res.value),
                        examples=len(examples), generated_tokens=metered.tokens, model_calls=metered.calls,
                        wall_seconds=wall, scores=scores, predictions=[str(p) for p in res.predictions],
                        confidence=conf)
    if out_dir is not None:
        write_result(result, examples, metered.records, Path(out_dir))
    return result


def write_result(result: EvalResult, examples: Sequence[Any], records: Sequence[dict[str, float]], out: Path) -> None:
    """Write ``predictions.jsonl`` and ``summary.json`` into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    per = records if len(records) == len(examples) else [{} for _ in examples]
    with (out / "predictions.jsonl").open("w", encoding="utf-8") as fh:
        for i, e in enumerate(examples):
            row = {"id": e.id, "input": e.input, "target": e.target,
                   "prediction": result.predictions[i] if i < len(result.predictions) else None,
                   "score": result.scores[i] if i < len(result.scores) else None,
                   **{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in per[i].items()}}
            fh.write(json.dumps(row) + "\n")
    (out / "summary.json").write_text(json.dumps(result.summary(), indent=2) + "\n")


def slug(name: str) -> str:
    """A folder-safe version of a model name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_")[-80:] or "model"


def evaluate_many(models: Sequence[Model], task: str | Path, *, out_dir: str | Path, names: Sequence[str] | None = None,
                  **kw: Any) -> tuple[list[EvalResult], Any]:
    """Evaluate several models on the same split; write each one's files and the correctness ``matrix.jsonl``.

    Returns:
        (results, the :class:`tutti.routing.matrix.CorrectnessMatrix`).
    """
    import torch

    from tutti.evaluation.datasets import load_split
    from tutti.routing.matrix import CorrectnessMatrix

    out = Path(out_dir)
    names = list(names) if names is not None else [getattr(m, "name", f"model{i}") for i, m in enumerate(models)]
    if len(set(names)) != len(names):
        raise TuttiError(f"model names must be distinct for the correctness matrix: {names}")
    results = [evaluate(m, task, out_dir=out / slug(n), **kw) for m, n in zip(models, names, strict=True)]
    split = kw.get("split", "dev")
    exs = load_split(resolve_task(task, split), split, limit=kw.get("limit"))
    scores = torch.tensor([r.scores for r in results]).T
    conf = (torch.tensor([r.confidence for r in results]).T
            if all(len(r.confidence) == len(exs) for r in results) else None)
    task_name = Path(str(task)).stem if Path(str(task)).exists() else str(task)
    matrix = CorrectnessMatrix(tuple(e.id for e in exs), tuple(e.input for e in exs), tuple(names), scores,
                               (task_name,) * len(exs), conf)
    matrix.save(out / "matrix.jsonl")
    return results, matrix
