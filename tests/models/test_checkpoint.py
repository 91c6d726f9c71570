"""The lazy checkpoint reader: headers without data, shards, and clear errors on bad folders."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from tutti.errors import CheckpointError
from tutti.models.checkpoint import Checkpoint


def test_reads_single_file_lazily(tiny_model_dir: Path) -> None:
    ck = Checkpoint(tiny_model_dir)
    ref = load_file(str(tiny_model_dir / "model.safetensors"))
    assert set(ck.keys()) == set(ref)
    for name, t in ref.items():
        info = ck.info(name)
        assert info.shape == tuple(t.shape)
        assert info.dtype == str(t.dtype).removeprefix("torch.")
        assert info.nbytes == t.numel() * t.element_size()
        assert torch.equal(ck.get(name), t)
    assert ck.nbytes == sum(t.numel() * t.element_size() for t in ref.values())
    assert ck.config["architectures"] == ["LlamaForCausalLM"]


def test_sharded_equals_single(tiny_model_dir: Path, tiny_sharded_dir: Path) -> None:
    assert (tiny_sharded_dir / "model.safetensors.index.json").is_file()
    single, sharded = Checkpoint(tiny_model_dir), Checkpoint(tiny_sharded_dir)
    assert len({i.file for i in sharded.infos().values()}) > 1
    assert set(single.keys()) == set(sharded.keys())
    for name in single:
        assert torch.equal(single.get(name), sharded.get(name))


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        Checkpoint(tmp_path / "nope")


def test_truncated_file(tiny_model_dir: Path, tmp_path: Path) -> None:
    d = _copy(tiny_model_dir, tmp_path / "m")
    f = d / "model.safetensors"
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        Checkpoint(d)


def test_config_without_architecture(tiny_model_dir: Path, tmp_path: Path) -> None:
    d = _copy(tiny_model_dir, tmp_path / "m")
    cfg = json.loads((d / "config.json").read_text())
    del cfg["architectures"]
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="architectures"):
        Checkpoint(d)


def test_mismatched_shard_index(tiny_sharded_dir: Path, tmp_path: Path) -> None:
    d = _copy(tiny_sharded_dir, tmp_path / "m")
    idx_path = d / "model.safetensors.index.json"
    idx = json.loads(idx_path.read_text())
    names = sorted(idx["weight_map"])
    shards = sorted(set(idx["weight_map"].values()))
    # point a tensor at a shard that does not hold it
    wrong = next(s for s in shards if s != idx["weight_map"][names[0]])
    idx["weight_map"][names[0]] = wrong
    idx_path.write_text(json.dumps(idx))
    with pytest.raises(CheckpointError, match="does not match"):
        Checkpoint(d)


def test_index_lists_missing_shard(tiny_sharded_dir: Path, tmp_path: Path) -> None:
    d = _copy(tiny_sharded_dir, tmp_path / "m")
    idx = json.loads((d / "model.safetensors.index.json").read_text())
    (d / sorted(set(idx["weight_map"].values()))[0]).unlink()
    with pytest.raises(CheckpointError, match="missing"):
        Checkpoint(d)


def test_pickle_refused_without_flag(tiny_model_dir: Path, tmp_path: Path) -> None:
    d = tmp_path / "pkl"
    d.mkdir()
    shutil.copy(tiny_model_dir / "config.json", d)
    sd = load_file(str(tiny_model_dir / "model.safetensors"))
    torch.save(sd, d / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="allow-pickle"):
        Checkpoint(d)
    ck = Checkpoint(d, allow_pickle=True)
    assert all(torch.equal(ck.get(n), t) for n, t in sd.items())


def test_duplicate_tensor_across_unindexed_shards(tmp_path: Path) -> None:
    d = tmp_path / "dup"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"]}))
    save_file({"a": torch.zeros(2)}, str(d / "x-1.safetensors"))
    save_file({"a": torch.ones(2)}, str(d / "x-2.safetensors"))
    with pytest.raises(CheckpointError, match="two shards"):
        Checkpoint(d)
