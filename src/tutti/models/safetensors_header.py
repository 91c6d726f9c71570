"""Read a safetensors file's header (names, dtypes, shapes, byte offsets) without touching tensor data."""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path

from tutti.errors import CheckpointError

# safetensors dtype tags -> bytes per element
DTYPE_SIZES: dict[str, int] = {
    "F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1,
    "F8_E4M3": 1, "F8_E5M2": 1, "U16": 2, "U32": 4, "U64": 8,
}
TORCH_DTYPE_NAMES: dict[str, str] = {
    "F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16", "I64": "int64", "I32": "int32",
    "I16": "int16", "I8": "int8", "U8": "uint8", "BOOL": "bool", "F8_E4M3": "float8_e4m3fn",
    "F8_E5M2": "float8_e5m2", "U16": "uint16", "U32": "uint32", "U64": "uint64",
}
MAX_HEADER_BYTES = 100 * 1024 * 1024


@dataclass(frozen=True)
class TensorInfo:
    """Where one tensor lives and what it is, known from the header alone."""

    name: str
    file: Path
    dtype: str  # torch dtype name, e.g. "float32"
    shape: tuple[int, ...]
    nbytes: int

    @property
    def numel(self) -> int:
        """Number of elements."""
        n = 1
        for d in self.shape:
            n *= d
        return n


def read_header(path: Path) -> tuple[dict[str, TensorInfo], dict[str, str]]:
    """Parse ``path``'s header and check the file is long enough for every tensor it declares.

    Returns:
        ``(tensors, metadata)``: tensor infos by name and the ``__metadata__`` string map.

    Raises:
        CheckpointError: the file is not safetensors, or is truncated.
    """
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise CheckpointError(f"{path}: truncated safetensors file ({size} bytes); re-download or re-save it")
            (n,) = struct.unpack("<Q", head)
            if n > MAX_HEADER_BYTES or 8 + n > size:
                raise CheckpointError(
                    f"{path}: truncated or not a safetensors file (header of {n} bytes, file of {size}); "
                    "re-download or re-save it"
                )
            raw = json.loads(f.read(n))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path}: cannot read the safetensors header ({e}); re-download or re-save it") from e
    meta = raw.pop("__metadata__", None) or {}
    data_len = size - 8 - n
    tensors: dict[str, TensorInfo] = {}
    for name, spec in raw.items():
        start, end = spec["data_offsets"]
        if end > data_len:
            raise CheckpointError(
                f"{path}: truncated safetensors file: tensor {name!r} ends at byte {end} of a "
                f"{data_len}-byte data section; re-download or re-save it"
            )
        dtype = TORCH_DTYPE_NAMES.get(spec["dtype"])
        if dtype is None:
            raise CheckpointError(f"{path}: tensor {name!r} has unsupported dtype {spec['dtype']}")
        tensors[name] = TensorInfo(name, path, dtype, tuple(spec["shape"]), end - start)
    return tensors, meta
