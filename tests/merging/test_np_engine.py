"""The NumPy engine: same signatures as the torch methods, the same output bytes, a fallback with its reason, and
no torch import on its path."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tutti.errors import CheckpointError, ConfigError

PAIR = [{"model": "M1", "parameters": {"weight": 0.6, "density": 0.5}},
        {"model": "M2", "parameters": {"weight": 0.4, "density": 0.7}}]

# (method, global parameters, per-model parameters) — every case runs on the NumPy engine
CASES = {
    "dare_ties": ("dare_ties", {}, PAIR),
    "dare_ties_normalize_lambda": ("dare_ties", {"normalize": True, "lambda": 0.8}, PAIR),
    "dare_ties_inverse_p": ("dare_ties", {"rescale_mode": "inverse_p"}, PAIR),
    "dare_ties_no_rescale": ("dare_ties", {"rescale": False}, PAIR),
    "dare_linear": ("dare_linear", {}, PAIR),
    "dare_linear_negative_weight": ("dare_linear", {}, [{"model": "M1", "parameters": {"weight": -0.5,
                                                                                      "density": 0.3}}]),
    "dare_ties_gradient": ("dare_ties", {}, [
        {"model": "M1", "parameters": {"weight": 0.5, "density": [0.2, 0.9]}},
        {"model": "M2", "parameters": {"weight": [{"filter": "mlp", "value": 0.3}, {"value": 0.7}],
                                       "density": 1.0}},
        {"model": "M3", "parameters": {"weight": 0.2, "density": 0.0}}]),
    "della": ("della", {}, [{"model": "M1", "parameters": {"weight": 0.6, "density": 0.5, "epsilon": 0.2}},
                            {"model": "M2", "parameters": {"weight": 0.4, "density": 0.3, "epsilon": 0.1}}]),
    "della_no_rescale": ("della", {"rescale": False}, PAIR),
    "della_linear": ("della_linear", {"lambda": 1.5}, PAIR),
    "task_arithmetic": ("task_arithmetic", {"lambda": 0.7}, PAIR),
    "task_arithmetic_normalize_negative": ("task_arithmetic", {"normalize": True}, [
        {"model": "M1", "parameters": {"weight": 1.2}}, {"model": "M2", "parameters": {"weight": -0.4}},
        {"model": "M3", "parameters": {"weight": [0.1, 0.9]}}]),
}
STACK = {"merge_method": "passthrough", "dtype": "float32", "slices": [
    {"sources": [{"model": "M1", "layer_range": [0, 2]}]},
    {"sources": [{"model": "M2", "layer_range": [1, 4],
                  "parameters": {"scale": [{"filter": "o_proj", "value": 0.5}, {"value": 1.0}]}}]}]}


def _config(with_models, method: str, params: dict, models: list) -> dict:
    cfg = {"merge_method": method, "base_model": "M0", "dtype": "float32", "models": models}
    if params:
        cfg["parameters"] = params
    return with_models(cfg)


def _tensors(folder: Path) -> dict[str, bytes]:
    from safetensors import safe_open

    out = {}
    for f in sorted(folder.glob("*.safetensors")):
        with safe_open(str(f), framework="numpy") as h:
            out |= {k: h.get_tensor(k).tobytes() for k in h.keys()}  # noqa: SIM118
    return out


def test_numpy_methods_have_the_torch_methods_signatures():
    from tutti.merging import sparsify
    from tutti.merging.base import get_method
    from tutti.merging.execute import DTYPES
    from tutti.merging.np_methods import NP_METHODS, RESCALE_MODES
    from tutti.merging.schedule import OUT_DTYPES

    assert {"dare_ties", "dare_linear", "della", "della_linear"} <= set(NP_METHODS)
    for name, entry in NP_METHODS.items():
        a, b = entry.method, get_method(name)
        assert a.params == b.params, name
        assert (a.base, a.randomized, a.elementwise, a.min_inputs, a.max_inputs, a.wants_ctx) == (
            b.base, b.randomized, b.elementwise, b.min_inputs, b.max_inputs, b.wants_ctx), name
        assert a.extra.get("output_float32") == b.extra.get("output_float32"), name
    assert RESCALE_MODES == sparsify.RESCALE_MODES
    assert set(OUT_DTYPES) == set(DTYPES)


@pytest.mark.parametrize("case", [*CASES, "passthrough_stack"])
def test_numpy_engine_writes_the_torch_engines_bytes(case, with_models, tmp_path):
    from tutti.merging.run import merge

    cfg = with_models(STACK) if case == "passthrough_stack" else _config(with_models, *CASES[case])
    a = merge(cfg, tmp_path / "np", engine="numpy", random_seed=7, write_model_card=False)
    b = merge(cfg, tmp_path / "torch", engine="torch", random_seed=7, write_model_card=False)
    ta, tb = _tensors(a), _tensors(b)
    assert list(ta) == list(tb) and len(ta) > 10
    assert all(ta[k] == tb[k] for k in ta), [k for k in ta if ta[k] != tb[k]][:3]
    base = _tensors(Path(with_models({"m": "M0"})["m"]))
    assert any(ta[k] != base[k] for k in ta)  # a merge happened
    assert (a / "config.json").read_text() == (b / "config.json").read_text()
    assert sorted(p.name for p in a.iterdir()) == sorted(p.name for p in b.iterdir())


def test_numpy_engine_repeats_and_follows_the_seed(with_models, tmp_path):
    from tutti.merging.run import merge

    cfg = _config(with_models, *CASES["dare_ties"][:2], CASES["dare_ties"][2])
    one = _tensors(merge(cfg, tmp_path / "a", engine="numpy", random_seed=1))
    again = _tensors(merge(cfg, tmp_path / "b", engine="numpy", random_seed=1))
    other = _tensors(merge(cfg, tmp_path / "c", engine="numpy", random_seed=2))
    assert one == again
    assert any(one[k] != other[k] for k in one)


@pytest.mark.parametrize(("method", "params", "models", "why"), [
    ("ties", {}, PAIR, "has no NumPy kernel"),
    ("della", {"rescale_mode": "inverse_p"}, PAIR, "need the torch kernels"),
    ("dare_ties", {}, [{"model": "M1", "parameters": {"weight": -0.5, "density": 0.5}}], "need the torch kernels"),
    ("dare_ties", {"int8_mask": True}, PAIR, None),  # accepted: only a memory option in mergekit
])
def test_what_the_numpy_engine_leaves_to_torch(method, params, models, why, with_models, tmp_path):
    from tutti.merging.run import merge

    cfg = _config(with_models, method, params, models)
    if why is None:
        merge(cfg, tmp_path / "np", engine="numpy")
        return
    with pytest.raises(ConfigError, match=why):
        merge(cfg, tmp_path / "np", engine="numpy")
    assert not (tmp_path / "np").exists()
    merge(cfg, tmp_path / "auto")  # auto runs it on torch
    assert (tmp_path / "auto" / "model.safetensors").is_file()


def test_numpy_engine_config_checks(with_models, tmp_path):
    from tutti.config.merge import load_merge_config
    from tutti.merging.np_engine import numpy_plan
    from tutti.merging.run import merge

    cfg = _config(with_models, "dare_ties", {}, PAIR)
    assert numpy_plan(load_merge_config(cfg), device="cpu", allow_pickle=False,
                      unsafe_truncate_embeddings=False)[0] is not None
    for change, why in [({"dtype": "bfloat16"}, "dtype"), ({"out_dtype": "float16"}, "dtype"),
                        ({"tokenizer_source": "base"}, "tokenizers")]:
        plan, reason = numpy_plan(load_merge_config({**cfg, **change}), device="cpu", allow_pickle=False,
                                  unsafe_truncate_embeddings=False)
        assert plan is None and why in reason
    assert "device" in numpy_plan(load_merge_config(cfg), device="cuda", allow_pickle=False,
                                  unsafe_truncate_embeddings=False)[1]
    with pytest.raises(ConfigError, match="engine 'jax'"):
        merge(cfg, tmp_path / "x", engine="jax")
    with pytest.raises(ConfigError, match="takes no parameter 'densty'"):  # the planner's errors, as on torch
        merge(_config(with_models, "dare_ties", {"densty": 0.5}, PAIR), tmp_path / "y", engine="numpy")


def test_dry_run_names_the_engine(with_models, tmp_path, capsys):
    import yaml

    from tutti.cli.main import main

    def dry(method: str, *flags: str) -> str:
        cfg = tmp_path / f"{method}.yaml"
        cfg.write_text(yaml.safe_dump(_config(with_models, method, {}, PAIR)))
        main(["merge", str(cfg), str(tmp_path / "out"), "--dry-run", *flags])
        return next(line for line in capsys.readouterr().out.splitlines() if line.startswith("engine"))

    assert dry("dare_ties") == "engine        numpy"
    assert dry("dare_ties", "--engine", "torch") == "engine        torch (--engine torch)"
    assert dry("ties") == "engine        torch (merge_method 'ties' has no NumPy kernel)"
    with pytest.raises(SystemExit) as e:  # a one-line error, exit code 2
        dry("ties", "--engine", "numpy")
    assert e.value.code == 2
    assert "cannot run on the NumPy engine: merge_method 'ties'" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_numpy_engine_rejects_nan_inputs(with_models, tmp_path):
    import numpy as np
    from safetensors.numpy import load_file, save_file

    from tutti.merging.run import merge

    src = Path(with_models({"m": "M2"})["m"])
    bad = tmp_path / "bad"
    bad.mkdir()
    for f in src.iterdir():
        (bad / f.name).write_bytes(f.read_bytes())
    sd = load_file(str(bad / "model.safetensors"))
    name = "model.layers.1.mlp.up_proj.weight"
    sd[name] = sd[name].copy()
    sd[name][3, 4] = np.nan
    save_file(sd, str(bad / "model.safetensors"), metadata={"format": "pt"})
    cfg = _config(with_models, "dare_ties", {}, [PAIR[0], {**PAIR[1], "model": str(bad)}])
    with pytest.raises(CheckpointError, match=f"{name}.*NaN or Inf"):
        merge(cfg, tmp_path / "out", engine="numpy")
    assert not (tmp_path / "out").exists()


def test_numpy_engine_never_imports_torch(with_models, tmp_path):
    cfg = tmp_path / "dare.yaml"
    cfg.write_text(json.dumps(_config(with_models, "dare_ties", {}, PAIR)))  # JSON is YAML
    code = ("import sys; from tutti.cli.main import main\n"
            f"try:\n    main(['merge', '--no-progress', {str(cfg)!r}, {str(tmp_path / 'out')!r}])\n"
            "except SystemExit as e:\n    assert not e.code, e.code\n"
            "print('torch' in sys.modules)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert res.stdout.strip().splitlines()[-1] == "False", res.stdout + res.stderr
    assert (tmp_path / "out" / "model.safetensors").is_file()


@pytest.mark.parametrize("case", ["task_arithmetic", "passthrough_stack"])
def test_numpy_engine_row_blocks_under_a_tiny_budget(case, with_models, tmp_path):
    """Element-wise methods read and merged in row blocks of a few hundred bytes, with a budget of a few KB:
    the same bytes as the torch engine's whole-tensor merge."""
    from tutti.config.merge import load_merge_config
    from tutti.merging.np_engine import numpy_plan, run_numpy_plan
    from tutti.merging.run import merge
    from tutti.merging.schedule import ExecOptions, plan_units
    from tutti.merging.stream_writer import StreamingWriter

    cfg = with_models(STACK) if case == "passthrough_stack" else _config(with_models, *CASES[case])
    plan, why = numpy_plan(load_merge_config(cfg), device="cpu", allow_pickle=False, unsafe_truncate_embeddings=False)
    assert plan is not None, why
    opts = ExecOptions(block_bytes=600, max_memory=8192, read_threads=3, seed=0)
    assert len(plan_units(plan, "float32", opts)) > 3 * len(plan.jobs)  # really split into row blocks
    w = StreamingWriter(tmp_path / "np", [(j.name, j.dtype, j.shape) for j in plan.jobs], max_shard_bytes=1 << 40)
    run_numpy_plan(plan, w, opts)
    a = w.finish()
    b = merge(cfg, tmp_path / "torch", engine="torch", write_model_card=False)
    ta, tb = _tensors(a), _tensors(b)
    assert list(ta) == list(tb) and all(ta[k] == tb[k] for k in ta)
