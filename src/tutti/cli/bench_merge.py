"""``tutti bench merge``: mergekit-yaml vs tutti merge on the same YAMLs (wall time, peak RSS, I/O floor)."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import typer

from tutti.errors import ConfigError


def register(bench_app: typer.Typer) -> None:
    """Add ``tutti bench merge``."""

    @bench_app.command("merge")
    def bench_merge(
        cases: list[str] = typer.Option(["a"], "--case", help="a: SmolLM2-135M + 2 perturbed copies; "
                                        "b: 3 random 1.1B LLaMAs in fp32 (~13 GB of inputs). Repeatable."),
        methods: list[str] = typer.Option([], "--method", help="Methods to run (repeatable; default: all 20 "
                                          "for case a, linear and ties for case b)."),
        repeats: int = typer.Option(3, help="Interleaved repetitions (median reported)."),
        work_dir: Path = typer.Option(Path.home() / ".cache" / "tutti" / "bench-merge",
                                      help="Where inputs are generated (kept for reuse) and outputs written."),
        out: Path = typer.Option(Path("docs/benchmarks.md"), help="Markdown file to update (section 'merge')."),
        b_layers: int = typer.Option(22, "--b-layers", help="Decoder layers of the case-b LLaMAs (22 = 1.1B; "
                                     "fewer for a quick end-to-end check, kept in a separate folder)."),
    ) -> None:
        """Run the same mergekit YAMLs through mergekit-yaml and tutti merge, interleaved; write the figures."""
        from tutti.merging.bench import METHOD_PARAMS, bench_case, perturbed_copy, random_llama, report
        from tutti.models.zoo import fetch
        from tutti.recipes.report import machine_line, write_section

        bad = [m for m in methods if m not in METHOD_PARAMS]
        if bad:
            raise ConfigError(f"unknown benchmark method {bad[0]!r}; choose from {', '.join(METHOD_PARAMS)}")
        command = "tutti bench merge " + " ".join(shlex.quote(a) for a in sys.argv[sys.argv.index("merge") + 1:]) \
            if "merge" in sys.argv else "tutti bench merge"
        sections = []
        for case in cases:
            work = work_dir / case
            work.mkdir(parents=True, exist_ok=True)
            if case == "a":
                base = fetch("smollm2-135m-instruct")
                experts = [perturbed_copy(base, work / f"expert{i}", seed=i) for i in (1, 2)]
                chosen = methods or list(METHOD_PARAMS)
                title = "(a) SmolLM2-135M-Instruct + two perturbed copies (fp32, 0.54 GB each)"
                raw = bench_case("a", base, experts, chosen, repeats, work, print, floor=False)
                sections.append(report("a", title, raw))
            elif case == "b":
                if b_layers != 22:
                    work = work_dir / f"b-{b_layers}layers"
                    work.mkdir(parents=True, exist_ok=True)
                base = random_llama(work / "base", seed=0, layers=b_layers)
                experts = [random_llama(work / f"expert{i}", seed=i, base=base) for i in (1, 2)]
                chosen = methods or ["linear", "ties"]  # mergekit needs ~10+ min per method at this size
                params = 131_072_000 + b_layers * 44_044_288 + 2048
                title = (f"(b) three random LLaMA checkpoints, {params / 1e9:.2f}B parameters each, fp32 "
                         f"({params * 4 / 1e9:.1f} GB each)")
                raw = bench_case("b", base, experts, chosen, repeats, work, print, floor=True)
                sections.append(report("b", title, raw, rss_cap=3 * 1024**3))
            else:
                raise ConfigError(f"unknown benchmark case {case!r}; use a or b")
        text = (f"### Merging: tutti merge vs mergekit-yaml 0.1.5\n\nCommand: `{command}`. Machine: "
                f"{machine_line()}. Whole CLI runs as users run them (fresh process each, startup included), "
                f"interleaved, median of {repeats}; peak RSS is each child's own maximum resident set. Targets: "
                "time ≤ 0.5x mergekit (≤ 0.2x for ties, dare_ties, breadcrumbs, della), RSS ≤ mergekit; for (b) "
                "also RSS ≤ 3 GiB and time ≤ 2x the I/O floor.\n\n" + "\n".join(sections))
        write_section(out, "merge", text)
        print(f"wrote {out}")
