"""The sharded writer: round trips, the byte budget, atomicity (including a write killed midway)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from tutti.errors import CheckpointError
from tutti.models.checkpoint import Checkpoint
from tutti.models.writer import ShardedWriter, parse_size, save_checkpoint


def _tensors(n: int = 10, numel: int = 1000) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {f"layer.{i}.weight": torch.randn(numel, generator=g) for i in range(n)}


def test_round_trip_identical(tiny_model_dir: Path, tmp_path: Path) -> None:
    src = Checkpoint(tiny_model_dir)
    out = save_checkpoint(src.state_dict(), tmp_path / "out", copy_from=tiny_model_dir, model_card="# hi\n")
    back = Checkpoint(out)
    assert back.keys() == src.keys()
    assert all(torch.equal(back.get(n), src.get(n)) for n in src)
    for f in ("config.json", "tokenizer.json", "tokenizer_config.json", "README.md"):
        assert (out / f).is_file(), f


def test_shards_split_at_budget(tmp_path: Path) -> None:
    ts = _tensors(10, 1000)  # 4000 bytes each
    out = save_checkpoint(ts, tmp_path / "out", config={"architectures": ["X"]}, max_shard_bytes=10_000)
    shards = sorted(out.glob("model-*-of-*.safetensors"))
    assert len(shards) == 5  # two 4000-byte tensors fit under 10000, a third would not
    ck = Checkpoint(out)
    for info in ck.infos().values():
        assert info.file.stat().st_size < 10_000 + 1024
    assert all(torch.equal(ck.get(n), t) for n, t in ts.items())
    assert not (out / "model.safetensors").exists()


def test_single_shard_has_no_index(tmp_path: Path) -> None:
    out = save_checkpoint(_tensors(2), tmp_path / "out", config={"architectures": ["X"]})
    assert (out / "model.safetensors").is_file()
    assert not (out / "model.safetensors.index.json").exists()


def test_exception_leaves_no_folder(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), ShardedWriter(tmp_path / "out", max_shard_bytes=5000) as w:
        for n, t in _tensors().items():
            w.add(n, t)
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_overwrite_is_atomic_replacement(tmp_path: Path) -> None:
    out = save_checkpoint({"a": torch.zeros(3)}, tmp_path / "out", config={"architectures": ["X"]})
    save_checkpoint({"b": torch.ones(3)}, out, config={"architectures": ["X"]})
    assert Checkpoint(out).keys() == ["b"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_killed_write_leaves_nothing_complete_looking(tmp_path: Path) -> None:
    script = textwrap.dedent(f"""
        import torch, time
        from tutti.models.writer import ShardedWriter
        w = ShardedWriter({str(tmp_path / 'out')!r}, max_shard_bytes=4000)
        w.write_json("config.json", {{"architectures": ["X"]}})
        for i in range(1000):
            w.add(f"t{{i}}", torch.zeros(1000))
            if i == 5:
                print("ready", flush=True)
            time.sleep(0.01)
        w.finish()
    """)
    p = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert p.stdout is not None and p.stdout.readline().strip() == "ready"
    time.sleep(0.1)
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    assert not (tmp_path / "out").exists()
    leftovers = list(tmp_path.iterdir())
    assert all(x.name.startswith(".out.tmp-") for x in leftovers)


def test_duplicate_name_is_an_error(tmp_path: Path) -> None:
    with ShardedWriter(tmp_path / "o") as w:
        w.add("a", torch.zeros(1))
        with pytest.raises(CheckpointError, match="twice"):
            w.add("a", torch.zeros(1))
        w.abort()


@pytest.mark.parametrize(("text", "value"), [("1000", 1000), ("2K", 2048), ("1.5M", 1572864), ("5G", 5 * 1024**3),
                                             ("3gb", 3 * 1024**3), (42, 42)])
def test_parse_size(text: str | int, value: int) -> None:
    assert parse_size(text) == value


def test_parse_size_error() -> None:
    with pytest.raises(CheckpointError, match="size"):
        parse_size("lots")
