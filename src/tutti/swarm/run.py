"""The swarm run recipe: setup -> search loop (checkpoint after every iteration) -> outputs.

Outputs in the run folder: ``config.yaml``, ``swarm_state.safetensors`` (the resumable state), ``log.jsonl`` (one
line per iteration: every particle's utility, best so far, lambda, restarts, failures, seconds per phase),
``best/`` (PEFT adapter or HF checkpoint with a model card), ``top_k/<rank>/`` when ``top_k > 1``,
``utility.png`` and ``summary.json`` (dev and, when the task has one, test scores shown apart).
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tutti.config.swarm import SwarmConfig
from tutti.errors import TuttiError
from tutti.swarm.core import SearchParams, Swarm
from tutti.swarm.state import STATE_FILE, load_state, save_state

LOG_FILE = "log.jsonl"


@dataclass
class SwarmResult:
    """What a search produced: the best particle's scores and where things were written."""

    out_dir: Path
    best_dev: float
    best_test: float | None
    initial_best_dev: float
    initial_best_test: float | None
    iterations: int
    evaluations: int
    stop_reason: str
    best_path: Path
    extra: dict[str, Any] = field(default_factory=dict)


def config_digest(cfg: SwarmConfig) -> str:
    """A short hash of everything that changes the search (to refuse resuming with another config)."""
    return hashlib.sha256(cfg.model_dump_json().encode()).hexdigest()[:16]


def make_pool(cfg: SwarmConfig, rep: Any, *, ray: str | None = None, workers: int = 1) -> Any:
    """An in-process pool, or a Ray pool when ``ray`` is an address or ``"local"``."""
    from tutti.swarm.engine import Evaluator, LocalPool, RayPool

    kw = {"rep": rep, "utility": cfg.utility, "allow_test": cfg.allow_test_set_in_search,
          "batch_size": cfg.batch_size, "dtype": cfg.dtype,
          "device": cfg.device}
    if ray:
        return RayPool(ray, workers, **kw)
    return LocalPool(Evaluator(**kw))


def search(cfg: SwarmConfig, out_dir: str | Path | None = None, *, resume: bool = False, ray: str | None = None,
           workers: int = 1, log: Callable[[str], None] | None = None, progress: bool = False) -> SwarmResult:
    """Run (or resume) a Model Swarms search and write its outputs.

    Args:
        cfg: the search configuration.
        out_dir: run folder (default ``./swarm-run``); must not hold a state unless ``resume``.
        resume: continue the run in ``out_dir`` exactly where it stopped.
        ray: ``"local"`` or a Ray cluster address to evaluate particles on Ray actors.
        workers: number of Ray actors.
        log: a callback for progress lines.
        progress: show a rich progress bar.
    """
    from tutti.swarm.particles import load_experts

    say = log or (lambda _m: None)
    out = Path(out_dir or "swarm-run")
    has_state = (out / STATE_FILE).is_file()
    if resume and not has_state:
        raise TuttiError(f"{out}: nothing to resume (no {STATE_FILE}); start the run with --out {out}")
    if not resume and has_state:
        raise TuttiError(f"{out} already holds a swarm run; pass --resume {out} to continue it or choose another --out")
    rep, experts = load_experts(cfg.representation, cfg.experts, cfg.base)
    say(f"{len(cfg.experts)} experts as {cfg.representation}: {experts.shape[1]:,} values per particle")
    if resume:
        swarm, extra = load_state(out)
        if extra.get("config_digest") != config_digest(cfg):
            raise TuttiError(f"{out}: the config differs from the one this run started with; resume with {out}/config.yaml")
        _truncate_log(out / LOG_FILE, swarm.iteration if swarm.g_history else -1)
        say(f"resuming at iteration {swarm.iteration}")
    else:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.yaml").write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
        (out / LOG_FILE).write_text("")
        swarm = Swarm(SearchParams.from_config(cfg), experts)
        extra = {"config_digest": config_digest(cfg), "evaluations": 0}
        save_state(out, swarm, extra)
    pool = make_pool(cfg, rep, ray=ray, workers=workers)
    # the core maximises; a lower-is-better custom utility is negated on the way in and out
    sign = -1.0 if cfg.utility.options.get("higher_is_better") is False else 1.0
    try:
        _loop(swarm, pool, out, extra, sign, say, progress)
        return _finish(cfg, rep, experts, swarm, pool, out, extra, sign, say)
    finally:
        pool.close()


def _loop(swarm: Swarm, pool: Any, out: Path, extra: dict[str, Any], sign: float, say: Callable[[str], None],
          progress: bool) -> None:
    from rich.progress import Progress

    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task("swarm", total=swarm.params.max_iterations)
        while True:
            t0 = time.perf_counter()
            x = swarm.ask()
            t_update = time.perf_counter() - t0
            if x is None:
                break
            recs = pool.evaluate(x)
            t1 = time.perf_counter()
            swarm.tell([sign * r.value for r in recs])
            extra["evaluations"] = extra.get("evaluations", 0) + len(recs)
            line = {
                "iteration": swarm.iteration, "utilities": [r.value for r in recs],
                "best_so_far": sign * swarm.g_util, "lambda": swarm.lam, "restarts": list(swarm.restarted),
                "failures": {str(i): r.error for i, r in enumerate(recs) if r.error},
                "seconds": {"update": t_update, "swap": sum(r.swap_s for r in recs),
                            "evaluation": sum(r.eval_s for r in recs), "wall_evaluation": t1 - t0 - t_update},
            }
            for i, r in enumerate(recs):
                if r.error:
                    say(f"particle {i} failed (counted as worst): {r.error}")
            t2 = time.perf_counter()
            save_state(out, swarm, extra)
            line["seconds"]["checkpoint"] = time.perf_counter() - t2
            with (out / LOG_FILE).open("a") as f:
                f.write(json.dumps(line) + "\n")
            bar.update(task, completed=swarm.iteration)
            say(f"iteration {swarm.iteration}: best {sign * swarm.g_util:.4f}, lambda {swarm.lam:.3f}")


def _truncate_log(path: Path, last_iteration: int) -> None:
    # a kill between the log line and the state leaves lines the resumed run will write again
    if not path.is_file():
        return
    keep = [ln for ln in path.read_text().splitlines() if ln.strip() and json.loads(ln)["iteration"] <= last_iteration]
    path.write_text("".join(ln + "\n" for ln in keep))


def _finish(cfg: SwarmConfig, rep: Any, experts: Any, swarm: Swarm, pool: Any, out: Path, extra: dict[str, Any],
            sign: float, say: Callable[[str], None]) -> SwarmResult:
    from tutti.models.writer import model_card
    from tutti.swarm.engine import Evaluator
    from tutti.swarm.particles import save_particle

    n_exp = len(cfg.experts)
    init = [h[0] for h in swarm.history[:n_exp]]  # the first rows of the population are the experts
    init_best = max(range(n_exp), key=lambda i: (init[i], -i))
    best = swarm.best_index()
    test_cfg = _test_split(cfg)
    ev = getattr(pool, "evaluator", None)
    if ev is None:  # a Ray run: one local model for the report and the full-checkpoint outputs
        ev = Evaluator(rep, cfg.utility, allow_test=True, batch_size=cfg.batch_size, dtype=cfg.dtype,
                       device=cfg.device)
    best_test = init_test = None
    if test_cfg is not None:  # reported after the search, never used by it
        best_test = ev.evaluate_split(swarm.P[best], test_cfg)
        init_test = ev.evaluate_split(experts[init_best], test_cfg)
    card = model_card(
        "Model Swarms global best",
        f"Found by `tutti swarm` (Model Swarms, arXiv 2410.11163) after {swarm.iteration} iterations "
        f"({extra.get('evaluations', 0)} evaluations), stopped because: {swarm.stop_reason}. "
        f"Utility `{cfg.utility.name}` on the {cfg.utility.split} split: {sign * swarm.p_util[best]:.4f} "
        f"(best initial expert {sign * init[init_best]:.4f})"
        + (f"; test split: {best_test:.4f} (best initial expert {init_test:.4f})." if best_test is not None else "."),
        sources=list(cfg.experts), config_yaml=(out / "config.yaml").read_text())
    swapper, model = ev.swapper, ev.model
    best_path = save_particle(rep, swarm.P[best], out / "best", model=model, swapper=swapper, readme=card)
    for rank, i in enumerate(swarm.top_k(cfg.top_k)[1:] if cfg.top_k > 1 else [], start=2):
        save_particle(rep, swarm.P[i], out / "top_k" / str(rank), model=model, swapper=swapper, readme=card)
    _plot(out)
    res = SwarmResult(out, sign * swarm.p_util[best], best_test, sign * init[init_best], init_test,
                      swarm.iteration, int(extra.get("evaluations", 0)), swarm.stop_reason, best_path,
                      {"best_particle": best, "best_initial_expert": cfg.experts[init_best]})
    summary = {k: (str(v) if isinstance(v, Path) else v) for k, v in res.__dict__.items()}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    say(f"best dev {res.best_dev:.4f} (best expert {res.initial_best_dev:.4f}); written to {best_path}")
    return res


def _test_split(cfg: SwarmConfig) -> Any:
    from tutti.evaluation.datasets import split_path

    u = cfg.utility
    if u.split == "test" or u.task is None or u.parts:
        return None
    try:
        if split_path(u.task, "test") == split_path(u.task, u.split):
            return None
    except TuttiError:
        return None
    return u.model_copy(update={"split": "test", "limit": None})


def _plot(out: Path) -> None:
    """``utility.png``: every particle's utility and the best so far, per iteration."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # plotting is an optional extra
        return
    rows = [json.loads(ln) for ln in (out / LOG_FILE).read_text().splitlines() if ln.strip()]
    if not rows:
        return
    fig, ax = plt.subplots(figsize=(6, 4))
    for r in rows:
        vals = [v for v in r["utilities"] if v is not None and math.isfinite(v)]
        ax.scatter([r["iteration"]] * len(vals), vals, s=6, color="tab:blue", alpha=0.4)
    ax.plot([r["iteration"] for r in rows], [r["best_so_far"] for r in rows], color="tab:red", label="best so far")
    ax.set_xlabel("iteration")
    ax.set_ylabel("utility (dev)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "utility.png", dpi=100)
    plt.close(fig)
