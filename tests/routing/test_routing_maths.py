"""Routers, decisions, calibration and RouteLLM metrics on synthetic and hand-computed data."""

from __future__ import annotations

import pytest
import torch

from tutti.errors import TuttiError
from tutti.routing.decide import calibrate_offsets, choose, shares
from tutti.routing.metrics import evaluate_router
from tutti.routing.routers import ROUTERS, KNNRouter, build_router


def clusters(n: int, seed: int, m: int = 3, d: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """Prompts in m clusters; model j is right on cluster j 90% of the time, elsewhere 30%."""
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(m, d, generator=torch.Generator().manual_seed(123)) * 3
    c = torch.randint(0, m, (n,), generator=g)
    x = centers[c] + torch.randn(n, d, generator=g)
    p = torch.full((n, m), 0.3)
    p[torch.arange(n), c] = 0.9
    return x, (torch.rand(n, m, generator=g) < p).float()


def test_choose_ties_and_costs() -> None:
    pred = torch.tensor([[0.5, 0.5], [0.2, 0.9], [0.9, 0.2]])
    assert choose(pred).tolist() == [0, 1, 0]  # tie -> first
    assert choose(pred, costs=[0.0, 1.0], willingness=0.8).tolist() == [0, 0, 0]
    assert choose(pred, offsets=[0.0, 0.75]).tolist() == [1, 1, 1]


def test_knn_exact() -> None:
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.1]])
    y = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    r = KNNRouter(k=1).fit(x, y)
    assert r.predict(torch.tensor([[0.1, 1.0], [1.0, 0.0]])).tolist() == [[0.0, 1.0], [1.0, 0.0]]


@pytest.mark.parametrize("name", ["knn", "logistic", "mlp", "mf"])
def test_learned_routers_beat_best_single_and_random(name: str) -> None:
    xtr, ytr = clusters(600, 0)
    xte, yte = clusters(600, 1)
    r = build_router(name, seed=0, **({} if name == "knn" else {"steps": 60, "lr": 0.05})).fit(xtr, ytr)
    pred = r.predict(xte)
    assert pred.shape == (600, 3) and float(pred.min()) >= 0 and float(pred.max()) <= 1
    acc = float(yte[torch.arange(600), choose(pred)].mean())
    best_single = float(yte.mean(0).max())
    rnd = build_router("random", seed=0).fit(xtr, ytr).predict(xte)
    acc_rnd = float(yte[torch.arange(600), choose(rnd)].mean())
    assert acc > best_single + 0.3 and acc > acc_rnd + 0.3, (acc, best_single, acc_rnd)


def test_router_registry_errors() -> None:
    with pytest.raises(TuttiError, match="Did you mean 'knn'"):
        build_router("kn")
    with pytest.raises(TuttiError, match="unexpected keyword"):
        build_router("knn", depth=3)
    assert {"knn", "logistic", "mlp", "mf", "random"} <= set(ROUTERS.names())


@pytest.fixture(scope="module")
def logistic_router():
    xtr, ytr = clusters(600, 0)
    return build_router("logistic", seed=0, steps=60, lr=0.05).fit(xtr, ytr)


@pytest.mark.parametrize("target", [(0.5, 0.3, 0.2), (0.1, 0.1, 0.8), (0.34, 0.33, 0.33)])
def test_calibration_hits_target_share_on_held_out_prompts(logistic_router, target: tuple[float, ...]) -> None:
    r = logistic_router
    calib, _ = clusters(3000, 2)  # the user's own prompts (no labels needed)
    held, _ = clusters(5000, 3)
    off = calibrate_offsets(r.predict(calib), target)
    got = shares(choose(r.predict(calib), offsets=off), 3)
    assert torch.allclose(got, torch.tensor(target, dtype=torch.float64), atol=1e-3)
    held_shares = shares(choose(r.predict(held), offsets=off), 3)
    assert (held_shares - torch.tensor(target, dtype=torch.float64)).abs().max() < 0.02, held_shares


def test_two_model_calibration_is_a_quantile() -> None:
    pred = torch.stack([torch.zeros(1000), torch.linspace(0, 1, 1000)], 1)
    off = calibrate_offsets(pred, [0.7, 0.3])
    assert int((choose(pred, offsets=off) == 1).sum()) == 300


def test_bad_targets() -> None:
    with pytest.raises(TuttiError, match="summing to 1"):
        calibrate_offsets(torch.zeros(4, 2), [0.5, 0.6])


def test_metrics_hand_computed() -> None:
    # weak right on rows 0,3; strong right on rows 0,1,2. Perfect predictions.
    scores = torch.tensor([[1.0, 1.0], [0.0, 1.0], [0.0, 1.0], [1.0, 0.0]])
    rep = evaluate_router(scores.clone(), scores, [0.0, 1.0])
    assert (rep.weak, rep.strong, rep.acc_weak, rep.acc_strong, rep.oracle) == (0, 1, 0.5, 0.75, 1.0)
    # curve: lambda 0 -> rows 0 (tie->weak),1,2 strong,3 weak: cost .5, acc 1; lambda>1 -> all weak
    assert rep.curve == ((0.0, 0.5), (0.5, 1.0), (1.0, 0.75))
    assert rep.auc == pytest.approx(0.5 * 0.75 + 0.5 * 0.875)
    assert rep.apgr == pytest.approx((0.8125 - 0.5) / 0.25)
    assert rep.cpt50 == pytest.approx(0.125) and rep.cpt80 == pytest.approx(0.2)


def test_random_router_apgr_about_half() -> None:
    g = torch.Generator().manual_seed(5)
    x = torch.randn(4000, 4, generator=g)
    y = (torch.rand(4000, 2, generator=g) < torch.tensor([0.4, 0.7])).float()  # weak 40%, strong 70%
    pred = build_router("random", seed=1).fit(x, y).predict(x)
    rep = evaluate_router(pred, y, [0.0, 1.0], weak=0, strong=1)
    assert abs(rep.apgr - 0.5) < 0.1 and rep.random_apgr == 0.5


@pytest.mark.parametrize("name", ["logistic", "mf"])
def test_heads_train_on_inference_mode_features(name: str) -> None:
    with torch.inference_mode():  # what featurizers may hand over
        x = torch.randn(20, 4)
    y = (x[:, :2] > 0).float()
    pred = build_router(name, steps=5).fit(x, y).predict(x)
    assert pred.shape == (20, 2)
