"""``tutti swarm``: Adapt a pool of experts to a utility function by Model Swarms search."""

from __future__ import annotations

import typer

from tutti.errors import TuttiError


def register(app: typer.Typer) -> None:
    """Add the ``swarm`` subcommand."""

    @app.command("swarm", help="Adapt a pool of experts to a utility function by Model Swarms search. (Not available yet.)")
    def _cmd() -> None:
        raise TuttiError("'tutti swarm' is not available in this version yet")
