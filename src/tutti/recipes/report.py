"""Write benchmark and result figures into markdown files, one section per benchmark.

Each benchmark owns a section between ``<!-- tutti:KEY:start -->`` and ``<!-- tutti:KEY:end -->`` markers, so
benchmarks of different areas update ``docs/benchmarks.md`` without touching each other's figures.
"""

from __future__ import annotations

import os
import platform
import re
from pathlib import Path

from tutti.paths import write_text_atomic


def machine_line() -> str:
    """One line describing the machine a figure was measured on."""
    import torch

    cpu = platform.processor() or platform.machine()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{os.cpu_count()} CPU cores ({cpu}), {gpu}, torch {torch.__version__}, Python {platform.python_version()}"


def write_section(path: str | Path, key: str, markdown: str) -> Path:
    """Replace (or append) section ``key`` of ``path`` with ``markdown``, atomically."""
    p = Path(path)
    start, end = f"<!-- tutti:{key}:start -->", f"<!-- tutti:{key}:end -->"
    block = f"{start}\n{markdown.rstrip()}\n{end}"
    title = "Results" if p.stem == "results" else "Benchmarks"
    text = p.read_text() if p.exists() else (
        f"# {title}\n\nFigures written by `tutti bench ...`; each section names the command that produced it.\n")
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
    return write_text_atomic(p, text)


def md_table(header: list[str], rows: list[list[object]]) -> str:
    """A markdown table."""
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)
