"""``tutti bench merge``: the same YAMLs through ``mergekit-yaml`` and ``tutti merge``, interleaved.

Recipe (setup -> run -> report):

1. setup: case ``a`` is the real SmolLM2-135M-Instruct plus two perturbed copies (base + 1 % relative Gaussian
   noise, fine-tune-sized task vectors); case ``b`` is three random LLaMA checkpoints of ~1.1B parameters in fp32
   (TinyLlama shapes), written tensor by tensor.
2. run: for every repeat and method, both CLIs run as users run them (fresh processes, alternating which goes
   first); wall time and the child's own peak RSS (``wait4`` in a small launcher, see :func:`run_child`) are
   recorded. Case ``b`` also measures, per method, the I/O floor: one process that reads every tensor of the
   method's inputs once and writes an output of the same size, with the reader and writer ``tutti merge`` uses
   (``FLOOR_SCRIPT``).
3. report: medians, ratios against mergekit and the targets, written to ``docs/benchmarks.md`` (section
   ``merge``) with the exact command.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

METHOD_PARAMS: dict[str, tuple[dict[str, Any], dict[str, Any], bool]] = {
    # method: (global parameters, per-model parameters, base given)
    "linear": ({}, {"weight": 0.5}, False),
    "slerp": ({"t": 0.4}, {}, True),
    "nuslerp": ({}, {"weight": 0.5}, False),
    "multislerp": ({}, {"weight": 0.5}, False),
    "karcher": ({}, {}, False),
    "task_arithmetic": ({}, {"weight": 0.5}, True),
    "ties": ({}, {"weight": 0.5, "density": 0.5}, True),
    "dare_ties": ({}, {"weight": 0.5, "density": 0.5}, True),
    "dare_linear": ({}, {"weight": 0.5, "density": 0.5}, True),
    "breadcrumbs": ({}, {"weight": 0.5, "density": 0.5}, True),
    "breadcrumbs_ties": ({}, {"weight": 0.5, "density": 0.5}, True),
    "della": ({}, {"weight": 0.5, "density": 0.5, "epsilon": 0.1}, True),
    "della_linear": ({}, {"weight": 0.5, "density": 0.5, "epsilon": 0.1}, True),
    "sce": ({"select_topk": 0.5}, {}, True),
    "ram": ({}, {}, True),
    "ramplus_tl": ({}, {}, True),
    "model_stock": ({}, {}, True),
    "nearswap": ({"t": 0.001}, {}, True),
    "arcee_fusion": ({}, {}, True),
    "passthrough": ({}, {}, False),
}
STRICT = ("ties", "dare_ties", "breadcrumbs", "della")  # target <= 0.2x


def method_config(method: str, base: Path, experts: list[Path]) -> dict[str, Any]:
    """The mergekit YAML (as a dict) the benchmark uses for ``method``."""
    glob, per, with_base = METHOD_PARAMS[method]
    if method == "passthrough":
        return {"merge_method": method, "dtype": "float32", "models": [{"model": str(experts[0])}]}
    if method in ("slerp", "nearswap", "arcee_fusion"):
        experts = experts[:1]
    if method == "nuslerp":
        with_base = False
    models = [{"model": str(e), **({"parameters": dict(per)} if per else {})} for e in experts]
    cfg: dict[str, Any] = {"merge_method": method, "dtype": "float32", "models": models}
    if with_base:
        cfg["base_model"] = str(base)
        if method in ("slerp", "nearswap", "arcee_fusion"):
            cfg["models"] = [{"model": str(base)}, *models]
    if glob:
        cfg["parameters"] = dict(glob)
    return cfg


# ---------------------------------------------------------------------------------------------- setup
def perturbed_copy(src: Path, dst: Path, *, seed: int, rel: float = 0.01) -> Path:
    """``src`` plus Gaussian noise of ``rel`` times each tensor's std, written tensor by tensor."""
    import torch

    from tutti.merging.stream_writer import StreamingWriter
    from tutti.models.checkpoint import Checkpoint
    from tutti.models.writer import SIDE_FILES

    if (dst / "config.json").is_file():
        return dst
    ck = Checkpoint(src)
    names = ck.keys()
    w = StreamingWriter(dst, [(n, getattr(torch, ck.info(n).dtype), tuple(ck.info(n).shape)) for n in names],
                        max_shard_bytes=5 * 1024**3)
    g = torch.Generator().manual_seed(seed)
    for n in names:
        t = ck.get(n)
        noise = torch.randn(t.shape, generator=g, dtype=torch.float32)
        w.write(n, (t.float() + rel * float(t.float().std()) * noise).to(t.dtype) if t.numel() > 1 else t)
    w.copy_files(src, SIDE_FILES)
    return w.finish()


def random_llama(dst: Path, *, seed: int, base: Path | None = None, layers: int = 22) -> Path:
    """A ~1.1B-parameter fp32 LLaMA (TinyLlama shapes, ``layers`` decoder layers); with ``base``, base + 1 % noise.

    Reused when ``dst`` already holds one (generating the three case-(b) inputs writes ~13 GB).
    """
    import torch

    from tutti.merging.stream_writer import StreamingWriter

    if (dst / "config.json").is_file():
        return dst
    if base is not None:
        return perturbed_copy(base, dst, seed=seed)
    h, inter, vocab, kv = 2048, 5632, 32000, 256
    shapes: list[tuple[str, tuple[int, ...]]] = [("model.embed_tokens.weight", (vocab, h))]
    for i in range(layers):
        p = f"model.layers.{i}."
        shapes += [(p + "input_layernorm.weight", (h,)), (p + "post_attention_layernorm.weight", (h,)),
                   (p + "self_attn.q_proj.weight", (h, h)), (p + "self_attn.k_proj.weight", (kv, h)),
                   (p + "self_attn.v_proj.weight", (kv, h)), (p + "self_attn.o_proj.weight", (h, h)),
                   (p + "mlp.gate_proj.weight", (inter, h)), (p + "mlp.up_proj.weight", (inter, h)),
                   (p + "mlp.down_proj.weight", (h, inter))]
    shapes += [("model.norm.weight", (h,)), ("lm_head.weight", (vocab, h))]
    w = StreamingWriter(dst, [(n, torch.float32, s) for n, s in shapes], max_shard_bytes=2 * 1024**3)
    g = torch.Generator().manual_seed(seed)
    for n, s in shapes:
        w.write(n, torch.ones(s) if len(s) == 1 else torch.randn(s, generator=g) * 0.02)
    cfg = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": h,
           "intermediate_size": inter, "num_hidden_layers": layers, "num_attention_heads": 32,
           "num_key_value_heads": 4, "vocab_size": vocab, "max_position_embeddings": 2048, "rms_norm_eps": 1e-5,
           "tie_word_embeddings": False, "hidden_act": "silu", "dtype": "float32"}
    w.write_text("config.json", json.dumps(cfg, indent=2))
    return w.finish()


# ---------------------------------------------------------------------------------------------- run
#: Runs one command for :func:`run_child`: forks it, waits, writes wall time, peak RSS and exit code as JSON.
LAUNCHER = """
import json, os, sys, time
out, err, cmd = sys.argv[1], sys.argv[2], sys.argv[3:]
t0 = time.perf_counter()
pid = os.fork()
if pid == 0:
    os.dup2(os.open(err, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), 2)
    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
    try:
        os.execvp(cmd[0], cmd)
    finally:
        os._exit(127)
_, status, usage = os.wait4(pid, 0)
wall = time.perf_counter() - t0
with open(out, "w") as f:
    json.dump({"wall": wall, "maxrss": usage.ru_maxrss * 1024, "code": os.waitstatus_to_exitcode(status)}, f)
"""


def run_child(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, int]:
    """Run ``cmd``; return (wall seconds, the child's own peak RSS in bytes). Raises on failure.

    The command is forked by a small launcher process, not by this one: Linux carries a process's peak RSS
    across ``exec`` (and a vfork child's is its parent's), so a child started straight from a benchmark process
    that has grown large (say, after generating case b's checkpoints) would report that process's peak instead
    of its own. Its stderr goes to a file (a pipe could fill and stall it) and is shown on failure.
    """
    with tempfile.TemporaryDirectory(prefix="tutti-bench-") as tmp:
        out, err = Path(tmp) / "result.json", Path(tmp) / "stderr.txt"
        subprocess.run([sys.executable, "-c", LAUNCHER, str(out), str(err), *cmd], env=env, check=True)
        res = json.loads(out.read_text())
        if res["code"] != 0:
            tail = err.read_text(errors="replace")[-2000:] if err.exists() else ""
            raise RuntimeError(f"{' '.join(cmd)} failed ({res['code']}): {tail}")
        return float(res["wall"]), int(res["maxrss"])


FLOOR_SCRIPT = """
import sys, torch
from tutti.merging.execute import all_finite, read_safetensors_tensor
from tutti.merging.stream_writer import StreamingWriter
from tutti.models.checkpoint import Checkpoint
cks = [Checkpoint(p) for p in sys.argv[2:]]
names = cks[0].keys()
w = StreamingWriter(sys.argv[1], [(n, torch.float32, tuple(cks[0].info(n).shape)) for n in names],
                    max_shard_bytes=5 * 1024**3)
for n in names:
    ts = [read_safetensors_tensor(c.info(n).file, n) for c in cks]
    for t in ts:
        all_finite(t)  # every input byte read once, as the merge's finiteness check reads it
    w.write(n, ts[0])
w.finish()
"""


def config_models(cfg: dict[str, Any]) -> list[str]:
    """The distinct model folders a benchmark config reads (base first)."""
    paths = [cfg["base_model"]] if "base_model" in cfg else []
    return list(dict.fromkeys([*paths, *(m["model"] for m in cfg["models"])]))


def bench_case(name: str, base: Path, experts: list[Path], methods: list[str], repeats: int, work: Path,
               log: Callable[[str], None], floor: bool) -> dict[str, Any]:
    """Run every method through both tools ``repeats`` times, interleaved; return raw measurements."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONHASHSEED": "0"}
    bin_dir = Path(sys.executable).parent
    tools = {"mergekit": [str(bin_dir / "mergekit-yaml"), "--random-seed", "0"],
             "tutti": [str(bin_dir / "tutti"), "merge", "--random-seed", "0", "--no-progress"]}
    results: dict[str, Any] = {m: {t: [] for t in tools} for m in methods}
    floors: dict[str, list[float]] = {m: [] for m in methods}
    if floor:  # untimed: the first floor would otherwise read a cold page cache that the tools never see
        out = work / "floor_out"
        run_child([sys.executable, "-c", FLOOR_SCRIPT, str(out), *config_models(method_config(methods[0], base,
                                                                                              experts))], env)
        shutil.rmtree(out, ignore_errors=True)
        log(f"[{name}] page cache warmed (one untimed I/O floor run)")
    for rep in range(repeats):
        for m in methods:
            cfg_dict = method_config(m, base, experts)
            cfg = work / f"{m}.yaml"
            cfg.write_text(yaml.safe_dump(cfg_dict, sort_keys=False))
            if floor:  # the same reader and writer as tutti merge, reading this method's inputs once
                out = work / "floor_out"
                shutil.rmtree(out, ignore_errors=True)
                wall, _ = run_child([sys.executable, "-c", FLOOR_SCRIPT, str(out), *config_models(cfg_dict)], env)
                floors[m].append(wall)
                shutil.rmtree(out, ignore_errors=True)
                log(f"[{name}] rep {rep + 1} {m:17s} I/O floor {wall:7.1f}s")
            order = list(tools) if rep % 2 == 0 else list(reversed(tools))
            for tool in order:
                out = work / f"out_{tool}"
                shutil.rmtree(out, ignore_errors=True)
                wall, rss = run_child([*tools[tool], str(cfg), str(out)], env)
                results[m][tool].append((wall, rss))
                shutil.rmtree(out, ignore_errors=True)
                log(f"[{name}] rep {rep + 1} {m:17s} {tool:8s} {wall:7.1f}s  {rss / 2**30:.2f} GiB")
    return {"results": results, "floor": floors}


# ---------------------------------------------------------------------------------------------- report
def report(name: str, title: str, raw: dict[str, Any], *, rss_cap: int | None = None) -> str:
    """A markdown table of medians and ratios (tutti / mergekit) with target checks."""
    from tutti.recipes.report import md_table

    rows = []
    floors = {m: statistics.median(f) for m, f in raw["floor"].items() if f}
    for m, by_tool in raw["results"].items():
        floor = floors.get(m)
        mk_t = statistics.median(w for w, _ in by_tool["mergekit"])
        tu_t = statistics.median(w for w, _ in by_tool["tutti"])
        mk_r = statistics.median(r for _, r in by_tool["mergekit"])
        tu_r = statistics.median(r for _, r in by_tool["tutti"])
        target = 0.2 if m in STRICT else 0.5
        ok = [tu_t / mk_t <= target, tu_r <= mk_r]
        if rss_cap is not None:
            ok.append(tu_r <= rss_cap)
        if floor is not None:
            ok.append(tu_t <= 2 * floor)
        row = [m, f"{mk_t:.1f}", f"{tu_t:.1f}", f"{tu_t / mk_t:.2f} (≤{target})", f"{mk_r / 2**30:.2f}",
               f"{tu_r / 2**30:.2f}", f"{tu_r / mk_r:.2f}"]
        if floors:
            row += [f"{floor:.1f}" if floor is not None else "-", f"{tu_t / floor:.2f}" if floor else "-"]
        rows.append([*row, "yes" if all(ok) else "**no**"])
    header = ["method", "mergekit s", "tutti s", "time ratio (target)", "mergekit GiB", "tutti GiB", "RSS ratio"]
    if floors:
        header += ["I/O floor s", "tutti / I/O floor"]
    text = f"#### {title}\n\n" + md_table([*header, "targets met"], rows) + "\n"
    if floors:
        text += ("\nI/O floor: one process that reads every input the method's config names once and writes an "
                 "output of the same size, with tutti's own reader (copy-on-write maps of the page cache, every "
                 "byte read once) and streaming writer, without overlapping the two (median per method).\n")
    return text
