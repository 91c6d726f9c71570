"""Agreement of the ``forced_match`` dev utility with generation + exact match, and the cost of each.

Scores zoo experts (SmolLM2-135M-Instruct + one LoRA each, loaded into one resident model) on the first ``--n``
dev examples of zoo tasks with both utilities, under the results table's settings (chat prompt, greedy,
``max_new_tokens`` 8, stop at ``"\\n"``), and prints per (expert, task): both accuracies, the per-example
agreement, the lower-bound violations (forced 1 but generation wrong; must be 0) and the seconds of each.

    OMP_NUM_THREADS=1 python scripts/forced_agreement.py --experts arithmetic,logic,weekday \\
        --tasks arithmetic,logic,weekday --n 200
"""

from __future__ import annotations

import argparse
import json
import time

import torch


def main() -> None:
    from tutti.config.swarm import UtilityConfig
    from tutti.evaluation.utilities import build_utility
    from tutti.models.hf import HFModel
    from tutti.models.zoo import resolve_model
    from tutti.zoo import expert_path
    from tutti.zoo.evaluate import ExpertSwitcher
    from tutti.zoo.tasks import DATA_ROOT

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--experts", default="arithmetic,logic,weekday", help="comma list; 'base' for no expert")
    ap.add_argument("--tasks", default="arithmetic,logic,weekday")
    ap.add_argument("--n", type=int, default=200, help="dev examples per task")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = HFModel.load(resolve_model("smollm2-135m-instruct"), batch_size=args.batch_size)
    opts = {"max_new_tokens": 8, "chat": True, "batch_size": args.batch_size}
    switcher = ExpertSwitcher(model)
    rows = []
    for task in args.tasks.split(","):
        us = {k: build_utility(UtilityConfig(name=k, task=str(DATA_ROOT / task), split="dev", limit=args.n,
                                             options=opts)) for k in ("exact_match", "forced_match")}
        for ex in args.experts.split(","):
            switcher.use(None if ex == "base" else expert_path(ex))
            out = {}
            for k, u in us.items():
                t0 = time.perf_counter()
                out[k] = (u(model), time.perf_counter() - t0)
            (g, tg), (f, tf) = out["exact_match"], out["forced_match"]
            agree = sum(a == b for a, b in zip(g.scores, f.scores, strict=True)) / len(g.scores)
            bad = sum(b == 1 and a == 0 for a, b in zip(g.scores, f.scores, strict=True))
            row = {"expert": ex, "task": task, "n": len(g.scores), "generate": round(g.value, 4),
                   "forced": round(f.value, 4), "agreement": round(agree, 4), "violations": bad,
                   "generate_s": round(tg, 1), "forced_s": round(tf, 1)}
            print(json.dumps(row), flush=True)
            rows.append(row)
    switcher.use(None)


if __name__ == "__main__":
    main()
