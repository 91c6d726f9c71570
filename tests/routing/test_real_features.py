"""Routers on real features: the SmolLM2 causal-LM featurizer separates task families well enough to route."""

from __future__ import annotations

import pytest
import torch

from tutti.routing.decide import choose
from tutti.routing.features import CausalLMFeatures
from tutti.routing.routers import build_router

MATH = [f"What is {a} times {b}? Answer with the number only." for a, b in [(3, 4), (7, 8), (12, 5), (9, 9), (6, 11),
                                                                             (4, 13), (15, 2), (8, 7)]]
GEO = [f"What is the capital of {c}? Answer with one word." for c in ["France", "Peru", "Kenya", "Japan", "Chile",
                                                                      "Egypt", "Norway", "Canada"]]


@pytest.mark.real_model
def test_causal_lm_features_route_task_families(smollm2) -> None:
    f = CausalLMFeatures(smollm2)
    x = f.features(MATH[:5] + GEO[:5])
    assert x.shape == (10, 576) and torch.allclose(x.norm(dim=-1), torch.ones(10), atol=1e-4)
    y = torch.tensor([[1.0, 0.0]] * 5 + [[0.0, 1.0]] * 5)  # model 0 is the math expert, model 1 the geography one
    for name in ("knn", "logistic"):
        r = build_router(name, **({"k": 3} if name == "knn" else {"steps": 100, "lr": 0.05})).fit(x, y)
        d = choose(r.predict(f.features(MATH[5:] + GEO[5:])))
        assert d.tolist() == [0, 0, 0, 1, 1, 1], name
