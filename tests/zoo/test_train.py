"""Expert training and switching on a tiny real LLaMA (fast): the answer-only loss equals the HF loss, the
saved adapter is fp16 PEFT, and dense switching reproduces peft's own forward pass."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tutti.zoo import load_task
from tutti.zoo.train import ExpertTrainConfig, _batch, answer_loss, encode_example, train_expert


@pytest.fixture(scope="module")
def tiny_expert(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("zoo") / "expert"
    cfg = ExpertTrainConfig(steps=4, batch_size=2, warmup=1, lr=1e-2)
    summary = train_expert(tiny_model_dir, load_task("sentiment", "train")[:16], out, cfg=cfg, base_name="tiny")
    return out, summary


def test_answer_loss_equals_hf_loss(tiny_model_dir: Path) -> None:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir),
                           LoraConfig(r=4, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    rows = load_task("arithmetic", "train")[:3]
    enc = [encode_example(tok, r, 128) for r in rows]
    for row, (ids, labels) in zip(rows, enc, strict=True):  # only the answer and end-of-turn are labelled
        answer = tok(row["target"] + tok.eos_token, add_special_tokens=False)["input_ids"]
        n = sum(x != -100 for x in labels)
        assert labels[-n:] == answer == ids[-n:] and labels[: -n] == [-100] * (len(ids) - n)
    batch = _batch(enc, tok.pad_token_id)
    with torch.no_grad():
        ours = answer_loss(model, batch)
        ref = model(**batch).loss
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-6)


def test_saved_adapter_is_fp16_peft(tiny_expert: tuple[Path, dict]) -> None:
    from safetensors import safe_open

    out, summary = tiny_expert
    cfg = json.loads((out / "adapter_config.json").read_text())
    assert cfg["r"] == 8 and cfg["lora_alpha"] == 16 and cfg["peft_type"] == "LORA"
    assert set(cfg["target_modules"]) == {"q_proj", "k_proj", "v_proj", "o_proj"}
    assert cfg["base_model_name_or_path"] == "tiny"
    with safe_open(out / "adapter_model.safetensors", "pt") as f:
        keys = list(f.keys())
        assert keys and all(f.get_tensor(k).dtype == torch.float16 for k in keys)
    assert len(keys) == 2 * 4 * 2  # (A, B) x 4 projections x 2 layers
    assert summary["steps"] == 4 and summary["final_loss"] > 0


def test_switcher_matches_peft_and_restores_base(tiny_model_dir: Path, tiny_expert: tuple[Path, dict]) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from tutti.models.hf import HFModel
    from tutti.zoo.evaluate import ExpertSwitcher

    out, _ = tiny_expert
    ids = torch.tensor([[1, 5, 9, 33, 70, 2]])
    model = HFModel.load(tiny_model_dir)
    before = model.module(input_ids=ids).logits
    sw = ExpertSwitcher(model)
    sw.use(out)
    ours = model.module(input_ids=ids).logits
    peft = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), out).eval()
    with torch.no_grad():
        ref = peft(input_ids=ids).logits
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(ours, before)
    sw.use(None)
    torch.testing.assert_close(model.module(input_ids=ids).logits, before, rtol=0, atol=0)


def test_training_without_rows_is_a_clear_error(tiny_model_dir: Path, tmp_path: Path) -> None:
    from tutti.errors import TuttiError

    with pytest.raises(TuttiError, match="no training rows"):
        train_expert(tiny_model_dir, [], tmp_path / "x")


def test_build_script_data_stage(tmp_path: Path) -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("build_zoo", Path(__file__).parents[2] / "scripts" / "build_zoo.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.main(["data", "--task", "logic", "--root", str(tmp_path)]) == 0
    from tutti.zoo.tasks import task_path

    for split in ("train", "dev", "test"):
        assert (tmp_path / "logic" / f"{split}.jsonl").read_bytes() == task_path("logic", split).read_bytes()
    assert mod.main(["data", "--task", "logik", "--root", str(tmp_path)]) == 2


def test_matrix_doc_rendering(tmp_path: Path) -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("build_zoo", Path(__file__).parents[2] / "scripts" / "build_zoo.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    data = {"n_per_task": 4, "metric": "greedy exact match", "command": "python scripts/build_zoo.py matrix",
            "seconds": 1, "accuracy": {"base": {"logic": 0.25, "weekday": 0.0},
                                        "logic": {"logic": 1.0, "weekday": 0.25},
                                        "weekday": {"logic": 0.5, "weekday": 0.75}}}
    (tmp_path / "m.json").write_text(json.dumps(data))
    doc = tmp_path / "zoo.md"
    doc.write_text("# Zoo\n\n<!-- tutti:zoo-matrix:start -->\nold\n<!-- tutti:zoo-matrix:end -->\n\ntail\n")
    mod.write_matrix_doc(tmp_path / "m.json", doc)
    text = doc.read_text()
    assert "old" not in text and text.endswith("tail\n")
    assert "| **base** | 25 | 0 |" in text and "| **logic** | 100 | 25 |" in text
    assert "| best expert | logic | weekday |" in text and "`python scripts/build_zoo.py matrix`" in text
