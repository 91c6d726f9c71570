"""Consensus (TALL masks) and PCB-Merging: exact values on hand-made vectors, invariants, a naive oracle."""

from __future__ import annotations

import pytest
import torch

from tutti.errors import ConfigError
from tutti.merging.base import get_method
from tutti.merging.methods.extra_consensus import (
    consensus_merge,
    magnitude_trim,
    tall_masks,
    task_arithmetic_delta,
    ties_delta,
)
from tutti.merging.methods.extra_pcb import pcb_merge

T1 = torch.tensor([1.0, 0.0, 0.5])
T2 = torch.tensor([1.0, 1.0, -0.5])


def test_tall_masks_and_consensus_by_hand() -> None:
    merged = T1 + T2  # [2, 1, 0]
    masks = tall_masks([T1, T2], merged, mask_lambda=1.0)
    assert masks.tolist() == [[True, False, True], [True, True, True]]
    torch.testing.assert_close(consensus_merge([T1, T2], merged, k=2, mask_lambda=1.0), torch.tensor([2.0, 0, 0]))
    torch.testing.assert_close(consensus_merge([T1, T2], merged, k=1, mask_lambda=1.0), merged)


def test_consensus_ta_with_k0_is_task_arithmetic_and_lambda0_is_the_base() -> None:
    base = torch.tensor([0.5, -1.0, 2.0])
    experts = [base + T1, base + T2]
    ta = get_method("consensus_task_arithmetic")
    torch.testing.assert_close(ta(experts, base, k=0, weight=[0.3, 0.7], **{"lambda": 2.0}),
                               base + 2.0 * (0.3 * T1 + 0.7 * T2))
    torch.testing.assert_close(ta(experts, base, **{"lambda": 0.0}), base)


def test_consensus_ties_one_expert_density_one_is_task_arithmetic() -> None:
    base = torch.randn(5, 4, generator=torch.Generator().manual_seed(0))
    expert = base + torch.randn(5, 4, generator=torch.Generator().manual_seed(1))
    out = get_method("consensus_ties")([expert], base, k=0, density=1.0)
    torch.testing.assert_close(out, expert)


def test_ties_delta_by_hand() -> None:
    # trim to 2 of 3 entries, elect the sign of the sum, disjoint weighted mean
    a, b = torch.tensor([3.0, -1.0, 0.2]), torch.tensor([1.0, 2.0, -4.0])
    out = ties_delta([a, b], [1.0, 1.0], [2 / 3, 2 / 3])
    # trimmed: a -> [3, -1, 0], b -> [0, 2, -4]; sums [3, 1, -4]; agreeing: [a], [b], [b]
    torch.testing.assert_close(out, torch.tensor([3.0, 2.0, -4.0]))
    torch.testing.assert_close(magnitude_trim(a, 1 / 3), torch.tensor([3.0, 0, 0]))


def test_consensus_removes_selfish_weights_of_a_single_task() -> None:
    # weight 0 is used by task 1 only ("selfish"); weight 1 by both
    a, b = torch.tensor([5.0, 1.0]), torch.tensor([0.0, 1.0])
    out = consensus_merge([a, b], task_arithmetic_delta([a, b], [1.0, 1.0]), k=2, mask_lambda=0.5)
    torch.testing.assert_close(out, torch.tensor([0.0, 2.0]))


def _pcb_naive(taus: list[torch.Tensor], density: float) -> torch.Tensor:
    """The paper's equations written directly (softmax in linear space), as an oracle."""

    def norm(x: torch.Tensor) -> torch.Tensor:
        return (x - x.min()) / (x.max() - x.min())

    n = len(taus)
    betas = []
    for t in taus:
        intra = torch.softmax(n * norm(t * t), 0)
        inter = sum(torch.softmax(norm(t * j), 0) for j in taus)
        beta = intra * inter
        k = int(density * t.numel())
        thresh = beta.topk(k).values.min()
        betas.append(torch.where(beta >= thresh, beta, torch.zeros_like(beta)))
    b = torch.stack(betas)
    return (b * torch.stack(taus)).sum(0) / b.sum(0)


def test_pcb_matches_the_papers_equations() -> None:
    g = torch.Generator().manual_seed(3)
    taus = [torch.randn(40, generator=g, dtype=torch.float64).float() for _ in range(3)]
    torch.testing.assert_close(pcb_merge(taus, density=1.0), _pcb_naive(taus, 1.0), atol=1e-5, rtol=1e-5)
    got, want = pcb_merge(taus, density=0.5), _pcb_naive(taus, 0.5)
    ok = torch.isfinite(want)
    torch.testing.assert_close(got[ok], want[ok], atol=1e-5, rtol=1e-5)
    assert (got[~ok] == 0).all()


def test_pcb_one_task_keeps_its_largest_entries_unchanged() -> None:
    tau = torch.tensor([0.1, -3.0, 0.5, 2.0])
    torch.testing.assert_close(pcb_merge([tau], density=1.0), tau)
    torch.testing.assert_close(pcb_merge([tau], density=0.5, lambda_=2.0), torch.tensor([0.0, -6.0, 0.0, 4.0]))


def test_pcb_of_identical_experts_is_the_expert_and_lambda0_the_base() -> None:
    base = torch.randn(6, 5, generator=torch.Generator().manual_seed(4))
    expert = base + torch.randn(6, 5, generator=torch.Generator().manual_seed(5))
    m = get_method("pcb")
    torch.testing.assert_close(m([expert, expert, expert], base, density=1.0), expert)
    torch.testing.assert_close(m([expert, expert], base, **{"lambda": 0.0}), base)


def test_pcb_survives_huge_tensors_without_underflow() -> None:
    taus = [torch.randn(2_000_000, generator=torch.Generator().manual_seed(s)) for s in range(2)]
    out = pcb_merge(taus, density=0.1)
    assert torch.isfinite(out).all() and (out != 0).sum() > 100_000


@pytest.mark.parametrize("name", ["consensus_task_arithmetic", "consensus_ties", "pcb"])
def test_identical_models_return_the_model(name: str) -> None:
    base = torch.randn(4, 3, generator=torch.Generator().manual_seed(6))
    torch.testing.assert_close(get_method(name)([base.clone(), base.clone()], base), base)


def test_bad_values_are_config_errors() -> None:
    x = torch.zeros(3)
    with pytest.raises(ConfigError, match="density"):
        get_method("pcb")([x], x, density=2.0)
    with pytest.raises(ConfigError, match="k must be"):
        get_method("consensus_task_arithmetic")([x], x, k=-1)
    with pytest.raises(ConfigError, match="lambda"):
        get_method("pcb")([x], x, **{"lambda": "big"})


@pytest.mark.parametrize("name", ["consensus_task_arithmetic", "consensus_ties", "pcb"])
def test_permuting_the_experts_does_not_change_the_merge(name: str) -> None:
    base = torch.randn(8, 6, generator=torch.Generator().manual_seed(20))
    experts = [base + torch.randn(8, 6, generator=torch.Generator().manual_seed(21 + i)) for i in range(3)]
    m = get_method(name)
    torch.testing.assert_close(m(experts, base), m(experts[::-1], base), atol=1e-6, rtol=1e-6)
