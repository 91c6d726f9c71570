"""Timing benchmark of the swarm's evaluation engine on real LoRA particles of SmolLM2-135M.

Per iteration it splits the time into update (the ask/tell velocity and position step), swap (copying a particle
into the resident PEFT model) and evaluation (the utility's batched forward passes), and, interleaved with each
in-place evaluation, it evaluates the same particle the way the official code does: write the particle adapter
to disk, load the base model and the adapter from disk, then score. Both paths must give the same utility.
"""

from __future__ import annotations

import random
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from tutti.config.swarm import UtilityConfig
from tutti.evaluation.datasets import Example, write_split

FACTS = [("The capital of France is", "Paris", "Madrid"), ("Two plus two equals", "four", "five"),
         ("The sun rises in the", "east", "west"), ("Ice is frozen", "water", "sand"),
         ("A week has seven", "days", "hours"), ("Cats say", "meow", "moo"),
         ("The colour of grass is", "green", "blue"), ("Bees make", "honey", "milk")]


def make_experts(base: Path, root: Path, n: int, *, rank: int = 8) -> list[Path]:
    """``n`` random rank-``rank`` LoRA adapters (q/k/v/o projections) of ``base``, saved as PEFT folders."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    out = []
    for i in range(n):
        torch.manual_seed(100 + i)
        m = get_peft_model(AutoModelForCausalLM.from_pretrained(base),
                           LoraConfig(r=rank, lora_alpha=2 * rank, init_lora_weights=False,
                                      target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]))
        with torch.no_grad():
            for name, p in m.named_parameters():
                if "lora_" in name:
                    p.mul_(0.3)  # small random experts: outputs stay fluent
        m.save_pretrained(root / f"expert{i}")
        out.append(root / f"expert{i}")
    return out


def make_task(root: Path, n: int) -> Path:
    """A two-choice fact task with ``n`` dev items."""
    rng = random.Random(0)
    ex = []
    for i in range(n):
        q, a, b = FACTS[i % len(FACTS)]
        ex.append(Example(str(i), f"Question {i}: {q}", a, tuple(rng.sample([a, b], 2))))
    write_split(root / "dev.jsonl", ex)
    return root


def run_timing(*, particles: int = 6, iterations: int = 3, dev_items: int = 16, experts: int = 3,
               log: Callable[[str], None] = print) -> dict[str, Any]:
    """Measure one swarm run with in-place evaluation, interleaved with reload-per-evaluation."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tutti.evaluation.utilities import build_utility
    from tutti.models.hf import HFModel
    from tutti.models.zoo import fetch
    from tutti.swarm.core import SearchParams, Swarm
    from tutti.swarm.engine import Evaluator
    from tutti.swarm.particles import load_experts, save_particle

    base = fetch("smollm2-135m-instruct")
    root = Path(tempfile.mkdtemp(prefix="tutti-swarm-timing-"))
    paths = make_experts(base, root, experts)
    task = make_task(root / "task", dev_items)
    ucfg = UtilityConfig(name="mc_loglik", task=str(task))
    rep, vecs = load_experts("lora_factors", [str(p) for p in paths])
    ev = Evaluator(rep, ucfg)
    swarm = Swarm(SearchParams(n_particles=particles, seed=0, patience=iterations + 1), vecs)
    rows, inplace, reload, diffs = [], [], [], []
    for it in range(iterations + 1):
        t0 = time.perf_counter()
        x = swarm.ask()
        t_update = time.perf_counter() - t0
        assert x is not None
        vals, swap, evals, rl = [], 0.0, 0.0, []
        for i in range(particles):
            rec = ev.evaluate(x[i])
            vals.append(rec.value)
            swap, evals = swap + rec.swap_s, evals + rec.eval_s
            inplace.append(rec.swap_s + rec.eval_s)
            t1 = time.perf_counter()  # the official path: particle to disk, base + adapter from disk, score
            pdir = save_particle(rep, x[i], root / "particle")
            module = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), str(pdir)).eval()
            fresh = HFModel(module, AutoTokenizer.from_pretrained(base))
            value = build_utility(ucfg)(fresh).value
            rl.append(time.perf_counter() - t1)
            diffs.append(abs(value - rec.value))
            del module, fresh
        reload += rl
        swarm.tell(vals)
        rows.append({"iteration": it, "update": t_update, "swap": swap, "evaluation": evals, "reload": sum(rl)})
        log(f"iteration {it}: update {t_update:.3f}s swap {swap:.3f}s evaluation {evals:.2f}s | reload path {sum(rl):.2f}s")
    import os

    return {"load_average": os.getloadavg()[0], "rows": rows, "inplace_median": statistics.median(inplace), "reload_median": statistics.median(reload),
            "max_abs_diff": max(diffs), "particles": particles, "dev_items": dev_items, "dim": int(vecs.shape[1]),
            "experts": experts}


def report(res: dict[str, Any], command: str, machine: str) -> str:
    """The markdown section ``swarm-timing``."""
    from tutti.recipes.report import md_table

    rows = [r for r in res["rows"] if r["iteration"] > 0]  # iteration 0 is the initial evaluation (no update)
    upd = statistics.median(r["update"] for r in rows)
    swp = statistics.median(r["swap"] for r in rows)
    evl = statistics.median(r["evaluation"] for r in rows)
    total = upd + swp + evl
    table = md_table(["iteration", "update s", "swap s", "evaluation s", "update+swap share", "reload path s"],
                     [[r["iteration"], f"{r['update']:.4f}", f"{r['swap']:.4f}", f"{r['evaluation']:.2f}",
                       f"{(r['update'] + r['swap']) / (r['update'] + r['swap'] + r['evaluation']):.1%}",
                       f"{r['reload']:.2f}"] for r in res["rows"]])
    speed = res["reload_median"] / res["inplace_median"]
    return (
        "### Model Swarms: seconds per iteration and in-place swaps vs reloading\n\n"
        f"Command: `{command}`. Machine: {machine}.\n\n"
        f"SmolLM2-135M-Instruct (fp32, CPU) with {res['experts']} random rank-8 LoRA experts on q/k/v/o "
        f"({res['dim']:,} values per particle), {res['particles']} particles, utility `mc_loglik` on "
        f"{res['dev_items']} two-choice dev items (one batched forward pass per 16 sequences). Each particle is "
        "evaluated in place and, interleaved with it, the way the official code does (particle written to disk, "
        "base model and adapter loaded from disk, then scored); both give the same utility "
        f"(max |difference| {res['max_abs_diff']:.1e}).\n\n"
        f"{table}\n\n"
        f"Median over iterations 1+: update {upd:.4f} s, swap {swp:.4f} s, evaluation {evl:.2f} s per iteration: "
        f"**update + swap = {(upd + swp) / total:.1%} of the iteration** (target <= 10%). Median seconds per "
        f"particle evaluation: in place {res['inplace_median']:.2f} s, reload {res['reload_median']:.2f} s: "
        f"**{speed:.1f}x faster than reloading the model for each evaluation**. The speed-up grows as the "
        "evaluation shrinks (fewer dev items, faster hardware), since the reload cost per evaluation is fixed. "
        f"1-minute load average at the end of the run: {res.get('load_average', float('nan')):.1f}.\n"
    )
