"""The merge I/O path: row-block reads, mapped inputs, the finiteness check, the streaming writer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tutti.errors import TuttiError
from tutti.models.checkpoint import Checkpoint


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous().view(torch.uint8)


def _run(plan, out: Path, slow: bool = False, **opts) -> Path:
    import time

    from tutti.merging.execute import DTYPES, ExecOptions, run_plan
    from tutti.merging.stream_writer import StreamingWriter

    class SlowWriter(StreamingWriter):  # a slow disk: the write queue stays full while reading goes on
        def write(self, name: str, chunk: torch.Tensor) -> None:
            time.sleep(0.002)
            super().write(name, chunk)

    w = (SlowWriter if slow else StreamingWriter)(out, [(j.name, DTYPES.get(j.dtype, torch.float32), j.shape) for j in plan.jobs],
                        max_shard_bytes=1 << 40)
    run_plan(plan, w, ExecOptions(**opts))
    w.write_text("config.json", json.dumps(plan.out_config))
    return w.finish()


def _plan(cfg: dict):
    from tutti.config.merge import load_merge_config
    from tutti.merging.plan import make_plan

    return make_plan(load_merge_config(cfg))


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_row_block_reads_match_the_in_memory_merge(with_models, merge_models, tmp_path, dtype):
    """Every tensor read and merged in row blocks of a few hundred bytes under a tiny budget: bytes equal to
    merge_state_dicts on the whole tensors."""
    import tutti.merging.execute as ex
    from tutti.merging import merge_state_dicts

    cfg = with_models({"merge_method": "linear", "dtype": dtype, "models": [
        {"model": m, "parameters": {"weight": w}} for m, w in (("M1", 0.7), ("M2", 0.2), ("M3", 0.4))]})
    plan = _plan(cfg)
    units = ex._units(plan, ex.DTYPES[dtype], ex.ExecOptions(block_bytes=600))
    assert len(units) > 3 * len(plan.jobs)  # really split into row blocks
    out = Checkpoint(_run(plan, tmp_path / "o", block_bytes=600, max_memory=8192, read_threads=3))
    sds = [Checkpoint(merge_models[m]).state_dict() for m in ("M1", "M2", "M3")]
    ref = merge_state_dicts("linear", sds, weight=[0.7, 0.2, 0.4], dtype=getattr(torch, dtype))
    assert sorted(out.keys()) == sorted(ref)
    for k, v in ref.items():
        assert torch.equal(_bits(out.get(k)), _bits(v)), k


def test_copied_row_blocks_are_written_while_their_maps_live(with_models, merge_models, tmp_path):
    """passthrough returns its (mapped) input block itself: it must stay valid until the slow writer has it."""
    cfg = with_models({"merge_method": "passthrough", "dtype": "float32", "models": [{"model": "M2"}]})
    out = Checkpoint(_run(_plan(cfg), tmp_path / "o", slow=True, block_bytes=300, max_memory=16384, read_threads=2))
    src = Checkpoint(merge_models["M2"])
    for k in src:
        assert torch.equal(_bits(out.get(k)), _bits(src.get(k).float())), k


def test_nan_in_a_row_block_names_the_tensor(merge_models, tmp_path):
    import tutti
    from tutti.testing import make_tiny_llama

    bad = make_tiny_llama(tmp_path / "nan_model", seed=5, hidden=32, layers=4)
    ck = Checkpoint(bad)
    sd = {k: v.clone() for k, v in ck.state_dict().items()}
    sd["model.embed_tokens.weight"][-1, -1] = float("inf")
    from safetensors.torch import save_file

    save_file(sd, str(bad / "model.safetensors"), metadata={"format": "pt"})
    cfg = {"merge_method": "linear", "dtype": "float32",
           "models": [{"model": str(merge_models["M1"]), "parameters": {"weight": 1.0}},
                      {"model": str(bad), "parameters": {"weight": 1.0}}]}
    with pytest.raises(TuttiError, match=r"'model.embed_tokens.weight' in .*nan_model contains NaN or Inf"):
        tutti.merge(cfg, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_all_finite_is_exact():
    from tutti.merging.execute import all_finite

    assert all_finite(torch.randn(1000))
    assert all_finite(torch.tensor([3e38, 3e38, -1.0]))  # the sum overflows, the elements are finite
    assert all_finite(torch.tensor([6e4, 6e4], dtype=torch.float16))
    assert all_finite(torch.tensor([3e38, 3e38], dtype=torch.bfloat16))
    for bad in (float("nan"), float("inf"), -float("inf")):
        x = torch.randn(1000)
        x[777] = bad
        assert not all_finite(x)
        assert not all_finite(x.to(torch.bfloat16))
    assert not all_finite(torch.tensor([float("inf"), -float("inf")]))  # the sum is NaN


def test_mapped_reads_are_private_and_unmapped_with_their_last_tensor(tmp_path):
    """A read maps the file copy-on-write: writing to the tensor never reaches the file, and the map (and its
    resident pages) goes away as soon as the last tensor using it is freed."""
    from safetensors.torch import load_file, save_file

    from tutti.merging.execute import read_safetensors_tensor

    f = tmp_path / "m.safetensors"
    x = torch.arange(3000, dtype=torch.float32).reshape(100, 30)
    save_file({"a": torch.ones(7), "x": x}, str(f))

    def maps() -> int:
        with open("/proc/self/maps") as fh:
            return sum(str(f) in line for line in fh)

    t = read_safetensors_tensor(f, "x", rows=(10, 20))
    view = t[2:4]
    assert maps() == 1 and torch.equal(t, x[10:20])
    t.mul_(-1)  # private pages
    assert torch.equal(load_file(str(f))["x"], x)
    del t
    assert maps() == 1  # the view still uses it
    del view
    assert maps() == 0


def test_safetensors_row_read_and_rewritten_file(tmp_path):
    """Rows [a, b) read equal the slice; a file rewritten at the same path is not served a stale header."""
    from safetensors.torch import save_file

    from tutti.merging.execute import read_safetensors_tensor

    f = tmp_path / "x.safetensors"
    x = torch.arange(60, dtype=torch.float32).reshape(10, 6)
    save_file({"x": x}, str(f))
    assert torch.equal(read_safetensors_tensor(f, "x", rows=(3, 7)), x[3:7])
    save_file({"y": torch.zeros(2), "x": x.to(torch.bfloat16)}, str(f))
    got = read_safetensors_tensor(f, "x")
    assert got.dtype == torch.bfloat16 and torch.equal(got, x.to(torch.bfloat16))


def test_writeback_hint_is_available_on_linux_and_harmless(tmp_path):
    import os
    import sys

    from tutti.merging.stream_writer import _sync_file_range, start_writeback

    f = tmp_path / "x.bin"
    f.write_bytes(b"\1" * 8192)
    fd = os.open(f, os.O_RDWR)
    try:
        start_writeback(fd)  # no error, and nothing changes in the file
    finally:
        os.close(fd)
    assert f.read_bytes() == b"\1" * 8192
    assert (_sync_file_range() is not None) == sys.platform.startswith("linux")
