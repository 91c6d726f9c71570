"""Output buffers reused across tensors: a streaming merge writes each result and then needs its memory again.

A result tensor lives from the method that fills it until the writer thread has copied it to its shard. Taking
its memory from the allocator each time means fresh pages, and a first touch costs a page fault per 4 KB (up to
24 ns per float32 entry on the machines we measured, several times the arithmetic of a whole merge method), so
the executor lends methods buffers from this pool (``TensorContext.empty_like``) and the writer gives them back.
"""

from __future__ import annotations

import threading

import torch
from torch import Tensor


class OutputPool:
    """Byte buffers lent for results and returned once written; at most ``max_bytes`` kept idle."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._free: list[Tensor] = []
        self._lent: dict[int, Tensor] = {}
        self._lock = threading.Lock()

    def empty(self, shape: tuple[int, ...], dtype: torch.dtype) -> Tensor:
        """An uninitialised CPU tensor, from the smallest idle buffer that holds it (else a new one)."""
        nbytes = max(1, torch.Size(shape).numel() * dtype.itemsize)
        with self._lock:
            fits = [i for i, b in enumerate(self._free) if b.numel() >= nbytes]
            buf = self._free.pop(min(fits, key=lambda i: self._free[i].numel())) if fits else None
        buf = torch.empty(nbytes, dtype=torch.uint8) if buf is None else buf
        out = buf[:nbytes].view(dtype)[: torch.Size(shape).numel()].view(shape)
        with self._lock:
            self._lent[buf.data_ptr()] = buf
        return out

    def release(self, t: Tensor) -> None:
        """Take back the buffer under ``t`` or under the tensor ``t`` views (a no-op for memory not lent here)."""
        with self._lock:
            buf = self._lent.pop(t.untyped_storage().data_ptr(), None)
            if buf is None:
                return
            self._free.append(buf)
            while sum(b.numel() for b in self._free) > self.max_bytes:  # drop the small ones: the large save most
                self._free.pop(min(range(len(self._free)), key=lambda i: self._free[i].numel()))

    def idle_bytes(self) -> int:
        with self._lock:
            return sum(b.numel() for b in self._free)
