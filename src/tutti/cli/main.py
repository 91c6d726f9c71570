"""Entry point of the ``tutti`` command.

Each subcommand lives in its own module with a ``register(app)`` function and imports heavy libraries only when
it runs, so ``tutti --help`` is fast. User errors (:class:`tutti.errors.TuttiError`) print one line and exit
with code 2; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import gc
import importlib
import os
import sys

import click
import typer

from tutti.cli import fast_exit_requested
from tutti.errors import TuttiError

app = typer.Typer(
    name="tutti",
    help="Make several language models work as one: merge, swarm, ensemble and cooperate.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

# (module, what it adds); each module has register(app)
SUBCOMMANDS = (
    "tutti.cli.merge",
    "tutti.cli.merge_lora",
    "tutti.cli.swarm",
    "tutti.cli.eval_cmd",
    "tutti.cli.generate",
    "tutti.cli.serve",
    "tutti.cli.models",
    "tutti.cli.bench",
    "tutti.cli.demo",
)


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks instead of one-line errors."),
) -> None:
    """Make several language models work as one: merge, swarm, ensemble and cooperate."""
    if debug:
        os.environ["TUTTI_DEBUG"] = "1"


for _mod in SUBCOMMANDS:
    importlib.import_module(_mod).register(app)


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; exit 2 with a one-line message on user errors."""
    args = list(sys.argv[1:] if argv is None else argv)
    if argv is None:  # a command's imports (torch: ~100k objects) trigger hundreds of cyclic-GC passes at the
        gc.set_threshold(100_000, 50, 100)  # default thresholds, ~15% of `import torch` here; rarer passes
    debug = "--debug" in args or os.environ.get("TUTTI_DEBUG") == "1"
    try:
        app(args=args, prog_name="tutti", standalone_mode=False)
        if argv is None and fast_exit_requested():
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(0)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except (click.exceptions.Abort, KeyboardInterrupt):
        print("tutti: interrupted", file=sys.stderr)
        sys.exit(130)
    except TuttiError as e:
        if debug:
            raise
        print(f"tutti: error: {e}", file=sys.stderr)
        sys.exit(e.exit_code)


if __name__ == "__main__":
    main()
