#!/usr/bin/env python
"""Build the expert zoo: task data, LoRA experts, and the expert-by-task accuracy matrix (fixed seeds).

    python scripts/build_zoo.py data                          # every task's JSONL splits (seed 0), ~5 s
    python scripts/build_zoo.py train                         # one LoRA expert per trained task
    python scripts/build_zoo.py train --task arithmetic --task logic
    python scripts/build_zoo.py matrix --n 24                 # expert x task greedy accuracy -> JSON

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
    from tutti.zoo.tasks import TASKS, expert_path, load_task, trained_tasks

    torch.set_num_threads(args.threads)
    model = HFModel.load(args.base, batch_size=args.batch_size)
    experts: dict[str, Path | None] = {"base": None}
    names = args.expert or ["base", *trained_tasks()]
    for e in names:
        if e != "base":
            experts[e] = expert_path(e)
    if "base" not in names:
        experts.pop("base")
    tasks = {t: load_task(t, "test")[: args.n] for t in (args.task or TASKS.names())}
    t0 = time.perf_counter()
    result = expert_task_matrix(model, experts, tasks, on_cell=lambda e, t, a: print(
        f"{e:>16} on {t:<22} {a:.3f} ({time.perf_counter() - t0:.0f}s)", flush=True))
    out = Path(args.out)
    out.write_text(json.dumps({"n_per_task": args.n, "split": "test", "accuracy": result}, indent=1) + "\n")
    print(f"wrote {out}", flush=True)


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
    m.add_argument("--out", default="zoo_matrix.json")
    args = p.parse_args(argv)
    from tutti.errors import TuttiError

    try:
        {"data": cmd_data, "train": cmd_train, "matrix": cmd_matrix}[args.stage](args)
    except TuttiError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
