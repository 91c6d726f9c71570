"""DARE and DELLA (random drop, rescale, then a TIES or linear combine) in blocks of a few hundred thousand entries.

The whole-tensor formulation makes four fresh tensors of the input's size per model (the task vector, the random
draws, the masked vector, its absolute values); on a machine where a fresh page costs more than the arithmetic on
it, those allocations are most of the time. Here every temporary is one block long and reused, and two passes
over the inputs replace them:

1. per block and model: the task vector ``x - base`` into a scratch block, the keep decisions from the model's
   stream (stored, one byte per entry), and the L1 norms of the task vector before and after the drop;
2. per block: the task vectors again, masked and rescaled, then the fused combine (:class:`combiner.Combiner`).

NumPy only (flat float32 arrays in, the result written into ``out``): the torch methods call it on views of their
tensors and the NumPy engine (:mod:`tutti.merging.np_methods`) on its mapped arrays, so both write the same bits.
The decisions are the seed contract's, taken block by block from :meth:`TensorContext.keep_draws` (DARE: the
same threshold for every entry; DELLA: :func:`tutti.merging.magprune.keep_block` on whole rows), and blocks are a
multiple of 8 entries long, so no draw is split between two and the masks equal the whole-tensor path's. Only
the rescale can differ in its last bits: the L1 norms are summed in another order (per block in float32, the
blocks in float64), and the L1 factor and the weight are applied as one float32 multiplier.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from tutti.merging import magprune
from tutti.merging.combiner import Combiner
from tutti.merging.draws import KeepDraws, threshold
from tutti.merging.scratch import BLOCK, scratch

EPS = 1e-7  # as rescale_l1: no rescale when either norm is below it

# (input index, its draws, its task-vector block, the block's keep decisions to fill)
Keep = Callable[[int, KeepDraws, np.ndarray, np.ndarray], object]
Draws = Callable[[int], KeepDraws]  # input index -> its decision stream (``TensorContext.keep_draws``)


def dare_combine(xs: list[np.ndarray], base: np.ndarray, out: np.ndarray, draws: Draws, weights: list[float],
                 density: list[float], *, rescale: str | None, consensus: bool, normalize: bool,
                 lambda_: float) -> np.ndarray:
    """DARE on the flat float32 arrays ``xs`` around ``base``, combined as TIES (``consensus``) or linearly into
    ``out``.

    Same contract as ``bernoulli_drop`` + ``combine_task_vectors``'s fast path (float32, and with consensus
    non-negative weights with a positive one).
    """
    thr = {i: threshold(p) for i, p in enumerate(density) if p < 1}
    inverse = {i: density[i] for i in thr if density[i] > 0} if rescale == "inverse_p" else {}
    return _combine(xs, base, out, draws, weights, lambda i, dr, d, kept: dr.take(thr[i], kept.size, out=kept),
                    list(thr), rescale=rescale, step=BLOCK, needs_delta=False, inverse=inverse, consensus=consensus,
                    normalize=normalize, lambda_=lambda_)


def della_combine(xs: list[np.ndarray], base: np.ndarray, out: np.ndarray, draws: Draws, weights: list[float],
                  density: list[float], epsilon: list[float], *, cols: int, rescale: str | None, consensus: bool,
                  normalize: bool, lambda_: float) -> np.ndarray:
    """DELLA (MagPrune on rows of ``cols`` entries: the tensor's last dimension) on flat float32 arrays;
    ``rescale`` is ``"l1"`` or ``None`` (``"inverse_p"`` divides by each entry's own probability: the whole-tensor
    path does it)."""
    ramps = {i: magprune.rank_thresholds(cols, density[i], epsilon[i]) for i in range(len(xs))
             if 0 < density[i] < 1}

    def keep(i: int, dr: KeepDraws, d: np.ndarray, kept: np.ndarray) -> None:
        if i not in ramps:  # density <= 0 keeps nothing
            kept[:] = False
            return
        magprune.keep_block(d.reshape(-1, cols), dr, ramps[i], kept.reshape(-1, cols))

    drops = [i for i in range(len(xs)) if density[i] < 1]
    return _combine(xs, base, out, draws, weights, keep, drops, rescale=rescale,
                    step=magprune.rows_per_block(cols) * cols, needs_delta=True, inverse={}, consensus=consensus,
                    normalize=normalize, lambda_=lambda_)


def _combine(fx: list[np.ndarray], fb: np.ndarray, fo: np.ndarray, take: Draws, weights: list[float], keep: Keep,
             drops: list[int], *, rescale: str | None, step: int, needs_delta: bool, inverse: dict[int, float],
             consensus: bool, normalize: bool, lambda_: float) -> np.ndarray:
    """The two passes, for the inputs ``drops`` masked by ``keep`` block by block (blocks of ``step`` entries,
    a multiple of 8); ``inverse`` maps inputs to the keep probability their kept entries are divided by."""
    n, k = fb.size, len(fx)
    masks = {i: scratch(f"drop.mask{i}", n, np.bool_) for i in drops}  # reused: fresh pages are slow
    ratio = dict.fromkeys(drops, 1.0)
    size = min(n, step)
    work = [scratch(f"drop.delta{i}", size) for i in range(max(k, 2))]
    if drops:  # pass 1: keep decisions and L1 norms
        draws = {i: take(i) for i in drops}
        before, after = dict.fromkeys(drops, 0.0), dict.fromkeys(drops, 0.0)
        d = work[0]
        for s in range(0, n, step):
            e = min(n, s + step)
            m = e - s
            for i in drops:
                delta = np.subtract(fx[i][s:e], fb[s:e], out=d[:m]) if needs_delta or rescale == "l1" else d[:m]
                kept = masks[i][s:e]
                keep(i, draws[i], delta, kept)
                if rescale != "l1":
                    continue
                a = np.abs(delta, out=delta)
                before[i] += float(a.sum())
                after[i] += float(np.multiply(a, kept, out=a).sum())
        if rescale == "l1":
            ratio = {i: before[i] / after[i] if before[i] >= EPS and after[i] >= EPS else 1.0 for i in drops}
    combine = Combiner(weights, size, consensus=consensus, normalize=normalize, lambda_=lambda_)
    # the L1 factor and the weight as one multiplier (r * w rounded once: within the rescale's own last-bit noise)
    scale = [np.float32(np.float32(ratio.get(i, 1.0)) * combine.ws[i]) for i in range(k)]
    for s in range(0, n, step):  # pass 2: masked, rescaled task vectors, combined
        e = min(n, s + step)
        m = e - s
        deltas = []
        for i in range(k):
            d = np.subtract(fx[i][s:e], fb[s:e], out=work[i][:m])
            if i in masks:
                np.multiply(d, masks[i][s:e], out=d)  # x * 1 and x * 0: the bits of a masked copy
                if i in inverse:
                    np.divide(d, np.float32(inverse[i]), out=d)
            deltas.append(np.multiply(d, scale[i], out=d) if rescale == "l1" else d)
        combine(fb[s:e], deltas, fo[s:e], weighted=rescale == "l1")
    return fo
