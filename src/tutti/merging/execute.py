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

from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from torch import Tensor

from tutti.errors import CheckpointError
from tutti.merging.base import TensorContext
from tutti.merging.buffers import OutputPool
from tutti.merging.plan import MergePlan, ModelSource, TensorJob
from tutti.merging.schedule import (
    ExecOptions,
    Unit,
    WriterThread,
    map_safetensors,
    plan_units,
    stream_units,
    unit_bytes,
)
from tutti.merging.stream_writer import StreamingWriter

__all__ = ["DTYPES", "ExecOptions", "all_finite", "load_input", "read_safetensors_tensor", "run_plan"]

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "int64": torch.int64}
_ST_TO_TORCH = {"F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16, "F64": torch.float64,
                "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
                "BOOL": torch.bool}


def read_safetensors_tensor(file: Path, name: str, *, rows: tuple[int, int] | None = None) -> Tensor:
    """One tensor (or its rows ``[start, stop)``) as a private, copy-on-write memory map of the file's pages
    (:func:`tutti.merging.schedule.map_safetensors`)."""
    m = map_safetensors(file, name, rows=rows)
    dtype = _ST_TO_TORCH[m.dtype]
    if m.buffer is None:
        return torch.empty(m.shape, dtype=dtype)
    buf = torch.frombuffer(m.buffer, dtype=torch.uint8, offset=m.offset, count=m.count)
    return buf.view(dtype).reshape(m.shape)


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


def _blocks(job: TensorJob, ins: list[Tensor], base: Tensor | None, block_bytes: int) -> Iterator[slice]:
    rows = job.shape[0] if job.shape else 1
    row_bytes = max(ins[0].element_size() * ins[0].numel() // max(rows, 1), 1) * (len(ins) + 2)
    step = max(1, block_bytes // row_bytes)
    if not job.shape or step >= rows:
        yield slice(None)
        return
    for start in range(0, rows, step):
        yield slice(start, min(start + step, rows))


def _name(dtype: torch.dtype | None) -> str | None:
    return str(dtype).removeprefix("torch.") if dtype is not None else None


def _units(plan: MergePlan, dtype: torch.dtype | None, options: ExecOptions) -> list[Unit]:
    return plan_units(plan, _name(dtype), options)


def run_plan(plan: MergePlan, writer: StreamingWriter, options: ExecOptions,
             on_tensor: Callable[[TensorJob], None] | None = None) -> None:
    """Execute every job of ``plan`` and write the results through ``writer`` (not finished here)."""
    dtype = DTYPES.get(plan.config.dtype) if plan.config.dtype else None
    device = torch.device(options.device)
    budget = max(options.max_memory, 1)
    pool = OutputPool(max_bytes=budget // 4) if device.type == "cpu" else None
    out: WriterThread[Tensor] = WriterThread(writer.write, max_bytes=budget // 4,
                                             release=pool.release if pool is not None else None)
    jobs = plan.jobs
    units = _units(plan, dtype, options)
    sizes = unit_bytes(plan, units, _name(dtype))

    def load(unit: Unit) -> list[Tensor]:
        job, rows = jobs[unit[0]], unit[1]
        tensors = [load_input(plan.models[mi], n, dtype, job.truncate, rows=rows) for mi, n in job.refs]
        if plan.vocab is not None:  # tokenizer merging: realign vocab-indexed inputs to the output vocabulary
            from tutti.merging.vocab import align_inputs

            tensors = align_inputs(plan.vocab, job.name, tensors)
        return tensors

    def compute(unit: Unit, tensors: list[Tensor]) -> None:
        job, rows = jobs[unit[0]], unit[1]
        _compute_and_write(plan, job, tensors, device, options, out, rows, pool)
        if on_tensor is not None and (rows is None or rows[1] == job.shape[0]):
            on_tensor(job)

    stream_units(units, sizes, load, compute, out, budget=budget, read_threads=options.read_threads)


def _compute_and_write(plan: MergePlan, job: TensorJob, tensors: list[Tensor], device: torch.device,
                       options: ExecOptions, out: WriterThread[Tensor], rows: tuple[int, int] | None = None,
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
