"""The executor's output pool: buffers are reused, views are taken back, idle memory is capped."""

from __future__ import annotations

import torch

from tutti.merging.buffers import OutputPool


def test_buffers_come_back_and_are_reused_best_fit():
    pool = OutputPool(max_bytes=10_000)
    big, small = pool.empty((1000,), torch.float32), pool.empty((10, 10), torch.float32)
    big_ptr, small_ptr = big.data_ptr(), small.data_ptr()
    assert big.shape == (1000,) and small.shape == (10, 10) and small.dtype == torch.float32
    pool.release(big.view(10, 100)[2:])  # a view of the lent tensor gives its buffer back
    pool.release(small)
    assert pool.idle_bytes() == 4400
    again = pool.empty((5, 5), torch.float32)  # the smallest idle buffer that holds it
    assert again.data_ptr() == small_ptr
    assert pool.empty((900,), torch.float32).data_ptr() == big_ptr
    assert pool.empty((10,), torch.float32).data_ptr() not in (big_ptr, small_ptr)  # none idle: a new one
    pool.release(torch.zeros(3))  # not lent here: ignored
    assert pool.idle_bytes() == 0


def test_idle_memory_is_capped_keeping_the_largest():
    pool = OutputPool(max_bytes=5000)
    ts = [pool.empty((n,), torch.float32) for n in (1000, 200, 100)]
    for t in ts:
        pool.release(t)
    assert pool.idle_bytes() == 4800  # 4000 + 800 fit; the 400-byte buffer was dropped
    assert pool.empty((1,), torch.uint8).numel() == 1
