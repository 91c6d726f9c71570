"""Baselines on the tiny LoRA experts: same inputs, same utility, chosen on dev, test reported apart."""

from __future__ import annotations

import json

import pytest

from tutti.config.swarm import SwarmConfig, UtilityConfig


def cfg(setup, name="mean_loglik") -> SwarmConfig:
    return SwarmConfig(experts=[str(e) for e in setup["experts"]], seed=0,
                       utility=UtilityConfig(name=name, task=str(setup["task"]), options={"choice_prefix": ""}))


def test_static_baselines(swarm_setup, tmp_path):
    from tutti.swarm.baselines import run_baseline

    c = cfg(swarm_setup)
    res = {n: run_baseline(n, c, tmp_path / n) for n in ("best_single", "uniform_soup", "greedy_soup",
                                                          "task_arithmetic", "ties", "dare_ties", "slerp",
                                                          "model_stock")}
    for n, r in res.items():
        assert r["dev"] == r["dev"] and r["test"] is not None, n  # finite, and test reported apart
        assert (tmp_path / n / "baseline.json").is_file() and (tmp_path / n / "best").is_dir()
    assert res["greedy_soup"]["dev"] >= res["best_single"]["dev"]
    assert res["uniform_soup"]["dev"] > res["best_single"]["dev"]  # the experts are complementary by design
    assert res["ties"]["representation"] == "lora_delta" and res["uniform_soup"]["representation"] == "lora_factors"
    # every dev evaluation counts, the final scoring of the chosen merge included (test scoring does not)
    assert res["task_arithmetic"]["evaluations"] == 4 + 1 and res["model_stock"]["evaluations"] == 1
    assert res["uniform_soup"]["evaluations"] == 1 and res["best_single"]["evaluations"] == 3 + 1
    # best single expert = the expert whose own adapter scores best
    from tutti.swarm.engine import Evaluator
    from tutti.swarm.particles import load_experts

    rep, e = load_experts("lora_factors", c.experts)
    ev = Evaluator(rep, c.utility)
    assert res["best_single"]["dev"] == pytest.approx(max(ev.evaluate(x).value for x in e))
    assert res["uniform_soup"]["dev"] == pytest.approx(ev.evaluate(e.mean(0)).value)


def test_search_baselines_and_vote(swarm_setup, tmp_path):
    from tutti.swarm.baselines import run_baseline

    lh = run_baseline("lorahub", cfg(swarm_setup), tmp_path / "lh")
    assert lh["evaluations"] <= 3 + 40 and lh["dev"] > -10
    evo = run_baseline("evolutionary", cfg(swarm_setup), tmp_path / "evo")
    assert 30 <= evo["evaluations"] <= 70
    again = run_baseline("evolutionary", cfg(swarm_setup), tmp_path / "evo2")
    assert again["dev"] == evo["dev"]  # seeded
    vote = run_baseline("prediction_merge", cfg(swarm_setup, "mc_loglik"), tmp_path / "vote")
    assert 0 <= vote["dev"] <= 1 and len(vote["experts_dev"]) == 3 and vote["evaluations"] == 3
    assert 0 <= vote["test"] <= 1  # the vote is taken again on test, ties broken by the dev ranking
    assert json.loads((tmp_path / "vote/baseline.json").read_text())["baseline"] == "prediction_merge"


def test_evolutionary_says_when_no_candidate_could_be_scored(swarm_setup, monkeypatch):
    import math

    from tutti.errors import TuttiError
    from tutti.swarm.baselines import BaselineContext, evolutionary

    c = cfg(swarm_setup)
    ctx = BaselineContext(c, "lora_delta", lambda _m: None)
    monkeypatch.setattr(ctx, "score", lambda _vec: -math.inf)  # every evaluation failed (NaN counts as -inf)
    with pytest.raises(TuttiError, match=r"none of the \d+ candidate merges could be evaluated"):
        evolutionary(ctx)


def test_ray_local_cluster_matches_in_process(swarm_setup, tmp_path):
    pytest.importorskip("ray")
    from tutti.swarm import search

    c = SwarmConfig(experts=[str(e) for e in swarm_setup["experts"]], n_particles=4, max_iterations=1, seed=5,
                    utility=UtilityConfig(name="mean_loglik", task=str(swarm_setup["task"]), options={"choice_prefix": ""}))
    a = search(c, tmp_path / "ray", ray="local", workers=2)
    b = search(c, tmp_path / "local")
    la = [json.loads(x)["utilities"] for x in (tmp_path / "ray/log.jsonl").read_text().splitlines()]
    lb = [json.loads(x)["utilities"] for x in (tmp_path / "local/log.jsonl").read_text().splitlines()]
    assert [v for r in la for v in r] == pytest.approx([v for r in lb for v in r], abs=1e-6) and a.best_dev == pytest.approx(b.best_dev, abs=1e-6)
    import ray

    assert not ray.is_initialized()  # the pool shut down the Ray instance it started
