"""The committed experts on the real SmolLM2-135M-Instruct: each loads with peft, its config matches what the
build script writes, dense switching equals peft's forward pass, and an expert beats the base on its task."""

from __future__ import annotations

import json

import pytest
import torch

from tutti.zoo import expert_path, load_task, trained_tasks

pytestmark = pytest.mark.real_model


def test_every_trained_task_has_a_small_fp16_expert() -> None:
    from safetensors import safe_open

    for name in trained_tasks():
        path = expert_path(name)
        cfg = json.loads((path / "adapter_config.json").read_text())
        assert cfg["peft_type"] == "LORA" and cfg["r"] == 8 and cfg["lora_alpha"] == 16
        assert set(cfg["target_modules"]) == {"q_proj", "k_proj", "v_proj", "o_proj"}
        assert cfg["base_model_name_or_path"] == "smollm2-135m-instruct"
        weights = path / "adapter_model.safetensors"
        assert weights.stat().st_size < 4_000_000
        with safe_open(weights, "pt") as f:
            keys = list(f.keys())
            assert len(keys) == 30 * 4 * 2  # 30 layers x 4 projections x (A, B)
            assert all(f.get_tensor(k).dtype == torch.float16 for k in keys)
        training = json.loads((path / "training.json").read_text())
        assert training["config"]["r"] == 8 and training["steps"] == training["config"]["steps"]


def test_experts_load_with_peft_and_match_dense_switching(smollm2) -> None:
    from peft import PeftModel

    from tutti.zoo.evaluate import ExpertSwitcher

    ids = torch.tensor([smollm2.encode([{"role": "user", "content": load_task("logic", "dev")[0]["input"]}])])
    switcher = ExpertSwitcher(smollm2)
    with torch.no_grad():
        base = smollm2.module(input_ids=ids).logits[0, -1]
    try:
        for name in trained_tasks():
            peft = PeftModel.from_pretrained(smollm2.module, expert_path(name))  # wraps the module in place
            try:
                lora_a = [n for n, _ in peft.named_modules() if n.endswith("lora_A.default")]
                assert len(lora_a) == 30 * 4
                with torch.no_grad():
                    ref = peft(input_ids=ids).logits[0, -1]
            finally:
                peft.unload()  # gives the shared fixture its plain modules back
            switcher.use(expert_path(name))
            with torch.no_grad():
                ours = smollm2.module(input_ids=ids).logits[0, -1]
            switcher.use(None)
            torch.testing.assert_close(ours, ref, rtol=1e-3, atol=1e-3)
            assert (ours - base).abs().max() > 1e-2, f"{name}: the adapter changes nothing"
    finally:
        switcher.use(None)
    with torch.no_grad():
        torch.testing.assert_close(smollm2.module(input_ids=ids).logits[0, -1], base, rtol=0, atol=0)


def test_an_expert_beats_the_base_model_on_its_own_task(smollm2) -> None:
    from tutti.zoo.evaluate import ExpertSwitcher, greedy_accuracy

    rows = load_task("antonyms", "test")[:12]
    switcher = ExpertSwitcher(smollm2)
    try:
        base = greedy_accuracy(smollm2, rows)
        switcher.use(expert_path("antonyms"))
        expert = greedy_accuracy(smollm2, rows)
    finally:
        switcher.use(None)
    assert expert >= base + 0.25, (base, expert)
