"""Reused per-thread scratch buffers and the block size of the blocked (CPU, float32) merge paths."""

from __future__ import annotations

import threading

import numpy as np

BLOCK = 1 << 18  # entries per block: 1 MB of float32, so every temporary stays in cache and is reused

_local = threading.local()


def scratch(tag: str, n: int, dtype: type = np.float32) -> np.ndarray:
    """A reused buffer of ``n`` entries for ``tag``, per thread (contents undefined).

    Fresh pages are expensive on some machines (a page fault per 4 KB; 24 ns per float32 entry measured on a
    first touch here), so the blocked paths keep their scratch, masks included, from one tensor to the next: the
    memory held is that of the largest tensor's needs.
    """
    bufs = _local.__dict__.setdefault("bufs", {})
    buf = bufs.get(tag)
    if buf is None or buf.size < n or buf.dtype != dtype:
        buf = bufs[tag] = np.empty(n, dtype=dtype)
    return buf[:n]
