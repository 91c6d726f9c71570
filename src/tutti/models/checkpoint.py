"""Lazy reader for Hugging Face checkpoint folders.

A folder holds ``config.json`` and either ``model.safetensors`` or shards listed in
``model.safetensors.index.json``. Opening a :class:`Checkpoint` reads only headers: names, shapes, dtypes and byte
sizes are known at once, and each tensor is memory-mapped when asked for. Pickle files (``pytorch_model*.bin``)
are read only with ``allow_pickle=True``, because unpickling can run arbitrary code.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from safetensors import safe_open

from tutti.errors import CheckpointError
from tutti.models.safetensors_header import TensorInfo, read_header

if TYPE_CHECKING:  # torch is imported only to read pickle weights: headers and safetensors maps do without it
    import torch

SAFE_INDEX = "model.safetensors.index.json"
SAFE_SINGLE = "model.safetensors"
BIN_INDEX = "pytorch_model.bin.index.json"
BIN_SINGLE = "pytorch_model.bin"


def read_config(folder: Path) -> dict[str, Any]:
    """Read and sanity-check ``folder/config.json``."""
    path = folder / "config.json"
    if not path.is_file():
        raise CheckpointError(f"{folder}: no config.json; a checkpoint folder needs one (save with save_pretrained)")
    try:
        cfg = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from e
    if not isinstance(cfg, dict) or not cfg.get("architectures"):
        raise CheckpointError(
            f"{path}: no 'architectures' entry, so the model class is unknown; add e.g. "
            '"architectures": ["LlamaForCausalLM"]'
        )
    return cfg


class Checkpoint:
    """A lazily read HF checkpoint folder.

    Args:
        path: the folder.
        allow_pickle: read ``pytorch_model*.bin`` (pickle) weights when no safetensors exist. Off by default:
            unpickling untrusted files can execute code.
        require_config: fail when ``config.json`` is missing or has no architecture.
    """

    def __init__(self, path: str | Path, *, allow_pickle: bool = False, require_config: bool = True) -> None:
        self.path = Path(path)
        if not self.path.is_dir():
            what = "is a file, not a folder" if self.path.exists() else "does not exist"
            raise CheckpointError(f"checkpoint {self.path} {what}; pass a folder with config.json and *.safetensors")
        self.config: dict[str, Any] = read_config(self.path) if require_config else {}
        self.allow_pickle = allow_pickle
        self._infos: dict[str, TensorInfo] = {}
        self._handles: dict[Path, Any] = {}
        self._pickled: dict[Path, dict[str, torch.Tensor]] = {}
        self._index_tensors()

    # ------------------------------------------------------------------ discovery
    def _index_tensors(self) -> None:
        p = self.path
        if (p / SAFE_INDEX).is_file():
            self._from_index(p / SAFE_INDEX)
        elif (p / SAFE_SINGLE).is_file():
            self._infos, _ = read_header(p / SAFE_SINGLE)
        elif shards := sorted(p.glob("*.safetensors")):
            for s in shards:
                self._add_file(s)
        elif (p / BIN_INDEX).is_file() or (p / BIN_SINGLE).is_file() or list(p.glob("pytorch_model*.bin")):
            if not self.allow_pickle:
                raise CheckpointError(
                    f"{p}: only pickle weights (pytorch_model*.bin) found; unpickling can run arbitrary code, so "
                    "tutti refuses it unless you pass --allow-pickle (allow_pickle=True) for files you trust"
                )
            for f in sorted(p.glob("pytorch_model*.bin")):
                self._load_pickle(f)
        else:
            raise CheckpointError(f"{p}: no weights found (expected model.safetensors or {SAFE_INDEX})")
        if not self._infos:
            raise CheckpointError(f"{p}: the weight files hold no tensors")

    def _add_file(self, f: Path) -> dict[str, TensorInfo]:
        infos, _ = read_header(f)
        for name, info in infos.items():
            if name in self._infos:
                raise CheckpointError(f"{self.path}: tensor {name!r} appears in two shards ({f.name} and "
                                      f"{self._infos[name].file.name})")
            self._infos[name] = info
        return infos

    def _from_index(self, index_path: Path) -> None:
        try:
            weight_map: dict[str, str] = json.loads(index_path.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise CheckpointError(f"{index_path}: not a valid shard index (needs a 'weight_map'): {e}") from e
        headers: dict[str, dict[str, TensorInfo]] = {}
        for shard in sorted(set(weight_map.values())):
            f = self.path / shard
            if not f.is_file():
                raise CheckpointError(f"{index_path}: lists shard {shard!r}, which is missing from {self.path}")
            headers[shard], _ = read_header(f)
        for name, shard in weight_map.items():
            info = headers[shard].get(name)
            if info is None:
                raise CheckpointError(
                    f"{index_path}: says tensor {name!r} is in {shard!r}, but that shard does not hold it; "
                    "the index does not match the shards"
                )
            self._infos[name] = info
        listed = set(weight_map)
        for shard, infos in headers.items():
            extra = sorted(set(infos) - listed)
            if extra:
                raise CheckpointError(
                    f"{index_path}: shard {shard!r} holds {extra[0]!r} (and {len(extra) - 1} more) that the index "
                    "does not list; the index does not match the shards"
                )

    def _load_pickle(self, f: Path) -> None:
        import torch

        try:
            sd = torch.load(f, map_location="cpu", weights_only=True, mmap=True)
        except Exception as e:
            raise CheckpointError(f"{f}: cannot load pickle weights: {e}") from e
        self._pickled[f] = sd
        for name, t in sd.items():
            self._infos[name] = TensorInfo(name, f, str(t.dtype).removeprefix("torch."), tuple(t.shape),
                                           t.numel() * t.element_size())

    # ------------------------------------------------------------------ access
    def keys(self) -> list[str]:
        """Tensor names, in file order."""
        return list(self._infos)

    def __contains__(self, name: object) -> bool:
        return name in self._infos

    def __len__(self) -> int:
        return len(self._infos)

    def __iter__(self) -> Iterator[str]:
        return iter(self._infos)

    def info(self, name: str) -> TensorInfo:
        """Name, file, dtype, shape and byte size of tensor ``name`` (no data read)."""
        try:
            return self._infos[name]
        except KeyError:
            raise CheckpointError(f"{self.path}: no tensor named {name!r}") from None

    def infos(self) -> dict[str, TensorInfo]:
        """All tensor infos by name."""
        return dict(self._infos)

    @property
    def nbytes(self) -> int:
        """Total bytes of tensor data."""
        return sum(i.nbytes for i in self._infos.values())

    def get(self, name: str) -> torch.Tensor:
        """Tensor ``name``, memory-mapped from its file (copy it before writing to it)."""
        info = self.info(name)
        if info.file in self._pickled:
            return self._pickled[info.file][name]
        handle = self._handles.get(info.file)
        if handle is None:
            handle = self._handles[info.file] = safe_open(str(info.file), framework="pt", device="cpu")
        return handle.get_tensor(name)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Every tensor (memory-mapped), by name."""
        return {n: self.get(n) for n in self._infos}

    def close(self) -> None:
        """Drop open file handles."""
        self._handles.clear()

    def __repr__(self) -> str:
        return f"Checkpoint({str(self.path)!r}, tensors={len(self)}, bytes={self.nbytes})"
