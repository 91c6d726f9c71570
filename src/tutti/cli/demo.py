"""``tutti demo``: the README's main job, on the embedded default model, fully offline."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    """Add ``tutti demo``."""

    @app.command("demo")
    def demo(
        out: Path = typer.Option(Path("runs/demo"), "--out", help="Run folder (replaced on each run)."),
        quick: bool = typer.Option(False, "--quick", help="A much smaller setting (used by the tests)."),
        target: str | None = typer.Option(None, help="Zoo task to adapt to (default: logic)."),
        basics: bool = typer.Option(False, "--basics", help="Run the model-layer tour instead: fetch, generate, "
                                    "score, merge, reload."),
    ) -> None:
        """Model Swarms on SmolLM2-135M-Instruct with the committed LoRA experts: baselines vs swarm, dev and test."""
        if basics:
            from tutti.recipes.demo import run_demo

            run_demo(out, quick=quick)
            return
        from dataclasses import replace

        from tutti.recipes.swarm_demo import QUICK, DemoSettings, run_swarm_demo

        settings = QUICK if quick else DemoSettings()
        if target:
            settings = replace(settings, target=target)
        run_swarm_demo(out, settings=settings)
