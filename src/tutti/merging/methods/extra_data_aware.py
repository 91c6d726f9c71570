"""Registered data-aware merge methods: ``fisher`` and ``regmean``.

Both take ``dataset:`` (a JSONL file of prompts, see :mod:`tutti.merging.data_aware.data`; one file for every
model, or each model's own task data under its ``parameters:``, as the papers do), run it through every input
model once (statistics cached on disk, see :mod:`tutti.merging.data_aware.collect`), then merge
each tensor in closed form (:mod:`tutti.merging.data_aware.maths`). Neither needs a base model; a configured
``base_model`` is one more input. They need to know which model folder each input tensor comes from
(``TensorContext.sources``), so they run through ``tutti merge`` / :func:`tutti.merging.merge`; for in-memory
state dicts call the maths functions with your own statistics.
"""

from __future__ import annotations

from pathlib import Path

from torch import Tensor

from tutti.errors import ConfigError, TuttiError
from tutti.merging.base import TensorContext, merge_method
from tutti.merging.data_aware.collect import Kind, StatsFile, StatsSettings, statistics
from tutti.merging.data_aware.maths import fisher_merge, regmean_merge, weighted_average

_MEMO: dict[tuple[str, str, str, StatsSettings], StatsFile] = {}


def _stats(kind: Kind, ctx: TensorContext, n: int, datasets: list[str], settings: StatsSettings
           ) -> list[Tensor | None]:
    if len(ctx.sources) != n:
        raise TuttiError(f"merge_method {kind!r} needs the model folder of every input; run it with 'tutti merge' "
                         f"(in memory, call tutti.merging.data_aware.{kind}_merge with your own statistics)")
    for name, value in (("max_examples", settings.max_examples), ("max_length", settings.max_length),
                        ("batch_size", settings.batch_size)):
        if value < 1:
            raise ConfigError(f"{kind}: {name} must be >= 1, got {value}")
    out = []
    for (folder, tensor_name), dataset in zip(ctx.sources, datasets, strict=True):
        key = (kind, str(Path(folder).resolve()), str(Path(dataset).expanduser().resolve()), settings)
        if key not in _MEMO:
            _MEMO[key] = statistics(kind, folder, Path(dataset).expanduser(), settings)
        out.append(_MEMO[key].get(tensor_name))
    return out


def _check_weights(weight: list[float], kind: str) -> None:
    if any(w < 0 for w in weight) or sum(weight) <= 0:
        raise ConfigError(f"{kind}: weights must be >= 0 with a positive sum, got {weight}")


@merge_method("fisher", pretty_name="Fisher merging", paper="https://arxiv.org/abs/2111.09832", mergekit=False,
              data="unlabeled (+ gradients)")
def fisher(tensors: list[Tensor], *, ctx: TensorContext, dataset: list[str], weight: list[float] = 1.0,
           fisher_floor: float = 1e-6, max_examples: int = 256, max_length: int = 256,
           max_new_tokens: int = 32) -> Tensor:
    """Fisher merging: per-entry average weighted by each model's diagonal Fisher on ``dataset``."""
    _check_weights(weight, "fisher")
    settings = StatsSettings(max_examples=max_examples, max_length=max_length, max_new_tokens=max_new_tokens,
                             seed=ctx.seed)
    fishers = _stats("fisher", ctx, len(tensors), dataset, settings)
    if any(f is None or f.shape != tensors[0].shape for f in fishers):
        return weighted_average(tensors, weight).to(tensors[0].dtype)
    dev = tensors[0].device
    out = fisher_merge(tensors, [f.to(dev) for f in fishers if f is not None], weight, fisher_floor=fisher_floor)
    return out.to(tensors[0].dtype)


@merge_method("regmean", pretty_name="RegMean", paper="https://arxiv.org/abs/2212.09849", mergekit=False,
              data="unlabeled")
def regmean(tensors: list[Tensor], *, ctx: TensorContext, dataset: list[str], weight: list[float] = 1.0,
            alpha: float = 0.95, max_examples: int = 256, max_length: int = 256, batch_size: int = 8) -> Tensor:
    """RegMean: closed-form least-squares merge of every linear layer from its input Grams; other tensors are
    averaged."""
    _check_weights(weight, "regmean")
    if not 0.0 <= alpha <= 1.0:
        raise ConfigError(f"regmean: alpha must be in [0, 1], got {alpha}")
    settings = StatsSettings(max_examples=max_examples, max_length=max_length, batch_size=batch_size)
    if tensors[0].dim() != 2:
        return weighted_average(tensors, weight).to(tensors[0].dtype)
    grams = _stats("regmean", ctx, len(tensors), dataset, settings)
    n_in = tensors[0].shape[1]
    if any(g is None or tuple(g.shape) != (n_in, n_in) for g in grams):
        return weighted_average(tensors, weight).to(tensors[0].dtype)
    out = regmean_merge(tensors, [g for g in grams if g is not None], weight, alpha=alpha)
    return out.to(device=tensors[0].device, dtype=tensors[0].dtype)
