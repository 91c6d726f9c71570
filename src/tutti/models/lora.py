"""PEFT LoRA adapters: read, write, dense deltas, apply to a base.

A PEFT folder holds ``adapter_config.json`` and ``adapter_model.safetensors`` whose keys look like
``base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight`` (shape ``(r, in)``) and ``...lora_B.weight``
(shape ``(out, r)``). The dense update of the base weight ``model.layers.0.self_attn.q_proj.weight`` is
``B @ A * scale`` with ``scale = lora_alpha / r`` (``lora_alpha / sqrt(r)`` with rsLoRA).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from tutti.errors import CheckpointError
from tutti.models.writer import ShardedWriter

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
_KEY = re.compile(r"^(?P<module>.+)\.lora_(?P<which>[AB])(?:\.(?P<adapter>[^.]+))?\.weight$")
_PREFIX = "base_model.model."


@dataclass(frozen=True)
class LoraPair:
    """The two factors of one adapted linear layer: ``delta = B @ A * scale``."""

    A: torch.Tensor  # (r, in)
    B: torch.Tensor  # (out, r)
    scale: float

    def delta(self, fan_in_fan_out: bool = False) -> torch.Tensor:
        """The dense weight update, shape ``(out, in)`` (transposed for ``fan_in_fan_out`` layers)."""
        d = (self.B.float() @ self.A.float()) * self.scale
        return d.T if fan_in_fan_out else d


@dataclass(frozen=True)
class LoraAdapter:
    """A PEFT LoRA adapter in memory.

    Args:
        config: the ``adapter_config.json`` contents.
        tensors: the adapter tensors under their PEFT names.
    """

    config: dict[str, Any]
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def r(self) -> int:
        """Default rank."""
        return int(self.config.get("r", 8))

    @property
    def alpha(self) -> float:
        """Default lora_alpha."""
        return float(self.config.get("lora_alpha", self.r))

    def _pattern(self, key: str, module: str) -> Any:
        for pat, value in (self.config.get(key) or {}).items():
            if re.fullmatch(rf"(.*\.)?{pat}", module) or module.endswith(pat):
                return value
        return None

    def scale_for(self, module: str) -> float:
        """``alpha / r`` (or ``alpha / sqrt(r)`` with rsLoRA) for ``module``, honouring rank/alpha patterns."""
        r = self._pattern("rank_pattern", module) or self.r
        alpha = self._pattern("alpha_pattern", module) or self.alpha
        return alpha / math.sqrt(r) if self.config.get("use_rslora") else alpha / r

    def pairs(self) -> dict[str, LoraPair]:
        """Factor pairs by base module name (``model.layers.0.self_attn.q_proj``)."""
        parts: dict[str, dict[str, torch.Tensor]] = {}
        for key, t in self.tensors.items():
            m = _KEY.match(key)
            if m is None:
                continue
            module = m["module"].removeprefix(_PREFIX)
            parts.setdefault(module, {})[m["which"]] = t
        out = {}
        for module, ab in parts.items():
            if set(ab) != {"A", "B"}:
                raise CheckpointError(f"adapter module {module!r} has lora_{next(iter(ab))} but not its partner")
            out[module] = LoraPair(ab["A"], ab["B"], self.scale_for(module))
        return out

    def dense_deltas(self) -> dict[str, torch.Tensor]:
        """Dense updates by base weight name (``model.layers.0.self_attn.q_proj.weight``), fp32."""
        fifo = bool(self.config.get("fan_in_fan_out", False))
        return {f"{m}.weight": p.delta(fifo) for m, p in self.pairs().items()}

    def with_tensors(self, tensors: dict[str, torch.Tensor]) -> LoraAdapter:
        """A copy with other tensors and the same config."""
        return replace(self, tensors=tensors)


def load_lora(path: str | Path) -> LoraAdapter:
    """Read a PEFT LoRA folder."""
    p = Path(path)
    cfg_path, w_path = p / ADAPTER_CONFIG, p / ADAPTER_WEIGHTS
    if not cfg_path.is_file():
        raise CheckpointError(f"{p}: no {ADAPTER_CONFIG}; is this a PEFT LoRA adapter folder?")
    config = json.loads(cfg_path.read_text())
    if str(config.get("peft_type", "LORA")).upper() != "LORA":
        raise CheckpointError(f"{cfg_path}: peft_type {config.get('peft_type')!r} is not LORA")
    if not w_path.is_file():
        if (p / "adapter_model.bin").is_file():
            raise CheckpointError(f"{p}: only adapter_model.bin (pickle) found; re-save the adapter as safetensors")
        raise CheckpointError(f"{p}: no {ADAPTER_WEIGHTS}")
    from tutti.models.safetensors_header import read_header

    read_header(w_path)  # clear error on a truncated file
    return LoraAdapter(config, load_file(str(w_path)))


def save_lora(adapter: LoraAdapter, out_dir: str | Path, *, readme: str | None = None) -> Path:
    """Write a PEFT LoRA folder atomically (config + single safetensors file)."""
    with ShardedWriter(out_dir, max_shard_bytes=1 << 62, single_file_name=ADAPTER_WEIGHTS) as w:
        for name, t in adapter.tensors.items():
            w.add(name, t)
        w.write_json(ADAPTER_CONFIG, adapter.config)
        if readme:
            w.write_text("README.md", readme)
        return w.finish()


def is_lora_folder(path: str | Path) -> bool:
    """True when ``path`` looks like a PEFT adapter folder."""
    return (Path(path) / ADAPTER_CONFIG).is_file()


def apply_lora(state_dict: dict[str, torch.Tensor], adapter: LoraAdapter, *, weight: float = 1.0) -> dict[str, torch.Tensor]:
    """Return a new state dict with ``weight * B @ A * scale`` added to each adapted weight (inputs untouched)."""
    out = dict(state_dict)
    for name, delta in adapter.dense_deltas().items():
        if name not in state_dict:
            raise CheckpointError(f"adapter targets {name!r}, which the base model does not have")
        base = state_dict[name]
        if tuple(base.shape) != tuple(delta.shape):
            raise CheckpointError(
                f"adapter delta for {name!r} has shape {tuple(delta.shape)} but the base tensor is {tuple(base.shape)}"
            )
        out[name] = (base.float() + weight * delta).to(base.dtype)
    return out
