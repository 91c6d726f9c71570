"""Magnitude trimming (TIES) and Breadcrumbs bands, then the combine, in blocks (no full-size temporaries).

The whole-tensor path makes, per model, a task vector, its magnitudes and a trimmed copy, each as large as the
input, and fresh pages cost more than the arithmetic on them on some machines. Here the work is two passes over
the inputs with block-sized scratch tensors:

1. selection: the band edges (the magnitude of rank ``lo + 1`` and of rank ``hi``) found as :func:`sparsify.select`
   finds them (a sample brackets each edge, one pass counts the entries below the bracket and gathers the few
   inside it, an exact ``kthvalue`` on those), with the task vector's magnitudes recomputed block by block;
2. per block: the task vectors again, each cut to its band by float-only passes (equal magnitudes at an edge
   ranked by element index, counting across blocks), then the fused combine (:class:`tutti.merging.combiner.Combiner`).

The kept entries are exactly those of :func:`sparsify.magnitude` / :func:`sparsify.magnitude_outliers` (same ranks,
same tie rule), and the combine is the same element-wise arithmetic, so the result is bit-identical to the
whole-tensor path.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from tutti.merging import sparsify as sp
from tutti.merging.methods.blocks import BLOCK, Combiner, scratch

Edge = tuple[float, int, int]  # (value, entries below it, entries equal to it)


def band_combine(tensors: list[Tensor], base: Tensor, bands: list[tuple[int, int]], weights: list[float], *,
                 consensus: bool, normalize: bool, lambda_: float, out: Tensor | None = None) -> Tensor:
    """Keep each task vector's magnitude ranks ``bands[i] = [lo, hi)`` (ascending) and combine (float32 CPU inputs)
    into ``out`` (a new tensor when None).

    Same contract as ``magnitude``/``magnitude_outliers`` without rescale + ``combine_task_vectors``'s fast path.
    """
    n, k = base.numel(), len(tensors)
    fb, fx = base.reshape(-1), [x.reshape(-1) for x in tensors]
    edges = [_edges(fx[i], fb, *bands[i]) for i in range(k)]
    seen = [[0, 0] for _ in range(k)]  # entries equal to each edge value met so far (for the index tie rule)
    d = [torch.from_numpy(scratch(f"band.work{j}", min(n, BLOCK))) for j in range(2 * k)]
    out = torch.empty(base.shape, dtype=torch.float32) if out is None else out
    fo, nb, nx, nd = out.reshape(-1).numpy(), fb.numpy(), [x.numpy() for x in fx], [x.numpy() for x in d]
    combine = Combiner(weights, min(n, BLOCK), consensus=consensus, normalize=normalize, lambda_=lambda_)
    for s in range(0, n, BLOCK):
        e = min(n, s + BLOCK)
        m = e - s
        deltas = []
        for i in range(k):
            np.subtract(nx[i][s:e], nb[s:e], out=nd[2 * i][:m])
            delta = d[2 * i][:m]
            lo_hi = edges[i]
            if lo_hi is None:  # the whole vector is kept
                deltas.append(delta)
                continue
            np.abs(nd[2 * i][:m], out=nd[2 * i + 1][:m])
            w = d[2 * i + 1][:m]
            deltas.append(_cut(delta, w, *lo_hi, bands[i], seen[i]))
        combine(nb[s:e], [x.numpy() for x in deltas], fo[s:e])
    return out


def _cut(delta: Tensor, w: Tensor, lo: Edge | None, hi: Edge | None, band: tuple[int, int],
         seen: list[int]) -> Tensor:
    """``delta`` zeroed outside its band, in ``w``'s storage (float-only passes as ``sparsify._band``)."""
    kept = w
    # equal magnitudes straddling an edge: the band holds the last ones by index at the low edge and the first
    # ones at the high edge (positions found before ``w`` is cut, in place)
    lo_fix = None if lo is None or lo[1] == band[0] else _tie_positions(w, lo[0], seen, 0, start=band[0] - lo[1],
                                                                          stop=None)
    hi_fix = None if hi is None or hi[1] + hi[2] == band[1] else _tie_positions(w, hi[0], seen, 1, start=0,
                                                                                stop=band[1] - hi[1])
    if lo is not None:
        F.threshold_(kept, lo[0] if lo_fix is not None else _below32(lo[0]), 0.0)  # w > v, or w >= v
    if hi is not None:
        kept.neg_()
        F.threshold_(kept, -hi[0] if hi_fix is not None else _below32(-hi[0]), 0.0)  # -w for w < v, or w <= v
    sign = -1.0 if hi is not None else 1.0
    if lo_fix is not None:
        kept[lo_fix] = sign * lo[0]  # type: ignore[index]
    if hi_fix is not None:
        kept[hi_fix] = -hi[0]  # type: ignore[index]
    return kept.copysign_(delta)


def _below32(v: float) -> float:
    """The largest float32 below ``v`` (thresholds compare in float32, so ``x > _below32(v)`` is ``x >= v``)."""
    return float(np.nextafter(np.float32(v), np.float32(-np.inf)))


def _tie_positions(w: Tensor, v: float, seen: list[int], side: int, *, start: int, stop: int | None) -> Tensor:
    """Block positions of entries equal to ``v`` whose index among all equal entries (in order) is in
    ``[start, stop)``; advances the running count ``seen[side]``. Must run before ``w`` is modified."""
    pos = torch.from_numpy(np.flatnonzero(w.numpy() == np.float32(v)))
    first = seen[side]
    seen[side] += pos.numel()
    a = max(start - first, 0)
    b = pos.numel() if stop is None else max(min(stop - first, pos.numel()), 0)
    return pos[a:b]


def _edges(x: Tensor, base: Tensor, lo: int, hi: int) -> tuple[Edge | None, Edge | None] | None:
    """The band's edges (None for an open side) from the magnitudes of ``x - base``; None for the whole vector."""
    n = base.numel()
    ks = ([lo + 1] if lo > 0 else []) + ([hi] if hi < n else [])
    if not ks:
        return None
    found = _select_blocked(x, base, ks)
    return (found[lo + 1] if lo > 0 else None), (found[hi] if hi < n else None)


def _select_blocked(x: Tensor, base: Tensor, ks: list[int]) -> dict[int, Edge]:
    """:func:`sparsify.select` for every ``k`` in ``ks`` on ``|x - base|``, without materialising it."""
    n = base.numel()
    if n <= 8 * sp._SAMPLE:
        w = (x - base).abs()
        return {k: _edge(*sp.select(w, k)) for k in ks}
    idx = sp.sample_index(n, ks[0])
    sample = (x[idx] - base[idx]).abs()
    brackets = {k: sp.bracket(sample, k, n) for k in ks}
    below, cands = dict.fromkeys(ks, 0), {k: [] for k in ks}
    buf = scratch("band.select", min(n, BLOCK))
    nx, nb = x.numpy(), base.numpy()  # NumPy's compares and compress are several times torch's on CPU
    for s in range(0, n, BLOCK):
        e = min(n, s + BLOCK)
        a = np.abs(np.subtract(nx[s:e], nb[s:e], out=buf[: e - s]), out=buf[: e - s])
        for k, (lo_v, hi_v) in brackets.items():
            lo_a, hi_a = (None if v is None else np.float32(v.item()) for v in (lo_v, hi_v))
            if lo_a is not None:
                below[k] += int((a < lo_a).sum())
            inside = (a >= lo_a) if lo_a is not None else None
            if hi_a is not None:
                inside = (a <= hi_a) if inside is None else inside & (a <= hi_a)
            cands[k].append(torch.from_numpy(a[inside] if inside is not None else a.copy()))
    out = {}
    for k in ks:
        cand, r = torch.cat(cands[k]), k - below[k]
        if 1 <= r <= cand.numel():
            v = torch.kthvalue(cand, r).values
            out[k] = _edge(v, below[k] + int(torch.count_nonzero(cand < v)), int(torch.count_nonzero(cand == v)))
        else:  # the sample's bracket missed (vanishingly rare): the exact whole-tensor selection
            out[k] = _edge(*sp.select((x - base).abs(), k))
    return out


def _edge(v: Tensor, less: int, eq: int) -> Edge:
    return float(v), less, eq
