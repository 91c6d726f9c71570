"""``tutti.merge``: run a merge config end to end (plan, stream, write the folder atomically).

Example::

    import tutti
    tutti.merge("ties.yaml", "out/merged")                 # a mergekit YAML, unchanged
    tutti.merge({"merge_method": "linear", "models": [...]}, "out/soup", out_shard_size="2G")
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tutti.config.merge import MergeConfig, load_merge_config
from tutti.errors import ConfigError
from tutti.merging.plan import MergePlan, make_plan

DEFAULT_MAX_MEMORY = "1G"


@dataclass(frozen=True)
class PlanSummary:
    """What ``--dry-run`` prints: sizes known before any tensor is read."""

    method: str
    n_tensors: int
    n_inputs: int
    bytes_read: int
    bytes_written: int
    peak_memory: int
    num_layers: int
    engine: str = "torch"

    def lines(self) -> list[str]:
        """Human-readable lines."""
        gib = 1024**3
        return [
            f"method        {self.method}",
            f"inputs        {self.n_inputs} model(s), {self.num_layers} output layers",
            f"tensors       {self.n_tensors}",
            f"bytes read    {self.bytes_read / gib:.3f} GiB",
            f"bytes written {self.bytes_written / gib:.3f} GiB",
            f"peak memory   ~{self.peak_memory / gib:.3f} GiB (estimate, tensors in flight)",
            f"engine        {self.engine}",
        ]


def summarize(plan: MergePlan, max_memory: int, engine: str = "torch") -> PlanSummary:
    """Sizes and an estimate of peak tensor memory for ``plan`` under the ``max_memory`` budget."""
    largest = 0
    for j in plan.jobs:
        work = j.nbytes * (len(j.refs) + 4)  # inputs + stacked intermediates + result
        if plan.method.elementwise:
            work = min(work, 64 * 1024**2 * 2)
        largest = max(largest, work)
    return PlanSummary(method=plan.method.name, n_tensors=len(plan.jobs), n_inputs=len(plan.models),
                       bytes_read=plan.bytes_read(), bytes_written=plan.bytes_written(),
                       peak_memory=min(max_memory, plan.bytes_read()) + largest, num_layers=plan.num_layers,
                       engine=engine)


def choose_engine(cfg: MergeConfig, engine: str, *, device: str, allow_pickle: bool,
                  unsafe_truncate_embeddings: bool) -> tuple[MergePlan | None, str]:
    """The NumPy engine's checked plan when ``engine`` lets it and the merge can run there, else ``(None, why)``
    (the torch engine runs it); ``engine="numpy"`` on a merge it cannot run is an error naming the reason."""
    from tutti.merging.np_engine import ENGINES, numpy_plan

    if engine not in ENGINES:
        raise ConfigError(f"engine {engine!r} is not one of {', '.join(ENGINES)}")
    if engine == "torch":
        return None, "--engine torch"
    plan, why = numpy_plan(cfg, device=device, allow_pickle=allow_pickle,
                           unsafe_truncate_embeddings=unsafe_truncate_embeddings)
    if plan is None and engine == "numpy":
        raise ConfigError(f"this merge cannot run on the NumPy engine: {why}; use --engine torch (or auto)")
    return plan, why


def _progress(total_bytes: int, n: int, enabled: bool) -> Any:
    if not enabled:
        return None
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

    p = Progress(TextColumn("merging"), BarColumn(), TextColumn("{task.fields[tensors]}"), DownloadColumn(),
                 TimeRemainingColumn(), transient=True)
    p.add_task("merge", total=total_bytes, tensors=f"0/{n} tensors")
    return p


def merge(
    config: str | Path | dict[str, Any] | MergeConfig,
    out_dir: str | Path,
    *,
    device: str = "cpu",
    out_shard_size: str | int = "5G",
    copy_tokenizer: bool = True,
    random_seed: int | None = None,
    allow_pickle: bool = False,
    threads: int | None = None,
    max_memory: str | int = DEFAULT_MAX_MEMORY,
    unsafe_truncate_embeddings: bool = False,
    write_model_card: bool = True,
    progress: bool = False,
    engine: str = "auto",
) -> Path:
    """Merge models as ``config`` says and write an HF checkpoint folder to ``out_dir`` atomically.

    Args:
        config: a mergekit YAML path, a dict, or a :class:`~tutti.config.merge.MergeConfig`.
        out_dir: destination folder (replaced atomically; nothing appears there if the merge fails).
        device: compute device (``cpu``, ``cuda``).
        out_shard_size: maximum shard size in bytes (``"5G"``, ``"500M"``, or an int).
        copy_tokenizer: copy the tokenizer files of the base (or first) model.
        random_seed: global seed of the seed contract for randomised methods (default 0).
        allow_pickle: read ``pytorch_model*.bin`` inputs (unpickling can run code).
        threads: torch compute threads (default: torch's choice).
        max_memory: budget for tensors in flight (read-ahead, compute, write queue), e.g. ``"1G"``.
        unsafe_truncate_embeddings: cut vocab-sized tensors of different sizes to their common rows (mergekit's
            old silent behaviour) instead of failing.
        write_model_card: write ``README.md`` and ``mergekit_config.yml``.
        progress: show a progress bar (tensors and bytes).
        engine: ``auto`` runs float32 CPU merges of methods with a NumPy kernel on the NumPy engine
            (:mod:`tutti.merging.np_engine`: the same bits, without importing torch) and everything else on torch;
            ``torch`` always uses torch; ``numpy`` fails with the reason when the merge cannot run there.

    Returns:
        The output folder.
    """
    from tutti.merging.np_engine import run_numpy_plan
    from tutti.merging.schedule import OUT_DTYPES, ExecOptions
    from tutti.merging.stream_writer import StreamingWriter
    from tutti.models.writer import SIDE_FILES, TOKENIZER_FILES, model_card, parse_size

    cfg = load_merge_config(config)
    budget = parse_size(max_memory)
    plan, _ = choose_engine(cfg, engine, device=device, allow_pickle=allow_pickle,
                            unsafe_truncate_embeddings=unsafe_truncate_embeddings)
    execute: Callable[..., None] = run_numpy_plan
    if plan is None:  # the torch engine
        import torch

        from tutti.merging.execute import run_plan as execute
        from tutti.models.device import check_device

        check_device(device)
        if threads:
            torch.set_num_threads(threads)
        plan = make_plan(cfg, allow_pickle=allow_pickle, unsafe_truncate_embeddings=unsafe_truncate_embeddings)
    layout = [(j.name, j.dtype if j.dtype in OUT_DTYPES else "float32", j.shape) for j in plan.jobs]
    writer = StreamingWriter(out_dir, layout, max_shard_bytes=parse_size(out_shard_size),
                             metadata={"merged_with": "tutti"})
    bar = _progress(plan.bytes_written(), len(plan.jobs), progress)
    done = [0, 0]

    def tick(job: Any) -> None:
        done[0] += 1
        done[1] += job.nbytes
        if bar is not None:
            bar.update(bar.task_ids[0], completed=done[1], tensors=f"{done[0]}/{len(plan.jobs)} tensors")

    t0 = time.perf_counter()
    try:
        if bar is not None:
            bar.start()
        opts = ExecOptions(device=device, seed=random_seed or 0, max_memory=budget,
                           read_threads=min(8, max(2, (os.cpu_count() or 2))))
        execute(plan, writer, opts, on_tensor=tick)
        _side_files(plan, writer, copy_tokenizer, SIDE_FILES, TOKENIZER_FILES)
        if write_model_card:
            yaml_text = cfg.to_yaml()
            writer.write_text("mergekit_config.yml", yaml_text)
            how = (f"This model was merged with tutti's `{plan.method.name}` method in "
                   f"{time.perf_counter() - t0:.1f} s.")
            writer.write_text("README.md", model_card("Merged model", how, sources=[str(m.ref) for m in plan.models],
                                                      config_yaml=yaml_text))
        return writer.finish()
    except BaseException:
        writer.abort()
        raise
    finally:
        if bar is not None:
            bar.stop()


def _side_files(plan: MergePlan, writer: Any, copy_tokenizer: bool, side: tuple[str, ...],
                tok_files: tuple[str, ...]) -> None:
    writer.write_text("config.json", json.dumps(plan.out_config, indent=2) + "\n")
    if plan.config.tokenizer_source is not None or plan.config.tokenizer is not None:
        from tutti.merging.vocab import write_tokenizer

        write_tokenizer(plan, writer)
    elif copy_tokenizer:
        writer.copy_files(plan.donor.folder, tuple(f for f in side if f != "config.json"))
    else:
        writer.copy_files(plan.donor.folder, tuple(f for f in side if f not in tok_files and f != "config.json"))
    if plan.config.chat_template:
        from tutti.merging.vocab import write_chat_template

        write_chat_template(plan, writer)


def plan_summary(config: str | Path | dict[str, Any] | MergeConfig, *, allow_pickle: bool = False,
                 unsafe_truncate_embeddings: bool = False, max_memory: str | int = DEFAULT_MAX_MEMORY,
                 device: str = "cpu", engine: str = "auto") -> PlanSummary:
    """Validate ``config`` and return the :class:`PlanSummary` without reading any tensor (``--dry-run``),
    naming the engine :func:`merge` would run it on (and why not NumPy, when torch)."""
    from tutti.models.writer import parse_size

    cfg = load_merge_config(config)
    plan, why = choose_engine(cfg, engine, device=device, allow_pickle=allow_pickle,
                              unsafe_truncate_embeddings=unsafe_truncate_embeddings)
    if plan is not None:
        return summarize(plan, parse_size(max_memory), engine="numpy")
    plan = make_plan(cfg, allow_pickle=allow_pickle, unsafe_truncate_embeddings=unsafe_truncate_embeddings)
    return summarize(plan, parse_size(max_memory), engine=f"torch ({why})")
