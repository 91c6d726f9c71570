"""Exact values of every combiner on hand-written distributions, and that none edits its inputs."""

from __future__ import annotations

import math

import pytest
import torch

from tutti.collab.combiners import (
    COMBINERS,
    Chain,
    Contrastive,
    Gated,
    Mean,
    PerplexityWeighted,
    Product,
    Proxy,
    build_combiner,
)

E = torch.empty(1, 0, dtype=torch.long)


def lp(*rows: list[float]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float32).log()


def probs(x: torch.Tensor) -> list[list[float]]:
    return [[round(v, 6) for v in r] for r in x.exp().tolist()]


def test_mean_is_weighted_mean_of_probabilities() -> None:
    out = Mean((0.6, 0.4))(E, [lp([0.5, 0.3, 0.2]), lp([0.1, 0.1, 0.8])], {})
    assert probs(out) == [[0.34, 0.22, 0.44]]


def test_mean_default_weights_are_uniform_and_weights_are_normalised() -> None:
    a, b = lp([0.5, 0.5, 0.0]), lp([0.0, 0.5, 0.5])
    assert probs(Mean()(E, [a, b], {})) == [[0.25, 0.5, 0.25]]
    assert torch.allclose(Mean((3, 1))(E, [a, b], {}), Mean((0.75, 0.25))(E, [a, b], {}))


def test_product_is_renormalised_weighted_log_sum() -> None:
    out = Product((0.5, 0.5))(E, [lp([0.5, 0.3, 0.2]), lp([0.1, 0.1, 0.8])], {})
    g = [math.sqrt(x) for x in (0.05, 0.03, 0.16)]
    assert probs(out) == [[round(x / sum(g), 6) for x in g]]


def test_product_ignores_zero_weight_members_even_with_minus_inf() -> None:
    a = lp([0.5, 0.5])
    b = torch.tensor([[0.0, float("-inf")]])
    out = Product((1.0, 0.0))(E, [a, b], {})
    assert probs(out) == [[0.5, 0.5]]


def test_perplexity_weights_follow_prompt_nll() -> None:
    state = {"prompt_nll": torch.tensor([[1.0, 2.0]])}
    out = PerplexityWeighted(tau=1.0)(E, [lp([1.0, 0.0]), lp([0.0, 1.0])], state)
    w0 = math.exp(-1) / (math.exp(-1) + math.exp(-2))
    assert probs(out) == [[round(w0, 6), round(1 - w0, 6)]]
    assert state["weights"].tolist()[0] == pytest.approx([w0, 1 - w0])


def test_gated_ensembles_only_uncertain_rows_and_counts_them() -> None:
    first = lp([0.5, 0.5, 0.0], [0.9, 0.1, 0.0])
    second = lp([0.0, 0.0, 1.0], [0.0, 0.0, 1.0])
    state: dict = {}
    out = Gated(Mean(), threshold=0.6)(E, [first, second], state)
    assert probs(out) == [[0.25, 0.25, 0.5], [0.9, 0.1, 0.0]]
    assert state["gate_steps"].tolist() == [1, 1]
    assert state["gate_ensembled"].tolist() == [1, 0]


def test_contrastive_li_and_obrien() -> None:
    expert, amateur = lp([0.6, 0.3, 0.05, 0.05]), lp([0.7, 0.1, 0.1, 0.1])
    li = Contrastive(alpha=0.1)(E, [expert, amateur], {})
    s = [0.6 / 0.7, 0.3 / 0.1]  # head = {0, 1}: p >= 0.1 * 0.6
    assert probs(li) == [[round(s[0] / sum(s), 6), round(s[1] / sum(s), 6), 0.0, 0.0]]
    ob = Contrastive(alpha=0.1, beta=0.5)(E, [expert, amateur], {})
    s = [0.6**1.5 / 0.7**0.5, 0.3**1.5 / 0.1**0.5]
    assert probs(ob) == [[round(s[0] / sum(s), 6), round(s[1] / sum(s), 6), 0.0, 0.0]]
    assert int(li.argmax()) == 1 and int(expert.argmax()) == 0


def test_contrastive_amateur_without_mass_does_not_make_infinities() -> None:
    expert = lp([0.5, 0.5])
    amateur = torch.tensor([[0.0, float("-inf")]])
    out = Contrastive(alpha=0.1)(E, [expert, amateur], {})
    assert torch.isfinite(out).all()


def test_proxy_is_base_plus_expert_minus_antiexpert() -> None:
    base, expert, anti = lp([0.5, 0.5]), lp([0.2, 0.8]), lp([0.5, 0.5])
    assert probs(Proxy(alpha=1.0)(E, [base, expert, anti], {})) == [[0.2, 0.8]]
    half = Proxy(alpha=0.5)(E, [base, expert, anti], {})
    s = [0.5 * (0.2 / 0.5) ** 0.5, 0.5 * (0.8 / 0.5) ** 0.5]
    assert probs(half) == [[round(s[0] / sum(s), 6), round(s[1] / sum(s), 6)]]


def test_chain_applies_later_steps_to_the_previous_result() -> None:
    a, b = lp([0.5, 0.3, 0.2]), lp([0.1, 0.1, 0.8])
    chained = Chain((Product((1, 1)), Mean()))(E, [a, b], {})
    assert torch.allclose(chained, Product((1, 1))(E, [a, b], {}))


def _every_combiner() -> list:
    made = {"mean": Mean((0.7, 0.2, 0.1)), "product": Product((0.5, 0.3, 0.2)), "perplexity": PerplexityWeighted(0.5),
            "gated": Gated(Mean(), 0.9), "contrastive": Contrastive(0.1, 0.5), "proxy": Proxy(1.0)}
    assert set(made) == set(COMBINERS.names()), "a new combiner must join this matrix"
    return list(made.items())


@pytest.mark.parametrize(("name", "combiner"), _every_combiner())
def test_no_combiner_edits_its_inputs(name: str, combiner) -> None:
    g = torch.Generator().manual_seed(0)
    members = [torch.log_softmax(torch.randn(2, 7, generator=g), -1) for _ in range(3)]
    members[1][0, 3] = float("-inf")  # a token this member cannot produce
    members[1] = torch.log_softmax(members[1], -1)
    state = {"prompt_nll": torch.tensor([[1.0, 2.0, 3.0], [2.0, 1.0, 0.5]])}
    before = [m.clone() for m in members]
    ids = torch.tensor([[1, 2], [3, 4]])
    out = combiner(ids.clone(), members, state)
    for m, b in zip(members, before, strict=True):
        assert torch.equal(m, b)
        assert out.data_ptr() != m.data_ptr()
    assert out.shape == (2, 7)
    assert torch.allclose(out.exp().sum(-1), torch.ones(2), atol=1e-5), name


def test_build_combiner_and_unknown_names() -> None:
    g = build_combiner("gated", threshold=0.3, inner="product", weights=(1, 2))
    assert isinstance(g, Gated) and isinstance(g.inner, Product) and g.threshold == 0.3
    with pytest.raises(Exception, match="Did you mean 'mean'"):
        build_combiner("maen")
