"""DELLA's MagPrune decisions: keep probability rising with an entry's magnitude rank in its row, in NumPy.

Entry ``e`` of a row of ``C`` is kept when ``u_e < T[rank(e)]``: ``u_e`` is the entry's uniform 24-bit number from
the input's stream (:class:`~tutti.merging.draws.KeepDraws`, entries in C order), ``rank`` its position among the
row's magnitudes in ascending order (equal magnitudes ranked by column), and ``T`` the thresholds of the ramp
``p(j) = density - eps + 2 eps j / (C - 1)``, non-decreasing in ``j``.

Computing every rank means scattering a sort's permutation back to the entries. :func:`keep_block` avoids it:
``u_e``'s top byte ``h`` alone decides an entry unless ``h`` lies within the top bytes of ``T`` (about a fifth of
the entries for ``eps = 0.1``), and for those the answer only depends on whether ``rank(e)`` is below ``A_h``
(drop) or at least ``B_h`` (keep), the ranks where ``T``'s top byte reaches and passes ``h``. In magnitudes: drop
when ``|x_e|`` is below the row's ``A_h``-th smallest, keep when above its ``(B_h - 1)``-th. So one sort of the
row's magnitude bits (32-bit keys, in cache: ~5 ns per entry here) and a gather of two cut values per entry
decide nearly everything; the rest (entries whose rank falls where ``T``'s top byte equals ``h``, one in 256, and
entries equal to a cut value) get their exact rank by a binary search of the sorted row, or, where magnitudes tie,
from a stable sort of the row. The decisions equal those of ranking every entry and taking each rank's threshold
(``tests/merging/test_magprune.py``).

Magnitudes are compared in float32 (the bits of ``|x|``, which order like the values): a float64 input's entries
that round to the same float32 tie and are ranked by column.
"""

from __future__ import annotations

import numpy as np

from tutti.merging.draws import KeepDraws, thresholds
from tutti.merging.scratch import BLOCK, scratch

_MAX = np.iinfo(np.int32).max


def rank_probabilities(cols: int, density: float, epsilon: float) -> np.ndarray:
    """The ramp's keep probabilities of ranks ``0..cols-1`` (float64): ``density - eps + 2 eps j / (cols - 1)``
    (``density - eps`` for a row of one)."""
    ramp = np.arange(cols, dtype=np.float64) / (cols - 1) if cols > 1 else np.zeros(1)
    return (density - epsilon) + 2 * epsilon * ramp


def rank_thresholds(cols: int, density: float, epsilon: float) -> np.ndarray:
    """The 24-bit thresholds of ranks ``0..cols-1`` (int64, non-decreasing) of :func:`rank_probabilities`."""
    return thresholds(rank_probabilities(cols, density, epsilon))


def row_ranks(x: np.ndarray) -> np.ndarray:
    """Each entry's rank in its row of the 2-D float32 ``x`` by magnitude, ties by column (int64).

    One NumPy sort of 64-bit keys ``(bits of |x|) << 32 | column`` (stable ranks at about a third of an argsort's
    cost), then the permutation inverted.
    """
    r, c = x.shape
    keys = np.bitwise_and(np.ascontiguousarray(x, dtype=np.float32).view(np.int32), 0x7FFFFFFF, dtype=np.int64)
    keys <<= 32
    keys |= np.arange(c, dtype=np.int64)
    keys.sort(axis=1)
    keys &= 0xFFFFFFFF  # the column of rank j at position j
    ranks = np.empty((r, c), dtype=np.int64)
    np.put_along_axis(ranks, keys, np.broadcast_to(np.arange(c, dtype=np.int64), (r, c)), axis=1)
    return ranks


def rows_per_block(cols: int) -> int:
    """Rows per block for rows of ``cols``: about :data:`BLOCK` entries, a multiple of 8 rows (so a block's
    draws never share a 64-bit word with the next block's)."""
    return max(8, BLOCK // max(cols, 1) // 8 * 8)


def keep_mask(x: np.ndarray, draws: KeepDraws, t_rank: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """:func:`keep_block` over the 2-D float32 ``x`` in blocks of whole rows (bool, ``x``'s shape)."""
    out = np.empty(x.shape, dtype=bool) if out is None else out
    step = rows_per_block(x.shape[1])
    for s in range(0, x.shape[0], step):
        keep_block(x[s: s + step], draws, t_rank, out[s: s + step])
    return out


def keep_block(x: np.ndarray, draws: KeepDraws, t_rank: np.ndarray, out: np.ndarray) -> np.ndarray:
    """The decisions for the rows of the C-contiguous float32 ``x`` (``r`` rows of ``C``) into bool ``out``.

    Takes the next ``r * C`` entries of ``draws`` (a multiple of 8 unless it is the stream's last block).
    """
    r, c = x.shape
    m = r * c
    keys = np.bitwise_and(x.view(np.int32), np.int32(0x7FFFFFFF), out=_scratch("keys", r, c, np.int32))
    srt = _scratch("sorted", r, c, np.int32)
    np.copyto(srt, keys)
    srt.sort(axis=1)
    u = draws.bytes(m).reshape(r, c)
    ramp = _Ramp(t_rank)
    # per row, the cuts of each byte from ramp.first to ramp.last: drop below `low`, keep above `high`
    w = ramp.last - ramp.first + 1
    byte = np.arange(ramp.first, ramp.last + 1)
    at = np.clip(byte, ramp.h0, ramp.h1) - ramp.h0
    a, b = ramp.a[at], ramp.b[at]
    cut_low = np.where(a < c, srt[:, np.minimum(a, c - 1)], _MAX).astype(np.int32)
    cut_high = np.where(b > 0, srt[:, np.maximum(b - 1, 0)], -1).astype(np.int32)
    cut_low[:, byte < ramp.h0], cut_high[:, byte < ramp.h0] = -1, -1  # keep at every rank
    cut_low[:, byte > ramp.h1], cut_high[:, byte > ramp.h1] = _MAX, _MAX  # drop at every rank
    col = np.clip(u, ramp.first, ramp.last, out=_scratch("col", r, c, np.uint8))
    idx = np.add(col, (np.arange(r, dtype=np.intp) * w - ramp.first)[:, None], out=_scratch("idx", r, c, np.intp))
    low = np.take(cut_low.reshape(-1), idx, out=_scratch("low", r, c, np.int32), mode="clip")
    high = np.take(cut_high.reshape(-1), idx, out=_scratch("high", r, c, np.int32), mode="clip")
    np.greater(keys, high, out=out)
    undecided = np.greater_equal(keys, low, out=_scratch("undecided", r, c, np.bool_))
    np.greater(undecided, out, out=undecided)  # low <= key <= high
    amb = np.flatnonzero(undecided)
    if amb.size:
        out.reshape(-1)[amb] = _decide(x, keys, srt, u, amb, draws, ramp)
    return out


class _Ramp:
    """A ramp of thresholds by rank, split for byte-wise decisions: ``h0``/``h1`` the top bytes of the lowest and
    highest rank's threshold; for each byte ``h0 <= h <= h1``, ``a[h - h0]`` the first rank whose top byte is at
    least ``h`` and ``b[h - h0]`` the first whose top byte exceeds it; ``first``/``last`` the bytes that need a
    table column (those in ``[h0, h1]`` and one on either side, within a byte)."""

    def __init__(self, t_rank: np.ndarray) -> None:
        self.hi, self.lo = t_rank >> 16, t_rank & 0xFFFF
        self.h0, self.h1 = int(self.hi[0]), int(self.hi[-1])
        hs = np.arange(self.h0, self.h1 + 1)
        self.a = np.searchsorted(self.hi, hs, "left")
        self.b = np.searchsorted(self.hi, hs, "right")
        self.first, self.last = max(self.h0 - 1, 0), min(self.h1 + 1, 255)


def _scratch(tag: str, r: int, c: int, dtype: type) -> np.ndarray:
    return scratch(f"magprune.{tag}", r * c, dtype).reshape(r, c)


def _decide(x: np.ndarray, keys: np.ndarray, srt: np.ndarray, u: np.ndarray, amb: np.ndarray, draws: KeepDraws,
            ramp: _Ramp) -> np.ndarray:
    """The decisions of the entries ``amb`` (flat indices, ascending) from their exact ranks.

    An entry with byte ``h`` left undecided by the cuts has its rank in ``[A_h, B_h)`` unless its magnitude ties
    another in the row, so a short binary search there finds it; the candidate is checked (the sorted row holds
    the entry's magnitude there and only there), and where the check fails (ties) the rows are ranked exactly.
    """
    c = x.shape[1]
    rows = amb // c
    k = keys.reshape(-1)[amb]
    byte = u.reshape(-1)[amb].astype(np.int64)
    h = np.clip(byte, ramp.h0, ramp.h1) - ramp.h0
    start = rows * c
    flat = srt.reshape(-1)
    rank = _lower_bound(flat, start, ramp.a[h], ramp.b[h], k)
    at = start + np.minimum(rank, c - 1)
    exact = (rank < c) & (flat[at] == k)
    exact &= (rank == 0) | (flat[at - (rank > 0)] < k)
    exact &= (rank + 1 >= c) | (flat[np.minimum(at + 1, flat.size - 1)] > k)
    tied = np.flatnonzero(~exact)
    if tied.size:  # equal magnitudes in the row: ranks by column, from a stable sort of those rows
        trows = np.unique(rows[tied])
        ranks = row_ranks(x[trows])
        rank[tied] = ranks[np.searchsorted(trows, rows[tied]), amb[tied] - start[tied]]
    top = ramp.hi[rank]
    keep = byte < top
    open_ = np.flatnonzero(byte == top)  # the byte equals the threshold's: 16 more bits, in entry order
    if open_.size:
        keep[open_] = draws.low16(open_.size) < ramp.lo[rank[open_]]
    return keep


def _lower_bound(flat: np.ndarray, start: np.ndarray, lo: np.ndarray, hi: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Per query, the first position in ``[lo, hi)`` of its sorted row (``flat[start:]``) holding a value ``>= k``
    (``hi`` if none): a binary search run on all queries at once."""
    lo, hi = lo.astype(np.int64), hi.astype(np.int64)
    for _ in range(int((hi - lo).max(initial=0)).bit_length()):
        active = lo < hi
        mid = (lo + hi) >> 1
        go = flat[start + np.where(active, mid, 0)] < k
        lo = np.where(active & go, mid + 1, lo)
        hi = np.where(active & ~go, mid, hi)
    return lo
