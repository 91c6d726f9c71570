"""The fused TIES / linear combine on float32 NumPy blocks (no torch: shared by both engines).

On this kind of CPU NumPy's element-wise kernels run at about 0.3 ns per float32 entry against 0.3-1.5 ns for
torch's (``sub``, ``addcmul``), and a combine is a dozen such passes per block, so the blocked paths (and
``combine_task_vectors`` on CPU with its own temporaries) do their arithmetic in NumPy. The operations and their
order are those of ``task_arithmetic._combine_fast`` (each one correctly rounded in float32), so the results are
the same bits; ``tests/merging/test_fast_paths.py`` checks it.
"""

from __future__ import annotations

import numpy as np

from tutti.merging.scratch import scratch


def combinable(weight: list[float], *, consensus: bool) -> bool:
    """Whether :class:`Combiner` takes these weights (with consensus: none negative, one positive)."""
    return not consensus or (min(weight) >= 0 and max(weight) > 0)


class Combiner:
    """``_combine_fast`` for float32 NumPy blocks, with reused scratch (``size`` entries at most).

    The elected sign is handled as a bit: multiplying by ``e = copysign(1, total)`` is flipping the sign bit where
    ``total``'s is set, so ``d * e`` is ``d ^ s`` and ``magnitude * e`` is ``magnitude ^ s`` for the sign bits ``s``
    of ``total`` (the same bits, at a third of the cost of NumPy's scalar ``copysign``).
    """

    def __init__(self, weights: list[float], size: int, *, consensus: bool, normalize: bool, lambda_: float) -> None:
        self.ws = [np.float32(w) for w in weights]  # each weight rounded to float32, as the torch paths do
        self.consensus, self.normalize, self.lambda_ = consensus, normalize, lambda_
        self.total = scratch("combine.total", size)
        self.sign = scratch("combine.sign", size, np.uint32)
        self.zeros = scratch("combine.zeros", size)
        self.zeros[:] = 0
        self.positive = scratch("combine.positive", size, np.bool_)
        self.sum_w = np.float32(sum(self.ws, np.float32(0)))
        self.floor = np.float32(min((w for w in self.ws if w > 0), default=np.float32(1)) / 2)

    def __call__(self, base: np.ndarray, deltas: list[np.ndarray], out: np.ndarray, *, weighted: bool = False) -> None:
        """``out = combine(base, deltas)``; the deltas are scratch and are overwritten (``weighted``: they are
        already multiplied by their weights)."""
        m = base.shape[0]
        if not weighted:
            for d, w in zip(deltas, self.ws, strict=True):
                np.multiply(d, w, out=d)
        total = self.total[:m]
        np.add(deltas[0], deltas[1], out=total) if len(deltas) > 1 else np.copyto(total, deltas[0])
        for d in deltas[2:]:
            np.add(total, d, out=total)
        if not self.consensus:
            if self.normalize:
                np.divide(total, self.sum_w if abs(float(self.sum_w)) >= 1e-8 else np.float32(1), out=total)
            if self.lambda_ != 1:
                np.multiply(total, np.float32(self.lambda_), out=total)
            np.add(base, total, out=out)
            return
        sign = np.bitwise_and(total.view(np.uint32), np.uint32(0x80000000), out=self.sign[:m])  # +0 elects +1
        zeros = self.zeros[:m]
        for d in deltas:
            np.bitwise_xor(d.view(np.uint32), sign, out=d.view(np.uint32))  # d * e
            np.maximum(d, zeros, out=d)  # (an array operand: twice NumPy's speed with a scalar 0 here)
        magnitude = total  # the sum of agreeing magnitudes, in the same order as the torch path
        np.add(deltas[0], deltas[1], out=magnitude) if len(deltas) > 1 else np.copyto(magnitude, deltas[0])
        for d in deltas[2:]:
            np.add(magnitude, d, out=magnitude)
        if self.normalize:
            np.divide(magnitude, self._divisor(deltas), out=magnitude)
        if self.lambda_ != 1:
            np.multiply(magnitude, np.float32(self.lambda_), out=magnitude)
        np.bitwise_xor(magnitude.view(np.uint32), sign, out=magnitude.view(np.uint32))  # magnitude * e
        np.add(base, magnitude, out=out)

    def _divisor(self, agreeing: list[np.ndarray]) -> np.ndarray:
        """``sum_i w_i sign(c_i)``, at least half the smallest positive weight (where no entry agreed the magnitude
        is 0, so any positive divisor does); computed in the ``c_i``'s storage.

        The ``c_i`` are non-negative here, so ``sign(c_i) w_i`` is ``(c_i > 0) w_i``, the same bits (NumPy's
        ``sign`` written in place runs at 9 ns per entry on this kind of CPU, the comparison at 0.2).
        """
        m = agreeing[0].shape[0]
        positive, zeros = self.positive[:m], self.zeros[:m]
        divisor = np.multiply(np.greater(agreeing[0], zeros, out=positive), self.ws[0], out=agreeing[0])
        for c, w in zip(agreeing[1:], self.ws[1:], strict=True):
            np.multiply(np.greater(c, zeros, out=positive), w, out=c)
            np.add(divisor, c, out=divisor)
        return np.maximum(divisor, self.floor, out=divisor)
