"""The streaming executor: read ahead on a thread pool, merge tensor by tensor, write as produced.

* Reading: a thread pool loads the inputs of upcoming tensors (safetensors tensors mapped copy-on-write from the
  page cache, LoRA deltas applied, cast to the compute dtype, checked for NaN/Inf) while the current tensor is
  merged. Read-ahead stops when the bytes in flight would pass the memory budget. A mapped tensor costs no copy
  and no zero-filled buffer, and its pages leave the resident set when the tensor is freed.
* Compute: one unit at a time on the compute device. For element-wise methods (``elementwise=True``) and plain
  copies, a unit is a row block of a tensor, read as a row block too: an embedding matrix never needs N full copies
  at once and read-ahead keeps going through it.
* Writing: a single writer thread appends each result (or row block) to its pre-declared place in the output shard
  (:class:`~tutti.merging.stream_writer.StreamingWriter`), so nothing accumulates waiting for a shard to fill.
"""

from __future__ import annotations

import contextlib
import json
import mmap
import os
import queue
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from tutti.errors import CheckpointError
from tutti.merging.base import TensorContext
from tutti.merging.buffers import OutputPool
from tutti.merging.plan import DTYPE_BYTES, MergePlan, ModelSource, TensorJob
from tutti.merging.stream_writer import StreamingWriter

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "int64": torch.int64}


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


_ST_TO_TORCH = {"F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16, "F64": torch.float64,
                "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
                "BOOL": torch.bool}
_HEADERS: dict[tuple[int, int, int, int], tuple[int, dict[str, Any]]] = {}
_HEADERS_LOCK = threading.Lock()


def _header(fd: int, file: Path) -> tuple[int, dict[str, Any]]:
    st = os.fstat(fd)
    key = (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)  # a file rewritten in place gets a new entry
    with _HEADERS_LOCK:
        if key not in _HEADERS:
            n = int.from_bytes(os.pread(fd, 8, 0), "little")
            _HEADERS[key] = (8 + n, json.loads(os.pread(fd, n, 8)))
        return _HEADERS[key]


def read_safetensors_tensor(file: Path, name: str, *, rows: tuple[int, int] | None = None) -> Tensor:
    """One tensor (or its rows ``[start, stop)``) as a private, copy-on-write memory map of the file's pages.

    Reading costs no copy: the page cache's pages are mapped (a fault per 64 kB, not a 4 kB ``memcpy`` and
    zero-fill), and writes to the tensor go to private pages, never to the file. The map is released as soon as
    the last tensor using it is freed, so the pages leave the RSS like a buffer of our own.
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
        dtype = _ST_TO_TORCH[spec["dtype"]]
        if end == begin:
            return torch.empty(shape, dtype=dtype)
        lo = (start + begin) // mmap.ALLOCATIONGRANULARITY * mmap.ALLOCATIONGRANULARITY
        if os.fstat(fd).st_size < start + end:
            raise CheckpointError(f"{file}: truncated (tensor {name!r} ends past the end of the file)")
        mm = mmap.mmap(fd, start + end - lo, access=mmap.ACCESS_COPY, offset=lo)
    finally:
        os.close(fd)
    buf = torch.frombuffer(mm, dtype=torch.uint8, offset=start + begin - lo, count=end - begin)
    return buf.view(dtype).reshape(shape)


def all_finite(t: Tensor) -> bool:
    """Whether every element of ``t`` is finite: one sum (a NaN or Inf anywhere makes it non-finite), and the exact
    element-wise test only when the sum is not finite (an overflow of finite values)."""
    return bool(torch.isfinite(t.sum())) or bool(torch.isfinite(t).all())


def load_input(src: ModelSource, name: str, dtype: torch.dtype | None, truncate: tuple[int, ...] | None, *,
               rows: tuple[int, int] | None = None) -> Tensor:
    """Read one input tensor: LoRA delta added, cast to ``dtype``, cut to ``truncate``, checked to be finite.

    ``rows`` reads only those rows (safetensors inputs without LoRA or truncation).
    """
    file = src.ckpt.info(name).file
    if str(file).endswith(".safetensors"):
        t = read_safetensors_tensor(file, name, rows=rows)
    else:
        t = src.ckpt.get(name) if rows is None else src.ckpt.get(name)[rows[0]:rows[1]]
    pair = src.lora_pairs.get(name)
    if pair is not None:
        fifo = bool(src.lora.config.get("fan_in_fan_out", False))
        t = (t.float() + pair.delta(fifo)).to(t.dtype)
    if dtype is not None and t.is_floating_point():
        t = t.to(dtype)
    if truncate is not None:
        t = t[tuple(slice(0, n) for n in truncate)]
    if t.is_floating_point() and not all_finite(t):
        raise CheckpointError(f"tensor {name!r} in {src.folder} contains NaN or Inf; fix or exclude that model")
    return t


def _job_bytes(plan: MergePlan, job: TensorJob, dtype: torch.dtype | None) -> int:
    total = 0
    for mi, name in (*job.inputs, *([job.base] if job.base else [])):
        info = plan.models[mi].ckpt.info(name)
        per = DTYPE_BYTES.get(str(dtype).removeprefix("torch."), 4) if dtype else info.nbytes // max(
            torch.Size(info.shape).numel(), 1)
        total += torch.Size(info.shape).numel() * per
    if plan.vocab is not None and job.name in plan.vocab.aligned:  # the realigned copies live beside the originals
        total *= 2
    return total


def _row_step(plan: MergePlan, job: TensorJob, dtype: torch.dtype | None, block_bytes: int) -> int | None:
    """Rows per unit when ``job`` can be read and merged in row blocks (``None``: as one whole tensor)."""
    if not (plan.method.elementwise or job.params.get("__copy__", False)):
        return None
    if plan.vocab is not None or job.truncate is not None or len(job.shape) < 2:
        return None
    refs = [*job.inputs, *([job.base] if job.base else [])]
    row_bytes = 0
    for mi, name in refs:
        src = plan.models[mi]
        info = src.ckpt.info(name)
        if name in src.lora_pairs or not str(info.file).endswith(".safetensors") or tuple(info.shape) != job.shape:
            return None
        per = info.nbytes // max(torch.Size(info.shape).numel(), 1)
        if dtype is not None and info.dtype.startswith(("float", "bfloat")):
            per = max(per, DTYPE_BYTES.get(str(dtype).removeprefix("torch."), 4))
        row_bytes = max(row_bytes, per * torch.Size(job.shape[1:]).numel())
    step = max(1, block_bytes // max(row_bytes * (len(refs) + 2), 1))
    return step if step < job.shape[0] else None


def _blocks(job: TensorJob, ins: list[Tensor], base: Tensor | None, block_bytes: int) -> Iterator[slice]:
    rows = job.shape[0] if job.shape else 1
    row_bytes = max(ins[0].element_size() * ins[0].numel() // max(rows, 1), 1) * (len(ins) + 2)
    step = max(1, block_bytes // row_bytes)
    if not job.shape or step >= rows:
        yield slice(None)
        return
    for start in range(0, rows, step):
        yield slice(start, min(start + step, rows))


class _Writer:
    """A writer thread fed through a byte-bounded queue."""

    def __init__(self, writer: StreamingWriter, max_bytes: int, pool: OutputPool | None = None) -> None:
        self.writer = writer
        self.pool = pool
        self.q: queue.Queue[tuple[str, Tensor] | None] = queue.Queue()
        self.cv = threading.Condition()
        self.pending = 0
        self.max_bytes = max_bytes
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while (item := self.q.get()) is not None:
            name, t = item
            try:
                if self.error is None:
                    self.writer.write(name, t)
                    if self.pool is not None:
                        self.pool.release(t)
            except BaseException as e:  # reported on the next put / close
                self.error = e
            with self.cv:
                self.pending -= t.numel() * t.element_size()
                self.cv.notify_all()

    def put(self, name: str, t: Tensor) -> None:
        if self.error is not None:
            raise self.error
        n = t.numel() * t.element_size()
        with self.cv:
            self.cv.wait_for(lambda: self.pending == 0 or self.pending + n <= self.max_bytes)
            self.pending += n
        self.q.put((name, t))

    def close(self) -> None:
        self.q.put(None)
        self.thread.join()
        if self.error is not None:
            raise self.error


def _units(plan: MergePlan, dtype: torch.dtype | None, options: ExecOptions) -> list[tuple[int, tuple[int, int] | None]]:
    """``(job index, rows or None)`` in output order: row blocks for element-wise jobs, else whole tensors."""
    units: list[tuple[int, tuple[int, int] | None]] = []
    for i, job in enumerate(plan.jobs):
        step = _row_step(plan, job, dtype, options.block_bytes)
        if step is None:
            units.append((i, None))
        else:
            units += [(i, (s, min(s + step, job.shape[0]))) for s in range(0, job.shape[0], step)]
    return units


def run_plan(plan: MergePlan, writer: StreamingWriter, options: ExecOptions,
             on_tensor: Callable[[TensorJob], None] | None = None) -> None:
    """Execute every job of ``plan`` and write the results through ``writer`` (not finished here)."""
    dtype = DTYPES.get(plan.config.dtype) if plan.config.dtype else None
    device = torch.device(options.device)
    budget = max(options.max_memory, 1)
    pool = OutputPool(max_bytes=budget // 4) if device.type == "cpu" else None
    out = _Writer(writer, max_bytes=budget // 4, pool=pool)
    reader = ThreadPoolExecutor(max_workers=max(1, options.read_threads), thread_name_prefix="tutti-read")
    jobs = plan.jobs
    units = _units(plan, dtype, options)
    futures: dict[int, Future[list[Tensor]]] = {}
    job_sizes = [_job_bytes(plan, j, dtype) for j in jobs]
    sizes = [job_sizes[j] if r is None else job_sizes[j] * (r[1] - r[0]) // jobs[j].shape[0] for j, r in units]
    in_flight = 0
    nxt = 0

    def load(job: TensorJob, rows: tuple[int, int] | None) -> list[Tensor]:
        refs = [*job.inputs, *([job.base] if job.base else [])]
        tensors = [load_input(plan.models[mi], n, dtype, job.truncate, rows=rows) for mi, n in refs]
        if plan.vocab is not None:  # tokenizer merging: realign vocab-indexed inputs to the output vocabulary
            from tutti.merging.vocab import align_inputs

            tensors = align_inputs(plan.vocab, job.name, tensors)
        return tensors

    try:
        for i, (ji, rows) in enumerate(units):
            # keep reading ahead while the bytes in flight fit half the budget (the other half is compute/write)
            while nxt < len(units) and (nxt <= i or in_flight + sizes[nxt] <= budget // 2):
                futures[nxt] = reader.submit(load, jobs[units[nxt][0]], units[nxt][1])
                in_flight += sizes[nxt]
                nxt += 1
            tensors = futures.pop(i).result()
            in_flight -= sizes[i]
            _compute_and_write(plan, jobs[ji], tensors, device, options, out, rows, pool)
            del tensors  # a mapped input is unmapped once its result (which may alias it) is written
            if on_tensor is not None and (rows is None or rows[1] == jobs[ji].shape[0]):
                on_tensor(jobs[ji])
        out.close()
    except BaseException:
        for f in futures.values():
            f.cancel()
        with contextlib.suppress(BaseException):
            out.close()
        raise
    finally:
        reader.shutdown(wait=True, cancel_futures=True)


def _compute_and_write(plan: MergePlan, job: TensorJob, tensors: list[Tensor], device: torch.device,
                       options: ExecOptions, out: _Writer, rows: tuple[int, int] | None = None,
                       pool: OutputPool | None = None) -> None:
    out_dtype = DTYPES.get(job.dtype, torch.float32)
    ins = tensors[: len(job.inputs)]
    base = tensors[len(job.inputs)] if job.base else None
    method = plan.method
    copy_only = job.params.get("__copy__", False) or not ins[0].is_floating_point()
    ctx = TensorContext(name=job.name, layer_index=job.layer_index, num_layers=plan.num_layers, seed=options.seed,
                        sources=tuple((str(plan.models[mi].folder), n) for mi, n in job.inputs), pool=pool)
    split = method.elementwise and not copy_only and rows is None
    blocks = list(_blocks(job, ins, base, options.block_bytes)) if split else [slice(None)]
    whole = tuple(job.shape) if rows is None else (rows[1] - rows[0], *job.shape[1:])
    for blk in blocks:
        xs = [x[blk].to(device) for x in ins]
        b = base[blk].to(device) if base is not None else None
        res = xs[0] if copy_only else method(xs, b, ctx=ctx, **job.params)
        if tuple(res.shape) != (whole if blk == slice(None) else tuple(xs[0].shape)):
            raise CheckpointError(f"merge_method {method.name!r} returned shape {list(res.shape)} for "
                                  f"{job.name!r}, expected {list(job.shape)}")
        written = res.to(out_dtype).to("cpu")
        out.put(job.name, written)
        if pool is not None and written is not res:
            pool.release(res)  # a lent buffer whose contents were converted: free again now
