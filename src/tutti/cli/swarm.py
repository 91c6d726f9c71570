"""``tutti swarm``: adapt a pool of experts to a utility function by Model Swarms search."""

from __future__ import annotations

from pathlib import Path

import typer

from tutti.errors import TuttiError

HELP = """Adapt a pool of experts to a utility function by Model Swarms search (arXiv 2410.11163).

Writes RUN_DIR/best (PEFT adapter or HF checkpoint), log.jsonl, utility.png and summary.json (dev and test
apart). The search never reads the test split unless --allow-test-set-in-search is given. See docs/swarm.md.

\b
Examples:
  tutti swarm search.yaml --out runs/s1
  tutti swarm search.yaml seed=3 n_particles=10 --out runs/s2
  tutti swarm --resume runs/s1
  tutti swarm search.yaml --ray local --workers 2 --out runs/s3
  tutti swarm search.yaml --baseline ties --out runs/ties
  tutti swarm --list-utilities
"""


def register(app: typer.Typer) -> None:
    """Add the ``swarm`` subcommand."""

    @app.command("swarm", help=HELP, no_args_is_help=True)
    def _cmd(
        config: Path | None = typer.Argument(None, help="Swarm YAML config (see docs/swarm.md)."),
        overrides: list[str] | None = typer.Argument(None, help="key=value overrides, dotted keys allowed."),
        out: Path | None = typer.Option(None, "--out", help="Run folder (must not hold a run yet)."),
        resume: Path | None = typer.Option(None, "--resume", help="Continue the run in this folder."),
        ray: str | None = typer.Option(None, "--ray", help="Evaluate on Ray: 'local' or a cluster address."),
        workers: int = typer.Option(1, "--workers", min=1, help="Ray actors (each holds one base model)."),
        baseline: str | None = typer.Option(None, "--baseline", help="Run a baseline instead (--list-baselines)."),
        allow_test: bool = typer.Option(False, "--allow-test-set-in-search",
                                        help="Allow a utility on the test split during search (tuning on test!)."),
        list_utilities: bool = typer.Option(False, "--list-utilities", help="List utility functions and exit."),
        list_baselines: bool = typer.Option(False, "--list-baselines", help="List baselines and exit."),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="Only print the final line."),
    ) -> None:
        if list_utilities or list_baselines:
            _list(list_utilities)
            return
        from tutti.config.swarm import load_swarm_config

        ov = list(overrides or [])
        if allow_test:
            ov.append("allow_test_set_in_search=true")
        if resume is not None:
            if config is not None:
                if "=" not in str(config):
                    raise TuttiError("give either CONFIG --out DIR or --resume DIR, not both")
                ov.insert(0, str(config))  # `tutti swarm --resume DIR key=value`
            cfg_path = resume / "config.yaml"
            if not cfg_path.is_file():
                raise TuttiError(f"{resume}: no config.yaml; is this a tutti swarm run folder?")
            cfg = load_swarm_config(cfg_path, ov)
            run_dir = resume
        else:
            if config is None:
                raise TuttiError("give a swarm config: tutti swarm CONFIG.yaml --out RUN_DIR")
            if out is None:
                raise TuttiError("give --out RUN_DIR for the run's outputs")
            cfg = load_swarm_config(config, ov)
            run_dir = out
        say = (lambda _m: None) if quiet else (lambda m: typer.echo(m, err=True))
        if baseline:
            from tutti.swarm.baselines import run_baseline

            res = run_baseline(baseline, cfg, run_dir, log=say)
            typer.echo(f"{baseline}: dev {res['dev']:.4f}" + (f", test {res['test']:.4f}" if res.get("test") is not None else "")
                       + f" -> {res['path']}")
            return
        from tutti.swarm.run import search

        r = search(cfg, run_dir, resume=resume is not None, ray=ray, workers=workers, log=say, progress=not quiet)
        test = f", test {r.best_test:.4f} (best expert {r.initial_best_test:.4f})" if r.best_test is not None else ""
        typer.echo(f"best dev {r.best_dev:.4f} (best expert {r.initial_best_dev:.4f}){test}; "
                   f"{r.iterations} iterations, {r.evaluations} evaluations ({r.stop_reason}) -> {r.best_path}")


def _list(utilities: bool) -> None:
    if utilities:
        from tutti.evaluation.utilities import UTILITIES as reg
    else:
        from tutti.swarm.baselines import BASELINES as reg  # type: ignore[assignment]
    for e in reg.entries():
        typer.echo(f"{e.name:18s} {e.pretty_name}: {e.description}")
