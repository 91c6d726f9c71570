"""Utility functions: exact values on stub models, the HF fast path against the interface path, real models."""

from __future__ import annotations

import math
from collections.abc import Sequence

import pytest
import torch

from tutti.config.swarm import UtilityConfig
from tutti.errors import ConfigError, TuttiError
from tutti.evaluation.datasets import Example, write_split
from tutti.evaluation.utilities import UTILITIES, UtilityResult, build_utility
from tutti.models.interface import GenerationOutput, LoglikelihoodResult, SamplingParams


class StubModel:
    """Hand-written answers: log-probabilities by continuation text and fixed generations by prompt."""

    name = "stub"

    def __init__(self, logprobs: dict[str, float] | None = None, answers: dict[str, str] | None = None) -> None:
        self.logprobs, self.answers = logprobs or {}, answers or {}
        self.calls: list[str] = []

    def generate(self, prompts: Sequence, *, params: SamplingParams) -> list[list[GenerationOutput]]:
        self.calls.append("generate")
        return [[GenerationOutput(self.answers.get(p if isinstance(p, str) else p[-1]["content"], ""))] for p in prompts]

    def loglikelihood(self, requests):
        self.calls.append("loglikelihood")
        return [LoglikelihoodResult(self.logprobs[c.strip()], False, len(c.strip())) for _, c in requests]

    def next_token_logprobs(self, prompts):
        raise NotImplementedError

    def stream(self, prompt, *, params):
        raise NotImplementedError


class Proxy:
    """Forwards to an HF model but is not one, so utilities take the generic interface path."""

    def __init__(self, m) -> None:
        self.m, self.name = m, "proxy"

    def generate(self, prompts, *, params):
        return self.m.generate(prompts, params=params)

    def loglikelihood(self, requests):
        return self.m.loglikelihood(requests)


@pytest.fixture
def mc_task(tmp_path):
    write_split(tmp_path / "dev.jsonl", [
        Example("1", "Q1", "b", ("a", "b", "c")),
        Example("2", "Q2", "c", ("a", "b", "c")),
    ])
    write_split(tmp_path / "test.jsonl", [Example("3", "Q3", "a", ("a", "b"))])
    return tmp_path


@pytest.fixture
def gen_task(tmp_path):
    write_split(tmp_path / "g" / "dev.jsonl", [
        Example("1", "2+3?", "5"), Example("2", "capital of France?", "Paris"), Example("3", "10+5?", "15"),
    ])
    return tmp_path / "g"


def test_mc_loglik_accuracy_and_probability_exact(mc_task):
    m = StubModel({"a": -1.0, "b": -0.5, "c": -2.0})
    acc = build_utility(UtilityConfig(name="mc_loglik", task=str(mc_task)))(m)
    assert acc.value == 0.5 and acc.scores == (1.0, 0.0) and acc.predictions == ("b", "b")
    prob = build_utility(UtilityConfig(name="mc_loglik", task=str(mc_task), options={"score": "probability"}))(m)
    z = math.exp(-1.0) + math.exp(-0.5) + math.exp(-2.0)
    assert prob.value == pytest.approx((math.exp(-0.5) / z + math.exp(-2.0) / z) / 2)
    assert m.calls == ["loglikelihood", "loglikelihood"]  # no generation


def test_generation_utilities_exact(gen_task):
    m = StubModel(answers={"2+3?": "The answer is 15", "capital of France?": "Paris.", "10+5?": "15"})
    em = build_utility(UtilityConfig(name="exact_match", task=str(gen_task)))(m)
    assert em.scores == (0.0, 1.0, 1.0)  # "15" does not match "5"
    f1 = build_utility(UtilityConfig(name="token_f1", task=str(gen_task)))(m)
    assert f1.scores[1] == 1.0 and f1.scores[0] == 0.0


def test_mc_generate_exact(mc_task):
    m = StubModel(answers={"Q1\nA. a\nB. b\nC. c": "B", "Q2\nA. a\nB. b\nC. c": "answer: maybe A"})
    u = build_utility(UtilityConfig(name="mc_generate", task=str(mc_task), options={"template": "{input}\n{choices}"}))
    assert u(m).scores == (1.0, 0.0)


def test_multitask_and_custom(mc_task, gen_task, monkeypatch, tmp_path):
    (tmp_path / "my_util.py").write_text("def f(model, examples):\n    return 0.25 * len(examples)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    c = UtilityConfig(name="custom", task=str(gen_task), options={"function": "my_util:f"})
    assert build_utility(c)(StubModel()).value == 0.75
    m = StubModel({"a": -1.0, "b": -0.5, "c": -2.0}, {"2+3?": "5", "capital of France?": "Rome", "10+5?": "15"})
    parts = (UtilityConfig(name="mc_loglik", task=str(mc_task)), UtilityConfig(name="exact_match", task=str(gen_task)))
    mean = build_utility(UtilityConfig(name="multitask", parts=parts, weights=(1.0, 3.0)))(m)
    assert mean.value == pytest.approx((0.5 + 3 * 2 / 3) / 4)
    harm = build_utility(UtilityConfig(name="multitask", parts=parts, options={"mean": "harmonic"}))(m)
    assert harm.value == pytest.approx(2 / (1 / 0.5 + 1 / (2 / 3)))


def test_config_errors(mc_task):
    with pytest.raises(TuttiError, match="Did you mean 'exact_match'"):
        build_utility(UtilityConfig(name="exact_macth", task=str(mc_task)))
    with pytest.raises(ConfigError, match="unknown option"):
        build_utility(UtilityConfig(name="mc_loglik", task=str(mc_task), options={"shots": 5}))
    with pytest.raises(ConfigError, match="needs a task"):
        build_utility(UtilityConfig(name="mc_loglik"))
    with pytest.raises(TuttiError, match="test split"):
        build_utility(UtilityConfig(name="mc_loglik", task=str(mc_task), split="test"))
    assert build_utility(UtilityConfig(name="mc_loglik", task=str(mc_task), split="test"), allow_test=True)
    with pytest.raises(TuttiError, match="test split"):  # nested parts are guarded too
        build_utility(UtilityConfig(name="multitask", parts=(UtilityConfig(name="mc_loglik", task=str(mc_task),
                                                                             split="test"),)))
    with pytest.raises(ConfigError, match="function"):
        build_utility(UtilityConfig(name="custom"))


def test_every_utility_declares_direction_and_split(mc_task):
    assert set(UTILITIES.names()) >= {"mc_loglik", "mc_generate", "exact_match", "token_f1", "mean_loglik",
                                      "reward_model", "llm_judge", "multitask", "custom"}
    u = build_utility(UtilityConfig(name="mean_loglik", task=str(mc_task)))
    assert u.split == "dev" and u.higher_is_better is True


def test_hf_fast_path_equals_interface_path(tiny_model_dir, mc_task, gen_task):
    from tutti.models.hf import HFModel

    m = HFModel.load(tiny_model_dir, batch_size=2)
    for name, task in (("mc_loglik", mc_task), ("mean_loglik", gen_task)):
        u = build_utility(UtilityConfig(name=name, task=str(task), options={"score": "probability"} if name == "mc_loglik" else {}))
        fast, slow = u(m), u(Proxy(m))
        assert fast.scores == pytest.approx(slow.scores, abs=1e-4)
    u = build_utility(UtilityConfig(name="exact_match", task=str(gen_task), options={"max_new_tokens": 4}))
    assert u(m).predictions == u(Proxy(m)).predictions


def test_llm_judge_with_a_model_object(gen_task):
    class Judge(StubModel):
        def generate(self, prompts, *, params):
            return [[GenerationOutput("Rating: 7/10" if "Paris" in p[-1]["content"] else "no idea")] for p in prompts]

    m = StubModel(answers={"capital of France?": "Paris"})
    u = build_utility(UtilityConfig(name="llm_judge", task=str(gen_task), options={"judge": Judge()}))
    r = u(m)
    assert r.scores == (1.0, 7.0, 1.0) and u.parse_failures == 2


def test_reward_model_scores_with_a_real_classifier(tiny_model_dir, gen_task, tmp_path):
    from transformers import AutoTokenizer, LlamaForSequenceClassification

    from tutti.models.hf import HFModel
    from tutti.testing import tiny_llama_config

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    rm = LlamaForSequenceClassification(tiny_llama_config(len(tok), num_labels=1, pad_token_id=tok.pad_token_id)).eval()
    rm.save_pretrained(tmp_path / "rm")
    tok.save_pretrained(tmp_path / "rm")
    u = build_utility(UtilityConfig(name="reward_model", task=str(gen_task),
                                    options={"model": str(tmp_path / "rm"), "max_new_tokens": 3}))
    m = HFModel.load(tiny_model_dir)
    r = u(m)
    assert isinstance(r, UtilityResult) and len(r.scores) == 3
    want = u.rewards([e.input for e in u.examples], list(r.predictions))
    assert r.value == pytest.approx(sum(want) / 3)
    norm = build_utility(UtilityConfig(name="reward_model", task=str(gen_task),
                                       options={"model": str(tmp_path / "rm"), "max_new_tokens": 3, "low": -100, "high": 100}))
    assert 0 <= norm(m).value <= 1


@pytest.mark.real_model
def test_real_smollm2_mc_loglik(smollm2, tmp_path):
    write_split(tmp_path / "dev.jsonl", [
        Example("1", "The capital of France is", "Paris", ("Paris", "Tokyo", "banana")),
        Example("2", "Two plus two equals", "four", ("four", "purple", "London")),
        Example("3", "The opposite of hot is", "cold", ("cold", "seven", "Monday")),
        Example("4", "Water freezes at zero degrees", "Celsius", ("Celsius", "elephants", "quickly")),
    ])
    u = build_utility(UtilityConfig(name="mc_loglik", task=str(tmp_path), options={"normalize": "tokens"}))
    fast, slow = u(smollm2), u(Proxy(smollm2))
    assert fast.scores == slow.scores and fast.value >= 0.75
