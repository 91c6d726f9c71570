"""``tutti bench swarm``: the Model Swarms results table (every baseline and Model Swarms on the zoo targets)."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import typer


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def register(bench_app: typer.Typer) -> None:
    """Add ``tutti bench swarm``."""
    from tutti.recipes.swarm_table import DEFAULT_TARGETS, METHOD_ORDER

    @bench_app.command("swarm")
    def bench_swarm_table(
        targets: str = typer.Option(",".join(DEFAULT_TARGETS), help="Comma list: zoo tasks, multi:<group> "
                                    "(mean over a group of 3 tasks), judge:<task> (base model as judge: a proxy)."),
        methods: str = typer.Option(",".join(METHOD_ORDER), help="Comma list of baselines and model_swarms."),
        seeds: str = typer.Option("1,2,3", help="Comma list of seeds."),
        dev: int = typer.Option(200, min=1, help="Dev examples per target (the same for every method)."),
        test: int = typer.Option(1000, min=1, help="Test examples per target, scored once per cell."),
        particles: int = typer.Option(20, min=2, help="Swarm size."),
        iterations: int = typer.Option(200, min=0, help="Most swarm iterations."),
        patience: int = typer.Option(10, min=1, help="Swarm iterations without a new best before stopping."),
        experts: str = typer.Option("", help="Comma list of zoo experts (default: all trained ones)."),
        dev_utility: str = typer.Option("forced", help="How the search scores dev answers on exact-match "
                                        "targets: forced (teacher-forced greedy match: one forward pass, an exact "
                                        "lower bound of exact match, about 2x cheaper) or generate (greedy generation "
                                        "+ exact match). Test is always generated; judge targets and the "
                                        "prediction_merge vote always generate. Names the settings folder."),
        device: str = typer.Option("cpu", help="Where the resident models run: cpu, cuda or cuda:N (names the "
                                   "settings folder when not cpu)."),
        batch_size: int = typer.Option(16, min=1, help="Sequences per forward pass (names the settings folder "
                                       "when not 16)."),
        tf32: bool = typer.Option(False, "--tf32", help="CUDA matrix products in TF32 (several times faster on a "
                                  "GPU; a numerical change, so it names the settings folder)."),
        root: Path = typer.Option(Path("runs/bench-swarm"), help="Folder of the cell JSON files."),
        out: Path = typer.Option(Path("docs/results.md"), help="Markdown file (section 'swarm')."),
        img: Path = typer.Option(Path("docs/img"), help="Folder for the plots."),
        report_only: bool = typer.Option(False, "--report-only", help="Only aggregate the finished cells."),
    ) -> None:
        """Run every missing (target, method, seed) cell, then write the table from the finished cells."""
        from tutti.recipes.report import machine_line, write_section
        from tutti.recipes.swarm_table import SWARM, TableSettings, run_table
        from tutti.recipes.swarm_table_report import report
        from tutti.swarm.baselines import BASELINES
        from tutti.zoo import TASKS, trained_tasks

        ms = _csv(methods)
        for m in ms:
            if m != SWARM:
                BASELINES.get(m)  # did-you-mean error
        ex = tuple(_csv(experts)) or tuple(trained_tasks())
        for e in ex:
            TASKS.get(e)
        s = TableSettings(dev=dev, test=test, particles=particles, iterations=iterations, patience=patience,
                          experts=ex, dev_utility=dev_utility, device=device, batch_size=batch_size, tf32=tf32)
        ts, ks = _csv(targets), [int(k) for k in _csv(seeds)]
        args = sys.argv[sys.argv.index("swarm") + 1:] if "swarm" in sys.argv else []
        command = " ".join(["tutti bench swarm", *(shlex.quote(a) for a in args if a != "--report-only")])
        if not report_only:
            counts = run_table(ts, ms, ks, s, root, log=lambda m: typer.echo(m, err=True))
            typer.echo(f"cells: {counts['done']} computed, {counts['skipped']} already there, "
                       f"{counts['failed']} failed", err=True)
        if not out.exists():  # write_section's default title is the benchmarks page's
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text("# Results\n\nResult tables written by `tutti bench ...`; each section names the "
                           "command that produced it.\n")
        write_section(out, "swarm", report(root, s, ts, ms, ks, command=command, machine=machine_line(), img=img))
        typer.echo(f"wrote section swarm of {out}")
