"""Sharded, atomic safetensors writer.

Tensors are added one by one and flushed to a new shard whenever the shard would pass ``max_shard_bytes``, so the
writer never holds more than one shard in memory. Everything goes into a temporary folder beside the destination
(same filesystem) that is renamed into place by :meth:`ShardedWriter.finish`; an interrupted write leaves only a
hidden ``.tmp-`` folder, never a folder that looks complete.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from tutti.errors import CheckpointError

if TYPE_CHECKING:  # torch only for tensors handed in: the size and model-card helpers run without it
    import torch

DEFAULT_SHARD_BYTES = 5 * 1024**3
# Files copied from a source model folder into an output folder when asked to.
SIDE_FILES = (
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "tokenizer.model",
    "vocab.json",
    "merges.txt",
    "vocab.txt",
    "added_tokens.json",
    "chat_template.jinja",
    "chat_template.json",
)
TOKENIZER_FILES = tuple(f for f in SIDE_FILES if f not in ("config.json", "generation_config.json"))


def parse_size(text: str | int) -> int:
    """Parse a byte count with an optional K/M/G/T suffix (powers of 1024): ``"500M"`` -> 524288000."""
    if isinstance(text, int):
        return text
    s = text.strip().upper().removesuffix("B").removesuffix("I")
    mult = 1
    for i, suffix in enumerate("KMGT", start=1):
        if s.endswith(suffix):
            mult, s = 1024**i, s[:-1]
            break
    try:
        value = float(s) * mult
    except ValueError:
        raise CheckpointError(f"cannot read {text!r} as a size; use bytes or a K/M/G suffix, e.g. 2G") from None
    if value <= 0:
        raise CheckpointError(f"size {text!r} must be positive")
    return int(value)


class ShardedWriter:
    """Write a checkpoint folder shard by shard, atomically.

    Args:
        out_dir: destination folder; replaced atomically if it exists (when ``overwrite``).
        max_shard_bytes: start a new shard before a shard would pass this many bytes.
        overwrite: allow replacing an existing ``out_dir``.
        metadata: safetensors ``__metadata__`` written into every shard (``format: pt`` is added).
        single_file_name: the weights file's name when everything fits in one shard.

    Use as a context manager; leaving the block without :meth:`finish` (an exception) removes the temporary folder.
    """

    def __init__(
        self,
        out_dir: str | Path,
        *,
        max_shard_bytes: int = DEFAULT_SHARD_BYTES,
        overwrite: bool = True,
        metadata: dict[str, str] | None = None,
        single_file_name: str = "model.safetensors",
    ) -> None:
        self.single_file_name = single_file_name
        self.out_dir = Path(out_dir).absolute()
        if self.out_dir.exists() and not overwrite:
            raise CheckpointError(f"{self.out_dir} already exists; choose another folder or allow overwriting")
        if self.out_dir.exists() and not self.out_dir.is_dir():
            raise CheckpointError(f"{self.out_dir} exists and is a file; choose a folder path")
        self.out_dir.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(prefix=f".{self.out_dir.name}.tmp-", dir=self.out_dir.parent))
        self.max_shard_bytes = max_shard_bytes
        self.metadata = {"format": "pt", **(metadata or {})}
        self._pending: dict[str, torch.Tensor] = {}
        self._pending_bytes = 0
        self._shards: list[tuple[str, list[str]]] = []
        self._names: set[str] = set()
        self.total_bytes = 0
        self._done = False

    # ------------------------------------------------------------------ tensors
    def add(self, name: str, tensor: torch.Tensor) -> None:
        """Queue ``tensor`` under ``name``; flushes a shard first if it would pass the budget."""
        if name in self._names:
            raise CheckpointError(f"tensor {name!r} written twice")
        nbytes = tensor.numel() * tensor.element_size()
        if self._pending and self._pending_bytes + nbytes > self.max_shard_bytes:
            self.flush()
        self._names.add(name)
        self._pending[name] = tensor.detach().to("cpu").contiguous()
        self._pending_bytes += nbytes
        self.total_bytes += nbytes

    def flush(self) -> None:
        """Write the queued tensors as one shard."""
        if not self._pending:
            return
        fname = f"shard-{len(self._shards) + 1:05d}.safetensors"
        from safetensors.torch import save_file

        save_file(self._pending, str(self.tmp / fname), metadata=self.metadata)
        self._shards.append((fname, list(self._pending)))
        self._pending, self._pending_bytes = {}, 0

    # ------------------------------------------------------------------ side files
    def write_json(self, name: str, data: Any) -> None:
        """Write ``data`` as ``name`` (JSON, indented) into the output."""
        (self.tmp / name).write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")

    def write_text(self, name: str, text: str) -> None:
        """Write a text file into the output."""
        (self.tmp / name).write_text(text)

    def copy_files(self, src: str | Path, names: tuple[str, ...] = SIDE_FILES) -> list[str]:
        """Copy those of ``names`` that exist in ``src`` (config, tokenizer, chat template...). Returns the copied."""
        copied = []
        for n in names:
            f = Path(src) / n
            if f.is_file() and not (self.tmp / n).exists():
                shutil.copy2(f, self.tmp / n)
                copied.append(n)
        return copied

    # ------------------------------------------------------------------ commit
    def finish(self) -> Path:
        """Flush, name the shards ``model-0000i-of-0000n``, write the index, and move the folder into place."""
        self.flush()
        n = len(self._shards)
        weight_map: dict[str, str] = {}
        for i, (tmp_name, names) in enumerate(self._shards, start=1):
            final = self.single_file_name if n == 1 else f"model-{i:05d}-of-{n:05d}.safetensors"
            os.replace(self.tmp / tmp_name, self.tmp / final)
            weight_map.update({t: final for t in names})
        if n > 1:
            self.write_json(
                "model.safetensors.index.json",
                {"metadata": {"total_size": self.total_bytes}, "weight_map": weight_map},
            )
        for f in self.tmp.iterdir():  # make sure the data is on disk before the rename publishes it
            with f.open("rb") as fh:
                os.fsync(fh.fileno())
        publish_folder(self.tmp, self.out_dir)
        self._done = True
        return self.out_dir

    def abort(self) -> None:
        """Remove the temporary folder; the destination is left as it was."""
        if not self._done:
            shutil.rmtree(self.tmp, ignore_errors=True)
            self._done = True

    def __enter__(self) -> ShardedWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is not None:
            self.abort()
        elif not self._done:
            self.finish()


def publish_folder(tmp: Path, out_dir: Path) -> None:
    """Move a finished temporary folder to ``out_dir`` (same filesystem), replacing an existing one.

    The old folder is first renamed aside, so ``out_dir`` is never a half-written mix of old and new files.
    """
    if out_dir.exists():
        old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}-{time.time_ns()}")
        os.replace(out_dir, old)
        os.replace(tmp, out_dir)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out_dir)


def save_checkpoint(
    state_dict: dict[str, torch.Tensor],
    out_dir: str | Path,
    *,
    config: dict[str, Any] | None = None,
    copy_from: str | Path | None = None,
    max_shard_bytes: int = DEFAULT_SHARD_BYTES,
    model_card: str | None = None,
) -> Path:
    """Write ``state_dict`` as an HF folder in one atomic step.

    Args:
        state_dict: tensors by name.
        out_dir: destination folder.
        config: ``config.json`` contents (else copied from ``copy_from``).
        copy_from: a model folder whose config, generation config, tokenizer and chat template are copied.
        max_shard_bytes: shard size budget.
        model_card: README.md text.
    """
    with ShardedWriter(out_dir, max_shard_bytes=max_shard_bytes) as w:
        for name, t in state_dict.items():
            w.add(name, t)
        if config is not None:
            w.write_json("config.json", config)
        if copy_from is not None:
            w.copy_files(copy_from)
        if model_card:
            w.write_text("README.md", model_card)
        return w.finish()


def model_card(title: str, how: str, *, sources: list[str] | None = None, config_yaml: str | None = None) -> str:
    """A short README.md that records how a model was made (tool, method, sources, config)."""
    lines = ["---", "library_name: transformers", "tags:", "- tutti", "---", "", f"# {title}", "", how, ""]
    if sources:
        lines += ["## Sources", "", *[f"- `{s}`" for s in sources], ""]
    if config_yaml:
        lines += ["## Configuration", "", "```yaml", config_yaml.rstrip(), "```", ""]
    lines += ["Made with [tutti](https://pypi.org/project/tutti-llm/).", ""]
    return "\n".join(lines)
