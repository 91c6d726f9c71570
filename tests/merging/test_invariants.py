"""Invariants every method must satisfy (one shared matrix over the registry), plus method-specific identities."""

from __future__ import annotations

import pytest
import torch

from tutti.errors import TuttiError
from tutti.merging import merge_state_dicts, merge_tensors
from tutti.merging.base import MERGE_METHODS, get_method

get_method("linear")  # load every method module
DATA_AWARE = {n for n in MERGE_METHODS.names() if any(p.name == "dataset" for p in MERGE_METHODS.get(n).params.values())}
FILLERS = {"weight": 1.0, "t": 0.5}


def _inputs(name: str, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor | None, dict]:
    m = MERGE_METHODS.get(name)
    n = max(m.min_inputs, 2 if m.max_inputs is None or m.max_inputs >= 2 else 1)
    params = {p.name: FILLERS[p.name] for p in m.params.values() if p.required and p.name in FILLERS}
    return [x.clone() for _ in range(n)], (x.clone() if m.base != "none" else None), params


@pytest.mark.parametrize("name", [n for n in MERGE_METHODS.names() if n not in DATA_AWARE])
def test_merging_identical_models_returns_the_model(name: str) -> None:
    x = torch.randn(24, 16, generator=torch.Generator().manual_seed(0))
    tensors, base, params = _inputs(name, x)
    before = [t.clone() for t in tensors]
    out = merge_tensors(name, tensors, base, name="model.layers.0.mlp.up_proj.weight", **params)
    torch.testing.assert_close(out, x, rtol=1e-5, atol=1e-6)
    assert all(torch.equal(a, b) for a, b in zip(tensors, before, strict=True))  # inputs untouched


def _trio(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    b = torch.randn(32, 16, generator=g)
    return b, b + 0.1 * torch.randn(32, 16, generator=g), b + 0.1 * torch.randn(32, 16, generator=g)


def test_task_arithmetic_lambda_zero_is_the_base() -> None:
    b, x, y = _trio()
    out = merge_tensors("task_arithmetic", [x, y], b, weight=[0.7, 0.4], **{"lambda": 0.0})
    torch.testing.assert_close(out, b)


def test_ties_one_expert_density_one_is_task_arithmetic() -> None:
    b, x, _ = _trio()
    ties = merge_tensors("ties", [x], b, weight=0.3, density=1.0)
    ta = merge_tensors("task_arithmetic", [x], b, weight=1.0)
    torch.testing.assert_close(ties, ta)  # normalize=True cancels the weight, as in mergekit


def test_ties_sign_election_by_hand() -> None:
    b = torch.zeros(4)
    x = torch.tensor([1.0, -2.0, 3.0, 0.0])
    y = torch.tensor([-3.0, 1.0, 1.0, 2.0])
    out = merge_tensors("ties", [x, y], b, weight=[1.0, 1.0], density=1.0)
    # signs of sums: -, -, +, + ; agreeing entries averaged over agreeing weights
    torch.testing.assert_close(out, torch.tensor([-3.0, -2.0, 2.0, 2.0]))
    paper = merge_tensors("ties", [x, y], b, weight=[3.0, 1.0], density=1.0, sign_on="unweighted")
    mergekit = merge_tensors("ties", [x, y], b, weight=[3.0, 1.0], density=1.0)
    assert paper[0] == -3.0 and mergekit[0] == 1.0  # weighted vote: 3*1 - 3 = 0 -> '+' wins


def test_magnitude_trim_keeps_exactly_k_with_ties() -> None:
    from tutti.merging.sparsify import magnitude, magnitude_outliers

    d = torch.tensor([1.0, -1.0, 1.0, 0.5, -2.0, 1.0, 0.1, 3.0])
    kept = magnitude(d, 0.5)
    assert int((kept != 0).sum()) == 4 and kept[7] == 3.0 and kept[4] == -2.0
    band = magnitude_outliers(d, 0.5, gamma=0.125)  # drop the top 1, keep ranks [3, 7)
    assert int((band != 0).sum()) == 4 and band[7] == 0 and band[4] == -2.0 and band[6] == 0


def test_linear_and_slerp_endpoints() -> None:
    b, x, y = _trio()
    torch.testing.assert_close(merge_tensors("linear", [x, y], weight=[1.0, 0.0]), x)
    torch.testing.assert_close(merge_tensors("slerp", [x], b, t=0.0), b)
    torch.testing.assert_close(merge_tensors("slerp", [x], b, t=1.0), x, rtol=1e-5, atol=1e-6)


def test_karcher_paper_weights_option() -> None:
    _, x, y = _trio()
    equal = merge_tensors("karcher", [x, y], weight=[0.9, 0.1])
    torch.testing.assert_close(equal, merge_tensors("karcher", [x, y]))  # mergekit ignores weights
    weighted = merge_tensors("karcher", [x, y], weight=[1.0, 0.0], use_weights=True)
    torch.testing.assert_close(weighted, x, rtol=1e-5, atol=1e-6)  # all weight on x: x itself


def test_state_dict_api_is_pure_and_checks_keys() -> None:
    b, x, y = _trio()
    sds = [{"w": x, "n": torch.tensor([1, 2])}, {"w": y, "n": torch.tensor([1, 2])}]
    base = {"w": b, "n": torch.tensor([1, 2])}
    out = merge_state_dicts("ties", sds, base=base, weight=[0.5, 0.5], density=0.5)
    assert set(out) == {"w", "n"} and torch.equal(out["n"], base["n"])
    assert out["w"].data_ptr() not in {x.data_ptr(), y.data_ptr(), b.data_ptr()}
    with pytest.raises(TuttiError, match="differ in tensor 'extra'"):
        merge_state_dicts("linear", [{"w": x}, {"w": y, "extra": y}], weight=1.0)
    with pytest.raises(TuttiError, match="needs a base"):
        merge_state_dicts("ties", sds, weight=1.0)
    with pytest.raises(TuttiError, match="takes no parameter 'densty'"):
        merge_state_dicts("ties", sds, base=base, weight=1.0, densty=0.5)
    with pytest.raises(TuttiError, match=r"shapes differ \(\[32, 16\] vs \[16\]\)"):
        merge_tensors("linear", [x, y[0]], weight=1.0)


def test_sampled_kth_selection_is_exact_with_ties(monkeypatch: pytest.MonkeyPatch) -> None:
    import tutti.merging.sparsify as sp

    monkeypatch.setattr(sp, "_SAMPLE", 1 << 12)  # take the sampled path on a small tensor
    w = torch.rand(100_000, generator=torch.Generator().manual_seed(0))
    w[:500] = 0.25  # a block of exact ties straddling the answer
    for k in (1, 7, 25_000, 25_100, 50_000, 99_990, 100_000):
        assert sp.kth_smallest(w, k) == torch.kthvalue(w, k).values
    for lo, hi in ((0, 25_000), (24_800, 25_300), (40_000, 100_000)):
        assert int(sp.rank_band_mask(w, lo, hi).sum()) == hi - lo


def test_rank_band_equals_stable_sort_oracle(monkeypatch: pytest.MonkeyPatch) -> None:
    import tutti.merging.sparsify as sp

    monkeypatch.setattr(sp, "_SAMPLE", 1 << 10)
    g = torch.Generator().manual_seed(1)
    for n in (10, 1000, 20_000):
        w = torch.rand(n, generator=g)
        w[: n // 10], w[n // 10: n // 5] = 0.3, 0.7  # two blocks of exact ties
        order = torch.argsort(w, stable=True)  # ascending, ties by index: the documented rule
        for lo, hi in ((0, n // 2), (n // 3, n), (n // 20, n // 4), (n // 10, n // 5), (n - 1, n), (0, 1)):
            expected = torch.zeros(n, dtype=torch.bool)
            expected[order[lo:hi]] = True
            assert torch.equal(sp.rank_band_mask(w, lo, hi), expected), (n, lo, hi)


def _karcher_by_unit_vectors(xs: list[torch.Tensor], alphas: list[float], max_iter: int, tol: float) -> torch.Tensor:
    """The iteration as mergekit writes it, on full-size unit vectors (float64 here: the reference)."""
    norms = [torch.linalg.vector_norm(x) for x in xs]
    valid = [i for i, n in enumerate(norms) if float(n) > tol]
    total = sum(alphas[i] for i in valid)
    a, us = [alphas[i] / total for i in valid], [xs[i] / norms[i] for i in valid]
    mean = sum(ai * u for ai, u in zip(a, us, strict=True))
    mean = mean / torch.linalg.vector_norm(mean)
    for _ in range(max_iter):
        tangent = torch.zeros_like(mean)
        for ai, u in zip(a, us, strict=True):
            dot = torch.clamp(torch.dot(mean, u), -1.0, 1.0)
            theta = torch.arccos(dot)
            if float(theta) >= tol:
                tangent += ai * (theta / torch.sin(theta)) * (u - dot * mean)
        tn = torch.linalg.vector_norm(tangent)
        if float(tn) < tol:
            break
        mean = torch.cos(tn) * mean + torch.sin(tn) * (tangent / tn)
        mean = mean / torch.linalg.vector_norm(mean)
    return sum(ai * n for ai, n in zip(alphas, norms, strict=True)) * mean


def test_karcher_on_coefficients_equals_the_unit_vector_iteration() -> None:
    from tutti.merging.methods.spherical import karcher_mean

    g = torch.Generator().manual_seed(4)
    base = torch.randn(50_000, generator=g, dtype=torch.float64)
    xs = [base + s * torch.randn(50_000, generator=g, dtype=torch.float64) for s in (0.3, 1.0, 2.5)]
    xs.append(torch.zeros(50_000, dtype=torch.float64))  # a zero input: left out of the directions, as mergekit
    alphas = [0.4, 0.3, 0.2, 0.1]
    ours = karcher_mean(xs, alphas, max_iter=30, tol=1e-9)
    torch.testing.assert_close(ours, _karcher_by_unit_vectors(xs, alphas, 30, 1e-9), rtol=1e-10, atol=1e-10)
    same = karcher_mean([base, base.clone()], [0.5, 0.5])
    torch.testing.assert_close(same, base, rtol=1e-12, atol=1e-12)  # identical inputs: the input
