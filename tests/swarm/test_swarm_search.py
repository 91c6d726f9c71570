"""End-to-end searches on tiny real models: in-place swaps, outputs, the held-out win, determinism."""

from __future__ import annotations

import json

import pytest
import torch

from tutti.config.swarm import SwarmConfig, UtilityConfig
from tutti.errors import TuttiError


def config(setup, **kw) -> SwarmConfig:
    base = {
        "experts": [str(e) for e in setup["experts"]],
        "utility": UtilityConfig(name="mean_loglik", task=str(setup["task"]), options={"choice_prefix": ""}),
        "n_particles": 6, "patience": 4, "max_iterations": 12, "seed": 0, "step_length": 1.0,
    }
    base.update(kw)
    return SwarmConfig(**base)


def test_swap_in_place_matches_a_fresh_peft_model(swarm_setup):
    """Swapping expert k into the resident model gives exactly the logits of the base + expert k loaded by PEFT."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from tutti.swarm.engine import Evaluator
    from tutti.swarm.particles import load_experts

    rep, experts = load_experts("lora_factors", [str(e) for e in swarm_setup["experts"]])
    ev = Evaluator(rep, UtilityConfig(name="mean_loglik", task=str(swarm_setup["task"])))
    ids = torch.tensor([[5, 67, 68, 69, 223, 31]])
    params_before = {id(p) for p in ev.model.module.parameters()}
    for k in (1, 2, 0):
        ev.swapper.load(experts[k])
        got = ev.model.module(input_ids=ids).logits
        ref = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(swarm_setup["base"]),
                                        str(swarm_setup["experts"][k])).eval()
        with torch.no_grad():
            want = ref(input_ids=ids).logits
        assert torch.allclose(got, want, atol=1e-5)
    assert {id(p) for p in ev.model.module.parameters()} == params_before  # same tensors, new values


def test_lora_delta_swap_equals_merged_weights(swarm_setup):
    from tutti.models.lora import apply_lora, load_lora
    from tutti.swarm.engine import Evaluator
    from tutti.swarm.particles import load_experts

    rep, experts = load_experts("lora_delta", [str(e) for e in swarm_setup["experts"]])
    ev = Evaluator(rep, UtilityConfig(name="mean_loglik", task=str(swarm_setup["task"])))
    sd0 = {k: v.clone() for k, v in ev.model.module.state_dict().items()}
    ev.swapper.load(0.5 * experts[0] + 0.5 * experts[1])
    a0, a1 = load_lora(swarm_setup["experts"][0]), load_lora(swarm_setup["experts"][1])
    want = apply_lora(apply_lora(sd0, a0, weight=0.5), a1, weight=0.5)["lm_head.weight"]
    assert torch.allclose(ev.model.module.lm_head.weight, want, atol=1e-6)


def test_swarm_beats_best_expert_on_held_out_test(swarm_setup, tmp_path):
    from tutti.swarm import search

    cfg = config(swarm_setup, top_k=2)
    res = search(cfg, tmp_path / "run")
    assert res.best_dev > res.initial_best_dev
    assert res.best_test is not None and res.initial_best_test is not None
    assert res.best_test > res.initial_best_test + 0.1  # held-out split, never seen by the search
    out = tmp_path / "run"
    for f in ("best/adapter_model.safetensors", "best/adapter_config.json", "best/README.md", "utility.png",
              "summary.json", "config.yaml", "swarm_state.safetensors", "top_k/2/adapter_model.safetensors"):
        assert (out / f).is_file(), f
    lines = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    assert [x["iteration"] for x in lines] == list(range(len(lines)))
    assert len(lines[0]["utilities"]) == 6 and set(lines[1]["seconds"]) >= {"update", "swap", "evaluation"}
    assert lines[-1]["best_so_far"] == pytest.approx(res.best_dev)
    assert "Model Swarms" in (out / "best/README.md").read_text()
    # the written adapter scores what the search recorded
    from tutti.swarm.engine import Evaluator
    from tutti.swarm.particles import load_experts

    rep, best = load_experts("lora_factors", [str(out / "best"), str(out / "top_k/2")])
    ev = Evaluator(rep, cfg.utility)
    assert ev.evaluate(best[0]).value == pytest.approx(res.best_dev, abs=1e-5)
    with pytest.raises(TuttiError, match="already holds a swarm run"):
        search(cfg, out)


def test_search_is_deterministic(swarm_setup, tmp_path):
    from tutti.swarm import search

    cfg = config(swarm_setup, max_iterations=3, representation="lora_delta")
    a = search(cfg, tmp_path / "a")
    b = search(cfg, tmp_path / "b")
    la = (tmp_path / "a/log.jsonl").read_text().splitlines()
    lb = (tmp_path / "b/log.jsonl").read_text().splitlines()
    assert [json.loads(x)["utilities"] for x in la] == [json.loads(x)["utilities"] for x in lb]
    assert a.best_dev == b.best_dev
    assert (tmp_path / "a/best/model.safetensors").is_file()


def test_failing_utility_marks_particle_worst(swarm_setup, tmp_path, monkeypatch):
    from pathlib import Path

    from tutti.swarm import search

    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    monkeypatch.setenv("TUTTI_TEST_FAIL_EVERY", "3")
    cfg = config(swarm_setup, max_iterations=2, utility=UtilityConfig(
        name="custom", task=str(swarm_setup["task"]), options={"function": "swarm_flaky:utility"}))
    res = search(cfg, tmp_path / "run")
    lines = [json.loads(x) for x in (tmp_path / "run/log.jsonl").read_text().splitlines()]
    fails = [f for x in lines for f in x["failures"].values()]
    assert fails and all("flaky" in f for f in fails)
    assert res.iterations == 2


def test_test_split_guard(swarm_setup):
    with pytest.raises(ValueError, match="allow_test_set_in_search"):
        config(swarm_setup, utility=UtilityConfig(name="mean_loglik", task=str(swarm_setup["task"]), split="test"))
    ok = config(swarm_setup, allow_test_set_in_search=True,
                utility=UtilityConfig(name="mean_loglik", task=str(swarm_setup["task"]), split="test"))
    assert ok.utility.split == "test"
