"""``tutti demo``: the README's main job, on the embedded default model, fully offline."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    """Add ``tutti demo``."""

    @app.command("demo")
    def demo(
        out: Path = typer.Option(Path("runs/demo"), "--out", help="Where the demo writes its outputs."),
        quick: bool = typer.Option(False, "--quick", help="A smaller setting (used by the tests)."),
    ) -> None:
        """Run the end-to-end demo on SmolLM2-135M-Instruct from the offline zoo."""
        from tutti.recipes.demo import run_demo

        run_demo(out, quick=quick)
