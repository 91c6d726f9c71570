"""Particle representations: how experts become flat vectors, and how a vector is swapped into a live model.

* ``lora_factors`` (paper): the vector is every tensor of the PEFT adapter (A and B factors), so particles are
  combined factor by factor; the swap copies each slice into the LoRA parameters of a resident PEFT model.
* ``lora_delta``: the vector is the dense update ``B·A·scale`` of every adapted weight, so particles combine
  linearly in weight space; the swap writes ``W0 + delta`` into the base weights (W0 kept once).
* ``dense``: the vector is every floating tensor that differs between full-checkpoint experts; the swap copies
  it into the model's parameters. Memory grows as ``(3N + 2)·D`` floats, so keep it for small models.

Swaps copy into existing tensors (``Tensor.copy_``): the base model is loaded once and never rebuilt.
"""

from __future__ import annotations

import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from tutti.errors import CheckpointError, TuttiError
from tutti.registry import Registry


@dataclass(frozen=True)
class Layout:
    """Names and shapes of the tensors packed into a flat vector, in order."""

    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]

    @property
    def sizes(self) -> list[int]:
        """Element count of each tensor."""
        return [math.prod(s) for s in self.shapes]

    @property
    def dim(self) -> int:
        """Length of the flat vector."""
        return sum(self.sizes)

    def flatten(self, tensors: dict[str, torch.Tensor]) -> torch.Tensor:
        """Concatenate ``tensors`` (by name, in layout order) into one fp32 vector ``(D,)``."""
        return torch.cat([tensors[n].float().reshape(-1) for n in self.names])

    def unflatten(self, vec: torch.Tensor) -> dict[str, torch.Tensor]:
        """Views of ``vec`` shaped as the layout's tensors."""
        parts = torch.split(vec, self.sizes)
        return {n: p.view(s) for n, p, s in zip(self.names, parts, self.shapes, strict=True)}


@dataclass
class Representation:
    """One particle representation bound to its experts.

    Args:
        kind: ``lora_factors``, ``lora_delta`` or ``dense``.
        base: folder of the model that is loaded once per worker.
        layout: the packed tensors.
        expert_paths: the experts, as given.
        adapter_config: the PEFT config of LoRA experts (None for dense).
        first_adapter: folder of the first LoRA expert (the adapter template attached to the base).
    """

    kind: str
    base: str
    layout: Layout
    expert_paths: tuple[str, ...]
    adapter_config: dict[str, Any] | None = None
    first_adapter: str | None = None

    def attach(self, model: Any) -> Swapper:
        """Prepare a loaded :class:`~tutti.models.hf.HFModel` (of ``base``) for in-place swaps."""
        return ATTACH.get(self.kind)(self, model)


class Swapper:
    """Copies particle vectors into the tensors of one resident model."""

    def __init__(self, targets: dict[str, torch.Tensor], layout: Layout, w0: dict[str, torch.Tensor] | None = None):
        self.targets, self.layout, self.w0 = targets, layout, w0

    @torch.no_grad()
    def load(self, vec: torch.Tensor) -> None:
        """Write the particle ``vec`` ``(D,)`` into the model in place."""
        if vec.numel() != self.layout.dim:
            raise TuttiError(f"particle has {vec.numel()} values; the layout expects {self.layout.dim}")
        for name, t in self.layout.unflatten(vec).items():
            dst = self.targets[name]
            if self.w0 is not None:
                w0 = self.w0[name]
                dst.copy_(w0 + t.to(device=w0.device, dtype=w0.dtype))  # particles live on the CPU
            else:
                dst.copy_(t)


ATTACH = Registry[Any]("particle representation")


@ATTACH.register("lora_factors", pretty_name="LoRA factors (A and B combined separately)")
def _attach_factors(rep: Representation, model: Any) -> Swapper:
    from peft import PeftModel

    if not isinstance(model.module, PeftModel):
        model.module = PeftModel.from_pretrained(model.module, rep.first_adapter, is_trainable=False).eval()
    params = dict(model.module.named_parameters())
    targets = {}
    for key in rep.layout.names:
        stem, _, last = key.rpartition(".")  # ...lora_A + weight -> ...lora_A.default.weight
        name = next((c for c in (f"{stem}.default.{last}", key) if c in params), None)
        if name is None:
            raise CheckpointError(f"adapter tensor {key!r} has no matching parameter in the PEFT model of the base")
        targets[key] = params[name].data
    return Swapper(targets, rep.layout)


def _base_targets(rep: Representation, model: Any) -> dict[str, torch.Tensor]:
    params = dict(model.module.named_parameters())
    params.update(dict(model.module.named_buffers()))
    missing = [n for n in rep.layout.names if n not in params]
    if missing:
        raise CheckpointError(f"the base model has no tensor {missing[0]!r}; are the experts of this base?")
    return {n: params[n].data for n in rep.layout.names}


@ATTACH.register("lora_delta", pretty_name="LoRA dense delta (B·A)")
def _attach_delta(rep: Representation, model: Any) -> Swapper:
    targets = _base_targets(rep, model)
    w0 = {n: t.detach().clone() for n, t in targets.items()}
    return Swapper(targets, rep.layout, w0)


@ATTACH.register("dense", pretty_name="full weights")
def _attach_dense(rep: Representation, model: Any) -> Swapper:
    return Swapper(_base_targets(rep, model), rep.layout)


# ---------------------------------------------------------------------------------------------- loading experts
def load_experts(kind: str, experts: tuple[str, ...] | list[str], base: str | None = None) -> tuple[Representation, torch.Tensor]:
    """Read the experts as ``(n, D)`` vectors for representation ``kind``.

    Raises:
        TuttiError: experts of different shapes, bases or adapter configs, or a LoRA/dense mismatch.
    """
    from tutti.models.lora import is_lora_folder, load_lora
    from tutti.models.zoo import resolve_model

    ATTACH.entry(kind)
    paths = [str(resolve_model(e)) if not is_lora_folder(e) else str(Path(e)) for e in experts]
    if kind in ("lora_factors", "lora_delta"):
        not_lora = [p for p in paths if not is_lora_folder(p)]
        if not_lora:
            raise TuttiError(f"expert {not_lora[0]!r} is not a PEFT LoRA folder; use representation: dense for full checkpoints")
        adapters = [load_lora(p) for p in paths]
        cfg0 = adapters[0].config
        for p, a in zip(paths[1:], adapters[1:], strict=True):
            for k in ("r", "lora_alpha", "target_modules", "use_rslora"):
                if _norm(a.config.get(k)) != _norm(cfg0.get(k)):
                    raise TuttiError(f"expert {p}: adapter_config {k}={a.config.get(k)!r} differs from "
                                     f"{paths[0]} ({cfg0.get(k)!r}); experts must share rank and targets")
        base_spec = base or cfg0.get("base_model_name_or_path")
        if not base_spec:
            raise TuttiError(f"{paths[0]}: adapter_config has no base_model_name_or_path; set 'base' in the config")
        base_path = str(resolve_model(base_spec))
        if kind == "lora_factors":
            tensors = [a.tensors for a in adapters]
        else:
            tensors = [a.dense_deltas() for a in adapters]
        layout = _layout(tensors, paths)
        rep = Representation(kind, base_path, layout, tuple(paths), dict(cfg0), paths[0])
    else:
        if any(is_lora_folder(p) for p in paths):
            raise TuttiError("representation dense needs full checkpoints; use lora_factors or lora_delta for adapters")
        from tutti.models.checkpoint import Checkpoint

        cks = [Checkpoint(p) for p in paths]
        names = sorted(n for n in cks[0].keys() if _is_float(cks[0].info(n).dtype))  # noqa: SIM118
        for p, c in zip(paths[1:], cks[1:], strict=True):
            if sorted(n for n in c.keys() if _is_float(c.info(n).dtype)) != names:  # noqa: SIM118
                raise TuttiError(f"expert {p} has other tensors than {paths[0]}; experts must share one architecture")
        varying = [n for n in names if any(not torch.equal(cks[0].get(n), c.get(n)) for c in cks[1:])]
        tensors = [{n: c.get(n) for n in varying} for c in cks]
        layout = _layout(tensors, paths)
        rep = Representation("dense", str(resolve_model(base)) if base else paths[0], layout, tuple(paths))
    return rep, torch.stack([layout.flatten(t) for t in tensors])


def _norm(v: Any) -> Any:
    return sorted(v) if isinstance(v, list | tuple | set) else v


def _layout(tensors: list[dict[str, torch.Tensor]], paths: list[str]) -> Layout:
    names = sorted(tensors[0])
    if not names:
        raise TuttiError(f"{paths[0]}: nothing to search over (no tensors differ between the experts)")
    for p, t in zip(paths[1:], tensors[1:], strict=True):
        bad = next((n for n in names if n not in t or t[n].shape != tensors[0][n].shape), None)
        if bad or len(t) != len(names):
            raise TuttiError(f"expert {p}: tensor {bad or '(extra tensors)'!r} differs in name or shape from {paths[0]}")
    return Layout(tuple(names), tuple(tuple(tensors[0][n].shape) for n in names))


# ---------------------------------------------------------------------------------------------- saving
def save_particle(rep: Representation, vec: torch.Tensor, out_dir: str | Path, *, model: Any | None = None,
                  swapper: Swapper | None = None, readme: str = "") -> Path:
    """Write a particle as a PEFT adapter (``lora_factors``) or as a full HF checkpoint (other kinds).

    Full checkpoints need the resident ``model`` and its ``swapper``: the particle is swapped in and saved.
    """
    from tutti.models.lora import LoraAdapter, save_lora

    out = Path(out_dir)
    if rep.kind == "lora_factors":
        tensors = {n: t.clone().contiguous() for n, t in rep.layout.unflatten(vec).items()}
        return save_lora(LoraAdapter(dict(rep.adapter_config or {}), tensors), out, readme=readme)
    if model is None or swapper is None:
        raise TuttiError("saving a full checkpoint needs the resident model and its swapper")
    swapper.load(vec)
    module = model.module
    tmp = out.parent / f".tmp-{out.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    module.save_pretrained(tmp)
    model.tokenizer.save_pretrained(tmp)
    if readme:
        (tmp / "README.md").write_text(readme)
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    return out


def _is_float(dtype: str) -> bool:
    return dtype.startswith(("float", "bfloat"))
