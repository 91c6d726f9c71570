"""The router and cascade composites on stub members: routing, batching, calibration, thresholds, scorers."""

from __future__ import annotations

import math
from collections.abc import Sequence

import pytest
import torch

from tutti.errors import TuttiError
from tutti.models.interface import SamplingParams
from tutti.routing.cascade import (
    Cascade,
    ConsistencyScorer,
    ProbabilityScorer,
    VerifierScorer,
    learn_thresholds,
    simulate,
)
from tutti.routing.matrix import CorrectnessMatrix
from tutti.routing.routers import KNNRouter
from tutti.routing.strategy import RouterModel

P = SamplingParams(max_new_tokens=8)


class KeywordFeatures:
    """Deterministic features: counts of a few keywords."""

    name = "keywords"
    words = ("plus", "capital", "opposite")

    def features(self, texts: Sequence[str]) -> torch.Tensor:
        return torch.tensor([[float(w in t) for w in self.words] + [0.1] for t in texts])


def _matrix() -> CorrectnessMatrix:
    prompts = ("2 plus 2", "3 plus 4", "capital of France", "capital of Peru", "opposite of hot", "opposite of up")
    scores = torch.tensor([[1, 0, 0], [1, 0, 1], [0, 1, 0], [0, 1, 0], [0, 0, 1], [0, 1, 1]], dtype=torch.float32)
    return CorrectnessMatrix(tuple(str(i) for i in range(6)), prompts, ("math", "facts", "words"), scores)


def test_matrix_roundtrip_and_errors(tmp_path) -> None:
    m = _matrix()
    back = CorrectnessMatrix.load(m.save(tmp_path / "m.jsonl"))
    assert back.models == m.models and torch.equal(back.scores, m.scores) and back.prompts == m.prompts
    assert back.select(models=["words", "math"]).scores[:, 0].tolist() == [0, 1, 0, 0, 1, 1]
    with pytest.raises(TuttiError, match="has no model 'x'"):
        m.column("x")
    (tmp_path / "bad.jsonl").write_text('{"input": "a", "scores": {"a": 1}}\n{"input": "b", "scores": {"b": 1}}\n')
    with pytest.raises(TuttiError, match="line 2 scores models"):
        CorrectnessMatrix.load(tmp_path / "bad.jsonl")
    with pytest.raises(TuttiError, match="tutti eval"):
        CorrectnessMatrix.load(tmp_path / "missing.jsonl")


def test_router_routes_batches_and_scores(stub) -> None:
    members = [stub("math", "M"), stub("facts", "F"), stub("words", "W")]
    feats = KeywordFeatures()
    m = _matrix()
    r = RouterModel(members, KNNRouter(k=2).fit(feats.features(m.prompts), m.scores), feats)
    prompts = ["10 plus 1", "capital of Chad", [{"role": "user", "content": "opposite of cold"}], "5 plus 5"]
    outs = r.generate(prompts, params=P)
    assert [o[0].text for o in outs] == ["M", "F", "W", "M"]
    assert [o[0].info["routed_to"] for o in outs] == ["math", "facts", "words", "math"]
    assert [x.generate_calls for x in members] == [1, 1, 1]  # one batched call per member
    assert r.loglikelihood([("1 plus 1", "abc"), ("capital of X", "ab")])[1].logprob == -2.0
    assert members[1].loglik_requests == 1 and members[0].loglik_requests == 1
    assert "".join(c.text for c in r.stream("capital of Chad", params=P)).strip() == "F"


def test_router_costs_and_calibration(stub) -> None:
    members = [stub("math", "M"), stub("facts", "F"), stub("words", "W")]
    feats = KeywordFeatures()
    m = _matrix()
    fitted = KNNRouter(k=2).fit(feats.features(m.prompts), m.scores)
    cheap = RouterModel(members, fitted, feats, costs=[5.0, 5.0, 0.0], willingness=1.0)
    assert set(cheap.route(list(m.prompts))) == {2}  # cost dominates
    r = RouterModel(members, fitted, feats)
    prompts = [f"{i} plus {i}" for i in range(10)] + [f"capital of {i}" for i in range(10)]
    r.calibrate(prompts, [0.5, 0.0, 0.5])
    chosen = r.route(prompts)
    assert chosen.count(0) == 10 and chosen.count(2) == 10
    with pytest.raises(TuttiError, match="2 costs for 3 members"):
        RouterModel(members, fitted, feats, costs=[1.0, 2.0])


def test_learn_thresholds_exact() -> None:
    # stage-0 confidence separates its right (high) from wrong (low) answers; stage 1 is always right
    scores = torch.tensor([[0.9, 1.0], [0.8, 1.0], [0.3, 1.0], [0.2, 1.0]])
    correct = torch.tensor([[1.0, 1.0], [1.0, 1.0], [0.0, 1.0], [0.0, 1.0]])
    thr = learn_thresholds(scores, correct, [1.0, 10.0])
    acc, cost, stage = simulate(scores, correct, [1.0, 10.0], thr)
    assert (acc, stage.tolist()) == (1.0, [0, 0, 1, 1]) and cost == pytest.approx(6.0)
    assert 0.3 < thr[0] <= 0.8
    # a budget that only allows the first member
    thr = learn_thresholds(scores, correct, [1.0, 10.0], max_cost=1.0)
    assert simulate(scores, correct, [1.0, 10.0], thr)[:2] == (0.5, 1.0)
    with pytest.raises(TuttiError, match=r"costs at most 0\.5"):
        learn_thresholds(scores, correct, [1.0, 10.0], max_cost=0.5)


def test_cascade_escalates_below_threshold(stub) -> None:
    small = stub("small", lambda p, i: "S", score=math.log(0.9))
    unsure = stub("unsure", lambda p, i: "U", score=math.log(0.2))
    big = stub("big", "B")
    c = Cascade([unsure, small, big], ProbabilityScorer(), [0.5, 0.95])
    o = c.generate(["q1", "q2"], params=P)
    assert [x[0].text for x in o] == ["B", "B"]
    assert o[0][0].info["stage"] == 2 and o[0][0].info["scores"] == [0.2, 0.9, 0.367879]  # stub default: exp(-1)
    assert o[0][0].info["member_calls"] == 3 and o[0][0].info["cost"] == 3.0
    c = Cascade([small, big], ProbabilityScorer(), [0.5])
    o = c.generate(["q"], params=P)[0][0]
    assert (o.text, o.info["stage"], big.generate_calls) == ("S", 0, 1)  # big only called by the first cascade
    with pytest.raises(TuttiError, match="no log-likelihood"):
        c.loglikelihood([("q", "a")])
    with pytest.raises(TuttiError, match="members - 1"):
        Cascade([small, big], ProbabilityScorer(), [0.5, 0.5])


def test_cascade_fit_on_dev(stub) -> None:
    from tutti.evaluation.metrics import exact_match

    # the small model is right and confident on "easy" prompts, wrong and unsure on "hard" ones
    small = stub("small", lambda p, i: "1" if "easy" in p else "0")
    small.score = 0.0
    conf = {"easy": math.log(0.9), "hard": math.log(0.3)}

    class Small(type(small)):
        pass

    def gen(prompts, *, params):
        outs = type(small).generate(small, prompts, params=params)
        return [[type(o)(text=o.text, token_ids=o.token_ids, finish_reason="stop",
                         logprobs=tuple(type(t)(t.token, conf["easy" if "easy" in p else "hard"]) for t in o.logprobs))
                 for o in row] for p, row in zip(prompts, outs, strict=True)]

    small.generate = gen
    big = stub("big", "1")
    c = Cascade([small, big], ProbabilityScorer(), [0.0], costs=[1.0, 4.0])
    thr = c.fit(["easy a", "easy b", "hard c", "hard d"], ["1"] * 4, metric=exact_match, params=P)
    assert 0.3 < thr[0] <= 0.9
    out = c.generate(["easy z", "hard z"], params=P)
    assert [o[0].info["stage"] for o in out] == [0, 1]


def test_consistency_and_verifier_scorers(stub) -> None:
    m = stub("m", ["The answer is 4", "The answer is 4", "The answer is 5", "4", "The answer is 4"])
    outs = m.generate(["q"], params=P)[0]
    assert ConsistencyScorer(samples=4, extract="number")(m, ["q"], outs, P) == [0.75]
    judge = stub("v", "", loglik=lambda p, c: (-0.1 if c == " yes" else -2.0) if "Proposed answer: The answer is 4" in p
                 else (-3.0 if c == " yes" else -0.2))
    sc = VerifierScorer(judge)
    from tutti.models.interface import GenerationOutput

    got = sc(m, ["q", "q"], [outs[0], GenerationOutput(text="The answer is 5")], P)
    assert got[0] == pytest.approx(1 / (1 + math.exp(-1.9)))
    assert got[1] == pytest.approx(1 / (1 + math.exp(2.8)))
