"""``tutti eval --compute-matched``: a composite's k calls per prompt are matched by k samples of one model."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from tutti.cli.eval_cmd import compute_matched_config


def test_compute_matched_config() -> None:
    assert compute_matched_config("m", 3, extract="number") == {
        "strategy": "vote", "members": ["m"], "options": {"samples": 3, "temperature": 0.7, "extract": "number"}}


def test_cli_eval_adds_the_compute_matched_baseline(tmp_path: Path, tiny_model_dirs: list[Path]) -> None:
    from tutti.cli.main import main

    task = tmp_path / "task"
    task.mkdir()
    rows = [{"id": f"q{i}", "input": f"What is {i} plus {i}?", "target": str(2 * i)} for i in range(3)]
    (task / "dev.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    fusion = tmp_path / "moa.yaml"  # 2 proposers + 1 aggregator call = 3 member calls per prompt
    fusion.write_text(yaml.safe_dump({"strategy": "fusion", "members": [str(tiny_model_dirs[0]), str(tiny_model_dirs[1])],
                                      "options": {"layers": 1, "aggregator": 0}}))
    out = tmp_path / "ev"
    main(["eval", str(fusion), str(tiny_model_dirs[0]), "--task", str(task), "--out", str(out), "--max-new-tokens",
          "3", "--no-chat", "--no-progress", "--compute-matched", str(tiny_model_dirs[0])])
    summaries = {p.parent.name: json.loads(p.read_text()) for p in out.glob("*/summary.json")}
    assert len(summaries) == 3  # the composite, the single model, and the matched self-consistency
    calls = summaries["moa"]["model_calls"] / summaries["moa"]["examples"]
    assert calls == 3
    (matched,) = [s for n, s in summaries.items() if n.startswith("self-consistency")]
    assert matched["model_calls"] == 3 * matched["examples"] == 9  # the same compute spent on one model
