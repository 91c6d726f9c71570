"""The results-table runner (`tutti bench swarm`): cells on disk, resume, honest counts, exact aggregation."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from tutti.recipes.swarm_table import TableSettings, cell_path, run_table

TINY = TableSettings(dev=4, test=4, particles=2, iterations=1, patience=1, max_new_tokens=2,
                     experts=("e_low", "e_high"))
METHODS = ["best_single", "uniform_soup", "task_arithmetic", "prediction_merge", "model_swarms"]


def _run(setup: dict, root: Path, methods: list[str], seeds: list[int], log: list[str] | None = None) -> dict:
    paths = {"e_low": setup["root"] / "e_low", "e_high": setup["root"] / "e_high"}
    return run_table(["task"], methods, seeds, TINY, root, base=str(setup["base"]), expert_paths=paths,
                     data_root=setup["root"], log=(log.append if log is not None else None))


def test_runner_writes_cells_resumes_and_counts_every_evaluation(swarm_setup, tmp_path):
    log: list[str] = []
    counts = _run(swarm_setup, tmp_path, METHODS, [1], log)
    assert counts == {"done": 6, "skipped": 0, "failed": 0}  # the experts cell + 5 methods
    assert any("cell 6/6" in m and "ETA" in m for m in log)
    cells = {m: json.loads(cell_path(tmp_path, TINY, "task", m, 1).read_text()) for m in METHODS}
    ex = json.loads(cell_path(tmp_path, TINY, "task", "experts", 0).read_text())
    assert len(ex["dev"]) == 2 and len(ex["test_scores"]) == 2 and len(ex["test_scores"][0]) == 4
    for m, c in cells.items():
        assert c["status"] == "done" and len(c["test_scores"]) == 4, m
        assert c["test"] == pytest.approx(sum(c["test_scores"]) / 4), m
    # the final dev scoring counts: soup 0 + 1, best single 2 experts + 1, task arithmetic 4 lambdas + 1
    assert cells["uniform_soup"]["evaluations"] == 1
    assert cells["best_single"]["evaluations"] == 3
    assert cells["task_arithmetic"]["evaluations"] == 5
    assert cells["prediction_merge"]["evaluations"] == 2  # one pass per expert gives the votes and the dev
    sw = cells["model_swarms"]
    assert sw["evaluations"] == 2 * len(sw["best_so_far"]) and sw["n_experts"] == 2
    assert cells["best_single"]["dev"] == max(ex["dev"])  # same experts, same dev examples
    # the search scores dev by teacher-forced greedy match; the vote needs answers, so it generates
    assert {m: c["dev_utility"] for m, c in cells.items()} == {**dict.fromkeys(METHODS, "forced_match"),
                                                                "prediction_merge": "exact_match"}
    assert cells["prediction_merge"]["settings"]["dev_utility"] == "forced"
    assert cells["best_single"]["test"] == ex["test"][ex["dev"].index(max(ex["dev"]))]

    # resume: nothing recomputed, files untouched; a deleted cell is the only one computed again
    stamp = {m: cell_path(tmp_path, TINY, "task", m, 1).stat().st_mtime_ns for m in METHODS}
    assert _run(swarm_setup, tmp_path, METHODS, [1]) == {"done": 0, "skipped": 6, "failed": 0}
    assert stamp == {m: cell_path(tmp_path, TINY, "task", m, 1).stat().st_mtime_ns for m in METHODS}
    cell_path(tmp_path, TINY, "task", "uniform_soup", 1).unlink()
    assert _run(swarm_setup, tmp_path, METHODS, [1]) == {"done": 1, "skipped": 5, "failed": 0}
    # a seed-free baseline is copied to a new seed, not recomputed
    assert _run(swarm_setup, tmp_path, ["uniform_soup"], [1, 2]) == {"done": 1, "skipped": 2, "failed": 0}
    c2 = json.loads(cell_path(tmp_path, TINY, "task", "uniform_soup", 2).read_text())
    assert c2["copied_from"] == 1 and c2["seed"] == 2 and c2["test"] == cells["uniform_soup"]["test"]


def test_a_broken_input_is_a_failure_to_retry_not_n_a(swarm_setup, tmp_path):
    from dataclasses import replace

    from tutti.errors import ConfigError

    paths = {"e_low": swarm_setup["root"] / "e_low", "e_high": tmp_path / "missing"}  # a lost expert folder
    counts = run_table(["task"], ["uniform_soup"], [1], TINY, tmp_path, base=str(swarm_setup["base"]),
                       expert_paths=paths, data_root=swarm_setup["root"])
    assert counts == {"done": 0, "skipped": 0, "failed": 2}  # the experts cell and the soup, both retried later
    assert not cell_path(tmp_path, TINY, "task", "uniform_soup", 1).exists()
    if not torch.cuda.is_available():  # asking for CUDA where there is none: one clear error before any work
        with pytest.raises(ConfigError, match="--device cuda: CUDA is not available here"):
            run_table(["task"], ["uniform_soup"], [1], replace(TINY, device="cuda"), tmp_path,
                      base=str(swarm_setup["base"]), expert_paths=paths, data_root=swarm_setup["root"])


def test_dev_utility_names_the_settings_folder_and_the_dev_utility(tmp_path):
    from tutti.errors import ConfigError
    from tutti.recipes.swarm_table import utilities

    gen, forced = TableSettings(dev_utility="generate"), TableSettings()
    assert gen.tag == "dev200-test1000-p20-i200-pat10"  # the older (generation-scored) cells keep their folder
    assert forced.tag == gen.tag + "-forced"
    with pytest.raises(ConfigError, match="use one of forced, generate"):
        TableSettings(dev_utility="sample")
    for s, name in ((forced, "forced_match"), (gen, "exact_match")):
        dev, tests = utilities("multi:reasoning", s, tmp_path / s.tag, "base")
        assert [p.name for p in dev.parts] == [name] * 3 and {t.name for t in tests} == {"exact_match"}
        assert all(t.split == "test" for t in tests) and all(p.split == "dev" for p in dev.parts)
        dev, _ = utilities("judge:country_facts", s, tmp_path / s.tag, "base")
        assert dev.name == "llm_judge"


def test_device_batch_and_tf32_name_the_folder_and_reach_the_swarm_config(tmp_path):
    from pydantic import ValidationError

    from tutti.config.swarm import SwarmConfig
    from tutti.errors import ConfigError
    from tutti.recipes.swarm_table import swarm_config, utilities

    s = TableSettings(device="cuda:1", batch_size=64, tf32=True)
    assert s.tag == TableSettings().tag + "-cuda1-b64-tf32"
    assert TableSettings(device="cpu", batch_size=16).tag == TableSettings().tag  # defaults keep the old names
    with pytest.raises(ConfigError, match="--device cuda with --tf32"):
        TableSettings(tf32=True)
    dev, tests = utilities("logic", s, tmp_path / s.tag, "base")
    assert dev.options["batch_size"] == 64 and tests[0].options["batch_size"] == 64
    cfg = swarm_config(dev, s, "base", 1, ["e1", "e2"])
    assert (cfg.device, cfg.batch_size) == ("cuda:1", 64)
    with pytest.raises(ValidationError, match="device"):
        SwarmConfig(experts=("e1", "e2"), utility=dev, device="gpu")


def _cell(root: Path, target: str, method: str, seed: int, **kw: object) -> None:
    p = cell_path(root, TINY, target, method, seed)
    p.parent.mkdir(parents=True, exist_ok=True)
    base = {"target": target, "method": method, "seed": seed, "status": "done", "seconds": 10.0 * seed,
            "evaluations": seed, "dev": 0.1 * seed, "test_scores": []}
    p.write_text(json.dumps({**base, **kw}))


def test_aggregation_is_exact_on_hand_made_cells(tmp_path):
    from tutti.recipes.swarm_table_report import (
        aggregate,
        initial_rank,
        load_cells,
        mean_std,
        report,
        rescued_share,
    )

    for k, v in zip((1, 2, 3), (0.2, 0.4, 0.6), strict=True):
        _cell(tmp_path, "logic", "uniform_soup", k, test=v)
    _cell(tmp_path, "logic", "model_swarms", 1, test=0.5, test_scores=[1, 0, 1, 0], best_particle=3, n_experts=2,
          initial_utilities=[0.5, 0.25, 0.25, 0.75], best_so_far=[0.75, 0.8], iterations=2, stop_reason="patience")
    _cell(tmp_path, "logic", "experts", 0, test=[0.25, 0.5], test_scores=[[1, 0, 0, 0], [0, 0, 0, 1]])
    cells, n_all, n_missing = load_cells(tmp_path, TINY, ["logic"], ["uniform_soup", "model_swarms"], [1, 2, 3])
    assert (n_all, n_missing) == (7, 2)  # experts + 2 methods x 3 seeds; swarm seeds 2 and 3 missing
    agg = aggregate(cells)
    a = agg[("logic", "uniform_soup")]
    assert a.n == 3 and a.test_mean == pytest.approx(0.4) and a.test_std == pytest.approx(math.sqrt(0.08 / 3))
    assert a.dev_mean == pytest.approx(0.2) and a.seconds == pytest.approx(20.0) and a.evaluations == 2
    assert mean_std([1.0]) == (1.0, 0.0)
    from tutti.errors import TuttiError

    with pytest.raises(TuttiError, match="--particles 1 is smaller than the 2 experts"):  # before any work
        run_table(["logic"], ["model_swarms"], [1], TableSettings(particles=1, experts=("logic", "sentiment")),
                  tmp_path / "none")
    from tutti.recipes.swarm_table import plan

    assert plan(["a", "b"], ["uniform_soup", "model_swarms", "best_single"], [1, 2]) == [
        ("a", "experts", 0), ("a", "best_single", 1), ("a", "model_swarms", 1), ("a", "uniform_soup", 1),
        ("b", "experts", 0), ("b", "best_single", 1), ("b", "model_swarms", 1), ("b", "uniform_soup", 1),
        ("a", "best_single", 2), ("a", "model_swarms", 2), ("a", "uniform_soup", 2),
        ("b", "best_single", 2), ("b", "model_swarms", 2), ("b", "uniform_soup", 2)]
    assert initial_rank(cells[("logic", "model_swarms", 1)]) == (1, 4, False)  # a crossover that started best
    assert initial_rank({"initial_utilities": [0.5, 0.9, 0.5], "best_particle": 2, "n_experts": 3}) == (3, 3, True)
    # question 3: the swarm is right and neither expert is; question 1: expert 1 is right too
    assert rescued_share([1, 0, 1, 0], [[1, 0, 0, 0], [0, 0, 0, 1]]) == 0.25
    from tutti.recipes.swarm_table_report import any_right

    assert any_right([[1, 0, 0, 0], [0, 0, 0, 1]]) == 0.5
    md = report(tmp_path, TINY, ["logic"], ["uniform_soup", "model_swarms"], [1, 2, 3], command="tutti bench swarm",
                machine="test machine")
    assert "PARTIAL: 2 of 7 cells missing" in md
    assert "| uniform_soup | 40.0 ± 16.3 (3) |" in md and "| **model_swarms** | 50.0 ± 0.0 |" in md
    assert "| logic | 1 | 1 of 4 | crossover | 2 | patience | 25.0% |" in md
    assert "Model Swarms 50.0 is above the best baseline (uniform_soup, 40.0)" in md
    # 70 s over 7 evaluations; paper size = x50 examples x 20 particles x 11 rounds
    assert "took 10.0 s on average" in md and "at least 30.6 h" in md
    assert "| logic | e_high | 50.0 | 50.0 |" in md  # best expert on test, and the any-expert ceiling
    assert "steps of 25.0 points" in md and "2 particles (paper 20)" in md


def _main(args: list[str], capsys) -> tuple[int, str]:
    from tutti.cli.main import main

    with pytest.raises(SystemExit) as e:
        main(args)
        raise SystemExit(0)
    out = capsys.readouterr()
    return int(e.value.code or 0), out.out + out.err


def test_cli_report_only_writes_its_section_and_keeps_the_others(tmp_path, capsys):
    for k in (1, 2, 3):
        _cell(tmp_path / "cells", "logic", "uniform_soup", k, test=0.5)
    out = tmp_path / "results.md"
    out.write_text("# Results\n\n<!-- tutti:routing:start -->\nrouting figures\n<!-- tutti:routing:end -->\n")
    flags = ["--targets", "logic", "--methods", "uniform_soup,model_swarms", "--seeds", "1,2,3", "--dev", "4",
             "--test", "4", "--particles", "2", "--iterations", "1", "--patience", "1",
             "--root", str(tmp_path / "cells"), "--out", str(out), "--img", str(tmp_path / "img")]
    code, msg = _main(["bench", "swarm", "--report-only", *flags], capsys)
    assert code == 0, msg
    text = out.read_text()
    assert "routing figures" in text and "<!-- tutti:swarm:start -->" in text
    # TableSettings' max_new_tokens is not in the tag, so these are exactly the hand-made cells
    assert "PARTIAL: 4 of 7 cells missing" in text and "| uniform_soup | 50.0 ± 0.0 (3) |" in text
    fresh = tmp_path / "new" / "results.md"
    code, msg = _main(["bench", "swarm", "--report-only", *flags[:-4], "--out", str(fresh), "--img", str(tmp_path / "img")], capsys)
    assert code == 0 and fresh.read_text().startswith("# Results\n")
    code, msg = _main(["bench", "swarm", "--report-only", "--methods", "unifrom_soup"], capsys)
    assert code == 2 and "uniform_soup" in msg
    code, msg = _main(["bench", "swarm", "--report-only", "--dev-utility", "sample"], capsys)
    assert code == 2 and "use one of forced, generate" in msg
    code, msg = _main(["bench", "swarm", "--report-only", "--dev-utility", "generate", *flags], capsys)
    assert code == 0 and "PARTIAL: 7 of 7 cells missing" in out.read_text()  # another settings folder
    assert "greedy generation (at most 8 new tokens" in out.read_text()


def test_caveats_name_the_device_and_the_targets_that_say_nothing():
    from tutti.recipes.swarm_table_report import Agg, caveats

    agg = {("flat", "a"): Agg(0.0, 0.0, 0.0, 1.0, 1, 3), ("flat", "b"): Agg(0.0, 0.0, 0.1, 1.0, 1, 3),
           ("live", "a"): Agg(0.0, 0.0, 0.0, 1.0, 1, 3), ("live", "b"): Agg(0.2, 0.0, 0.1, 1.0, 1, 3)}
    text = "\n".join(caveats(TableSettings(device="cuda", batch_size=64, tf32=True), agg))
    assert "`flat`: every method scores 0" in text and "`live`" not in text
    assert "ran on `cuda` with batches of 64 and TF32" in text
    assert "ran on" not in "\n".join(caveats(TableSettings(), agg))
