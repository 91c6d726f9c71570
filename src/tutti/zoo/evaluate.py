"""Greedy exact-match accuracy of the base model and of each expert on the zoo tasks.

An expert is evaluated by adding its dense LoRA update ``B @ A * scale`` to a copy of the base weights and
loading that into the one base model in memory, so the matrix needs one model load, not one per expert.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from tutti.zoo.metrics import exact_match

#: New tokens per answer: every zoo answer is one short word or number.
MAX_NEW_TOKENS = 8


def accuracy(model: Any, rows: Sequence[dict[str, Any]], *, max_new_tokens: int = MAX_NEW_TOKENS) -> float:
    """Share of ``rows`` whose greedy answer from ``model`` (an :class:`~tutti.models.hf.HFModel`) matches."""
    from tutti.models.interface import SamplingParams

    if not rows:
        return float("nan")
    prompts = [[{"role": "user", "content": r["input"]}] for r in rows]
    outs = model.generate(prompts, params=SamplingParams(max_new_tokens=max_new_tokens))
    hits = sum(exact_match(o[0].text, r["target"]) for o, r in zip(outs, rows, strict=True))
    return hits / len(rows)


def greedy_accuracy(model: Any, rows: Sequence[dict[str, Any]]) -> float:
    """Share of ``rows`` whose greedy decoding would be exactly ``target`` then end-of-turn.

    One teacher-forced forward pass per example instead of a decoding loop: greedy decoding emits the target
    and stops if and only if, at every answer position, the most likely token is the next target token and
    then the end-of-turn token. Stricter than :func:`accuracy` (no normalisation: ``"Paris."`` fails).
    """
    if not rows:
        return float("nan")
    eot = model.tokenizer.eos_token or ""
    reqs = [([{"role": "user", "content": r["input"]}], r["target"] + eot) for r in rows]
    return sum(res.is_greedy for res in model.loglikelihood(reqs)) / len(rows)


class ExpertSwitcher:
    """Loads experts into one base :class:`~tutti.models.hf.HFModel` in turn (and back to the base).

    Args:
        model: the base model; its weights are replaced in place while an expert is active.
    """

    def __init__(self, model: Any) -> None:
        self.model = model
        self.base = {k: v.detach().clone() for k, v in model.module.state_dict().items()}

    def use(self, adapter_dir: str | Path | None) -> None:
        """Activate the expert in ``adapter_dir``, or the plain base model for ``None``."""
        from tutti.models.lora import apply_lora, load_lora

        state = self.base if adapter_dir is None else apply_lora(self.base, load_lora(adapter_dir))
        with torch.no_grad():
            self.model.module.load_state_dict(state, strict=True)


def expert_task_matrix(
    model: Any,
    experts: dict[str, Path | None],
    tasks: dict[str, Sequence[dict[str, Any]]],
    *,
    on_cell: Callable[[str, str, float], None] | None = None,
    metric: Callable[[Any, Sequence[dict[str, Any]]], float] = greedy_accuracy,
) -> dict[str, dict[str, float]]:
    """Accuracy of every expert (``None`` = the base model) on every task's rows.

    Args:
        model: the base :class:`~tutti.models.hf.HFModel` (restored to the base weights at the end).
        experts: display name -> PEFT folder (``None`` for the base model).
        tasks: task name -> rows to score.
        on_cell: called with ``(expert, task, accuracy)`` after each cell.
        metric: ``(model, rows) -> accuracy``; :func:`greedy_accuracy` (default) or :func:`accuracy`.

    Returns:
        ``{expert: {task: accuracy}}``.
    """
    switcher = ExpertSwitcher(model)
    out: dict[str, dict[str, float]] = {}
    try:
        for ename, path in experts.items():
            switcher.use(path)
            out[ename] = {}
            for tname, rows in tasks.items():
                out[ename][tname] = metric(model, rows)
                if on_cell:
                    on_cell(ename, tname, out[ename][tname])
    finally:
        switcher.use(None)
    return out
