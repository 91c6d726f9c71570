"""The fast paths of the task-vector family give bit-identical results to the general (mergekit-shaped) code."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tutti.merging import sparsify as sp
from tutti.merging.methods.task_arithmetic import _combine_fast, _combine_general, combine_task_vectors


def _with_ties(size: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(size)
    d = torch.randn(size, generator=g)
    d[:50], d[50:100], d[100:130] = 0.5, -0.5, 0.0  # runs of equal magnitudes (as bf16 task vectors have)
    return d


@pytest.mark.parametrize("size", [1000, 300_000])
def test_select_is_exact_with_counts(size):
    w = _with_ties(size).abs()
    s = torch.sort(w).values
    for k in (1, 7, size // 3, size // 2, int((w < 0.5).sum()) + 10, size):
        v, less, eq = sp.select(w, k)
        assert float(v) == float(s[k - 1])
        assert (less, eq) == (int((w < v).sum()), int((w == v).sum()))


@pytest.mark.parametrize("size", [1000, 300_000])
def test_band_equals_rank_band_mask_including_ties_at_the_edges(size):
    d = _with_ties(size)
    w = d.abs()
    at = int((w < 0.5).sum())  # the run of 100 equal magnitudes 0.5 starts at this rank
    bands = [(size // 2, size), (size // 3, size - size // 50), (0, size // 2), (at + 30, size), (0, at + 30),
             (at + 30, at + 200), (at - 100, at + 30), (at + 30, at + 70), (5, at + 1), (0, size)]
    for lo, hi in bands:
        ours = sp._masked_band(d, lo, hi)
        ref = d * sp.rank_band_mask(w, lo, hi).to(d.dtype)
        assert torch.equal(ours, ref), (lo, hi)
        assert torch.equal(ours.signbit(), ref.signbit()), (lo, hi)  # -0 where mergekit's d * 0 gives -0


@pytest.mark.parametrize("n", [1, 2, 3])
@pytest.mark.parametrize("consensus", [True, False])
@pytest.mark.parametrize("normalize", [True, False])
def test_fused_combine_equals_general(n, consensus, normalize):
    g = torch.Generator().manual_seed(n)
    size = 50_000
    base = torch.randn(size, generator=g)
    deltas = [torch.randn(size, generator=g) * (torch.rand(size, generator=g) > 0.4) for _ in range(n)]
    if n >= 2:
        deltas[1][:500] = -deltas[0][:500]  # exact cancellation: the sum is +0, which elects +1
    weights = [0.6, 0.4, 0.0][:n] if n > 1 else [0.7]
    ours, ref = torch.empty(size), torch.empty(size)
    kw = dict(consensus=consensus, normalize=normalize, lambda_=1.5, sign_on="weighted")
    _combine_fast(base, deltas, weights, ours, **kw)
    _combine_general(base, deltas, weights, ref, **kw)
    assert torch.equal(ours, ref)


@pytest.mark.parametrize("n", [1, 2, 3])
@pytest.mark.parametrize("consensus", [True, False])
@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("lambda_", [1.0, 0.7])
def test_numpy_combiner_equals_the_torch_fused_combine(n, consensus, normalize, lambda_):
    from tutti.merging.methods.blocks import Combiner

    g = torch.Generator().manual_seed(10 + n)
    size = 50_000
    base = torch.randn(size, generator=g)
    base[:300] = 0.0  # zero base entries: the sign of a zero result shows
    deltas = [torch.randn(size, generator=g) * (torch.rand(size, generator=g) > 0.4) for _ in range(n)]
    if n >= 2:
        deltas[1][:500] = -deltas[0][:500]  # exact cancellation: the sum is +0, which elects +1
    weights = [0.6, 0.4, 0.0][:n] if n > 1 else [0.7]
    ref = torch.empty(size)
    _combine_fast(base, [d.clone() for d in deltas], weights, ref, consensus=consensus, normalize=normalize,
                  lambda_=lambda_, sign_on="weighted")
    ours = torch.empty(size)
    combine = Combiner(weights, size, consensus=consensus, normalize=normalize, lambda_=lambda_)
    combine(base.numpy(), [d.numpy() for d in deltas], ours.numpy())
    assert torch.equal(ours, ref)
    assert torch.equal(ours.signbit(), ref.signbit())


def test_negative_weights_take_the_general_path():
    base, d = torch.zeros(4), [torch.tensor([1.0, -1.0, 2.0, 0.0]), torch.tensor([1.0, 1.0, -2.0, 0.0])]
    out = combine_task_vectors(base, d, [1.0, -1.0], consensus=True, normalize=True, lambda_=1.0)
    # weighted: [1,-1,2,0] and [-1,-1,2,0]; sums [0,-2,4,0] elect [+,-,+,+]; divisors [1,0->1,0->1,1]
    assert out.tolist() == [1.0, -2.0, 4.0, 0.0]


@pytest.mark.parametrize("size", [1, 2, 3, 1000, 300_000])
def test_sorted_at_equals_a_full_sort(size):
    from tutti.merging.methods.selective import _sorted_at

    d = _with_ties(max(size, 130))[:size].abs()
    positions = [int(q * (size - 1)) for q in (0.25, 0.5, 0.75)]
    s = torch.sort(d).values
    assert [float(v) for v in _sorted_at(d, positions)] == [float(s[i]) for i in positions]


@pytest.mark.parametrize("shape", [(7, 1), (40, 576), (3, 1536)])
def test_row_ranks_are_the_stable_argsort_ranks_of_magnitudes(shape):
    from tutti.merging.magprune import row_ranks

    g = torch.Generator().manual_seed(shape[1])
    x = torch.randn(shape, generator=g)
    x[:, : shape[1] // 3] = 0.25  # a run of ties: ordered by column, as a stable sort orders them
    x[:, : shape[1] // 6] = -0.25  # the same magnitude with the other sign
    ref = torch.argsort(torch.argsort(x.abs(), dim=1, stable=True), dim=1)
    assert np.array_equal(row_ranks(x.numpy()), ref.numpy())


def test_scalar_keep_mask_equals_the_tensor_path_and_repeats():
    from tutti.merging.base import TensorContext

    ctx = TensorContext(name="model.layers.0.mlp.up_proj.weight", seed=3)
    like = torch.zeros(1000, 37)
    for p in (0.0, 0.1, 0.5, 0.9, 1.0):
        fast = ctx.keep_mask(p, 1, like=like)
        assert torch.equal(fast, ctx.keep_mask(torch.full_like(like, p), 1))
        assert torch.equal(fast, ctx.keep_mask(torch.full((37,), p), 1, like=like))  # broadcast p
        assert torch.equal(fast, ctx.keep_mask(p, 1, like=like))  # same stream, same mask
        assert abs(float(fast.float().mean()) - p) < 0.01
    assert not torch.equal(ctx.keep_mask(0.5, 0, like=like), ctx.keep_mask(0.5, 1, like=like))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("rescale", [None, "inverse_p"])
def test_della_keeps_each_rank_with_its_probability(dtype, rescale):
    from tutti.merging.base import TensorContext

    g = torch.Generator().manual_seed(0)
    delta = torch.randn(20000, 10, generator=g, dtype=dtype)
    delta[:, :3] = 0.5  # ties: ranked by column, as a stable sort ranks them
    ctx = TensorContext(name="w", seed=1)
    out = sp.della_magprune(delta, 0.5, 0.3, ctx, 0, rescale=rescale)
    kept = out != 0
    ranks = torch.argsort(torch.argsort(delta.abs(), dim=1, stable=True), dim=1)
    p = 0.2 + 0.6 * ranks.to(dtype) / 9
    assert torch.allclose(out[kept], (delta if rescale is None else delta / p)[kept])
    for j in range(10):
        freq = float(kept[ranks == j].float().mean())
        assert freq == pytest.approx(0.2 + 0.6 * j / 9, abs=0.015), j
    assert torch.equal(out, sp.della_magprune(delta, 0.5, 0.3, ctx, 0, rescale=rescale))  # repeats exactly


@pytest.mark.parametrize("consensus", [True, False])
@pytest.mark.parametrize("rescale", ["l1", "inverse_p", None])
def test_blocked_dare_equals_the_whole_tensor_path(consensus, rescale):
    from tutti.merging.base import TensorContext
    from tutti.merging.drop_blocked import dare_combine
    from tutti.merging.methods.blocks import BLOCK

    n = 2 * BLOCK + 12_345  # three blocks, the last one odd-sized (a half-used 64-bit draw at its end)
    g = torch.Generator().manual_seed(5)
    base = torch.randn(n, generator=g)
    xs = [base + 0.01 * torch.randn(n, generator=g) for _ in range(3)]
    ctx = TensorContext(name="model.layers.0.mlp.up_proj.weight", seed=11)
    density, weights = [0.3, 1.0, 0.55], [1.0, 0.5, 0.25]
    deltas = [sp.bernoulli_drop(x - base, p, ctx, i, rescale=rescale)
              for i, (x, p) in enumerate(zip(xs, density, strict=True))]
    ref = combine_task_vectors(base, deltas, weights, consensus=consensus, normalize=True, lambda_=0.8)
    out = torch.empty(n)
    dare_combine([x.numpy() for x in xs], base.numpy(), out.numpy(), ctx.keep_draws, weights, density,
                 rescale=rescale, consensus=consensus, normalize=True, lambda_=0.8)
    # same masks (any mask difference is an error the size of a task vector); the L1 norms are summed in
    # another order, so the rescale factor may move in its last bits
    tol = 0.0 if rescale != "l1" else 1e-6 * float(ref.abs().max())
    assert float((out - ref).abs().max()) <= tol
    assert float(out.view(-1)[:64].abs().sum()) > 0 and not torch.equal(out, base)


@pytest.mark.parametrize("consensus", [True, False])
@pytest.mark.parametrize("rescale", ["l1", None])
@pytest.mark.parametrize("shape", [(1100, 576), (3000,)])
def test_blocked_della_equals_the_whole_tensor_path(consensus, rescale, shape):
    from tutti.merging.base import TensorContext
    from tutti.merging.drop_blocked import della_combine

    g = torch.Generator().manual_seed(6)
    base = torch.randn(shape, generator=g)
    xs = [base + 0.01 * torch.randn(shape, generator=g) for _ in range(4)]
    xs[1][..., :40] = base[..., :40]  # zero task-vector entries: ties in every row
    ctx = TensorContext(name="model.layers.0.mlp.down_proj.weight", seed=3)
    density, epsilon, weights = [0.3, 0.5, 1.0, 0.0], [0.2, 0.1, 0.1, 0.1], [1.0, 0.5, 0.25, 2.0]
    deltas = [sp.della_magprune(x - base, p, eps, ctx, i, rescale=rescale)
              for i, (x, p, eps) in enumerate(zip(xs, density, epsilon, strict=True))]
    ref = combine_task_vectors(base, deltas, weights, consensus=consensus, normalize=True, lambda_=0.8)
    out = torch.empty(shape)
    della_combine([x.reshape(-1).numpy() for x in xs], base.reshape(-1).numpy(), out.view(-1).numpy(),
                  ctx.keep_draws, weights, density, epsilon, cols=shape[-1], rescale=rescale, consensus=consensus,
                  normalize=True, lambda_=0.8)
    tol = 0.0 if rescale != "l1" else 1e-6 * float(ref.abs().max())  # as for DARE: the L1 sums' order
    assert float((out - ref).abs().max()) <= tol
    assert not torch.equal(out, base)


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("method", ["ties", "breadcrumbs", "breadcrumbs_ties"])
def test_blocked_bands_equal_the_whole_tensor_path_bit_for_bit(method, ties):
    from tutti.merging.methods.band_blocked import band_combine
    from tutti.merging.methods.blocks import BLOCK

    n = 2 * BLOCK + 12_345  # three blocks, the last one partial
    g = torch.Generator().manual_seed(7)
    base = torch.randn(n, generator=g)
    xs = [base + 0.01 * torch.randn(n, generator=g) for _ in range(3)]
    if ties:  # long runs of equal magnitudes across block boundaries, straddling the band edges
        base[: BLOCK + 500], base[-40_000:] = 1.0, 2.0
        for j, x in enumerate(xs):
            x[: BLOCK + 500] = 1.0 + (0.004 if j != 1 else -0.004)
            x[-40_000:] = 2.0 - 0.02
    density, weights, gamma = [0.3, 0.75, 0.5], [1.0, 0.5, 0.25], [0.01, 0.2, 0.0]
    consensus = method != "breadcrumbs"
    if method == "ties":
        prune = [lambda d, p=p: sp.magnitude(d, p) for p in density]
        bands = [(n - max(1, int(p * n)), n) for p in density]
    else:
        prune = [lambda d, p=p, y=y: sp.magnitude_outliers(d, p, y) for p, y in zip(density, gamma, strict=True)]
        bands = [(max(0, n - int(p * n) - int(y * n)), max(0, n - int(p * n) - int(y * n)) + int(p * n))
                 for p, y in zip(density, gamma, strict=True)]
    deltas = [f(x - base) for f, x in zip(prune, xs, strict=True)]
    ref = combine_task_vectors(base, deltas, weights, consensus=consensus, normalize=True, lambda_=0.8)
    out = band_combine(xs, base, bands, weights, consensus=consensus, normalize=True, lambda_=0.8)
    assert torch.equal(out, ref)
    if ties:  # some band edge falls inside a run (so the index tie rule across blocks is exercised)
        from tutti.merging.methods.band_blocked import _edges

        inside = [less < r < less + eq for x, band in zip(xs, bands, strict=True)
                  for edge, r in zip(_edges(x, base, *band), (band[0], band[1]), strict=True) if edge is not None
                  for _v, less, eq in [edge]]
        assert any(inside)
