"""Routing metrics (RouteLLM, arXiv 2406.18665): accuracy-vs-cost curve, AUC, APGR, CPT(50%), CPT(80%).

The cost axis is normalised so the *weak* model alone is 0 and the *strong* model alone is 1 (for two models:
the share of calls to the strong one). Defaults: weak = the cheapest model, strong = the most accurate one.
``AUC`` is the area under accuracy over that axis on [0, 1]; ``APGR = (AUC - acc_weak) / (acc_strong -
acc_weak)`` (random routing scores 0.5); ``CPT(x)`` is the least normalised cost whose accuracy recovers x of
the weak-to-strong gap. The curve of a router comes from sweeping its willingness to pay.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from tutti.errors import TuttiError
from tutti.routing.decide import choose


@dataclass(frozen=True)
class RoutingReport:
    """Quality of a router on a scored set.

    Args:
        curve: ``(normalised cost, accuracy)`` points sorted by cost, endpoints included.
        auc, apgr: area under the curve and average performance gap recovered.
        cpt50, cpt80: normalised cost to recover 50% / 80% of the gap (None if never).
        weak, strong: model indices of the two anchors; acc_weak, acc_strong their accuracies.
        best_single: accuracy of the best single model; oracle: accuracy of always picking a correct model.
        random_apgr: APGR of random routing (0.5 by construction, reported for the table).
    """

    curve: tuple[tuple[float, float], ...]
    auc: float
    apgr: float
    cpt50: float | None
    cpt80: float | None
    weak: int
    strong: int
    acc_weak: float
    acc_strong: float
    best_single: float
    oracle: float
    random_apgr: float = 0.5


def _breakpoints(pred: torch.Tensor, costs: torch.Tensor, points: int) -> list[float]:
    dc = costs.unsqueeze(0) - costs.unsqueeze(1)  # (m, m): c_b - c_a
    dp = pred.unsqueeze(-1) - pred.unsqueeze(1)  # (n, m, m): p_a - p_b
    lam = (dp / dc.where(dc > 0, torch.tensor(float("nan"), dtype=dc.dtype)).unsqueeze(0))
    lam = lam[torch.isfinite(lam) & (lam > 0)]
    if lam.numel() == 0:
        return [0.0]
    qs = torch.quantile(lam.double(), torch.linspace(0, 1, points, dtype=torch.float64)).tolist()
    return [0.0, *[q * (1 + 1e-9) for q in qs], float(lam.max()) * 2 + 1]


def routing_curve(pred: torch.Tensor, scores: torch.Tensor, costs: Sequence[float], *, weak: int, strong: int,
                  points: int = 101) -> list[tuple[float, float]]:
    """Accuracy against normalised cost for willingness-to-pay values from 0 up to "always cheapest"."""
    c = torch.as_tensor(costs, dtype=torch.float64)
    lo, hi = float(c[weak]), float(c[strong])
    if hi <= lo:
        raise TuttiError("routing curve: the strong model must cost more than the weak one")
    out = {(0.0, float(scores[:, weak].mean())), (1.0, float(scores[:, strong].mean()))}
    rows = torch.arange(len(scores))
    for lam in _breakpoints(pred.double(), c, points):
        d = choose(pred, costs=c, willingness=lam)
        out.add(((float(c[d].mean()) - lo) / (hi - lo), float(scores[rows, d].float().mean())))
    pts = sorted(out)
    return [(x, y) for x, y in pts if -1e-9 <= x <= 1 + 1e-9]


def evaluate_router(pred: torch.Tensor, scores: torch.Tensor, costs: Sequence[float], *, weak: int | None = None,
                    strong: int | None = None, points: int = 101) -> RoutingReport:
    """All routing metrics of predictions ``pred`` against true ``scores`` (both ``(n, m)``)."""
    c = torch.as_tensor(costs, dtype=torch.float64)
    acc = scores.float().mean(0)
    weak = int(c.argmin()) if weak is None else weak
    strong = int(acc.argmax()) if strong is None else strong
    curve = routing_curve(pred, scores, costs, weak=weak, strong=strong, points=points)
    if curve[0][0] > 0:
        curve.insert(0, (0.0, curve[0][1]))
    aw, as_ = float(acc[weak]), float(acc[strong])
    auc, apgr, cpt50, cpt80 = curve_metrics(curve, aw, as_)
    return RoutingReport(tuple(curve), auc, apgr, cpt50, cpt80, weak, strong, aw, as_,
                         float(acc.max()), float(scores.max(1).values.float().mean()))


def curve_metrics(curve: Sequence[tuple[float, float]], acc_weak: float, acc_strong: float
                  ) -> tuple[float, float, float | None, float | None]:
    """``(AUC, APGR, CPT(50%), CPT(80%))`` of an accuracy-vs-normalised-cost curve sorted by cost on [0, 1].

    Any curve works (a router's, or a cascade's swept over its threshold); random routing between the two anchors
    is the straight line, APGR 0.5.
    """
    auc = sum((x1 - x0) * (y0 + y1) / 2 for (x0, y0), (x1, y1) in itertools.pairwise(curve))
    gap = acc_strong - acc_weak
    apgr = (auc - acc_weak) / gap if gap > 0 else float("nan")

    def cpt(f: float) -> float | None:
        goal = acc_weak + f * gap
        if curve and curve[0][1] >= goal:
            return curve[0][0]
        for (x0, y0), (x1, y1) in itertools.pairwise(curve):
            if y0 >= goal:
                return x0
            if y1 >= goal:
                return x0 + (x1 - x0) * (goal - y0) / (y1 - y0)
        return None

    return auc, apgr, cpt(0.5), cpt(0.8)


def accuracy_at(pred: torch.Tensor, scores: torch.Tensor, **decision: object) -> tuple[float, torch.Tensor]:
    """Accuracy and choices of one operating point (``decision``: costs / willingness / offsets of ``choose``)."""
    d = choose(pred, **decision)  # type: ignore[arg-type]
    return float(scores[torch.arange(len(scores)), d].float().mean()), d
