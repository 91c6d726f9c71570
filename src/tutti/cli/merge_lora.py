"""``tutti merge-lora``: merge PEFT LoRA adapters into one adapter, exactly or factor by factor."""

from __future__ import annotations

import typer

from tutti.errors import TuttiError

_HELP = """Merge PEFT LoRA adapters of one base model into one PEFT adapter folder.

--method exact (default): the weighted sum of the adapters' updates (sum of w_i * B_i A_i * scale_i), written
as one adapter of concatenated rank; --rank R re-compresses it by a truncated SVD and prints the error.
--method factors: A and B averaged separately with the weights (Model Swarms, peft 'linear'); this adds cross
terms B_i A_j, so it is not the sum of the updates. Output loads with peft's PeftModel.from_pretrained.
"""


def _weights(text: str | None, n: int) -> list[float] | None:
    if text is None:
        return None
    try:
        values = [float(x) for x in text.replace(" ", "").split(",") if x]
    except ValueError:
        raise TuttiError(f"--weights {text!r}: give comma-separated numbers, e.g. 0.5,0.5") from None
    if len(values) != n:
        raise TuttiError(f"--weights has {len(values)} values for {n} adapters; give one per adapter")
    return values


def register(app: typer.Typer) -> None:
    """Add the ``merge-lora`` subcommand."""

    @app.command("merge-lora", help=_HELP)
    def merge_lora(
        adapters: list[str] = typer.Argument(..., help="PEFT LoRA adapter folders (adapter_config.json inside)."),
        out: str = typer.Option(..., "--out", "-o", help="Output adapter folder (written atomically)."),
        method: str = typer.Option("exact", "--method", help="exact | factors."),
        weights: str | None = typer.Option(
            None, "--weights", help="Comma-separated weight per adapter (default: 1 each for exact, 1/n for factors)."
        ),
        rank: int | None = typer.Option(None, "--rank", help="exact only: re-compress every module to this rank."),
    ) -> None:
        from tutti.merging.lora_merge import LORA_MERGES
        from tutti.models.lora import load_lora, save_lora
        from tutti.models.zoo import resolve_model

        fn = LORA_MERGES.get(method)
        if rank is not None and method != "exact":
            raise TuttiError("--rank applies to --method exact only")
        loaded = [load_lora(resolve_model(a, fetch_zoo=False)) for a in adapters]
        w = _weights(weights, len(loaded))
        result = fn(loaded, w, rank=rank) if method == "exact" else fn(loaded, w)
        readme = (f"# Merged LoRA adapter\n\nMerged by `tutti merge-lora --method {method}` from:\n\n"
                  + "".join(f"- `{a}`\n" for a in adapters)
                  + f"\nweights: {w if w is not None else 'default'}; rank: {rank or 'exact'}\n")
        path = save_lora(result.adapter, out, readme=readme)
        ranks = sorted({int(p.A.shape[0]) for p in result.adapter.pairs().values()})
        print(f"wrote {path} ({len(result.adapter.pairs())} modules, rank {', '.join(map(str, ranks))})")
        if result.errors:
            mean = sum(result.errors.values()) / len(result.errors)
            print(f"re-compression to rank {rank}: relative Frobenius error max {result.max_error:.3e}, "
                  f"mean {mean:.3e} over {len(result.errors)} truncated modules")
