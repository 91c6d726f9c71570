"""``tutti bench models``: GGUF -> safetensors conversion time and load times of the offline zoo models.

The peer is what a user does without tutti: load the GGUF file with transformers every time (dequantising on
each load). tutti converts once and then loads the safetensors cache. Runs are interleaved and the median kept.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import typer


def _timed(fn: object) -> float:
    t0 = time.perf_counter()
    fn()  # type: ignore[operator]
    return time.perf_counter() - t0


def register(bench_app: typer.Typer) -> None:
    """Add ``tutti bench models``."""

    @bench_app.command("models")
    def bench_models(
        models: list[str] = typer.Option(["smollm2-135m-instruct"], "--model", help="Zoo models (repeatable)."),
        repeats: int = typer.Option(3, help="Interleaved repetitions of each load (median reported)."),
        out: Path = typer.Option(Path("docs/benchmarks.md"), help="Markdown file to update."),
    ) -> None:
        """Measure GGUF conversion and GGUF-vs-safetensors load times; write them to docs/benchmarks.md."""
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from tutti.models.zoo import ZOO, fetch, materialize_gguf, package_dir
        from tutti.recipes.report import machine_line, md_table, write_section

        rows = []
        for name in models:
            entry = ZOO.get(name)
            cached = fetch(name)
            gguf = entry.locate() if entry.locate else package_dir(entry) / entry.file  # type: ignore[operator]
            with tempfile.TemporaryDirectory() as tmp:
                convert = _timed(lambda g=gguf, t=tmp: materialize_gguf(g, Path(t) / "m", verify=False))

            def load_gguf(g: Path = gguf) -> None:
                AutoTokenizer.from_pretrained(g.parent, gguf_file=g.name)
                AutoModelForCausalLM.from_pretrained(g.parent, gguf_file=g.name, dtype=torch.float32)

            def load_st(c: Path = cached) -> None:
                AutoTokenizer.from_pretrained(c)
                AutoModelForCausalLM.from_pretrained(c, dtype=torch.float32)

            g_times, s_times = [], []
            for _ in range(repeats):
                g_times.append(_timed(load_gguf))
                s_times.append(_timed(load_st))
            import statistics  # imported here: its decimal module costs ~0.1-0.2 s of every tutti command

            g, s = statistics.median(g_times), statistics.median(s_times)
            rows.append([name, f"{convert:.1f}", f"{g:.1f}", f"{s:.2f}", f"{g / s:.0f}x"])
            print(f"{name}: convert {convert:.1f} s, GGUF load {g:.1f} s, safetensors load {s:.2f} s")
        md = "\n".join([
            "## Offline zoo: GGUF conversion and load time",
            "",
            "Command: `tutti bench models` (medians of interleaved loads, tokenizer + model, fp32).",
            f"Machine: {machine_line()}.",
            "",
            md_table(["model", "one-time conversion (s)", "load from GGUF (s), the peer", "load from tutti's "
                      "safetensors cache (s)", "speed-up"], rows),
        ])
        write_section(out, "models", md)
