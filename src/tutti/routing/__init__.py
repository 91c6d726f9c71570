"""Before inference: routers over N models and cascades, trained from the correctness matrix ``tutti eval`` writes.

Strategies (composite ``strategy:`` names in :data:`tutti.collab.STRATEGIES`): ``router`` and ``cascade``.
Python API::

    from tutti.routing import CorrectnessMatrix, build_router, evaluate_router, train_router
    model = train_router(members, CorrectnessMatrix.load("runs/dev/matrix.jsonl"), router="mf")
    model.calibrate(my_prompts, [0.7, 0.3])       # 70% of my traffic to member 0
"""

from tutti.routing.cascade import SCORERS, Cascade, learn_thresholds, simulate
from tutti.routing.decide import calibrate_offsets, choose, shares
from tutti.routing.matrix import CorrectnessMatrix
from tutti.routing.metrics import RoutingReport, evaluate_router, routing_curve
from tutti.routing.routers import ROUTERS, build_router
from tutti.routing.strategy import RouterModel, train_router

__all__ = [
    "ROUTERS", "SCORERS", "Cascade", "CorrectnessMatrix", "RouterModel", "RoutingReport", "build_router",
    "calibrate_offsets", "choose", "evaluate_router", "learn_thresholds", "routing_curve", "shares", "simulate",
    "train_router",
]
