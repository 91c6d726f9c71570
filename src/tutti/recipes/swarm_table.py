"""The Model Swarms results table (issue 5): every baseline and Model Swarms on the zoo's targets, cell by cell.

Reads top to bottom:

1. set-up: targets (single zoo tasks, ``multi:<group>`` = the mean over a group of three tasks, ``judge:<task>``
   = the base model rating answers 1-10, a *proxy* for a preference utility), the same experts and the same
   first ``dev`` examples for every method; the first ``test`` examples are scored once per cell, afterwards,
   by greedy generation + exact match. The dev (search) utility of exact-match targets is
   ``TableSettings.dev_utility``: ``forced`` (default; ``forced_match``, teacher-forced greedy match, one forward
   pass per batch and no decoding loop, an exact lower bound of exact match that agreed with it on 2400 of 2400
   measured dev examples, ``docs/swarm.md``; see :mod:`tutti.evaluation.forced`) or ``generate`` (greedy
   generation + exact match, about 2x dearer on CPU). The prediction-merge vote needs answers and judge targets
   need text, so they always generate;
2. run: one cell per (target, method, seed), written atomically as JSON under
   ``<root>/<settings>/<target>/<method>/seed<k>.json``; finished cells are skipped, so the run resumes and
   grows (``--seeds 1`` today, ``--seeds 1,2,3`` tomorrow). Order: target by target for the first seed (a
   whole row of the table at a time), then the other seeds. An ``experts`` cell per target keeps every
   expert's per-question test scores for the analyses. Seed-independent baselines are computed once and their
   cell copied to the other seeds (marked ``copied_from``);
3. report: whatever cells exist, aggregated (mean ± population std over seeds), with the paper's analyses
   (Feng et al., arXiv 2410.11163): the initial rank of the particle that ends as global best, and the share
   of test questions no expert answers correctly but the swarm does.

``evaluations`` counts every dev utility evaluation a method makes, its final dev scoring included; the test
scoring is for the report and is not counted.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from tutti.paths import write_text_atomic

SWARM = "model_swarms"
EXPERTS = "experts"
#: baselines whose result does not depend on the seed (computed once, copied to the other seeds)
SEED_FREE = {"best_single", "uniform_soup", "task_arithmetic", "ties", "slerp", "model_stock", "greedy_soup",
             "prediction_merge"}
#: run order: the most informative and cheapest first
METHOD_ORDER = ("best_single", SWARM, "uniform_soup", "model_stock", "slerp", "task_arithmetic", "ties",
                "dare_ties", "greedy_soup", "prediction_merge", "lorahub", "evolutionary")
#: dev (search) utility of exact-match targets -> registered utility name
DEV_UTILITIES = {"forced": "forced_match", "generate": "exact_match"}
#: methods that vote over answers, so their dev utility always generates
NEEDS_ANSWERS = {"prediction_merge"}
DEFAULT_TARGETS = ("compare_conversions", "logic", "unit_word_problems", "weekday_word_problems",
                   "multi:reasoning", "judge:country_facts")


@dataclass(frozen=True)
class TableSettings:
    """What every cell shares (the settings name the folder, so cells of other settings are never mixed).

    Args:
        dev: dev examples every method sees (a ``multi:`` target splits them evenly over its three tasks).
        test: test examples scored once per cell, after the search (split the same way).
        particles: swarm size (the paper's 20).
        iterations: most swarm iterations (paper 200; patience stops it earlier).
        patience: swarm iterations without a new global best before stopping.
        max_new_tokens: answer length of the greedy generations.
        experts: zoo experts (default: all trained ones).
        dev_utility: how dev answers are scored on exact-match targets: ``"forced"`` (teacher-forced greedy
            match, :mod:`tutti.evaluation.forced`: one forward pass, an exact lower bound of exact match) or
            ``"generate"`` (greedy generation + exact match). The test split is always generated. Judge targets
            and the prediction-merge vote (it needs answers) always generate.
        device: where the resident models run (``cpu``, ``cuda``, ``cuda:N``).
        batch_size: sequences per forward pass (generation and scoring).
        tf32: let CUDA matrix products use TF32 (10-bit mantissa inputs, fp32 accumulation): several times
            faster on a GPU, a numerical change from fp32, so it names its own settings folder. :func:`run_table`
            sets ``torch.backends.cuda.matmul.allow_tf32`` for the rest of the process.
    """

    dev: int = 200
    test: int = 1000
    particles: int = 20
    iterations: int = 200
    patience: int = 10
    max_new_tokens: int = 8
    experts: tuple[str, ...] = ()
    dev_utility: str = "forced"
    device: str = "cpu"
    batch_size: int = 16
    tf32: bool = False

    def __post_init__(self) -> None:
        from tutti.errors import ConfigError

        if self.dev_utility not in DEV_UTILITIES:
            raise ConfigError(f"dev utility {self.dev_utility!r}: use one of {', '.join(DEV_UTILITIES)}")
        if self.tf32 and not self.device.startswith("cuda"):
            raise ConfigError("tf32 applies to CUDA matrix products; pass --device cuda with --tf32")

    @property
    def tag(self) -> str:
        """The settings folder name: defaults add nothing (CPU, batch 16 and generation-scored dev keep the older
        names), anything else that can change a number is a suffix."""
        suffix = "" if self.dev_utility == "generate" else f"-{self.dev_utility}"
        suffix += "" if self.device == "cpu" else f"-{self.device.replace(':', '')}"
        suffix += "" if self.batch_size == 16 else f"-b{self.batch_size}"
        suffix += "-tf32" if self.tf32 else ""
        return f"dev{self.dev}-test{self.test}-p{self.particles}-i{self.iterations}-pat{self.patience}{suffix}"


# ---------------------------------------------------------------------------------------------- set-up
def target_tasks(target: str, data_root: Path | None = None) -> tuple[str, list[str]]:
    """``(kind, tasks)`` of a target name: ``task``, ``multi:<group>`` or ``judge:<task>``.

    Tasks are zoo tasks, or folders under ``data_root`` (with ``dev.jsonl`` and ``test.jsonl``) when given.
    """
    from tutti.errors import TuttiError
    from tutti.zoo import TASKS, task_groups

    kind, _, rest = target.rpartition(":")
    if kind == "multi":
        groups = task_groups()
        if rest not in groups:
            raise TuttiError(f"unknown task group {rest!r}; groups: {', '.join(groups)}")
        return "multi", groups[rest]
    if kind not in ("", "judge"):
        raise TuttiError(f"target {target!r}: use a task, multi:<group> or judge:<task>")
    if data_root is None:
        TASKS.get(rest)  # did-you-mean error for unknown tasks
    elif not (data_root / rest / "dev.jsonl").is_file():
        raise TuttiError(f"target {target!r}: no {data_root / rest / 'dev.jsonl'}")
    return kind or "single", [rest]


def _split_n(n: int, k: int) -> int:
    return max(1, n // k)


def utilities(target: str, s: TableSettings, data: Path, base: str, data_root: Path | None = None
              ) -> tuple[Any, list[Any]]:
    """The dev utility of ``target`` (searched) and its test utilities (one per task, reported).

    ``data`` receives dev-only copies of the first dev rows; ``data_root`` holds the tasks (default: the zoo's).
    Exact-match targets are searched with ``s.dev_utility`` and tested by generation + exact match.
    """
    from tutti.config.swarm import UtilityConfig
    from tutti.zoo.tasks import DATA_ROOT

    src = data_root or DATA_ROOT
    kind, tasks = target_tasks(target, data_root)
    opts: dict[str, Any] = {"max_new_tokens": s.max_new_tokens, "chat": True, "batch_size": s.batch_size}
    name, dev_name = "exact_match", DEV_UTILITIES[s.dev_utility]
    if kind == "judge":
        name, opts = "llm_judge", {**opts, "judge": base, "judge_max_new_tokens": 8}
        dev_name = name
    n_dev, n_test = _split_n(s.dev, len(tasks)), _split_n(s.test, len(tasks))
    parts, tests = [], []
    for t in tasks:
        # a dev-only folder: the search and the baselines cannot reach the test split at all
        folder = data / t
        folder.mkdir(parents=True, exist_ok=True)
        rows = (src / t / "dev.jsonl").read_text(encoding="utf-8").splitlines()[:n_dev]
        write_text_atomic(folder / "dev.jsonl", "".join(r + "\n" for r in rows))
        parts.append(UtilityConfig(name=dev_name, task=str(folder), split="dev", options=opts))
        tests.append(UtilityConfig(name=name, task=str(src / t), split="test", limit=n_test, options=opts))
    dev = parts[0] if kind != "multi" else UtilityConfig(name="multitask", parts=tuple(parts))
    return dev, tests


def swarm_config(dev: Any, s: TableSettings, base: str, seed: int, experts: list[str]) -> Any:
    """The :class:`~tutti.config.swarm.SwarmConfig` every method of a (target, seed) shares."""
    from tutti.config.swarm import swarm_config_from_dict

    return swarm_config_from_dict({
        "base": base, "experts": experts, "representation": "lora_factors",
        "utility": dev.model_dump(mode="json"), "n_particles": s.particles, "max_iterations": s.iterations,
        "patience": s.patience, "seed": seed, "device": s.device, "batch_size": s.batch_size,
    }, source="bench swarm")


def cell_path(root: Path, s: TableSettings, target: str, method: str, seed: int) -> Path:
    """Where one cell's JSON lives."""
    return root / s.tag / target.replace(":", "-") / method / (f"seed{seed}.json" if method != EXPERTS else "cell.json")


# ---------------------------------------------------------------------------------------------- cells
def _test(ctx: Any, res: Any, tests: list[Any]) -> tuple[float, list[float]]:
    from tutti.swarm.baselines import score_split

    rs = [score_split(ctx, res, t) for t in tests]
    return sum(r.value for r in rs) / len(rs), [x for r in rs for x in r.scores]


def run_experts_cell(cfg: Any, tests: list[Any], say: Callable[[str], None]) -> dict[str, Any]:
    """Every expert's dev value and per-question test scores on the target."""
    from tutti.swarm.baselines import BaselineContext

    ctx = BaselineContext(cfg, cfg.representation, say)
    dev, test, scores = [], [], []
    for name, e in zip(cfg.experts, ctx.experts, strict=True):
        dev.append(ctx.score(e))
        v, sc = _test(ctx, e, tests)
        test.append(v)
        scores.append(sc)
        say(f"  expert {Path(name).name}: dev {dev[-1]:.3f}, test {v:.3f}")
    return {"dev": dev, "test": test, "test_scores": scores, "evaluations": ctx.evaluations}


def run_baseline_cell(name: str, cfg: Any, tests: list[Any], say: Callable[[str], None]) -> dict[str, Any]:
    """One baseline: its dev choice (timed, counted) then its test scores."""
    from tutti.swarm.baselines import final_dev, prepare_baseline

    t0 = time.perf_counter()
    ctx, res = prepare_baseline(name, cfg, log=say)
    dev = final_dev(ctx, res)
    secs = time.perf_counter() - t0
    test, scores = _test(ctx, res, tests)
    return {"dev": dev, "test": test, "test_scores": scores, "evaluations": ctx.evaluations, "seconds": secs}


def run_swarm_cell(cfg: Any, tests: list[Any], work: Path, say: Callable[[str], None]) -> dict[str, Any]:
    """Model Swarms (resuming its own checkpoint if a previous run was killed), then the global best on test."""
    from tutti.swarm import search
    from tutti.swarm.baselines import BaselineContext
    from tutti.swarm.state import STATE_FILE, load_state

    t0 = time.perf_counter()
    resume = (work / STATE_FILE).is_file()
    res = search(cfg, work, resume=resume, log=say)
    secs = time.perf_counter() - t0
    swarm, _ = load_state(work)
    best = swarm.best_index()
    ctx = BaselineContext(cfg, cfg.representation, say)
    test, scores = _test(ctx, swarm.P[best], tests)
    rows = [json.loads(ln) for ln in (work / "log.jsonl").read_text().splitlines() if ln.strip()]
    init = rows[0]["utilities"] if rows else []
    return {"dev": res.best_dev, "test": test, "test_scores": scores, "evaluations": res.evaluations,
            "seconds": secs, "iterations": res.iterations, "stop_reason": res.stop_reason,
            "best_particle": best, "initial_utilities": init, "n_experts": len(cfg.experts),
            "best_so_far": [r["best_so_far"] for r in rows],
            "mean_utility": [_finite_mean(r["utilities"]) for r in rows], "resumed": resume}


def _finite_mean(xs: list[Any]) -> float | None:
    v = [x for x in xs if x is not None and math.isfinite(x)]
    return sum(v) / len(v) if v else None


def plan(targets: list[str], methods: list[str], seeds: list[int]) -> list[tuple[str, str, int]]:
    """Cells in run order: target by target, its experts cell and all methods for the first seed (a whole row
    of the table at a time); then the other seeds."""
    ordered = [m for m in METHOD_ORDER if m in methods] + [m for m in methods if m not in METHOD_ORDER]
    cells = [c for t in targets for c in [(t, EXPERTS, 0), *((t, m, seeds[0]) for m in ordered)]]
    return cells + [(t, m, k) for k in seeds[1:] for t in targets for m in ordered]


def run_table(targets: list[str], methods: list[str], seeds: list[int], s: TableSettings, root: Path, *,
              log: Callable[[str], None] | None = None, base: str | None = None,
              expert_paths: dict[str, Path] | None = None, data_root: Path | None = None) -> dict[str, int]:
    """Compute every missing cell (skipping finished ones); returns counts of computed / skipped / failed cells.

    Args:
        targets, methods, seeds: the cells to compute (see :func:`plan` for the order).
        s: the settings every cell shares (``s.experts`` empty: every trained zoo expert).
        root: folder of the cell files.
        log: progress lines (cell k/N, ETA).
        base, expert_paths, data_root: another base model, expert folders by name and task folder (tests);
            default SmolLM2-135M-Instruct and the zoo's experts and tasks.
    """
    from tutti.errors import NotApplicableError, TuttiError
    from tutti.models.device import check_device
    from tutti.zoo import expert_path, trained_tasks

    say = log or (lambda _m: None)
    if s.tf32:
        import torch

        torch.backends.cuda.matmul.allow_tf32 = True
    s = s if s.experts else TableSettings(**{**asdict(s), "experts": tuple(trained_tasks())})
    for t in targets:
        target_tasks(t, data_root)  # fail before any work on a bad name
    if SWARM in methods and s.particles < len(s.experts):
        raise TuttiError(f"--particles {s.particles} is smaller than the {len(s.experts)} experts; the swarm "
                         "starts from every expert (raise --particles or pass fewer --experts)")
    if base is None:
        from tutti.models.zoo import DEFAULT_MODEL, fetch

        base = str(fetch(DEFAULT_MODEL))
    experts = [str((expert_paths or {}).get(e) or expert_path(e)) for e in s.experts]
    from tutti.recipes.report import machine_line

    machine = machine_line()
    cells = plan(targets, methods, seeds)
    counts = {"done": 0, "skipped": 0, "failed": 0}
    spent, computed, t_start, checked_device = 0.0, 0, time.perf_counter(), False
    for k, (target, method, seed) in enumerate(cells, 1):
        path = cell_path(root, s, target, method, seed)
        if path.is_file():
            counts["skipped"] += 1
            continue
        first = cell_path(root, s, target, method, seeds[0])
        if method in SEED_FREE and seed != seeds[0] and first.is_file():
            cell = {**json.loads(first.read_text()), "seed": seed, "copied_from": seeds[0]}
            write_text_atomic(path, json.dumps(cell))
            counts["done"] += 1
            continue
        if not checked_device:  # before the first cell that needs computing, not for copies or a finished table
            check_device(s.device, hint=", or --report-only to aggregate cells computed on a GPU machine")
            checked_device = True
        say(f"cell {k}/{len(cells)}: {target} / {method} / seed {seed} ...")
        t0, used = time.perf_counter(), None
        try:
            cs = replace(s, dev_utility="generate") if method in NEEDS_ANSWERS else s
            dev, tests = utilities(target, cs, root / s.tag / "data", base, data_root)
            used = (dev.parts[0] if dev.parts else dev).name
            cfg = swarm_config(dev, s, base, seed, experts)
            if method == EXPERTS:
                out = run_experts_cell(cfg, tests, say)
            elif method == SWARM:
                out = run_swarm_cell(cfg, tests, path.with_suffix(".work"), say)
            else:
                out = run_baseline_cell(method, cfg, tests, say)
            out = {"status": "done", **out}
        except NotApplicableError as e:  # the method does not apply to this utility (a vote on judge ratings)
            out = {"status": "n/a", "reason": str(e)}
        except Exception as e:  # a long run goes on; the cell stays missing and is retried
            counts["failed"] += 1
            say(f"cell {target} / {method} / seed {seed} FAILED: {type(e).__name__}: {e}")
            continue
        wall = time.perf_counter() - t0
        out = {"target": target, "method": method, "seed": seed, "settings": asdict(s), "wall_seconds": wall,
               "dev_utility": used, "machine": machine, **out}
        out.setdefault("seconds", wall)
        write_text_atomic(path, json.dumps(out))
        counts["done"] += 1
        spent, computed = spent + wall, computed + 1
        todo = sum(1 for c in cells[k:] if not cell_path(root, s, *c).is_file())
        eta = spent / computed * todo
        say(f"cell {k}/{len(cells)} done in {wall:.0f} s: {target} / {method} / seed {seed}: "
            f"dev {out.get('dev', 'n/a')}, test {out.get('test', 'n/a')}; {todo} left, ETA {eta / 60:.0f} min "
            f"(elapsed {(time.perf_counter() - t_start) / 60:.0f} min)")
    return counts
