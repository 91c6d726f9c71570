"""PEFT LoRA adapters: our reader/writer against peft itself, and the dense delta against a hand computation."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tutti.errors import CheckpointError
from tutti.models.checkpoint import Checkpoint
from tutti.models.lora import apply_lora, load_lora, save_lora


@pytest.fixture(scope="module")
def peft_adapter_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real PEFT adapter (r=4, alpha=8, q/v) with non-zero B, saved by peft."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    out = tmp_path_factory.mktemp("lora") / "adapter"
    model.save_pretrained(out)
    return out


def test_reads_peft_folder(peft_adapter_dir: Path) -> None:
    ad = load_lora(peft_adapter_dir)
    pairs = ad.pairs()
    assert len(pairs) == 2 * 2  # 2 layers x (q, v)
    name = "model.layers.0.self_attn.q_proj"
    assert pairs[name].A.shape == (4, 64) and pairs[name].B.shape[1] == 4
    assert pairs[name].scale == 2.0


def test_apply_equals_hand_delta_and_peft_merge(peft_adapter_dir: Path, tiny_model_dir: Path) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    ad = load_lora(peft_adapter_dir)
    base = Checkpoint(tiny_model_dir).state_dict()
    merged = apply_lora(base, ad)
    w = "model.layers.1.self_attn.v_proj.weight"
    A = ad.tensors["base_model.model.model.layers.1.self_attn.v_proj.lora_A.weight"]
    B = ad.tensors["base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight"]
    torch.testing.assert_close(merged[w], base[w] + B @ A * (8 / 4), rtol=0, atol=1e-6)
    untouched = "model.layers.0.mlp.up_proj.weight"
    assert merged[untouched] is base[untouched]
    peft_merged = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir),
                                            peft_adapter_dir).merge_and_unload().state_dict()
    for name, t in merged.items():
        torch.testing.assert_close(t, peft_merged[name], rtol=1e-5, atol=1e-6)


def test_save_round_trip_loads_in_peft(peft_adapter_dir: Path, tiny_model_dir: Path, tmp_path: Path) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    ad = load_lora(peft_adapter_dir)
    doubled = ad.with_tensors({k: (v * 2 if "lora_B" in k else v) for k, v in ad.tensors.items()})
    out = save_lora(doubled, tmp_path / "doubled")
    back = load_lora(out)
    assert all(torch.equal(back.tensors[k], doubled.tensors[k]) for k in doubled.tensors)
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), out)
    ids = torch.tensor([[5, 6, 7, 8]])
    dense = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    res = dense.load_state_dict(apply_lora(Checkpoint(tiny_model_dir).state_dict(), doubled), strict=False)
    assert res.unexpected_keys == [] and res.missing_keys == ["lm_head.weight"]  # tied to the embedding
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, dense(ids).logits, rtol=1e-4, atol=1e-5)


def test_rslora_scale(peft_adapter_dir: Path) -> None:
    ad = load_lora(peft_adapter_dir)
    rs = type(ad)({**ad.config, "use_rslora": True}, ad.tensors)
    assert rs.scale_for("model.layers.0.self_attn.q_proj") == pytest.approx(8 / 2.0)


def test_not_an_adapter(tiny_model_dir: Path) -> None:
    with pytest.raises(CheckpointError, match=r"adapter_config\.json"):
        load_lora(tiny_model_dir)
