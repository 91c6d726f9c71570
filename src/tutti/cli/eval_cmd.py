"""``tutti eval``: Evaluate a model or composite on a task."""

from __future__ import annotations

import typer

from tutti.errors import TuttiError


def register(app: typer.Typer) -> None:
    """Add the ``eval`` subcommand."""

    @app.command("eval", help="Evaluate a model or composite on a task. (Not available yet.)")
    def _cmd() -> None:
        raise TuttiError("'tutti eval' is not available in this version yet")
