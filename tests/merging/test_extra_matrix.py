"""Every method of this area through the real merge engine on tiny HF folders: a YAML config runs, the output
loads in transformers, and merging copies of the base gives the base back exactly."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

DATA_FREE = {
    "tsv": {"alpha": 1.0},
    "iso_c": {"alpha": 1.5},
    "iso_cts": {"alpha": 1.5, "common_space_fraction": 0.8},
    "consensus_task_arithmetic": {"k": 2, "lambda": 1.0},
    "consensus_ties": {"k": 2, "density": 0.5},
    "pcb": {"density": 0.2, "lambda": 1.0},
}


@pytest.fixture(scope="module")
def base_copies(tiny_model_dirs: list[Path], tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root = tmp_path_factory.mktemp("copies")
    return [Path(shutil.copytree(tiny_model_dirs[0], root / f"copy{i}")) for i in range(2)]


def _write(tmp_path: Path, cfg: dict) -> Path:
    p = tmp_path / "merge.yaml"
    p.write_text(yaml.safe_dump(cfg))
    return p


@pytest.mark.parametrize("method", sorted(DATA_FREE))
def test_method_runs_from_yaml_and_copies_of_the_base_give_the_base(
    method: str, tiny_model_dirs: list[Path], base_copies: list[Path], tmp_path: Path
) -> None:
    from transformers import AutoModelForCausalLM

    from tutti.merging import merge

    base, *experts = tiny_model_dirs
    cfg = {"base_model": str(base), "merge_method": method, "dtype": "float32", "parameters": DATA_FREE[method],
           "models": [{"model": str(base)}] + [{"model": str(e)} for e in experts]}
    out = merge(_write(tmp_path, cfg), tmp_path / "out")
    merged, ref = load_file(out / "model.safetensors"), load_file(base / "model.safetensors")
    assert set(merged) == set(ref)
    assert all(torch.isfinite(t).all() for t in merged.values())
    assert not torch.equal(merged["model.layers.0.mlp.up_proj.weight"], ref["model.layers.0.mlp.up_proj.weight"])
    AutoModelForCausalLM.from_pretrained(out)  # a loadable HF folder

    cfg["models"] = [{"model": str(base)}] + [{"model": str(c)} for c in base_copies]
    same = load_file(merge(_write(tmp_path, cfg), tmp_path / "same") / "model.safetensors")
    for name, t in ref.items():
        torch.testing.assert_close(same[name], t, atol=1e-6, rtol=0, msg=name)
