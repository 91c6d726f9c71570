"""Report step of the swarm results table: aggregate the finished cells, the paper's analyses, plots, markdown.

Works on whatever cells exist (a partial run gives a partial table that says how many cells are missing).
Mean ± std are over seeds, std the population one (``ddof=0``; 0 for a single seed).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tutti.recipes.report import md_table
from tutti.recipes.swarm_table import EXPERTS, SWARM, TableSettings, cell_path, plan


@dataclass(frozen=True)
class Agg:
    """One (target, method) over its finished seeds."""

    test_mean: float
    test_std: float
    dev_mean: float
    seconds: float
    evaluations: float
    n: int


def mean_std(xs: list[float]) -> tuple[float, float]:
    """Mean and population standard deviation."""
    m = sum(xs) / len(xs)
    return m, math.sqrt(sum((x - m) ** 2 for x in xs) / len(xs))


def load_cells(root: Path, s: TableSettings, targets: list[str], methods: list[str], seeds: list[int]
               ) -> tuple[dict[tuple[str, str, int], dict[str, Any]], int, int]:
    """The finished cells of the plan, the number expected and the number missing."""
    cells, expected = {}, plan(targets, methods, seeds)
    for c in expected:
        p = cell_path(root, s, *c)
        if p.is_file():
            cells[c] = json.loads(p.read_text())
    return cells, len(expected), len(expected) - len(cells)


def _machines(cells: dict[tuple[str, str, int], dict[str, Any]], here: str) -> str:
    """Where the cells were computed (recorded per cell; older cells without a record count as ``here``)."""
    seen = sorted({c.get("machine") or here for c in cells.values()}) or [here]
    return "; ".join(seen) + ("" if seen == [here] else f" (cells computed there; report written on {here})")


def aggregate(cells: dict[tuple[str, str, int], dict[str, Any]]) -> dict[tuple[str, str], Agg]:
    """Mean ± std over seeds of each (target, method) with at least one ``done`` cell."""
    by: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for (t, m, _k), c in sorted(cells.items()):
        if m != EXPERTS and c.get("status") == "done":
            by.setdefault((t, m), []).append(c)
    out = {}
    for key, cs in by.items():
        tm, ts = mean_std([c["test"] for c in cs])
        out[key] = Agg(tm, ts, mean_std([c["dev"] for c in cs])[0], mean_std([c["seconds"] for c in cs])[0],
                       mean_std([float(c["evaluations"]) for c in cs])[0], len(cs))
    return out


def initial_rank(cell: dict[str, Any]) -> tuple[int, int, bool]:
    """(rank 1 = best, swarm size, started as an expert) of the particle that ended as global best."""
    init, b = cell["initial_utilities"], cell["best_particle"]
    vals = [v if v is not None and math.isfinite(v) else -math.inf for v in init]
    rank = 1 + sum(1 for i, v in enumerate(vals) if v > vals[b] or (v == vals[b] and i < b))
    return rank, len(vals), b < cell["n_experts"]


def rescued_share(swarm_scores: list[float], expert_scores: list[list[float]]) -> float:
    """Share of test questions that no expert answers correctly but the swarm does."""
    n = len(swarm_scores)
    hit = sum(1 for j in range(n) if swarm_scores[j] > 0 and all(e[j] <= 0 for e in expert_scores))
    return hit / n


def any_right(expert_scores: list[list[float]]) -> float:
    """Share of questions at least one expert answers correctly."""
    n = len(expert_scores[0])
    return sum(1 for j in range(n) if any(e[j] > 0 for e in expert_scores)) / n


def _experts(cells: dict[tuple[str, str, int], dict[str, Any]], targets: list[str], experts: tuple[str, ...]
             ) -> list[str]:
    rows = []
    for t in targets:
        ex = cells.get((t, EXPERTS, 0))
        if not ex or ex.get("status") != "done":
            continue
        i = max(range(len(ex["test"])), key=lambda j: (ex["test"][j], -j))
        judge = t.startswith("judge:")
        oracle = "—" if judge else f"{100 * any_right(ex['test_scores']):.1f}"
        scale = 1 if judge else 100
        rows.append([t, experts[i] if i < len(experts) else i, f"{scale * ex['test'][i]:.1f}", oracle])
    if not rows:
        return []
    return ["The experts alone on each target's test examples (the best one in hindsight, and the share of questions "
            "at least one expert answers correctly, the ceiling of any selection among them):", "",
            md_table(["target", "best expert on test", "its test", "any expert right (%)"], rows), ""]


def dev_utility_text(s: TableSettings) -> str:
    """How dev and test answers were scored."""
    if s.dev_utility == "generate":
        return (f"Scoring: greedy generation (at most {s.max_new_tokens} new tokens, stop at a newline) + exact "
                "match on dev (the search utility) and on test (`--dev-utility generate`; the default, `forced`, "
                "searches with teacher-forced greedy match and keeps its cells in another settings folder).")
    return ("Scoring: the search and the baselines' choices use **teacher-forced greedy match** on dev "
            "(`forced_match`: an example counts when greedy decoding would produce exactly the reference and "
            "stop, read off one forward pass over prompt + reference, with no decoding loop; an exact lower bound "
            "of exact match, so dev values sit at or below generation accuracy); every test column is greedy "
            "generation + exact match. `prediction_merge` votes over generated answers and `judge:` targets rate "
            "generated text, so their dev values come from generation.")


def caveats(s: TableSettings, agg: dict[tuple[str, str], Agg] | None = None) -> list[str]:
    """Why the table may not clear the paper's bar, stated with the settings (and results) that produced it."""
    out = ["Caveats, to read the table honestly:",
           "- The experts are under-trained (20 steps of batch 4 each, `docs/zoo.md`): most of their gain is the answer "
           "format, and on the mixed-skill targets most of them score 0, so the swarm has little signal to combine.",
           f"- The dev set has {s.dev} examples: dev accuracy moves in steps of {100 / s.dev:.1f} points, many "
           "particles tie, and a search that maximises it can overfit it (compare the dev and test columns)."]
    small = [f"{s.particles} particles (paper 20)" if s.particles < 20 else "",
             f"at most {s.iterations} iterations (paper 200, patience 10)" if s.iterations < 200 else "",
             f"{s.dev} dev examples (paper 200)" if s.dev < 200 else "", f"{s.test} test examples" if s.test < 1000 else ""]
    if any(small):
        out.append("- This run is far smaller than the paper's setting (" + ", ".join(x for x in small if x) + ") "
                   "to fit the compute at hand (cost below); a swarm stopped after a few iterations is mostly its "
                   "initial crossover population.")
    if s.device != "cpu":
        out.append(f"- The cells ran on `{s.device}` with batches of {s.batch_size}"
                   + (" and TF32 matrix products" if s.tf32 else "") + ": greedy answers can differ from a CPU fp32 "
                   "run on near-tied tokens, so compare these numbers with cells of the same settings only.")
    flat = sorted({t for (t, _m), a in (agg or {}).items()
                   if all(b.test_mean == 0 for (u, _n), b in (agg or {}).items() if u == t)})
    if flat:
        out.append(f"- {', '.join(f'`{t}`' for t in flat)}: every method scores 0 on test, so the target says "
                   "nothing about the methods (no expert has the skills it mixes).")
    return out


def cost_line(cells: dict[tuple[str, str, int], dict[str, Any]], s: TableSettings) -> str:
    """What one dev evaluation cost here, and what a paper-size Model Swarms cell would cost at that rate."""
    runs = [c for (_t, m, _k), c in cells.items() if m != EXPERTS and c.get("status") == "done"
            and not c.get("copied_from") and c.get("evaluations")]
    if not runs:
        return "Cost: no finished cell yet."
    per_eval = sum(c["seconds"] for c in runs) / sum(c["evaluations"] for c in runs)
    full = per_eval * 200 / s.dev * 20 * 11  # 20 particles, >= 11 rounds (patience 10), 200 dev examples
    where = "here" if s.device == "cpu" else "where the cells ran (wall time; cells ran side by side there)"
    return (f"Cost: one dev utility evaluation ({s.dev} examples) took {per_eval:.1f} s on average {where}; at that "
            f"rate a paper-size Model Swarms cell (200 dev, 20 particles, at least 11 rounds before patience 10 "
            f"can stop it) needs at least {full / 3600:.1f} h.")


# ---------------------------------------------------------------------------------------------- plots
def plot(cells: dict[tuple[str, str, int], dict[str, Any]], img: Path, experts: tuple[str, ...]) -> list[str]:
    """Write the utility-over-iterations plot and the expert-by-target heat map; returns markdown lines."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return ["*(plots skipped: matplotlib is not installed; `pip install tutti-llm[plot]`)*"]
    img.mkdir(parents=True, exist_ok=True)
    lines = []
    runs = {(t, k): c for (t, m, k), c in cells.items() if m == SWARM and c.get("status") == "done"}
    if runs:
        fig, ax = plt.subplots(figsize=(7, 4))
        for (t, k), c in sorted(runs.items()):
            ax.plot(range(1, len(c["best_so_far"]) + 1), c["best_so_far"], marker=".", label=f"{t} (seed {k})")
        ax.set_xlabel("iteration (1 = the initial swarm)")
        ax.set_ylabel("global best utility (dev)")
        ax.legend(fontsize=6)
        fig.tight_layout()
        fig.savefig(img / "swarm_utility.png", dpi=100)
        plt.close(fig)
        lines.append("![Model Swarms: global best dev utility per iteration](img/swarm_utility.png)")
    ex = {t: c for (t, m, _k), c in cells.items() if m == EXPERTS and c.get("status") == "done"
          and not t.startswith("judge:")}
    if ex:
        ts = sorted(ex)
        mat = [[100 * ex[t]["test"][i] for t in ts] for i in range(len(experts))]
        fig, ax = plt.subplots(figsize=(1.2 * len(ts) + 3, 0.4 * len(experts) + 2))
        im = ax.imshow(mat, cmap="viridis", vmin=0, vmax=100)
        ax.set_xticks(range(len(ts)), ts, rotation=30, ha="right", fontsize=7)
        ax.set_yticks(range(len(experts)), experts, fontsize=7)
        for i, row in enumerate(mat):
            for j, v in enumerate(row):
                ax.text(j, i, f"{v:.0f}", ha="center", va="center", color="w" if v < 50 else "k", fontsize=6)
        ax.set_title("each expert on each target's test examples", fontsize=8)
        fig.colorbar(im, label="test accuracy (%)")
        fig.tight_layout()
        fig.savefig(img / "swarm_expert_matrix.png", dpi=100)
        plt.close(fig)
        lines.append("![Expert-by-target test accuracy](img/swarm_expert_matrix.png)")
    return lines


# ---------------------------------------------------------------------------------------------- markdown
def _fmt(a: Agg | None, judge: bool) -> str:
    if a is None:
        return "—"
    scale = 1 if judge else 100
    return f"{scale * a.test_mean:.1f} ± {scale * a.test_std:.1f}" + (f" ({a.n})" if a.n > 1 else "")


def report(root: Path, s: TableSettings, targets: list[str], methods: list[str], seeds: list[int], *,
           command: str, machine: str, img: Path | None = None) -> str:
    """The markdown of section ``swarm`` of ``docs/results.md``."""
    cells, n_all, n_missing = load_cells(root, s, targets, methods, seeds)
    agg = aggregate(cells)
    ordered = [m for m in methods if m != SWARM] + [SWARM]
    out = [
        "## Model Swarms against the paper's baselines (zoo experts, SmolLM2-135M-Instruct)",
        "",
        f"Command: `{command}`  ",
        f"Machine: {_machines(cells, machine)}  ",
        f"Settings: {s.dev} dev examples per target (a `multi:` target takes {s.dev // 3} from each of its three "
        f"tasks), {s.test} test examples, swarm of {s.particles} particles, at most {s.iterations} iterations, "
        f"patience {s.patience}; {len(s.experts)} experts ({', '.join(s.experts)}); seeds {', '.join(map(str, seeds))}.",
        "",
        dev_utility_text(s),
        "",
        f"**{'PARTIAL: ' + str(n_missing) + ' of ' + str(n_all) + ' cells missing' if n_missing else 'Complete'}** "
        f"({n_all - n_missing} of {n_all} cells finished; `tutti bench swarm` with the same flags resumes).",
        "",
        "Test accuracy (%) as mean ± std over seeds (number of seeds in brackets when more than one); "
        "`judge:` targets show the base model's 1-10 rating of the answers: **a proxy** for a preference utility, "
        "not a human preference. Seed-free baselines are computed once (std 0 by construction).",
        "",
    ]
    rows = []
    for m in ordered:
        rows.append([f"**{m}**" if m == SWARM else m] + [_fmt(agg.get((t, m)), t.startswith("judge:")) for t in targets])
    out += [md_table(["method", *targets], rows), ""]
    out += ["Dev utility, wall seconds of the method on dev (test scoring excluded) and utility evaluations "
            "(every dev evaluation, the final scoring included), means over seeds:", ""]
    drows = []
    for t in targets:
        for m in ordered:
            a = agg.get((t, m))
            na = next((c for (tt, mm, _k), c in cells.items() if tt == t and mm == m and c.get("status") == "n/a"), None)
            if a is not None:
                drows.append([t, m, f"{a.dev_mean:.3f}", f"{a.seconds:.0f}", f"{a.evaluations:.0f}", a.n])
            elif na is not None:
                drows.append([t, m, "n/a", "", "", na["reason"][:80]])
    out += [md_table(["target", "method", "dev", "seconds", "evaluations", "seeds"], drows), ""]
    out += _experts(cells, targets, s.experts)
    out += _analyses(cells, agg, targets, methods)
    out += ["", *caveats(s, agg), "", cost_line(cells, s)]
    if img is not None:
        out += ["", *plot(cells, img, s.experts)]
    return "\n".join(out) + "\n"


def _analyses(cells: dict[tuple[str, str, int], dict[str, Any]], agg: dict[tuple[str, str], Agg],
              targets: list[str], methods: list[str]) -> list[str]:
    out = ["### The paper's analyses on our data", ""]
    rows = []
    for t in targets:
        ex = cells.get((t, EXPERTS, 0))
        for (tt, m, k), c in sorted(cells.items()):
            if tt != t or m != SWARM or c.get("status") != "done":
                continue
            r, n, was_expert = initial_rank(c)
            share = "—"
            if ex and ex.get("status") == "done" and not t.startswith("judge:"):
                share = f"{100 * rescued_share(c['test_scores'], ex['test_scores']):.1f}%"
            start = f"expert {c['best_particle']}" if was_expert else "crossover"
            rows.append([t, k, f"{r} of {n}", start, c["iterations"], c["stop_reason"], share])
    if rows:
        out += ["Initial rank (by dev utility, 1 = best) of the particle that ends as global best, and the share "
                "of test questions no expert answers correctly but the swarm's global best does:", "",
                md_table(["target", "seed", "initial rank", "started as", "iterations", "stopped", "rescued"], rows),
                ""]
    out += ["### Reading", ""]
    above = 0
    judged = 0
    for t in targets:
        sw = agg.get((t, SWARM))
        bases = [(agg[(t, m)].test_mean, m) for m in methods if m != SWARM and (t, m) in agg]
        if sw is None or not bases:
            out.append(f"- `{t}`: not enough finished cells to compare.")
            continue
        judged += 1
        best_v, best_m = max(bases)
        scale = 1 if t.startswith("judge:") else 100
        if sw.test_mean > best_v:
            above += 1
            out.append(f"- `{t}`: Model Swarms {scale * sw.test_mean:.1f} is above the best baseline "
                       f"({best_m}, {scale * best_v:.1f}).")
        else:
            out.append(f"- `{t}`: Model Swarms {scale * sw.test_mean:.1f} is **not** above the best baseline "
                       f"({best_m}, {scale * best_v:.1f}).")
    out += ["", f"Model Swarms is above the best baseline on {above} of {judged} compared targets "
            "(the paper's bar: most targets)."]
    return out
