"""``tutti merge``: merge checkpoints in weight space from a mergekit YAML (unchanged)."""

from __future__ import annotations

from pathlib import Path

import typer

from tutti.cli import request_fast_exit
from tutti.errors import ConfigError

HELP = """Merge checkpoints in weight space from a mergekit 0.1.5 YAML, unchanged.

Runs any mergekit config (models / slices, base_model, parameters with gradients and filters, dtype, out_dtype,
tokenizer_source / tokenizer (base, union or a model; different vocabularies are aligned), chat_template,
model+lora) tensor by tensor with bounded memory, and writes OUT_DIR atomically.
Use --list to see every method and its parameters, --dry-run to check a config and print the plan.
"""


def _list_methods() -> None:
    from rich.console import Console
    from rich.table import Table

    from tutti.merging.base import MERGE_METHODS, get_method

    get_method("linear")  # load every method module
    table = Table("method", "name", "base", "global parameters", "per-model parameters", "random")
    for e in MERGE_METHODS.entries():
        m = e.obj

        def fmt(per_model: bool, m=m) -> str:
            return ", ".join(f"{p.name}" + ("" if p.required else f"={p.default}")
                             for p in m.params.values() if p.per_model == per_model)

        table.add_row(e.name, e.pretty_name, m.base, fmt(False), fmt(True), "yes" if m.randomized else "")
    Console(width=160).print(table)


def register(app: typer.Typer) -> None:
    """Add the ``merge`` subcommand."""

    @app.command("merge", help=HELP, no_args_is_help=True)
    def merge_cmd(
        config: Path = typer.Argument(None, help="mergekit-style YAML config.", show_default=False),
        out_dir: Path = typer.Argument(None, help="Output folder (written atomically).", show_default=False),
        device: str = typer.Option("cpu", "--device", help="Compute device: cpu or cuda."),
        cuda: bool = typer.Option(False, "--cuda", help="Same as --device cuda (mergekit flag)."),
        out_shard_size: str = typer.Option("5G", "--out-shard-size", help="Max shard size in bytes (K/M/G/B "
                                           "suffixes; 5B means 5 GB as in mergekit)."),
        copy_tokenizer: bool = typer.Option(True, "--copy-tokenizer/--no-copy-tokenizer",
                                            help="Copy the base (or first) model's tokenizer files."),
        random_seed: int = typer.Option(None, "--random-seed", help="Global seed of randomised methods "
                                        "(DARE, DELLA); default 0."),
        allow_pickle: bool = typer.Option(False, "--allow-pickle", help="Read pytorch_model*.bin (pickle) inputs; "
                                          "unpickling untrusted files can run code."),
        dry_run: bool = typer.Option(False, "--dry-run", help="Check the config and print the plan (tensors, "
                                     "bytes read/written, estimated peak memory); write nothing."),
        threads: int = typer.Option(None, "--threads", "-j", help="Torch compute threads."),
        engine: str = typer.Option("auto", "--engine", help="auto: float32 CPU merges of methods with a NumPy "
                                   "kernel (dare_*, della*, task_arithmetic, passthrough) run without torch (same "
                                   "bits, faster start); torch: always torch; numpy: fail with the reason if it "
                                   "cannot. --dry-run names the engine."),
        max_memory: str = typer.Option("1G", "--max-memory", help="Budget for tensors in flight (read-ahead, "
                                       "compute, write queue)."),
        unsafe_truncate: bool = typer.Option(False, "--unsafe-truncate-embeddings", help="Cut embeddings of "
                                             "different vocab sizes to their common rows instead of failing."),
        write_model_card: bool = typer.Option(True, "--write-model-card/--no-write-model-card",
                                              help="Write README.md and mergekit_config.yml."),
        lazy_unpickle: bool = typer.Option(False, "--lazy-unpickle", help="Accepted for mergekit compatibility "
                                           "(inputs are always read lazily)."),
        progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
        list_methods: bool = typer.Option(False, "--list", help="List merge methods and their parameters."),
    ) -> None:
        if list_methods:
            _list_methods()
            return
        del lazy_unpickle
        if config is None:
            raise ConfigError("give a config file: tutti merge CONFIG.yaml OUT_DIR")
        from tutti.merging.run import merge, plan_summary

        if dry_run:
            summary = plan_summary(config, allow_pickle=allow_pickle, max_memory=max_memory,
                                   unsafe_truncate_embeddings=unsafe_truncate,
                                   device="cuda" if cuda else device, engine=engine)
            print("\n".join(summary.lines()))
            return
        if out_dir is None:
            raise ConfigError("give an output folder: tutti merge CONFIG.yaml OUT_DIR")
        out = merge(config, out_dir, device="cuda" if cuda else device, out_shard_size=_size(out_shard_size),
                    copy_tokenizer=copy_tokenizer, random_seed=random_seed, allow_pickle=allow_pickle,
                    threads=threads, max_memory=max_memory, unsafe_truncate_embeddings=unsafe_truncate,
                    write_model_card=write_model_card, progress=progress, engine=engine)
        print(out)
        request_fast_exit()  # the output is published: skip the interpreter's half-second torch teardown


def _size(text: str) -> str | int:
    """mergekit writes billions as ``B`` (``5B`` = 5e9 bytes); tutti's parser takes K/M/G."""
    t = text.strip()
    if t[-1:] in ("B", "b") and t[:-1].replace(".", "", 1).isdigit():
        return int(float(t[:-1]) * 1e9)
    return t
