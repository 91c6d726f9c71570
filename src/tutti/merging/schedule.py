"""The engine-independent half of the streaming executor (no torch): mapping safetensors bytes, cutting the plan
into units, reading ahead on a thread pool within a byte budget, and the writer thread.

:mod:`tutti.merging.execute` (torch tensors) and :mod:`tutti.merging.np_engine` (NumPy arrays) wrap the bytes
mapped here in their own array type and run their own methods; the schedule, the budget and the output order
are these.
"""

from __future__ import annotations

import contextlib
import json
import math
import mmap
import os
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from tutti.errors import CheckpointError
from tutti.merging.plan import DTYPE_BYTES, MergePlan, TensorJob

T = TypeVar("T")
Unit = tuple[int, tuple[int, int] | None]  # (job index, rows or None)
OUT_DTYPES = ("float32", "bfloat16", "float16", "int64")  # written as such; any other output dtype as float32

_HEADERS: dict[tuple[int, int, int, int], tuple[int, dict[str, Any]]] = {}
_HEADERS_LOCK = threading.Lock()


@dataclass(frozen=True)
class ExecOptions:
    """How to run a plan.

    Args:
        device: compute device (``cpu``, ``cuda``, ``cuda:1``...).
        seed: global seed of the seed contract.
        max_memory: peak-memory budget in bytes for tensors in flight (read-ahead + compute + write queue).
        read_threads: reader threads.
        block_bytes: element-wise methods split tensors bigger than this (all inputs plus result) into row blocks.
    """

    device: str = "cpu"
    seed: int = 0
    max_memory: int = 1024**3
    read_threads: int = 4
    block_bytes: int = 16 * 1024**2


@dataclass(frozen=True)
class MappedBytes:
    """One tensor's bytes (or its rows') in a private copy-on-write map: ``buffer[offset:offset + count]``."""

    buffer: mmap.mmap | None  # None for an empty tensor
    offset: int
    count: int
    dtype: str  # safetensors code, e.g. "F32"
    shape: tuple[int, ...]


def _header(fd: int, file: Path) -> tuple[int, dict[str, Any]]:
    st = os.fstat(fd)
    key = (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)  # a file rewritten in place gets a new entry
    with _HEADERS_LOCK:
        if key not in _HEADERS:
            n = int.from_bytes(os.pread(fd, 8, 0), "little")
            _HEADERS[key] = (8 + n, json.loads(os.pread(fd, n, 8)))
        return _HEADERS[key]


def map_safetensors(file: Path, name: str, *, rows: tuple[int, int] | None = None) -> MappedBytes:
    """Map one tensor of a safetensors file (or its rows ``[start, stop)``) copy-on-write from the page cache.

    Reading costs no copy: the page cache's pages are mapped (a fault per 64 kB, not a 4 kB ``memcpy`` and
    zero-fill), and writes to the array go to private pages, never to the file. The map is released as soon as
    the last array using it is freed, so the pages leave the RSS like a buffer of our own.
    """
    fd = os.open(file, os.O_RDONLY)
    try:
        start, header = _header(fd, file)
        spec = header[name]
        begin, end = spec["data_offsets"]
        shape = list(spec["shape"])
        if rows is not None:
            row = (end - begin) // max(shape[0], 1)
            begin, end, shape[0] = begin + rows[0] * row, begin + rows[1] * row, rows[1] - rows[0]
        if end == begin:
            return MappedBytes(None, 0, 0, spec["dtype"], tuple(shape))
        lo = (start + begin) // mmap.ALLOCATIONGRANULARITY * mmap.ALLOCATIONGRANULARITY
        if os.fstat(fd).st_size < start + end:
            raise CheckpointError(f"{file}: truncated (tensor {name!r} ends past the end of the file)")
        mm = mmap.mmap(fd, start + end - lo, access=mmap.ACCESS_COPY, offset=lo)
    finally:
        os.close(fd)
    return MappedBytes(mm, start + begin - lo, end - begin, spec["dtype"], tuple(shape))


def job_bytes(plan: MergePlan, job: TensorJob, dtype: str | None) -> int:
    """Bytes of ``job``'s inputs once read (cast to ``dtype`` when given)."""
    total = 0
    for mi, name in job.refs:
        info = plan.models[mi].ckpt.info(name)
        n = math.prod(info.shape)
        total += n * (DTYPE_BYTES.get(dtype, 4) if dtype else info.nbytes // max(n, 1))
    if plan.vocab is not None and job.name in plan.vocab.aligned:  # the realigned copies live beside the originals
        total *= 2
    return total


def row_step(plan: MergePlan, job: TensorJob, dtype: str | None, block_bytes: int) -> int | None:
    """Rows per unit when ``job`` can be read and merged in row blocks (``None``: as one whole tensor)."""
    if not (plan.method.elementwise or job.params.get("__copy__", False)):
        return None
    if plan.vocab is not None or job.truncate is not None or len(job.shape) < 2:
        return None
    row_bytes = 0
    for mi, name in job.refs:
        src = plan.models[mi]
        info = src.ckpt.info(name)
        if name in src.lora_pairs or not str(info.file).endswith(".safetensors") or tuple(info.shape) != job.shape:
            return None
        per = info.nbytes // max(math.prod(info.shape), 1)
        if dtype is not None and info.dtype.startswith(("float", "bfloat")):
            per = max(per, DTYPE_BYTES.get(dtype, 4))
        row_bytes = max(row_bytes, per * math.prod(job.shape[1:]))
    step = max(1, block_bytes // max(row_bytes * (len(job.refs) + 2), 1))
    return step if step < job.shape[0] else None


def unit_bytes(plan: MergePlan, units: list[Unit], dtype: str | None) -> list[int]:
    """Bytes of each unit's inputs once read: :func:`job_bytes`, pro rata for a row block."""
    whole = [job_bytes(plan, job, dtype) for job in plan.jobs]
    return [whole[j] if r is None else whole[j] * (r[1] - r[0]) // plan.jobs[j].shape[0] for j, r in units]


def plan_units(plan: MergePlan, dtype: str | None, options: ExecOptions) -> list[Unit]:
    """``(job index, rows or None)`` in output order: row blocks for element-wise jobs, else whole tensors."""
    units: list[Unit] = []
    for i, job in enumerate(plan.jobs):
        step = row_step(plan, job, dtype, options.block_bytes)
        if step is None:
            units.append((i, None))
        else:
            units += [(i, (s, min(s + step, job.shape[0]))) for s in range(0, job.shape[0], step)]
    return units


class WriterThread(Generic[T]):
    """A writer thread fed through a byte-bounded queue (``release`` gets each array back once written)."""

    def __init__(self, write: Callable[[str, T], None], max_bytes: int,
                 release: Callable[[T], None] | None = None) -> None:
        self.write, self.release = write, release
        self.q: queue.Queue[tuple[str, T, int] | None] = queue.Queue()
        self.cv = threading.Condition()
        self.pending = 0
        self.max_bytes = max_bytes
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while (item := self.q.get()) is not None:
            name, t, n = item
            try:
                if self.error is None:
                    self.write(name, t)
                    if self.release is not None:
                        self.release(t)
            except BaseException as e:  # reported on the next put / close
                self.error = e
            with self.cv:
                self.pending -= n
                self.cv.notify_all()

    def put(self, name: str, t: T) -> None:
        """Queue ``t`` (waits while the queued bytes would pass the budget)."""
        if self.error is not None:
            raise self.error
        n = int(t.nbytes)  # type: ignore[attr-defined]
        with self.cv:
            self.cv.wait_for(lambda: self.pending == 0 or self.pending + n <= self.max_bytes)
            self.pending += n
        self.q.put((name, t, n))

    def close(self) -> None:
        self.q.put(None)
        self.thread.join()
        if self.error is not None:
            raise self.error


def stream_units(units: list[Unit], sizes: list[int], load: Callable[[Unit], T], compute: Callable[[Unit, T], None],
                 out: WriterThread[Any], *, budget: int, read_threads: int) -> None:
    """Load units ahead on a thread pool while the bytes in flight fit half of ``budget`` (the other half is compute
    and the write queue), ``compute`` each in order, then close ``out``."""
    reader = ThreadPoolExecutor(max_workers=max(1, read_threads), thread_name_prefix="tutti-read")
    futures: dict[int, Future[T]] = {}
    in_flight = 0
    nxt = 0
    try:
        for i, unit in enumerate(units):
            while nxt < len(units) and (nxt <= i or in_flight + sizes[nxt] <= budget // 2):
                futures[nxt] = reader.submit(load, units[nxt])
                in_flight += sizes[nxt]
                nxt += 1
            data = futures.pop(i).result()
            in_flight -= sizes[i]
            compute(unit, data)
            del data  # a mapped input is unmapped once its result (which may alias it) is written
        out.close()
    except BaseException:
        for f in futures.values():
            f.cancel()
        with contextlib.suppress(BaseException):
            out.close()
        raise
    finally:
        reader.shutdown(wait=True, cancel_futures=True)
