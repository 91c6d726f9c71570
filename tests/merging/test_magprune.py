"""DELLA's MagPrune decisions (tutti.merging.magprune): the byte-wise cut shortcut equals ranking every entry."""

from __future__ import annotations

import numpy as np
import pytest

from tutti.merging.draws import KeepDraws
from tutti.merging.magprune import keep_block, keep_mask, rank_thresholds, rows_per_block


def reference_keep(x: np.ndarray, draws: KeepDraws, t_rank: np.ndarray) -> np.ndarray:
    """The decisions by definition: every entry ranked by a stable argsort of its float32 magnitude (ties by
    column), its rank's threshold taken."""
    ranks = np.argsort(np.argsort(np.abs(x.astype(np.float32)), axis=1, kind="stable"), axis=1, kind="stable")
    return draws.take(t_rank[ranks], x.shape)


def _rows(shape: tuple[int, int], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


@pytest.mark.parametrize("shape", [(3 * 448 + 5, 576), (1, 576), (5, 1), (40, 2), (2000, 10), (17, 1536)])
@pytest.mark.parametrize("density,epsilon", [(0.5, 0.1), (0.3, 0.2), (0.9, 0.09), (0.02, 0.01)])
def test_keep_mask_equals_ranking_every_entry(shape, density, epsilon):
    x = _rows(shape)
    t = rank_thresholds(shape[1], density, epsilon)
    ours = keep_mask(x, KeepDraws(1, 2), t)
    assert np.array_equal(ours, reference_keep(x, KeepDraws(1, 2), t))
    assert abs(ours.mean() - density) < 0.06 if x.size > 1000 else True


def test_ties_zeros_and_signs_rank_by_column():
    x = _rows((900, 64), 1)
    x[:, :20] = 0.5  # a run of equal magnitudes in every row
    x[:, 20:30] = -0.5  # the same magnitude with the other sign
    x[3] = 0.0  # a row of zeros (an unchanged row of a fine-tune)
    x[5, ::2] = -1e-3
    t = rank_thresholds(64, 0.5, 0.3)
    assert np.array_equal(keep_mask(x, KeepDraws(3, 4), t), reference_keep(x, KeepDraws(3, 4), t))
    z = np.zeros((640, 64), dtype=np.float32)  # every entry ties: the exact path for every undecided one
    assert np.array_equal(keep_mask(z, KeepDraws(5, 6), t), reference_keep(z, KeepDraws(5, 6), t))


def test_each_rank_is_kept_with_its_probability():
    cols = 12
    x = _rows((60_000, cols), 2)
    t = rank_thresholds(cols, 0.5, 0.3)
    keep = keep_mask(x, KeepDraws(7, 8), t)
    ranks = np.argsort(np.argsort(np.abs(x), axis=1, kind="stable"), axis=1)
    for j in range(cols):
        assert keep[ranks == j].mean() == pytest.approx(0.2 + 0.6 * j / (cols - 1), abs=0.012), j


def test_blocks_of_whole_rows_equal_one_call_and_use_the_second_stream():
    x = _rows((64, 300), 3)
    t = rank_thresholds(300, 0.47, 0.13)  # thresholds with low bits: open entries read the second stream
    assert rows_per_block(300) % 8 == 0
    whole = keep_block(x, KeepDraws(9, 10), t, np.empty(x.shape, dtype=bool))
    draws, parts = KeepDraws(9, 10), []
    for s in range(0, 64, 8):
        parts.append(keep_block(x[s: s + 8], draws, t, np.empty((8, 300), dtype=bool)).copy())
    assert np.array_equal(whole, np.concatenate(parts))
    assert not np.array_equal(whole, keep_block(x, KeepDraws(9, 11), t, np.empty(x.shape, dtype=bool)))
