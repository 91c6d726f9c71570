"""The README's main job (`tutti demo`), run end to end in a smaller setting on the real SmolLM2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


@pytest.mark.real_model
@pytest.mark.slow
def test_demo_quick_end_to_end(tmp_path: Path, smollm2_dir: Path) -> None:
    from tutti.cli.main import main
    from tutti.models.lora import load_lora

    out = tmp_path / "demo"
    main(["demo", "--quick", "--out", str(out)])
    summary = json.loads((out / "demo.json").read_text())
    methods = [r["method"] for r in summary["rows"]]
    assert methods == ["best_single", "uniform_soup", "model swarms"]
    for r in summary["rows"]:
        assert 0.0 <= r["dev"] <= 1.0 and 0.0 <= r["test"] <= 1.0
    # the search started from the experts, so its dev utility is at least the best expert's
    by = {r["method"]: r for r in summary["rows"]}
    assert by["model swarms"]["dev"] >= by["best_single"]["dev"]
    assert (out / "swarm" / "utility.png").stat().st_size > 1000
    best = load_lora(out / "swarm" / "best")
    assert best.pairs()  # a real PEFT adapter with factors
    dev_rows = (out / "task" / "dev.jsonl").read_text().splitlines()
    assert len(dev_rows) == 8
