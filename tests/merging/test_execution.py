"""The streaming executor: shards, sharded inputs, row blocks, LoRA references, dry run, the CLI end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from tutti.models.checkpoint import Checkpoint


def _ta(models: list[str]) -> dict:
    return {"merge_method": "task_arithmetic", "dtype": "float32", "base_model": "M0",
            "models": [{"model": m, "parameters": {"weight": 0.5}} for m in models]}


def _same(a: Path, b: Path) -> None:
    ca, cb = Checkpoint(a), Checkpoint(b)
    assert sorted(ca.keys()) == sorted(cb.keys())
    for k in ca:
        assert torch.equal(ca.get(k), cb.get(k)), k


def test_sharded_output_and_row_blocks_give_identical_bytes(with_models, tmp_path):
    import tutti
    from tutti.merging.execute import ExecOptions, run_plan
    from tutti.merging.plan import make_plan
    from tutti.merging.stream_writer import StreamingWriter

    cfg = with_models(_ta(["M1", "M2"]))
    one = tutti.merge(cfg, tmp_path / "one")
    many = tutti.merge(cfg, tmp_path / "many", out_shard_size="20K")
    index = json.loads((many / "model.safetensors.index.json").read_text())
    shards = set(index["weight_map"].values())
    assert len(shards) > 3 and all((many / s).is_file() for s in shards)
    _same(one, many)
    # row blocks of ~1 kB: the element-wise method runs on many slices of each tensor
    plan = make_plan(_load(cfg))
    w = StreamingWriter(tmp_path / "blocks", [(j.name, torch.float32, j.shape) for j in plan.jobs],
                        max_shard_bytes=1 << 40)
    run_plan(plan, w, ExecOptions(block_bytes=1024, max_memory=4096))
    w.write_text("config.json", json.dumps(plan.out_config))
    _same(one, w.finish())


def _load(cfg: dict):
    from tutti.config.merge import load_merge_config

    return load_merge_config(cfg)


def test_sharded_inputs_are_read(tiny_sharded_dir, tiny_model_dir, tmp_path):
    import tutti

    cfg = {"merge_method": "linear", "dtype": "float32",
           "models": [{"model": str(tiny_sharded_dir), "parameters": {"weight": 1.0}}]}
    _same(tutti.merge(cfg, tmp_path / "o"), tiny_model_dir)  # seed-0 model, sharded vs single file


def test_model_plus_lora_reference_applies_the_adapter(merge_models, tmp_path):
    from peft import LoraConfig, get_peft_model
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    import tutti
    from tutti.models.lora import apply_lora, load_lora

    model = AutoModelForCausalLM.from_pretrained(merge_models["M0"])
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    with torch.no_grad():
        for n, p in peft_model.named_parameters():
            if "lora_B" in n:
                p.copy_(torch.randn_like(p) * 0.05)
    peft_model.save_pretrained(tmp_path / "adapter")
    cfg = {"merge_method": "linear", "dtype": "float32",
           "models": [{"model": f"{merge_models['M0']}+{tmp_path / 'adapter'}", "parameters": {"weight": 1.0}}]}
    out = Checkpoint(tutti.merge(cfg, tmp_path / "o"))
    expected = apply_lora(load_file(str(merge_models["M0"] / "model.safetensors")), load_lora(tmp_path / "adapter"))
    changed = 0
    for k, v in expected.items():
        torch.testing.assert_close(out.get(k), v, rtol=1e-6, atol=1e-7)
        changed += int(not torch.equal(v, Checkpoint(merge_models["M0"]).get(k)))
    assert changed == 8  # q_proj and v_proj of 4 layers


def test_dry_run_reports_sizes_and_writes_nothing(with_models, merge_models, tmp_path, capsys):
    from tutti.cli.main import main

    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(with_models(_ta(["M1", "M2"]))))
    main(["merge", str(cfg), str(tmp_path / "out"), "--dry-run"])
    text = capsys.readouterr().out
    n = len(Checkpoint(merge_models["M0"]).keys())
    assert f"tensors       {n}" in text and "bytes read" in text and "peak memory" in text
    assert not (tmp_path / "out").exists()


def test_cli_end_to_end_matches_python_api(with_models, tmp_path):
    import tutti
    from tutti.cli.main import main

    config = with_models({**_ta(["M1", "M2", "M3"]), "merge_method": "ties",
                          "parameters": {"density": 0.5}, "out_dtype": "bfloat16"})
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(config))
    main(["merge", str(cfg), str(tmp_path / "cli"), "--out-shard-size", "50K", "--no-copy-tokenizer",
          "--no-progress", "--threads", "1"])
    api = tutti.merge(config, tmp_path / "api")
    _same(tmp_path / "cli", api)
    files = {p.name for p in (tmp_path / "cli").iterdir()}
    assert "tokenizer.json" not in files and {"config.json", "README.md", "mergekit_config.yml"} <= files
    assert json.loads((tmp_path / "cli" / "config.json").read_text())["dtype"] == "bfloat16"
    assert Checkpoint(api).get("model.norm.weight").dtype == torch.bfloat16
    # the written config is itself a valid merge config that reproduces the merge
    again = tutti.merge(tmp_path / "cli" / "mergekit_config.yml", tmp_path / "again")
    _same(again, api)


@pytest.mark.real_model
def test_real_smollm2_task_arithmetic_lambda_zero_is_the_base(smollm2_dir, tmp_path):
    """One real-model merge: SmolLM2-135M with itself (lambda 0 and identical inputs) returns it bit for bit."""
    import tutti

    cfg = {"merge_method": "task_arithmetic", "base_model": str(smollm2_dir), "parameters": {"lambda": 0.0},
           "models": [{"model": str(smollm2_dir), "parameters": {"weight": 1.0}}]}
    _same(tutti.merge(cfg, tmp_path / "o", max_memory="256M"), smollm2_dir)
