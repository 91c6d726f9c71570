"""The paper's baselines with the same experts, the same utility and the same dev/test discipline.

Every baseline picks its answer on the dev split only; the test split (when the task has one) is scored once
at the end and reported apart. Weight-space baselines call the in-memory merge API (:mod:`tutti.merging`).
For LoRA experts, the sparsifying and spherical methods (TIES, DARE-TIES, SLERP, model stock, evolutionary
merge) act on the dense deltas ``B·A`` (task vectors with base 0), where they are defined; the linear ones
(soups, task arithmetic, LoraHub) act in the config's representation, as LoraHub does on the factors.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from tutti.config.swarm import SwarmConfig, UtilityConfig
from tutti.errors import NotApplicableError, TuttiError
from tutti.evaluation.utilities import UtilityResult
from tutti.registry import Registry

Baseline = Callable[["BaselineContext"], torch.Tensor | dict[str, Any]]
BASELINES = Registry[Baseline]("baseline")
SCALE_GRID = (0.25, 0.5, 0.75, 1.0)  # lambda grid (picked on dev) for task arithmetic, TIES, DARE-TIES
NONLINEAR = {"ties", "dare_ties", "slerp", "model_stock", "evolutionary"}


class BaselineContext:
    """Experts as vectors, a resident evaluator, and helpers to merge and score on dev."""

    def __init__(self, cfg: SwarmConfig, kind: str, log: Callable[[str], None]) -> None:
        from tutti.swarm.engine import Evaluator
        from tutti.swarm.particles import load_experts

        self.cfg, self.log = cfg, log
        self.rep, self.experts = load_experts(kind, cfg.experts, cfg.base)
        self.ev = Evaluator(self.rep, cfg.utility, allow_test=cfg.allow_test_set_in_search,
                            batch_size=cfg.batch_size, dtype=cfg.dtype, device=cfg.device)
        self.base = self._base_vector()
        self.evaluations = 0
        self._dev: list[float] | None = None

    def _base_vector(self) -> torch.Tensor:
        if self.rep.kind != "dense":
            return torch.zeros(self.experts.shape[1])  # LoRA tensors are already deltas
        from tutti.models.checkpoint import Checkpoint

        ck = Checkpoint(self.rep.base)
        return self.rep.layout.flatten({n: ck.get(n) for n in self.rep.layout.names})

    def score(self, vec: torch.Tensor) -> float:
        """Dev utility of a candidate (NaN counts as -inf)."""
        self.evaluations += 1
        v = self.ev.evaluate(vec).value
        return v if math.isfinite(v) else -math.inf

    def expert_scores(self) -> list[float]:
        """Dev utility of every expert (computed once)."""
        if self._dev is None:
            self._dev = [self.score(e) for e in self.experts]
            self.log("experts on dev: " + ", ".join(f"{v:.4f}" for v in self._dev))
        return self._dev

    def merge(self, method: str, vecs: Sequence[torch.Tensor], base: torch.Tensor | None, **params: Any) -> torch.Tensor:
        """Merge particle vectors tensor by tensor with a registered merge method."""
        from tutti.merging import merge_state_dicts

        sds = [self.rep.layout.unflatten(v) for v in vecs]
        b = self.rep.layout.unflatten(base) if base is not None else None
        out = merge_state_dicts(method, sds, base=b, seed=self.cfg.seed, **params)
        return self.rep.layout.flatten(out)

    def best_of(self, cands: dict[str, torch.Tensor]) -> tuple[str, torch.Tensor]:
        """The candidate with the best dev utility (first on ties)."""
        scored = {k: self.score(v) for k, v in cands.items()}
        self.log("; ".join(f"{k}: {v:.4f}" for k, v in scored.items()))
        k = max(scored, key=lambda x: scored[x])
        return k, cands[k]


def prepare_baseline(name: str, cfg: SwarmConfig, *, log: Callable[[str], None] | None = None
                     ) -> tuple[BaselineContext, torch.Tensor | dict[str, Any]]:
    """Run baseline ``name`` on dev: its context (resident model, evaluation count) and its result.

    The result is a particle vector (weight-space baselines) or a dict with ``dev`` and ``experts_dev``
    (prediction-level baselines, which have no weights). The final dev score of a vector is not taken yet:
    :func:`final_dev` takes it and counts it.
    """
    fn = BASELINES.get(name)
    kind = "lora_delta" if name in NONLINEAR and cfg.representation == "lora_factors" else cfg.representation
    ctx = BaselineContext(cfg, kind, log or (lambda _m: None))
    return ctx, fn(ctx)


def final_dev(ctx: BaselineContext, res: torch.Tensor | dict[str, Any]) -> float:
    """The dev utility of the baseline's answer, counted as one utility evaluation when it is computed here."""
    if isinstance(res, dict):
        return float(res["dev"])  # the vote already scored (and counted) every expert on dev
    ctx.evaluations += 1
    return ctx.ev.evaluate(res).value


def score_split(ctx: BaselineContext, res: torch.Tensor | dict[str, Any], utility: UtilityConfig) -> UtilityResult:
    """Per-example scores of the baseline's answer under another utility (a test split: reporting, not counted).

    A prediction-level result votes again over the experts' answers to ``utility``'s examples, with ties broken
    by the experts' *dev* ranking, so the test split never influences the vote.
    """
    from tutti.evaluation.utilities import build_utility

    u = build_utility(utility, allow_test=True)
    if not isinstance(res, dict):
        ctx.ev.swapper.load(res)
        return u(ctx.ev.model)
    devs = res["experts_dev"]
    order = sorted(range(len(devs)), key=lambda i: (-devs[i], i))
    scores = _vote(ctx, u, order)[0]
    return UtilityResult(sum(scores) / len(scores), tuple(scores))


def run_baseline(name: str, cfg: SwarmConfig, out_dir: str | Path, *, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run baseline ``name`` and write ``baseline.json`` (dev, test, evaluations) and ``best/`` to ``out_dir``.

    ``evaluations`` counts every dev utility evaluation, the final dev scoring included; the test split is
    scored once for the report and not counted.
    """
    from tutti.swarm.particles import save_particle
    from tutti.swarm.run import _test_split

    ctx, res = prepare_baseline(name, cfg, log=log)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    test_cfg = _test_split(cfg)
    dev = final_dev(ctx, res)
    test = score_split(ctx, res, test_cfg).value if test_cfg is not None else None
    if isinstance(res, dict):  # prediction merge: no weights
        summary = {"baseline": name, **res, "test": test, "path": None}
    else:
        path = save_particle(ctx.rep, res, out / "best", model=ctx.ev.model, swapper=ctx.ev.swapper,
                             readme=f"# Baseline {name}\n\nMade by `tutti swarm --baseline {name}`; dev utility {dev:.4f}.\n")
        summary = {"baseline": name, "dev": dev, "test": test, "path": str(path), "representation": ctx.rep.kind}
    summary["evaluations"] = ctx.evaluations
    (out / "baseline.json").write_text(json.dumps(summary, indent=2))
    return summary


# ---------------------------------------------------------------------------------------------- static
@BASELINES.register("best_single", pretty_name="best single expert")
def best_single(ctx: BaselineContext) -> torch.Tensor:
    """The expert with the best dev utility."""
    s = ctx.expert_scores()
    return ctx.experts[max(range(len(s)), key=lambda i: (s[i], -i))]


@BASELINES.register("uniform_soup", pretty_name="uniform soup", paper="https://arxiv.org/abs/2203.05482")
def uniform_soup(ctx: BaselineContext) -> torch.Tensor:
    """The mean of all experts."""
    return ctx.experts.mean(0)


@BASELINES.register("task_arithmetic", pretty_name="task arithmetic", paper="https://arxiv.org/abs/2212.04089")
def task_arithmetic(ctx: BaselineContext) -> torch.Tensor:
    """base + lambda * sum of task vectors, lambda picked on dev."""
    vs = list(ctx.experts)
    return ctx.best_of({f"lambda={s}": ctx.merge("task_arithmetic", vs, ctx.base, weight=1.0, **{"lambda": s})
                        for s in SCALE_GRID})[1]


@BASELINES.register("ties", pretty_name="TIES", paper="https://arxiv.org/abs/2306.01708")
def ties(ctx: BaselineContext) -> torch.Tensor:
    """TIES (density 0.5, weight 1, normalised), lambda picked on dev."""
    vs = list(ctx.experts)
    return ctx.best_of({f"lambda={s}": ctx.merge("ties", vs, ctx.base, weight=1.0, density=0.5, **{"lambda": s})
                        for s in SCALE_GRID})[1]


@BASELINES.register("dare_ties", pretty_name="DARE-TIES", paper="https://arxiv.org/abs/2311.03099")
def dare_ties(ctx: BaselineContext) -> torch.Tensor:
    """DARE-TIES (density 0.5, weight 1, rescaled), lambda picked on dev; drops seeded by the config seed."""
    vs = list(ctx.experts)
    return ctx.best_of({f"lambda={s}": ctx.merge("dare_ties", vs, ctx.base, weight=1.0, density=0.5,
                                                 **{"lambda": s}) for s in SCALE_GRID})[1]


@BASELINES.register("slerp", pretty_name="SLERP of the two best")
def slerp(ctx: BaselineContext) -> torch.Tensor:
    """Spherical interpolation between the two best experts on dev, t in {0.25, 0.5, 0.75} picked on dev."""
    s = ctx.expert_scores()
    a, b = sorted(range(len(s)), key=lambda i: (-s[i], i))[:2]
    return ctx.best_of({f"t={t}": ctx.merge("slerp", [ctx.experts[b]], ctx.experts[a], t=t)
                        for t in (0.25, 0.5, 0.75)})[1]


@BASELINES.register("model_stock", pretty_name="model stock", paper="https://arxiv.org/abs/2403.19522")
def model_stock(ctx: BaselineContext) -> torch.Tensor:
    """Model stock: the experts' mean pulled toward the base by their angle."""
    return ctx.merge("model_stock", list(ctx.experts), ctx.base)


# ---------------------------------------------------------------------------------------------- dynamic
@BASELINES.register("greedy_soup", pretty_name="greedy soup", paper="https://arxiv.org/abs/2203.05482")
def greedy_soup(ctx: BaselineContext) -> torch.Tensor:
    """Add experts best-first to a uniform soup, keeping each only if dev utility does not drop."""
    s = ctx.expert_scores()
    order = sorted(range(len(s)), key=lambda i: (-s[i], i))
    soup, best = [order[0]], s[order[0]]
    for i in order[1:]:
        v = ctx.score(ctx.experts[[*soup, i]].mean(0))
        if v >= best:
            soup, best = [*soup, i], v
    ctx.log(f"greedy soup keeps experts {soup}")
    return ctx.experts[soup].mean(0)


@BASELINES.register("lorahub", pretty_name="LoraHub", paper="https://arxiv.org/abs/2307.13269")
def lorahub(ctx: BaselineContext, budget: int = 40, l1: float = 0.05) -> torch.Tensor:
    """Gradient-free search (nevergrad NGOpt) of one weight per expert in [-1.5, 1.5], init 0, with an L1 penalty."""
    import nevergrad as ng
    import numpy as np

    n = ctx.experts.shape[0]
    param = ng.p.Array(init=np.zeros(n), lower=-1.5, upper=1.5)
    param.random_state = np.random.RandomState(ctx.cfg.seed)
    opt = ng.optimizers.NGOpt(parametrization=param, budget=budget)

    def loss(w: np.ndarray) -> float:
        vec = (torch.tensor(w, dtype=torch.float32)[:, None] * ctx.experts).sum(0)
        return -ctx.score(vec) + l1 * float(np.abs(w).mean())

    rec = opt.minimize(loss)
    w = torch.tensor(rec.value, dtype=torch.float32)
    ctx.log(f"lorahub weights {[round(float(x), 3) for x in w]}")
    return (w[:, None] * ctx.experts).sum(0)


@BASELINES.register("evolutionary", pretty_name="evolutionary merge (CMA-ES over DARE-TIES)",
                    paper="https://arxiv.org/abs/2403.13187")
def evolutionary(ctx: BaselineContext, budget: int = 40) -> torch.Tensor:
    """CMA-ES over one (weight, density) pair per expert of a DARE-TIES merge, as mergekit-evolve does."""
    import cma

    n = ctx.experts.shape[0]
    es = cma.CMAEvolutionStrategy([0.5] * n + [0.7] * n, 0.2,
                                  {"bounds": [[0.0] * n + [0.05] * n, [1.5] * n + [1.0] * n],
                                   "seed": ctx.cfg.seed + 1, "maxfevals": budget, "verbose": -9})
    best, best_v = None, -math.inf
    while not es.stop():
        xs = es.ask()
        fs = []
        for x in xs:
            vec = ctx.merge("dare_ties", list(ctx.experts), ctx.base, weight=list(x[:n]), density=list(x[n:]))
            v = ctx.score(vec)
            fs.append(-v)
            if v > best_v:
                best, best_v = vec, v
        es.tell(xs, fs)
    if best is None:  # every candidate scored NaN (-inf): say so instead of CMA-ES failing on it
        raise TuttiError(f"evolutionary: none of the {es.countevals} candidate merges could be evaluated (every "
                         "utility value was NaN); the evaluation errors are in the log above")
    return best


def _answers(ctx: BaselineContext, u: Any) -> tuple[list[float], list[tuple[str, ...]]]:
    """Every expert's value and answers under utility ``u`` (one evaluation per expert)."""
    if u.name not in _SCORERS:
        raise NotApplicableError(f"prediction_merge needs answers to vote on; utility {u.name!r} has none "
                                 f"(use one of {', '.join(_SCORERS)})")
    values, preds = [], []
    for e in ctx.experts:
        ctx.ev.swapper.load(e)
        r = u(ctx.ev.model)
        values.append(r.value)
        preds.append(r.predictions)
    return values, preds


def _majority(u: Any, preds: list[tuple[str, ...]], order: list[int]) -> list[float]:
    """Per-example score of the majority answer; ties go to the first expert of ``order`` among the tied."""
    from tutti.evaluation.metrics import extract_answer, normalize_text

    scores = []
    for j, ex in enumerate(u.examples):
        votes = Counter(normalize_text(extract_answer(preds[i][j])) for i in order)
        top = max(votes.values())
        winner = next(preds[i][j] for i in order if votes[normalize_text(extract_answer(preds[i][j]))] == top)
        scores.append(_SCORERS[u.name](winner, ex))
    return scores


def _vote(ctx: BaselineContext, u: Any, order: list[int]) -> tuple[list[float], list[float]]:
    """Per-example scores of the experts' majority answer under ``u``, and each expert's value."""
    values, preds = _answers(ctx, u)
    return _majority(u, preds, order), values


@BASELINES.register("prediction_merge", pretty_name="prediction merge (majority vote)")
def prediction_merge(ctx: BaselineContext) -> dict[str, Any]:
    """Majority vote over the experts' answers per example (ties go to the best expert on dev)."""
    u = ctx.ev.utility
    devs, preds = _answers(ctx, u)
    ctx.evaluations += len(devs)
    scores = _majority(u, preds, sorted(range(len(devs)), key=lambda i: (-devs[i], i)))
    return {"dev": sum(scores) / len(scores), "test": None, "path": None, "experts_dev": devs}


def _scorers() -> dict[str, Callable[[str, Any], float]]:
    from tutti.evaluation.metrics import exact_match, parse_choice, token_f1

    return {
        "mc_loglik": lambda p, e: float(p == e.target),
        "mc_generate": lambda p, e: float(parse_choice(p, e.choices) == e.answer_index),
        "exact_match": lambda p, e: exact_match(p, e.target),
        "token_f1": lambda p, e: token_f1(p, e.target),
    }


_SCORERS = _scorers()
