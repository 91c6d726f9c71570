"""``tutti bench swarm-timing`` (where a swarm iteration's time goes) and ``tutti bench swarm`` (the results table)."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import typer


def register(bench_app: typer.Typer) -> None:
    """Add ``tutti bench swarm-timing`` and ``tutti bench swarm``."""

    @bench_app.command("swarm-timing")
    def bench_swarm_timing(
        particles: int = typer.Option(6, min=2, help="Swarm size."),
        iterations: int = typer.Option(3, min=1, help="Iterations after the initial evaluation."),
        dev_items: int = typer.Option(16, min=2, help="Dev items of the two-choice task."),
        out: Path = typer.Option(Path("docs/benchmarks.md"), help="Markdown file (section 'swarm-timing')."),
    ) -> None:
        """Time update / swap / evaluation per iteration on SmolLM2-135M LoRA particles, against reloading."""
        from tutti.recipes.report import machine_line, write_section
        from tutti.swarm.timing import report, run_timing

        args = sys.argv[sys.argv.index("swarm-timing") + 1:] if "swarm-timing" in sys.argv else []
        command = " ".join(["tutti bench swarm-timing", *(shlex.quote(a) for a in args)])
        res = run_timing(particles=particles, iterations=iterations, dev_items=dev_items,
                         log=lambda m: typer.echo(m, err=True))
        write_section(out, "swarm-timing", report(res, command, machine_line()))
        typer.echo(f"wrote section swarm-timing of {out}")

    from tutti.cli.bench_swarm_table import register as register_table

    register_table(bench_app)  # ``tutti bench swarm``: the results table
