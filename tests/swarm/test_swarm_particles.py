"""Particle representations: dense experts swapped in place, layouts, and clear errors for bad expert pools."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from tutti.config.swarm import SwarmConfig, UtilityConfig
from tutti.errors import TuttiError
from tutti.swarm.particles import Layout, load_experts


def test_layout_roundtrip_views():
    lay = Layout(("a", "b"), ((2, 3), (4,)))
    t = {"a": torch.arange(6.0).view(2, 3), "b": torch.ones(4)}
    v = lay.flatten(t)
    assert v.shape == (10,) and lay.dim == 10
    back = lay.unflatten(v)
    assert torch.equal(back["a"], t["a"]) and back["a"].data_ptr() == v.data_ptr()  # views, no copies


def test_dense_experts_swap_and_search(tiny_model_dirs, swarm_setup, tmp_path):
    from transformers import AutoModelForCausalLM

    from tutti.swarm import search
    from tutti.swarm.engine import Evaluator

    paths = [str(p) for p in tiny_model_dirs]
    rep, e = load_experts("dense", paths)
    assert rep.kind == "dense" and e.shape[0] == 3
    u = UtilityConfig(name="mean_loglik", task=str(swarm_setup["task"]), limit=8)
    ev = Evaluator(rep, u)
    ids = torch.tensor([[5, 67, 68, 69, 223, 31]])
    for k in (2, 1):
        ev.swapper.load(e[k])
        want = AutoModelForCausalLM.from_pretrained(paths[k]).eval()(input_ids=ids).logits
        assert torch.allclose(ev.model.module(input_ids=ids).logits, want, atol=1e-5)
    cfg = SwarmConfig(experts=paths, representation="dense", n_particles=4, max_iterations=1, utility=u)
    res = search(cfg, tmp_path / "run")
    assert (tmp_path / "run/best/config.json").is_file() and (tmp_path / "run/best/README.md").is_file()
    from tutti.evaluation.utilities import build_utility
    from tutti.models.hf import HFModel

    # the written checkpoint, loaded fresh, scores what the search recorded
    assert build_utility(u)(HFModel.load(tmp_path / "run/best")).value == pytest.approx(res.best_dev, abs=1e-5)
    assert json.loads((tmp_path / "run/summary.json").read_text())["best_test"] is not None

def test_bad_expert_pools(swarm_setup, tiny_model_dirs, tmp_path):
    lora = [str(p) for p in swarm_setup["experts"]]
    with pytest.raises(TuttiError, match="not a PEFT LoRA folder"):
        load_experts("lora_factors", [lora[0], str(tiny_model_dirs[0])])
    with pytest.raises(TuttiError, match="needs full checkpoints"):
        load_experts("dense", lora)
    odd = tmp_path / "odd"
    shutil.copytree(lora[1], odd)
    cfg = json.loads((odd / "adapter_config.json").read_text())
    cfg["r"] = 8
    (odd / "adapter_config.json").write_text(json.dumps(cfg))
    with pytest.raises(TuttiError, match="r=8 differs"):
        load_experts("lora_factors", [lora[0], str(odd)])
    with pytest.raises(TuttiError, match="unknown particle representation"):
        load_experts("lora_fact", lora)
