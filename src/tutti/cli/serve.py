"""``tutti serve``: Serve models and composites behind an OpenAI-compatible API."""

from __future__ import annotations

import typer

from tutti.errors import TuttiError


def register(app: typer.Typer) -> None:
    """Add the ``serve`` subcommand."""

    @app.command("serve", help="Serve models and composites behind an OpenAI-compatible API. (Not available yet.)")
    def _cmd() -> None:
        raise TuttiError("'tutti serve' is not available in this version yet")
