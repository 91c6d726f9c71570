"""Fitted routers are stored and reloaded (not refitted); cascade thresholds learned from a dev matrix in YAML."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

import tutti.collab
from answer_stubs import StubModel, render
from tutti.errors import TuttiError
from tutti.models.interface import GenerationOutput, SamplingParams, TokenLogprob
from tutti.routing.routers import ROUTERS, HeadRouter, build_router
from tutti.routing.store import load_router_state, router_file, save_router

P = SamplingParams(max_new_tokens=8)


@pytest.mark.parametrize("name", sorted(ROUTERS.names()))
def test_router_state_roundtrip_gives_identical_predictions(name: str, tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(12, 5, generator=g), (torch.rand(12, 3, generator=g) > 0.5).float()
    fitted = build_router(name, steps=20) if name in {"logistic", "mlp", "mf"} else build_router(name)
    fitted.fit(x, y)
    path = save_router(router_file("k", tmp_path), fitted)
    fresh = build_router(name, steps=20) if name in {"logistic", "mlp", "mf"} else build_router(name)
    back = fresh.load_state(load_router_state(path))
    q = torch.randn(7, 5, generator=g)
    assert torch.equal(back.predict(q), fitted.predict(q))


def test_unreadable_router_file_means_refit(tmp_path: Path) -> None:
    (tmp_path / "bad.pt").write_text("not a tensor file")
    assert load_router_state(tmp_path / "bad.pt") is None
    assert load_router_state(tmp_path / "missing.pt") is None


def _router_cfg(matrix: Path, store: Path, features_model: Path) -> dict:
    return {"strategy": "router", "members": ["a", "b", "c"],
            "options": {"matrix": str(matrix), "router": "mlp", "router_options": {"steps": 60},
                        "features": "causal_lm", "features_model": str(features_model), "store": str(store)}}


def test_router_composite_second_load_does_not_refit(tiny_model_dirs, tmp_path: Path, monkeypatch) -> None:
    rows = [{"input": f"add {i} and {i + 1}", "scores": {"a": 1.0, "b": 0.0, "c": 0.0}} for i in range(5)]
    rows += [{"input": f"capital of country {i}", "scores": {"a": 0.0, "b": 1.0, "c": 0.0}} for i in range(5)]
    rows += [{"input": f"opposite of word {i}", "scores": {"a": 0.0, "b": 0.0, "c": 1.0}} for i in range(5)]
    matrix = tmp_path / "m.jsonl"
    matrix.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = _router_cfg(matrix, tmp_path / "routers", tiny_model_dirs[2])
    members = [StubModel("a", "A"), StubModel("b", "B"), StubModel("c", "C")]
    first = tutti.collab.load(cfg, members=members)
    assert not first.router_loaded and first.router_file.is_file()
    assert first.router_file.parent == tmp_path / "routers"
    prompts = ["add 9 and 10", "capital of country 9", "opposite of word 9", "hello"]

    def no_refit(self, x, scores):  # a second load must read the stored router, never train
        raise AssertionError("router refitted")

    monkeypatch.setattr(HeadRouter, "fit", no_refit)
    second = tutti.collab.load(cfg, members=members)
    assert second.router_loaded and second.router_file == first.router_file
    assert torch.equal(second.predict(prompts), first.predict(prompts))
    assert second.route(prompts) == first.route(prompts)
    # another matrix (or other settings) is another key: that load trains again
    matrix.write_text("".join(json.dumps(r) + "\n" for r in rows[:-1]))
    with pytest.raises(AssertionError, match="refitted"):
        tutti.collab.load(cfg, members=members)
    with pytest.raises(AssertionError, match="refitted"):
        tutti.collab.load({**cfg, "options": {**cfg["options"], "store": False}}, members=members)


class ConfStub(StubModel):
    """A stub whose answer probability depends on the prompt (``conf[prompt]``)."""

    def __init__(self, name: str, answer: str, conf: dict[str, float]) -> None:
        super().__init__(name, answer)
        self.conf = conf

    def generate(self, prompts, *, params):
        rows = super().generate(prompts, params=params)
        return [[GenerationOutput(text=o.text, token_ids=o.token_ids, finish_reason="stop",
                                  logprobs=(TokenLogprob("t", math.log(self.conf[render(p)])),))
                 for o in row] for p, row in zip(prompts, rows, strict=True)]


def _cascade_matrix(path: Path) -> Path:
    # small: confidence 0.9 / 0.8 / 0.6 / 0.4 / 0.3, right on 1, 1, 0, 1, 0; big: always right
    conf, right = [0.9, 0.8, 0.6, 0.4, 0.3], [1.0, 1.0, 0.0, 1.0, 0.0]
    rows = [{"id": f"d{i}", "input": f"dev {i}", "scores": {"small": r, "big": 1.0},
             "confidence": {"small": c, "big": 1.0}} for i, (c, r) in enumerate(zip(conf, right, strict=True))]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.parametrize(("fit", "threshold", "stages"), [
    # accuracy first: accept small only at 0.8 and above; the lowest such grid point is the 55% quantile, 0.64
    ({}, 0.64, [0, 1, 1]),
    # cost_weight 0.2: accept down to 0.4 (accuracy 0.8 at 1.8 calls beats 1.0 at 3.4); grid point 0.32
    ({"cost_weight": 0.2}, 0.32, [0, 0, 1]),
    # a budget of 1.5 calls per prompt: small answers everything (the lowest candidate, the minimum 0.3)
    ({"max_cost": 1.5}, 0.3, [0, 0, 0]),
])
def test_cascade_yaml_fit_from_dev_matrix(tmp_path: Path, fit: dict, threshold: float, stages: list[int]) -> None:
    matrix = _cascade_matrix(tmp_path / "dev.jsonl")
    (tmp_path / "c.yaml").write_text(json.dumps({
        "strategy": "cascade", "members": ["small", "big"],
        "options": {"scorer": "probability", "costs": [1.0, 4.0], "fit": {"matrix": str(matrix), **fit}}}))
    small = ConfStub("small", "S", {"sure": 0.85, "fair": 0.5, "unsure": 0.31})
    big = StubModel("big", "B")
    c = tutti.collab.load(tmp_path / "c.yaml", members=[small, big])
    assert c.thresholds == [pytest.approx(threshold, abs=1e-6)]  # float32 matrix
    assert big.generate_calls == 0 and small.generate_calls == 0  # fitting from the matrix calls no member
    out = c.generate(["sure", "fair", "unsure"], params=P)
    assert [o[0].info["stage"] for o in out] == stages
    assert [o[0].text for o in out] == ["SB"[s] for s in stages]


def test_cascade_fit_matrix_errors(tmp_path: Path) -> None:
    matrix = _cascade_matrix(tmp_path / "dev.jsonl")
    members = [StubModel("small", "S"), StubModel("big", "B")]
    base = {"strategy": "cascade", "members": ["small", "big"]}
    with pytest.raises(TuttiError, match="'probability' scorer"):
        tutti.collab.load({**base, "options": {"scorer": "consistency", "fit": {"matrix": str(matrix)}}},
                          members=members)
    with pytest.raises(TuttiError, match="unknown keys"):
        tutti.collab.load({**base, "options": {"fit": {"matrix": str(matrix), "limit": 3}}}, members=members)
    with pytest.raises(TuttiError, match="no model 'x'"):
        tutti.collab.load({**base, "options": {"fit": {"matrix": str(matrix), "columns": ["x", "big"]}}},
                          members=members)
    (tmp_path / "noconf.jsonl").write_text('{"input": "q", "scores": {"small": 1, "big": 1}}\n')
    with pytest.raises(TuttiError, match="no 'confidence'"):
        tutti.collab.load({**base, "options": {"fit": {"matrix": str(tmp_path / "noconf.jsonl")}}}, members=members)
