"""``tutti eval``: evaluate models or composites on a task, write predictions, a summary and the correctness matrix."""

from __future__ import annotations

from pathlib import Path

import typer

from tutti.errors import TuttiError

HELP = """Evaluate one or more models or composites on a task split.

MODELS are zoo names, folders, hub ids or composite YAML files (router, cascade, vote, mbr, fusion, ensemble...).
TASK is a zoo task name (tutti.zoo), a folder with dev.jsonl/test.jsonl, or one .jsonl file. Writes, per model,
OUT/<model>/predictions.jsonl and summary.json (accuracy, tokens generated, model calls, wall time), and
OUT/matrix.jsonl: the prompts x models correctness matrix that routers train on.

Honest baseline: --compute-matched MEMBER also evaluates MEMBER's self-consistency (a vote over its own samples,
temperature 0.7) with as many samples as each composite spends model calls per example, so a composite that
calls members k times is shown beside one model given the same k calls.

Example: tutti eval smollm2-135m-instruct router.yaml --task arithmetic --split dev --limit 50 --out runs/arith
"""


def _parse_options(items: list[str]) -> dict[str, object]:
    import yaml

    out: dict[str, object] = {}
    for it in items:
        key, sep, value = it.partition("=")
        if not sep or not key:
            raise TuttiError(f"--option {it!r}: use key=value (value is read as YAML, e.g. max_new_tokens=64)")
        out[key] = yaml.safe_load(value)
    return out


def compute_matched_config(member: str, samples: int, *, temperature: float = 0.7, extract: str = "answer"
                           ) -> dict[str, object]:
    """The ``vote`` composite that spends ``samples`` calls of one model per prompt (self-consistency)."""
    return {"strategy": "vote", "members": [member],
            "options": {"samples": samples, "temperature": temperature, "extract": extract}}


def register(app: typer.Typer) -> None:
    """Add the ``eval`` subcommand."""

    @app.command("eval", help=HELP)
    def _cmd(
        models: list[str] = typer.Argument(..., help="Models or composite YAML files to evaluate."),
        task: str = typer.Option(..., "--task", "-t", help="Zoo task name, task folder or .jsonl file."),
        split: str = typer.Option("dev", "--split", help="dev | test | train."),
        utility: str = typer.Option(None, "--utility", "-u",
                                    help="Utility (default: mc_loglik for multiple choice, else exact_match)."),
        limit: int = typer.Option(None, "--limit", min=1, help="Only the first N examples."),
        out: Path = typer.Option(None, "--out", "-o", help="Output folder (default runs/eval/<task>-<split>)."),
        batch_size: int = typer.Option(16, "--batch-size", min=1, help="Prompts per model call."),
        max_new_tokens: int = typer.Option(None, "--max-new-tokens", min=1, help="Generation length (default 32)."),
        chat: bool = typer.Option(True, "--chat/--no-chat", help="Send inputs as a user message (chat template)."),
        option: list[str] = typer.Option([], "--option", help="Utility option key=value (repeatable)."),
        progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars."),
        compute_matched: str = typer.Option(None, "--compute-matched", help="A model: also evaluate its "
                                            "self-consistency with as many samples as each composite's model calls "
                                            "per example (the same compute spent on one model)."),
        extract: str = typer.Option("answer", "--extract", help="Answer extractor of the --compute-matched vote "
                                    "(answer | number | choice | exact)."),
    ) -> None:
        from rich.console import Console
        from rich.table import Table

        from tutti.evaluation.harness import evaluate_many, slug
        from tutti.models.zoo import resolve_model  # noqa: F401  (all model arguments resolve through the zoo)

        if split not in ("train", "dev", "test"):
            raise TuttiError(f"--split {split!r}: use dev, test or train")
        opts = {"chat": chat, **_parse_options(option)}
        if max_new_tokens is not None:
            opts["max_new_tokens"] = max_new_tokens
        import tutti.collab

        loaded = [tutti.collab.load_member(m) for m in models]
        names = [Path(m).stem if m.endswith((".yaml", ".yml")) else m for m in models]
        if len(set(names)) != len(names):
            names = [f"{i}:{n}" for i, n in enumerate(names)]
        dest = out or Path("runs") / "eval" / f"{slug(Path(task).stem)}-{split}"
        results, _ = evaluate_many(loaded, task, out_dir=dest, names=names, split=split, utility=utility,
                                   options=opts, limit=limit, batch_size=batch_size, progress=progress)
        if compute_matched is not None:
            from tutti.evaluation.harness import evaluate

            for n, r in list(zip(names, results, strict=True)):
                k = round(r.model_calls / max(r.examples, 1))
                if k <= 1:
                    continue
                sc_name = f"self-consistency x{k} of {Path(compute_matched).name} (matches {n})"
                vote = tutti.collab.load(compute_matched_config(compute_matched, k, extract=extract))
                names.append(sc_name)
                results.append(evaluate(vote, task, out_dir=dest / slug(sc_name), split=split, utility=utility,
                                        options=opts, limit=limit, batch_size=batch_size, progress=progress))
        table = Table(title=f"{task} ({split})")
        for col in ("model", "utility", "accuracy", "examples", "tokens", "calls", "seconds"):
            table.add_column(col)
        for n, r in zip(names, results, strict=True):
            table.add_row(n, r.utility, f"{r.accuracy:.4f}", str(r.examples), f"{r.generated_tokens:.0f}",
                          f"{r.model_calls:.0f}", f"{r.wall_seconds:.1f}")
        console = Console()
        console.print(table)
        console.print(f"wrote {dest}/<model>/predictions.jsonl, summary.json and {dest}/matrix.jsonl")
