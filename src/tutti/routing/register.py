"""Registers the ``router`` and ``cascade`` strategies in :data:`tutti.collab.STRATEGIES`."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tutti.aggregate.config import parse_options
from tutti.aggregate.strategies import strategy_options
from tutti.collab.loader import STRATEGIES, load_member
from tutti.errors import TuttiError
from tutti.models.interface import SamplingParams
from tutti.routing.cascade import SCORERS, Cascade, VerifierScorer
from tutti.routing.config import CascadeOptions, RouterOptions
from tutti.routing.matrix import CorrectnessMatrix
from tutti.routing.strategy import RouterModel, read_prompts, train_router


def _name(cfg: Any, members: Sequence[Any]) -> str:
    return cfg.name or f"{cfg.strategy}:" + "+".join(str(getattr(m, "name", "?")) for m in members)


@STRATEGIES.register("router", pretty_name="Learned router (N models)", paper="https://arxiv.org/abs/2406.18665")
def build_router_model(cfg: Any, members: Sequence[Any]) -> RouterModel:
    """Route each prompt to one member with a router trained on a correctness matrix."""
    o = parse_options(RouterOptions, strategy_options(cfg), "router")
    matrix = CorrectnessMatrix.load(o.matrix)
    model = train_router(members, matrix, router=o.router, router_options=o.router_options, features=o.features,
                         features_model=o.features_model, columns=o.columns, costs=o.costs,
                         willingness=o.willingness, name=_name(cfg, members), store=o.store)
    if o.target_shares is not None:
        prompts = read_prompts(o.calibration_prompts) if o.calibration_prompts else list(matrix.prompts)
        model.calibrate(prompts, o.target_shares)
    return model


@STRATEGIES.register("cascade", pretty_name="Cascade (FrugalGPT / AutoMix)", paper="https://arxiv.org/abs/2305.05176")
def build_cascade(cfg: Any, members: Sequence[Any]) -> Cascade:
    """Try members cheapest first; escalate while the scorer is below the stage threshold."""
    o = parse_options(CascadeOptions, strategy_options(cfg), "cascade")
    if o.scorer == "verifier":
        scorer = VerifierScorer(load_member(o.verifier, dtype=cfg.dtype), **o.scorer_options)
    else:
        scorer = SCORERS.get(o.scorer)(**o.scorer_options)
    n = len(members)
    thresholds = list(o.thresholds) if o.thresholds is not None else [0.0] * (n - 1)
    cascade = Cascade(members, scorer, thresholds, costs=o.costs, name=_name(cfg, members))
    if o.fit is not None and "matrix" in o.fit:
        if o.scorer != "probability":
            raise TuttiError("cascade fit: a correctness matrix holds each member's answer probability, which is "
                             "the 'probability' scorer; for another scorer learn on a task (fit: {task: ...})")
        fit_from_matrix(cascade, dict(o.fit))
    elif o.fit is not None:
        fit_from_task(cascade, dict(o.fit))
    return cascade


def fit_from_matrix(cascade: Cascade, fit: dict[str, Any]) -> list[float]:
    """Learn a cascade's thresholds from a dev correctness matrix with ``confidence`` (``tutti eval`` writes one).

    ``fit``: ``matrix`` (JSONL path), ``columns`` (the matrix column of each member; default: the members'
    names), ``max_cost``, ``cost_weight``. No member is called: the matrix already holds each member's answer
    probability (the ``probability`` scorer's value) and score on every dev prompt.
    """
    from tutti.routing.cascade import learn_thresholds

    known = {"matrix", "columns", "max_cost", "cost_weight"}
    if set(fit) - known:
        raise TuttiError(f"cascade fit from a matrix: unknown keys {sorted(set(fit) - known)}; known: {sorted(known)}")
    matrix = CorrectnessMatrix.load(fit["matrix"])
    columns = list(fit.get("columns") or [str(getattr(m, "name", "")) for m in cascade.members])
    if len(columns) != len(cascade.members):
        raise TuttiError(f"cascade fit: {len(columns)} columns for {len(cascade.members)} members")
    sub = matrix.select(models=columns)
    if sub.confidence is None:
        raise TuttiError(f"cascade fit: {fit['matrix']} has no 'confidence' per model; write it with 'tutti eval' "
                         "(generation tasks record each answer's probability)")
    cascade.thresholds = learn_thresholds(sub.confidence, sub.scores, cascade.costs, max_cost=fit.get("max_cost"),
                                          cost_weight=float(fit.get("cost_weight", 0.0)))
    return cascade.thresholds


def fit_from_task(cascade: Cascade, fit: dict[str, Any]) -> list[float]:
    """Learn a cascade's thresholds on a task split (``task``, ``split``, ``metric``, ``limit``, ``max_cost``,
    ``cost_weight``, ``max_new_tokens``, ``chat``)."""
    from tutti.evaluation.datasets import load_split
    from tutti.evaluation.metrics import exact_match, token_f1

    metrics = {"exact_match": exact_match, "token_f1": token_f1}
    known = {"task", "split", "metric", "limit", "max_cost", "cost_weight", "max_new_tokens", "chat"}
    if set(fit) - known or "task" not in fit:
        raise TuttiError(f"cascade fit: needs 'task'; known keys: {sorted(known)}")
    split = fit.get("split", "dev")
    if split == "test":
        raise TuttiError("cascade fit: thresholds are learned on dev (or train), never on test")
    metric = fit.get("metric", "exact_match")
    if metric not in metrics:
        raise TuttiError(f"cascade fit: metric {metric!r}; use one of {sorted(metrics)}")
    task = str(fit["task"])
    if not Path(task).exists():
        from tutti.zoo.tasks import task_path

        task = str(task_path(task, split).parent)
    exs = load_split(task, split, limit=fit.get("limit"))
    prompts: list[Any] = [[{"role": "user", "content": e.input}] if fit.get("chat", True) else e.input for e in exs]
    params = SamplingParams(max_new_tokens=int(fit.get("max_new_tokens", 32)), stop=("\n",))
    return cascade.fit(prompts, [e.target for e in exs], metric=metrics[metric], params=params,
                       max_cost=fit.get("max_cost"), cost_weight=float(fit.get("cost_weight", 0.0)))
