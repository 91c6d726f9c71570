"""Keep/drop decisions (tutti.merging.draws): exact 24-bit thresholds, block independence, both streams."""

from __future__ import annotations

import numpy as np
import pytest

from tutti.merging.draws import ONE, KeepDraws, threshold, thresholds


def _reference(main_seed: int, fix_seed: int, t: np.ndarray) -> np.ndarray:
    """The decisions rebuilt from the two raw streams: ``u < T`` with ``u = byte << 16 | 16 fix bits`` where
    the byte alone does not decide."""
    m = t.size
    byte = np.random.SFC64(main_seed).random_raw((m + 7) // 8).view(np.uint8)[:m].astype(np.int64)
    hi = t >> 16
    open_ = np.flatnonzero(byte == hi)
    low = np.zeros(m, dtype=np.int64)  # the byte decides elsewhere: any low bits give the same answer
    low[open_] = (np.random.SFC64(fix_seed).random_raw(open_.size) & 0xFFFF).astype(np.int64)
    return ((byte << 16) | low) < t


@pytest.mark.parametrize("p", [0.0, 0.3, 0.5, 0.53, 0.999, 1.0])
def test_decisions_are_u_below_the_threshold(p):
    m = 200_003
    t = threshold(p)
    ours = KeepDraws(7, 8).take(t, m)
    assert np.array_equal(ours, _reference(7, 8, np.full(m, t, dtype=np.int64)))
    assert abs(ours.mean() - p) < 0.005


def test_open_entries_use_the_second_stream():
    # p = 0.5 + 1/512: T = 2**23 + 2**15, top byte 128, low half 2**15: entries with byte 128 are open and kept
    # half the time; with another fix seed they change, and nothing else does
    m = 400_000
    t = threshold(0.5 + 1 / 512)
    assert t & 0xFFFF == 1 << 15
    a, b = KeepDraws(1, 2).take(t, m), KeepDraws(1, 3).take(t, m)
    byte = np.random.SFC64(1).random_raw((m + 7) // 8).view(np.uint8)[:m]
    open_ = byte == 128
    assert np.array_equal(a[~open_], b[~open_]) and not np.array_equal(a[open_], b[open_])
    assert abs(a[open_].mean() - 0.5) < 0.05


def test_blocks_equal_one_call_for_scalar_and_tensor_thresholds():
    m = 3 * 4096 + 13  # the last block odd-sized
    rng = np.random.default_rng(0)
    per_entry = thresholds(rng.random(m))
    for t in (threshold(0.37), per_entry):
        whole = KeepDraws(5, 6).take(t, m)
        draws, parts = KeepDraws(5, 6), []
        for s in range(0, m, 4096):
            part = t if isinstance(t, int) else t[s: s + 4096]
            parts.append(draws.take(part, min(4096, m - s)))
        assert np.array_equal(whole, np.concatenate(parts))


def test_tensor_thresholds_broadcast_and_equal_scalar_ones():
    t = threshold(0.41)
    scalar = KeepDraws(9, 10).take(t, (300, 70))
    row = KeepDraws(9, 10).take(np.full(70, t, dtype=np.int64), (300, 70))  # broadcast over rows
    assert np.array_equal(scalar, row)
    ramp = thresholds(np.linspace(0.1, 0.9, 70))
    keep = KeepDraws(9, 10).take(ramp, (4000, 70))
    assert np.allclose(keep.mean(axis=0), np.linspace(0.1, 0.9, 70), atol=0.03)
    assert KeepDraws(1, 1).take(np.array([0, ONE]), (1000, 2)).mean(axis=0).tolist() == [0.0, 1.0]
