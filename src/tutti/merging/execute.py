"""The streaming executor: read ahead on a thread pool, merge tensor by tensor, write as produced.

* Reading: a thread pool loads the inputs of upcoming tensors (memory-mapped safetensors, LoRA deltas applied,
  cast to the compute dtype, checked for NaN/Inf) while the current tensor is merged. Read-ahead stops when the
  bytes in flight would pass the memory budget.
* Compute: one tensor at a time on the compute device. Element-wise methods (``elementwise=True``) split tensors
  larger than the block size into row blocks, so even an embedding matrix never needs N full copies at once.
* Writing: a single writer thread appends each result (or row block) to its pre-declared place in the output shard
  (:class:`~tutti.merging.stream_writer.StreamingWriter`), so nothing accumulates waiting for a shard to fill.
"""

from __future__ import annotations

import contextlib
import json
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
        block_bytes: element-wise methods split tensors bigger than this into row blocks.
    """

    device: str = "cpu"
    seed: int = 0
    max_memory: int = 1024**3
    read_threads: int = 4
    block_bytes: int = 64 * 1024**2


_ST_TO_TORCH = {"F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16, "F64": torch.float64,
                "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
                "BOOL": torch.bool}
_HEADERS: dict[str, tuple[int, dict[str, Any]]] = {}
_HEADERS_LOCK = threading.Lock()


def read_safetensors_tensor(file: Path, name: str) -> Tensor:
    """Read one tensor with ``pread`` into fresh memory (not a memory map, so it leaves the RSS when dropped)."""
    key = str(file)
    with _HEADERS_LOCK:
        if key not in _HEADERS:
            with open(file, "rb") as f:
                n = int.from_bytes(f.read(8), "little")
                _HEADERS[key] = (8 + n, json.loads(f.read(n)))
        start, header = _HEADERS[key]
    spec = header[name]
    begin, end = spec["data_offsets"]
    buf = torch.empty(end - begin, dtype=torch.uint8)
    fd = os.open(file, os.O_RDONLY)
    try:
        view, done = memoryview(buf.numpy()), 0
        while done < end - begin:
            got = os.preadv(fd, [view[done:]], start + begin + done)
            if got <= 0:
                raise CheckpointError(f"{file}: truncated while reading {name!r}")
            done += got
    finally:
        os.close(fd)
    return buf.view(_ST_TO_TORCH[spec["dtype"]]).reshape(spec["shape"])


def load_input(src: ModelSource, name: str, dtype: torch.dtype | None, truncate: tuple[int, ...] | None) -> Tensor:
    """Read one input tensor: LoRA delta added, cast to ``dtype``, cut to ``truncate``, checked to be finite."""
    file = src.ckpt.info(name).file
    t = read_safetensors_tensor(file, name) if str(file).endswith(".safetensors") else src.ckpt.get(name)
    pair = src.lora_pairs.get(name)
    if pair is not None:
        fifo = bool(src.lora.config.get("fan_in_fan_out", False))
        t = (t.float() + pair.delta(fifo)).to(t.dtype)
    if dtype is not None and t.is_floating_point():
        t = t.to(dtype)
    if truncate is not None:
        t = t[tuple(slice(0, n) for n in truncate)]
    if t.is_floating_point() and not bool(torch.isfinite(t).all()):
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

    def __init__(self, writer: StreamingWriter, max_bytes: int) -> None:
        self.writer = writer
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


def run_plan(plan: MergePlan, writer: StreamingWriter, options: ExecOptions,
             on_tensor: Callable[[TensorJob], None] | None = None) -> None:
    """Execute every job of ``plan`` and write the results through ``writer`` (not finished here)."""
    dtype = DTYPES.get(plan.config.dtype) if plan.config.dtype else None
    device = torch.device(options.device)
    budget = max(options.max_memory, 1)
    out = _Writer(writer, max_bytes=budget // 4)
    pool = ThreadPoolExecutor(max_workers=max(1, options.read_threads), thread_name_prefix="tutti-read")
    jobs = plan.jobs
    futures: dict[int, Future[list[Tensor]]] = {}
    sizes = [_job_bytes(plan, j, dtype) for j in jobs]
    in_flight = 0
    nxt = 0

    def load(job: TensorJob) -> list[Tensor]:
        refs = [*job.inputs, *([job.base] if job.base else [])]
        tensors = [load_input(plan.models[mi], n, dtype, job.truncate) for mi, n in refs]
        if plan.vocab is not None:  # tokenizer merging: realign vocab-indexed inputs to the output vocabulary
            from tutti.merging.vocab import align_inputs

            tensors = align_inputs(plan.vocab, job.name, tensors)
        return tensors

    try:
        for i, job in enumerate(jobs):
            # keep reading ahead while the bytes in flight fit half the budget (the other half is compute/write)
            while nxt < len(jobs) and (nxt <= i or in_flight + sizes[nxt] <= budget // 2):
                futures[nxt] = pool.submit(load, jobs[nxt])
                in_flight += sizes[nxt]
                nxt += 1
            tensors = futures.pop(i).result()
            in_flight -= sizes[i]
            _compute_and_write(plan, job, tensors, device, options, out)
            del tensors
            if on_tensor is not None:
                on_tensor(job)
        out.close()
    except BaseException:
        for f in futures.values():
            f.cancel()
        with contextlib.suppress(BaseException):
            out.close()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _compute_and_write(plan: MergePlan, job: TensorJob, tensors: list[Tensor], device: torch.device,
                       options: ExecOptions, out: _Writer) -> None:
    out_dtype = DTYPES.get(job.dtype, torch.float32)
    ins = tensors[: len(job.inputs)]
    base = tensors[len(job.inputs)] if job.base else None
    method = plan.method
    copy_only = job.params.get("__copy__", False) or not ins[0].is_floating_point()
    ctx = TensorContext(name=job.name, layer_index=job.layer_index, num_layers=plan.num_layers, seed=options.seed,
                        sources=tuple((str(plan.models[mi].folder), n) for mi, n in job.inputs))
    blocks = list(_blocks(job, ins, base, options.block_bytes)) if method.elementwise and not copy_only else [
        slice(None)]
    for blk in blocks:
        xs = [x[blk].to(device) for x in ins]
        b = base[blk].to(device) if base is not None else None
        res = xs[0] if copy_only else method(xs, b, ctx=ctx, **job.params)
        if tuple(res.shape) != (tuple(job.shape) if blk == slice(None) else tuple(xs[0].shape)):
            raise CheckpointError(f"merge_method {method.name!r} returned shape {list(res.shape)} for "
                                  f"{job.name!r}, expected {list(job.shape)}")
        out.put(job.name, res.to(out_dtype).to("cpu"))
