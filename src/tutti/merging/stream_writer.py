"""A streaming safetensors writer whose memory does not grow with the shard size.

A merge plan knows every output tensor's name, dtype and shape before the first tensor is computed, so the
safetensors headers (with all byte offsets) can be written up front and each tensor, or each row block of a
tensor, is appended to its shard the moment it is produced. Nothing waits in RAM for a shard to fill.

Like :class:`tutti.models.writer.ShardedWriter`, everything goes to a hidden temporary folder beside the
destination and is renamed into place by :meth:`StreamingWriter.finish`; an error leaves the destination as it was.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import json
import math
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from tutti.errors import CheckpointError
from tutti.models.writer import publish_folder

# dtype name -> (safetensors code, bytes per entry); a layout's dtypes are these names or torch dtypes
ST_DTYPES = {"float32": ("F32", 4), "bfloat16": ("BF16", 2), "float16": ("F16", 2), "float64": ("F64", 8),
             "int64": ("I64", 8), "int32": ("I32", 4), "int16": ("I16", 2), "int8": ("I8", 1), "uint8": ("U8", 1),
             "bool": ("BOOL", 1)}


WRITEBACK_BYTES = 64 * 1024**2  # written bytes after which the kernel is asked to start writing them back


def start_writeback(fd: int) -> None:
    """Ask the kernel to start writing ``fd``'s dirty pages to disk, without waiting (Linux ``sync_file_range``
    with ``SYNC_FILE_RANGE_WRITE``; nothing elsewhere). Durability still comes from the ``fsync`` in ``finish``."""
    fn = _sync_file_range()
    if fn is not None:
        fn(fd, 0, 0, 2)  # offset 0, length 0: to the end of the file; 2 = SYNC_FILE_RANGE_WRITE


@functools.cache
def _sync_file_range() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


@dataclass
class _Slot:
    shard: int
    start: int  # byte offset in the shard's data section
    nbytes: int
    written: int = 0


class StreamingWriter:
    """Write pre-declared tensors into shards as they are produced.

    Args:
        out_dir: destination folder (replaced atomically when it exists).
        layout: ``(name, dtype, shape)`` of every output tensor, in the order they will be written.
        max_shard_bytes: a new shard starts before one would pass this many bytes.
        metadata: safetensors ``__metadata__`` (``format: pt`` is added).
    """

    def __init__(self, out_dir: str | Path, layout: list[tuple[str, Any, tuple[int, ...]]], *,
                 max_shard_bytes: int, metadata: dict[str, str] | None = None) -> None:
        self.out_dir = Path(out_dir).absolute()
        if self.out_dir.exists() and not self.out_dir.is_dir():
            raise CheckpointError(f"{self.out_dir} exists and is a file; choose a folder path")
        self.out_dir.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(prefix=f".{self.out_dir.name}.tmp-", dir=self.out_dir.parent))
        self.slots: dict[str, _Slot] = {}
        shards: list[dict[str, Any]] = [{}]
        size = 0
        for name, dtype, shape in layout:
            code, size_of_entry = ST_DTYPES[str(dtype).removeprefix("torch.")]
            nbytes = math.prod(shape) * size_of_entry
            if shards[-1] and size + nbytes > max_shard_bytes:
                shards.append({})
                size = 0
            shards[-1][name] = {"dtype": code, "shape": list(shape), "data_offsets": [size, size + nbytes]}
            self.slots[name] = _Slot(len(shards) - 1, size, nbytes)
            size += nbytes
        self.total_bytes = sum(s.nbytes for s in self.slots.values())
        n = len(shards)
        self.names = ["model.safetensors"] if n == 1 else [f"model-{i:05d}-of-{n:05d}.safetensors"
                                                            for i in range(1, n + 1)]
        self._files: list[BinaryIO] = []
        self._data_start: list[int] = []
        meta = {"format": "pt", **(metadata or {})}
        size_of = {fname: max((v["data_offsets"][1] for v in header.values()), default=0)
                   for fname, header in zip(self.names, shards, strict=True)}
        for fname, header in zip(self.names, shards, strict=True):
            raw = json.dumps({"__metadata__": meta, **header}, separators=(",", ":")).encode()
            raw += b" " * (-len(raw) % 8)
            f = (self.tmp / fname).open("wb")
            f.write(len(raw).to_bytes(8, "little"))
            f.write(raw)
            f.flush()  # the data section is written with os.pwrite on the file descriptor
            with contextlib.suppress(OSError, AttributeError):  # reserve the blocks at once: an extending write
                os.posix_fallocate(f.fileno(), 0, 8 + len(raw) + size_of[fname])  # costs a block allocation each
            self._files.append(f)
            self._data_start.append(8 + len(raw))
        self._unsynced = [0] * n
        self._done = False

    def write(self, name: str, chunk: Any) -> None:
        """Append ``chunk`` (the whole tensor, or its next row block; a torch tensor or a NumPy array) to
        ``name``'s bytes."""
        slot = self.slots[name]
        if isinstance(chunk, np.ndarray):
            data = np.ascontiguousarray(chunk).reshape(-1).view(np.uint8)
        else:  # a torch tensor (bfloat16 has no NumPy dtype: viewed as bytes first)
            import torch

            data = chunk.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy()
        if slot.written + data.size > slot.nbytes:
            raise CheckpointError(f"tensor {name!r}: more bytes produced than its declared shape holds")
        fd, view, done = self._files[slot.shard].fileno(), memoryview(data), 0
        offset = self._data_start[slot.shard] + slot.start + slot.written
        while done < len(view):  # straight from the tensor's memory: no intermediate bytes, no seek
            done += os.pwrite(fd, view[done:], offset + done)
        slot.written += data.size
        self._unsynced[slot.shard] += done
        if self._unsynced[slot.shard] >= WRITEBACK_BYTES:  # start the disk writes now, so finish's fsync is short
            self._unsynced[slot.shard] = 0
            start_writeback(fd)

    def copy_files(self, src: str | Path, names: tuple[str, ...]) -> list[str]:
        """Copy those of ``names`` that exist in ``src`` and are not written yet."""
        copied = []
        for n in names:
            f = Path(src) / n
            if f.is_file() and not (self.tmp / n).exists():
                shutil.copy2(f, self.tmp / n)
                copied.append(n)
        return copied

    def write_text(self, name: str, text: str) -> None:
        """Write a side file (config, model card...)."""
        (self.tmp / name).write_text(text)

    def finish(self) -> Path:
        """Check every tensor is complete, write the index, and move the folder into place."""
        short = [n for n, s in self.slots.items() if s.written != s.nbytes]
        if short:
            raise CheckpointError(f"tensor {short[0]!r} was not fully written")
        for f in self._files:
            f.flush()
            os.fsync(f.fileno())
            f.close()
        if len(self.names) > 1:
            weight_map = {n: self.names[s.shard] for n, s in self.slots.items()}
            index = {"metadata": {"total_size": self.total_bytes}, "weight_map": weight_map}
            self.write_text("model.safetensors.index.json", json.dumps(index, indent=2) + "\n")
        publish_folder(self.tmp, self.out_dir)
        self._done = True
        return self.out_dir

    def abort(self) -> None:
        """Close and remove the temporary folder; the destination is untouched."""
        if self._done:
            return
        for f in self._files:
            f.close()
        shutil.rmtree(self.tmp, ignore_errors=True)
        self._done = True
