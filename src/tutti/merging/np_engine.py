"""The NumPy engine: float32 CPU merges of methods with a NumPy kernel, run without importing torch.

For a small model most of a ``tutti merge`` run is starting up, and ``import torch`` alone is 3-5 s of it on the
machines we measure (DARE-TIES on three SmolLM2-135M checkpoints: 4 of 8 s). The blocked DARE and DELLA kernels
already do all their arithmetic in NumPy, so when a merge only needs them the engine reads the inputs as NumPy
maps of the page cache, runs the same kernels (:mod:`tutti.merging.np_methods`) and writes through the same
streaming writer, with the same planner, schedule and memory budget as the torch executor
(:mod:`tutti.merging.schedule`). The outputs are the torch engine's, bit for bit (``tests/merging/test_np_engine.py``).

A merge runs here only when all of it can (:func:`numpy_plan` says why not otherwise, and the torch engine runs
it): device ``cpu``; a method of :data:`~tutti.merging.np_methods.NP_METHODS` (DARE, DELLA, task arithmetic,
passthrough); ``dtype`` and ``out_dtype``
float32 or unset; safetensors inputs that are all float32; no LoRA, tokenizer merging, chat template, pickle
inputs or truncated embeddings; and every tensor's parameters accepted by the method's kernel.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import numpy as np

from tutti.config.merge import MergeConfig
from tutti.errors import CheckpointError
from tutti.merging.np_methods import NP_METHODS, ArrayContext
from tutti.merging.plan import MergePlan, ModelSource, TensorJob, make_plan
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

ENGINES = ("auto", "numpy", "torch")


class ArrayPool:
    """Float32 result buffers lent to methods and taken back once written (:class:`tutti.merging.buffers.OutputPool`
    for NumPy: a fresh page costs a fault per 4 KB, so buffers are reused)."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._free: list[np.ndarray] = []
        self._lent: dict[int, np.ndarray] = {}
        self._lock = threading.Lock()

    def empty(self, shape: tuple[int, ...]) -> np.ndarray:
        """An uninitialised float32 array of ``shape``, from the smallest idle buffer that holds it."""
        n = max(1, int(np.prod(shape, dtype=np.int64)))
        with self._lock:
            fits = [i for i, b in enumerate(self._free) if b.size >= n]
            buf = self._free.pop(min(fits, key=lambda i: self._free[i].size)) if fits else None
        buf = np.empty(n, dtype=np.float32) if buf is None else buf
        with self._lock:
            self._lent[buf.ctypes.data] = buf
        return buf[: int(np.prod(shape, dtype=np.int64))].reshape(shape)

    def release(self, a: np.ndarray) -> None:
        """Take back the buffer ``a`` was lent from (a no-op for other memory)."""
        with self._lock:
            buf = self._lent.pop(a.ctypes.data, None)
            if buf is None:
                return
            self._free.append(buf)
            while sum(b.nbytes for b in self._free) > self.max_bytes:
                self._free.pop(min(range(len(self._free)), key=lambda i: self._free[i].size))


def numpy_plan(cfg: MergeConfig, *, device: str, allow_pickle: bool,
               unsafe_truncate_embeddings: bool) -> tuple[MergePlan | None, str]:
    """The checked plan when the whole merge can run on the NumPy engine, else ``(None, why not)``.

    Planning errors (unknown parameters, shape mismatches...) are raised as the torch engine raises them: the
    planner and the method signatures are the same.
    """
    entry = NP_METHODS.get(cfg.merge_method)
    if entry is None:
        return None, f"merge_method {cfg.merge_method!r} has no NumPy kernel"
    why = _config_why_not(cfg, device=device, allow_pickle=allow_pickle, unsafe_truncate=unsafe_truncate_embeddings)
    if why:
        return None, why
    plan = make_plan(cfg, method=entry.method)
    for job in plan.jobs:
        why = _job_why_not(plan, job, entry.accepts)
        if why:
            return None, why
    return plan, ""


def _config_why_not(cfg: MergeConfig, *, device: str, allow_pickle: bool, unsafe_truncate: bool) -> str:
    if device != "cpu":
        return "device is not cpu"
    if (cfg.dtype or "float32") != "float32" or (cfg.out_dtype or "float32") != "float32":
        return "dtype is not float32"
    if cfg.tokenizer_source is not None or cfg.tokenizer is not None:
        return "the config merges tokenizers"
    if cfg.chat_template:
        return "the config sets a chat template"
    if allow_pickle or unsafe_truncate:
        return "--allow-pickle" if allow_pickle else "--unsafe-truncate-embeddings"
    return "a model has a LoRA adapter" if any(r.lora for r in cfg.referenced_models()) else ""


def _job_why_not(plan: MergePlan, job: TensorJob, accepts: Callable[..., bool]) -> str:
    if job.dtype != "float32" or job.truncate is not None:
        return f"tensor {job.name!r} is not merged in float32"
    for mi, name in job.refs:
        info = plan.models[mi].ckpt.info(name)
        if info.dtype != "float32" or not str(info.file).endswith(".safetensors"):
            return f"{name!r} in {plan.models[mi].folder} is not a float32 safetensors tensor"
    if job.params.get("__copy__"):
        return ""
    kwargs = plan.method.resolve(job.params, len(job.inputs), where=job.name)
    return "" if accepts(kwargs, job.shape) else f"tensor {job.name!r}: its parameters need the torch kernels"


def load_array(src: ModelSource, name: str, *, rows: tuple[int, int] | None = None) -> np.ndarray:
    """One float32 input (or its rows) mapped from its safetensors file, checked to be finite."""
    m = map_safetensors(src.ckpt.info(name).file, name, rows=rows)
    if m.buffer is None:
        return np.empty(m.shape, dtype=np.float32)
    a = np.frombuffer(m.buffer, dtype=np.float32, count=m.count // 4, offset=m.offset).reshape(m.shape)
    if not (np.isfinite(a.sum()) or np.isfinite(a).all()):  # one sum; the exact test only if it overflowed
        raise CheckpointError(f"tensor {name!r} in {src.folder} contains NaN or Inf; fix or exclude that model")
    return a


def run_numpy_plan(plan: MergePlan, writer: StreamingWriter, options: ExecOptions,
                   on_tensor: Callable[[TensorJob], None] | None = None) -> None:
    """:func:`tutti.merging.execute.run_plan` for a plan from :func:`numpy_plan`."""
    budget = max(options.max_memory, 1)
    pool = ArrayPool(max_bytes=budget // 4)
    out: WriterThread[np.ndarray] = WriterThread(writer.write, max_bytes=budget // 4, release=pool.release)
    jobs = plan.jobs
    units = plan_units(plan, "float32", options)
    sizes = unit_bytes(plan, units, "float32")

    def load(unit: Unit) -> list[np.ndarray]:
        job, rows = jobs[unit[0]], unit[1]
        return [load_array(plan.models[mi], n, rows=rows) for mi, n in job.refs]

    def compute(unit: Unit, arrays: list[np.ndarray]) -> None:
        job, rows = jobs[unit[0]], unit[1]
        if job.params.get("__copy__"):
            res = arrays[0]
        else:
            ctx = ArrayContext(name=job.name, layer_index=job.layer_index, num_layers=plan.num_layers,
                               seed=options.seed, empty=pool.empty)
            k = len(job.inputs)
            res = plan.method(arrays[:k], arrays[k] if job.base else None, ctx=ctx, **job.params)
            want = job.shape if rows is None else (rows[1] - rows[0], *job.shape[1:])
            if res.shape != want:
                raise CheckpointError(f"merge_method {plan.method.name!r} returned shape {list(res.shape)} for "
                                      f"{job.name!r}, expected {list(want)}")
        out.put(job.name, res)
        if on_tensor is not None and (rows is None or rows[1] == job.shape[0]):
            on_tensor(job)

    stream_units(units, sizes, load, compute, out, budget=budget, read_threads=options.read_threads)
