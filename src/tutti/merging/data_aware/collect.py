"""Statistics of each input model on a prompt set, through the HF backend, cached on disk.

* :func:`collect_grams` (RegMean): forward pre-hooks on every ``nn.Linear`` accumulate the Gram ``XᵀX`` of the
  layer's inputs over all non-padding tokens (batched, right-padded), stored as the mean ``XᵀX / n_tokens``.
* :func:`collect_fisher` (Fisher merging): the diagonal Fisher ``E[(∂ log p(y|x) / ∂θ)²]`` where ``y`` is the
  row's completion or, when absent, a sample from the model itself. Per-example gradients are needed, so each
  example is one forward/backward pass.

:func:`statistics` returns them for a model folder, computing once per (model, dataset bytes, settings): the
result lives in ``$TUTTI_HOME/merge-stats/`` as a safetensors file named by a hash of all three, so re-running
a merge reads it back instead of recomputing.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor

from tutti.merging.data_aware.data import Example, file_sha256, load_examples, model_fingerprint
from tutti.paths import atomic_file, tutti_home

Kind = Literal["fisher", "regmean"]
_VERSION = 1
_LOCK = threading.Lock()
_OPEN: dict[Path, StatsFile] = {}


@dataclass(frozen=True)
class StatsSettings:
    """What the statistics depend on besides the model and the dataset bytes.

    Args:
        max_examples: rows read from the dataset.
        max_length: longest token sequence (longer ones keep their last tokens).
        batch_size: sequences per forward pass (RegMean).
        max_new_tokens: length of the model's own sample when a row has no completion (Fisher).
        seed: seed of those samples (example ``i`` uses ``seed + i``).
    """

    max_examples: int = 256
    max_length: int = 256
    batch_size: int = 8
    max_new_tokens: int = 32
    seed: int = 0


class StatsFile:
    """Lazy read access to a cached statistics file (tensor name -> statistic)."""

    def __init__(self, path: Path) -> None:
        from safetensors import safe_open

        self.path = path
        self._f = safe_open(str(path), framework="pt")
        self._keys = set(self._f.keys())

    def get(self, name: str) -> Tensor | None:
        """The statistic for tensor ``name``, or ``None`` when the model has none for it."""
        return self._f.get_tensor(name) if name in self._keys else None

    def keys(self) -> set[str]:
        """Tensor names with a statistic."""
        return set(self._keys)


def _sequences(model: Any, examples: list[Example], settings: StatsSettings, *, sample: bool) -> Iterator[
        tuple[list[int], int]]:
    """``(token ids, number of scored tokens at the end)`` per example; samples missing completions if asked."""
    tok = model.tokenizer
    for i, ex in enumerate(examples):
        if ex.whole_text:
            ids = list(tok(ex.prompt, add_special_tokens=True)["input_ids"])[-settings.max_length:]
            yield ids, len(ids) - 1
            continue
        if ex.completion is not None:
            ctx, cont = model.split_continuation(list(ex.prompt) if isinstance(ex.prompt, tuple) else ex.prompt,
                                                 ex.completion)
        else:
            ctx = model.encode(list(ex.prompt) if isinstance(ex.prompt, tuple) else ex.prompt)
            cont = _sample(model, ctx, settings, seed=settings.seed + i) if sample else []
        seq = (ctx + cont)[-settings.max_length:]
        yield seq, min(len(cont), len(seq) - 1)


@torch.no_grad()
def _sample(model: Any, ctx: list[int], settings: StatsSettings, *, seed: int) -> list[int]:
    """Ancestral sample (temperature 1, no truncation) of the model's own continuation, EOS included."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        ids = torch.tensor([ctx], device=model.device)
        out = model.module.generate(
            input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=True, temperature=1.0, top_p=1.0,
            top_k=0, max_new_tokens=settings.max_new_tokens, pad_token_id=model.tokenizer.pad_token_id,
            eos_token_id=list(model.eos_token_ids),
        )
    new = out[0, len(ctx):].tolist()
    for j, t in enumerate(new):
        if t in model.eos_token_ids:
            return new[: j + 1]
    return new


def _progress(items: list[Any], description: str) -> Iterator[Any]:
    from rich.progress import track

    yield from track(items, description=description, transient=True)


@torch.no_grad()
def collect_grams(model: Any, examples: list[Example], settings: StatsSettings, *,
                  label: str = "model") -> dict[str, Tensor]:
    """Mean input Gram ``XᵀX / n`` of every linear layer, keyed ``<module>.weight`` (fp32, ``(in, in)``)."""
    module = model.module
    seqs = [s for s, _ in _sequences(model, examples, settings, sample=False)]
    grams: dict[str, Tensor] = {}
    counts: dict[str, int] = {}
    mask_box: list[Tensor] = []

    def hook(name: str):
        def fn(_mod: Any, args: tuple[Any, ...]) -> None:
            x = args[0].float()[mask_box[0]]  # (tokens, in): padding rows dropped
            grams[name] = grams.get(name, 0) + x.T @ x
            counts[name] = counts.get(name, 0) + x.shape[0]
        return fn

    handles = [m.register_forward_pre_hook(hook(f"{n}.weight")) for n, m in module.named_modules()
               if isinstance(m, torch.nn.Linear)]
    try:
        batches = [seqs[i:i + settings.batch_size] for i in range(0, len(seqs), settings.batch_size)]
        pad = model.tokenizer.pad_token_id
        for batch in _progress(batches, f"RegMean Grams of {label}"):
            width = max(len(s) for s in batch)
            ids = torch.full((len(batch), width), pad, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.bool)
            for r, s in enumerate(batch):
                ids[r, :len(s)] = torch.tensor(s)
                mask[r, :len(s)] = True
            mask_box[:] = [mask.to(model.device)]
            module(input_ids=ids.to(model.device), attention_mask=mask.long().to(model.device))
    finally:
        for h in handles:
            h.remove()
    return {n: (g / counts[n]).cpu() for n, g in grams.items() if counts[n] > 0}


def collect_fisher(model: Any, examples: list[Example], settings: StatsSettings, *,
                   label: str = "model") -> dict[str, Tensor]:
    """Mean squared gradient of each example's log-likelihood, per parameter (fp32, the parameter's shape)."""
    module = model.module
    params = dict(module.named_parameters())
    acc = {n: torch.zeros_like(p, dtype=torch.float32) for n, p in params.items()}
    seqs = list(_sequences(model, examples, settings, sample=True))
    used = 0
    for ids, n_scored in _progress(seqs, f"Fisher of {label}"):
        if n_scored <= 0:
            continue
        for p in params.values():
            p.grad = None
        x = torch.tensor([ids], device=model.device)
        with torch.enable_grad():
            logits = module(input_ids=x).logits[0, -n_scored - 1:-1].float()  # (n_scored, vocab)
            target = x[0, -n_scored:]
            loglik = torch.log_softmax(logits, -1).gather(-1, target[:, None]).sum()
            loglik.backward()
        for n, p in params.items():
            if p.grad is not None:
                acc[n] += p.grad.float().square()
        used += 1
    for p in params.values():
        p.grad = None
    return {n: (a / max(used, 1)).cpu() for n, a in acc.items()}


def cache_path(kind: Kind, folder: str | Path, dataset: str | Path, settings: StatsSettings) -> Path:
    """Where the statistics of ``kind`` for this model, dataset and settings are cached."""
    key = json.dumps({"v": _VERSION, "kind": kind, "model": model_fingerprint(folder),
                      "data": file_sha256(dataset), "settings": asdict(settings)}, sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:24]
    return tutti_home() / "merge-stats" / f"{kind}-{Path(folder).name}-{digest}.safetensors"


def compute_statistics(kind: Kind, folder: str | Path, dataset: str | Path,
                       settings: StatsSettings) -> dict[str, Tensor]:
    """Load the model with the HF backend and collect ``kind`` statistics (no caching)."""
    from tutti.models.hf import HFModel

    examples = load_examples(dataset, max_examples=settings.max_examples)
    model = HFModel.load(folder, name=Path(folder).name, batch_size=settings.batch_size)
    fn = collect_fisher if kind == "fisher" else collect_grams
    return fn(model, examples, settings, label=Path(folder).name)


def statistics(kind: Kind, folder: str | Path, dataset: str | Path, settings: StatsSettings) -> StatsFile:
    """The cached statistics of ``kind`` for one model, computed (and written atomically) on first use."""
    from safetensors.torch import save_file

    load_examples(dataset, max_examples=1)  # clear errors before any model is loaded
    path = cache_path(kind, folder, dataset, settings)
    with _LOCK:
        if path in _OPEN:
            return _OPEN[path]
        if not path.is_file():
            stats = compute_statistics(kind, folder, dataset, settings)
            with atomic_file(path) as tmp:  # a failed write leaves neither a partial file nor a temp file
                save_file({k: v.contiguous() for k, v in stats.items()}, str(tmp),
                          metadata={"kind": kind, "model": str(Path(folder).resolve()), "dataset": str(dataset)})
        _OPEN[path] = StatsFile(path)
        return _OPEN[path]
