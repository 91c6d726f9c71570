"""``tutti merge``: Merge checkpoints in weight space (mergekit YAML, unchanged)."""

from __future__ import annotations

import typer

from tutti.errors import TuttiError


def register(app: typer.Typer) -> None:
    """Add the ``merge`` subcommand."""

    @app.command("merge", help="Merge checkpoints in weight space (mergekit YAML, unchanged). (Not available yet.)")
    def _cmd() -> None:
        raise TuttiError("'tutti merge' is not available in this version yet")
