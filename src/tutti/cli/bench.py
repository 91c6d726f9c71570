"""``tutti bench``: benchmarks against named peers, written to ``docs/benchmarks.md``.

Each area adds its benchmark in a module ``tutti.cli.bench_<area>`` with ``register(bench_app)``.
"""

from __future__ import annotations

import importlib
import importlib.util

import typer

bench_app = typer.Typer(help="Measure tutti against its peers and write the figures to docs/benchmarks.md.",
                        no_args_is_help=True)
BENCH_MODULES = ("models", "merge", "swarm", "decode", "serve", "collab")


def register(app: typer.Typer) -> None:
    """Add ``tutti bench`` and every available ``bench <area>`` subcommand."""
    for area in BENCH_MODULES:
        name = f"tutti.cli.bench_{area}"
        if importlib.util.find_spec(name) is not None:
            importlib.import_module(name).register(bench_app)
    app.add_typer(bench_app, name="bench")
