#!/usr/bin/env python
"""Build the expert zoo: task data, LoRA experts, and the expert-by-task accuracy matrix (fixed seeds).

    python scripts/build_zoo.py data                          # every task's JSONL splits (seed 0), ~5 s
    python scripts/build_zoo.py train                         # one LoRA expert per trained task
    python scripts/build_zoo.py train --task arithmetic --task logic
    python scripts/build_zoo.py matrix --n 24                 # expert x task greedy accuracy -> JSON + doc
    python scripts/build_zoo.py report a.json b.json          # merge matrix runs that split the rows

Everything runs on CPU with one thread per process (faster than two on a shared 2-core machine); run two
``train`` processes with disjoint ``--task`` lists to use both cores.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def cmd_data(args: argparse.Namespace) -> None:
    from tutti.zoo.tasks import TASKS, write_task

    for name in args.task or TASKS.names():
        paths = write_task(name, Path(args.root) if args.root else None, seed=args.seed)
        print(name, {s: str(p) for s, p in paths.items()}, flush=True)


def cmd_train(args: argparse.Namespace) -> None:
    import torch

    from tutti.models.zoo import resolve_model
    from tutti.zoo.tasks import EXPERTS_ROOT, load_task, trained_tasks
    from tutti.zoo.train import ExpertTrainConfig, train_expert

    torch.set_num_threads(args.threads)
    base = resolve_model(args.base)
    cfg = ExpertTrainConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr, warmup=args.warmup,
                            seed=args.seed)
    for name in args.task or trained_tasks():
        out = EXPERTS_ROOT / name
        print(f"[{name}] training {cfg.model_dump()}", flush=True)
        summary = train_expert(base, load_task(name, "train"), out, cfg=cfg,
                               log=lambda m, n=name: print(f"[{n}] {m}", flush=True))
        summary["config"] = cfg.model_dump(mode="json")
        (out / "training.json").write_text(json.dumps(summary, indent=1) + "\n")
        print(f"[{name}] done {summary}", flush=True)


def cmd_matrix(args: argparse.Namespace) -> None:
    import torch

    from tutti.models.hf import HFModel
    from tutti.zoo.evaluate import expert_task_matrix
    from tutti.zoo.tasks import EXPERTS_ROOT, TASKS, expert_path, load_task, trained_tasks

    torch.set_num_threads(args.threads)
    model = HFModel.load(args.base, batch_size=args.batch_size)
    names = args.expert or ["base", *trained_tasks()]
    experts: dict[str, Path | None] = {}
    for e in names:
        # with --wait, experts still training are picked up when the matrix reaches their row
        experts[e] = None if e == "base" else (EXPERTS_ROOT / e if args.wait else expert_path(e))
    tasks = {t: load_task(t, "test")[: args.n] for t in (args.task or TASKS.names())}
    t0 = time.perf_counter()
    result: dict[str, dict[str, float]] = {}
    out = Path(args.out)
    command = "python scripts/build_zoo.py " + " ".join(sys.argv[1:])
    for name, path in experts.items():
        while args.wait and path is not None and not (path / "training.json").is_file():
            time.sleep(20)  # the expert's training run has not finished yet
        cols = {name: tasks[name]} if args.diagonal and name in tasks else tasks
        result.update(expert_task_matrix(model, {name: path}, cols, on_cell=lambda e, t, a: print(
            f"{e:>16} on {t:<22} {a:.3f} ({time.perf_counter() - t0:.0f}s)", flush=True)))
        # written after every row, so an interrupted run keeps what it measured
        out.write_text(json.dumps({"n_per_task": args.n, "split": "test", "metric": "greedy exact match",
                                   "command": command, "seconds": round(time.perf_counter() - t0),
                                   "accuracy": result}, indent=1) + "\n")
        if args.doc:
            write_matrix_doc(out, Path(args.doc))
    print(f"wrote {out}", flush=True)


def cmd_report(args: argparse.Namespace) -> None:
    """Merge matrix JSONs from parallel ``matrix`` runs (rows split between processes) and render the doc."""
    merged: dict = {"accuracy": {}, "commands": [], "seconds": 0}
    for part in args.parts:
        data = json.loads(Path(part).read_text())
        for key in ("n_per_task", "split", "metric"):
            if merged.setdefault(key, data[key]) != data[key]:
                raise SystemExit(f"{part}: {key} {data[key]!r} differs from {merged[key]!r}")
        merged["accuracy"].update(data["accuracy"])
        merged["commands"].append(data.get("command", ""))
        merged["seconds"] = max(merged["seconds"], data["seconds"])
    merged["command"] = " ; ".join(c for c in merged.pop("commands") if c)
    out = Path(args.out)
    out.write_text(json.dumps(merged, indent=1) + "\n")
    print(f"wrote {out}", flush=True)
    if args.doc:
        write_matrix_doc(out, Path(args.doc))


def write_matrix_doc(matrix_json: Path, doc: Path) -> None:
    """Render the matrix JSON as the ``zoo-matrix`` section of ``doc`` (the command and machine included)."""
    from tutti.recipes.report import machine_line, md_table, write_section

    data = json.loads(matrix_json.read_text())
    acc = data["accuracy"]
    tasks = list(dict.fromkeys(t for cells in acc.values() for t in cells))
    rows = []
    for expert, cells in acc.items():  # "—": a cell the run did not measure
        rows.append([f"**{expert}**", *(f"{100 * cells[t]:.0f}" if t in cells else "—" for t in tasks)])
    best = ["best expert"]
    for t in tasks:
        measured = [e for e in acc if e != "base" and t in acc[e]]
        top = max(measured, key=lambda e, t=t: acc[e][t]) if measured else None
        best.append(top if top and acc[top][t] > 0 else "—")  # no expert scores: no best
    md = (f"Accuracy (%) of each expert (rows) on the first {data['n_per_task']} test examples of each task "
          f"(columns), {data['metric']}, {data['seconds']} s.\n\nCommand: `{data['command']}`  \n"
          f"Machine: {machine_line()}\n\n" + md_table(["expert \\ task", *tasks], [*rows, best]))
    write_section(doc, "zoo-matrix", md)
    print(f"wrote the matrix into {doc}", flush=True)


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run one stage."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="stage", required=True)
    d = sub.add_parser("data", help="generate every task's splits")
    d.add_argument("--task", action="append")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--root", help="write under this folder instead of the package data")
    t = sub.add_parser("train", help="train LoRA experts")
    t.add_argument("--task", action="append")
    t.add_argument("--base", default="smollm2-135m-instruct")
    t.add_argument("--steps", type=int, default=20)
    t.add_argument("--batch-size", type=int, default=4)
    t.add_argument("--lr", type=float, default=2e-3)
    t.add_argument("--warmup", type=int, default=3)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--threads", type=int, default=1)
    m = sub.add_parser("matrix", help="expert-by-task accuracy on the first N test rows")
    m.add_argument("--task", action="append")
    m.add_argument("--expert", action="append")
    m.add_argument("--base", default="smollm2-135m-instruct")
    m.add_argument("--n", type=int, default=24)
    m.add_argument("--batch-size", type=int, default=8)
    m.add_argument("--threads", type=int, default=1)
    m.add_argument("--diagonal", action="store_true", help="each expert on its own task only (base: all tasks)")
    m.add_argument("--wait", action="store_true", help="wait for experts whose training has not finished")
    m.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "src/tutti/zoo/experts/matrix.json"))
    m.add_argument("--doc", default=str(Path(__file__).resolve().parents[1] / "docs/zoo.md"),
                   help="markdown file whose zoo-matrix section gets the table ('' to skip)")
    r = sub.add_parser("report", help="merge matrix JSONs of parallel runs and write the doc table")
    r.add_argument("parts", nargs="+")
    r.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "src/tutti/zoo/experts/matrix.json"))
    r.add_argument("--doc", default=str(Path(__file__).resolve().parents[1] / "docs/zoo.md"))
    args = p.parse_args(argv)
    from tutti.errors import TuttiError

    try:
        {"data": cmd_data, "train": cmd_train, "matrix": cmd_matrix, "report": cmd_report}[args.stage](args)
    except TuttiError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
