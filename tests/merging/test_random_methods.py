"""Randomised methods (DARE, DELLA): mergekit's distribution, exact repeats under the seed contract."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tutti.merging import merge_state_dicts, merge_tensors

EMBED = "model.embed_tokens.weight"


def _cfg(method: str, density: float, **params: object) -> dict:
    return {"merge_method": method, "dtype": "float32", "base_model": "M0",
            "parameters": {"normalize": False, **params},
            "models": [{"model": "M1", "parameters": {"weight": 1.0, "density": density}}]}


def _delta(folder: Path, base: Path, name: str = EMBED) -> torch.Tensor:
    from tutti.models.checkpoint import Checkpoint

    return Checkpoint(folder).get(name).float() - Checkpoint(base).get(name).float()


@pytest.mark.parametrize("method", ["dare_linear", "dare_ties"])
def test_dare_matches_mergekit_in_distribution(method, with_models, merge_models, tmp_path):
    from test_conformance import run_mergekit

    import tutti

    density = 0.3
    config = with_models(_cfg(method, density))
    ours = _delta(tutti.merge(config, tmp_path / "t", random_seed=7), merge_models["M0"])
    theirs = _delta(run_mergekit(config, tmp_path / "m", random_seed=7), merge_models["M0"])
    full = _delta(merge_models["M1"], merge_models["M0"])
    n = full.numel()
    sigma = (density * (1 - density) / n) ** 0.5
    for d in (ours, theirs):
        kept = float((d != 0).float().mean())
        assert abs(kept - density) < 4 * sigma  # keep rate ~ Bernoulli(density)
        # mergekit's rescale: the L1 norm of the task vector is matched exactly (not 1/p per element)
        assert float(d.abs().sum()) == pytest.approx(float(full.abs().sum()), rel=1e-5)
        kept_mask = d != 0
        scale = float((d[kept_mask] / full[kept_mask]).median())
        assert scale == pytest.approx(float(full.abs().sum()) / float(full[kept_mask].abs().sum()), rel=1e-5)
        # one scale for the whole tensor (up to the rounding of base + delta - base)
        torch.testing.assert_close(d[kept_mask], full[kept_mask] * scale, rtol=1e-4, atol=1e-6)
    assert not torch.equal(ours, theirs)  # different random streams, same distribution


def test_dare_inverse_p_is_the_papers_rescale(merge_models):
    from tutti.models.checkpoint import Checkpoint

    base = Checkpoint(merge_models["M0"]).get(EMBED)
    x = Checkpoint(merge_models["M1"]).get(EMBED)
    out = merge_tensors("dare_linear", [x], base, name=EMBED, weight=1.0, density=0.25, rescale_mode="inverse_p")
    d, full = out - base, x - base
    kept = d != 0
    torch.testing.assert_close(d[kept], full[kept] / 0.25, rtol=1e-5, atol=1e-7)


def test_seed_contract_repeats_exactly_and_ignores_execution_order(with_models, merge_models, tmp_path):
    import tutti
    from tutti.models.checkpoint import Checkpoint

    cfg = with_models({"merge_method": "dare_ties", "dtype": "float32", "base_model": "M0",
                       "models": [{"model": m, "parameters": {"weight": 0.5, "density": 0.4}} for m in ("M1", "M2")]})
    a = Checkpoint(tutti.merge(cfg, tmp_path / "a", random_seed=3))
    b = Checkpoint(tutti.merge(cfg, tmp_path / "b", random_seed=3, max_memory=1))  # no read-ahead at all
    c = Checkpoint(tutti.merge(cfg, tmp_path / "c", random_seed=4))
    sds = [{k: Checkpoint(merge_models[m]).get(k) for k in a} for m in ("M0", "M1", "M2")]
    mem = merge_state_dicts("dare_ties", sds[1:], base=sds[0], seed=3, weight=0.5, density=0.4)
    for k in a:
        assert torch.equal(a.get(k), b.get(k)), k
        assert torch.equal(a.get(k), mem[k]), k
    assert not torch.equal(a.get(EMBED), c.get(EMBED))


def test_della_keeps_large_entries_more_often(merge_models):
    from tutti.models.checkpoint import Checkpoint

    base = Checkpoint(merge_models["M0"]).get(EMBED)
    x = Checkpoint(merge_models["M1"]).get(EMBED)
    density, eps = 0.5, 0.3
    out = merge_tensors("della_linear", [x], base, name=EMBED, weight=1.0, density=density, epsilon=eps)
    d, full = out - base, x - base
    assert abs(float((d != 0).float().mean()) - density) < 0.03
    mag = full.abs()
    big = mag >= mag.median(dim=1, keepdim=True).values
    assert float((d[big] != 0).float().mean()) > float((d[~big] != 0).float().mean()) + 0.2
    assert float(d.abs().sum()) == pytest.approx(float(full.abs().sum()), rel=1e-5)
