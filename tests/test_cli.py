"""The CLI: subcommands listed, one-line errors with exit code 2 on bad input, --debug shows the traceback."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tutti.cli.main import main


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as e:
        main(args)
    out, err = capsys.readouterr()
    return int(e.value.code or 0), out, err


def test_help_lists_subcommands() -> None:
    res = subprocess.run([sys.executable, "-m", "tutti.cli.main", "--help"], capture_output=True, text=True)
    assert res.returncode == 0
    for cmd in ("merge", "swarm", "eval", "generate", "serve", "models", "bench"):
        assert f"  {cmd}" in res.stdout, cmd


def _one_line_error(code: int, err: str, needle: str) -> None:
    assert code == 2
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("tutti: error:") and needle in lines[0], lines[0]


def test_missing_folder(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = run(["models", "info", str(tmp_path / "nope")], capsys)
    _one_line_error(code, err, "not a local path")


def test_truncated_file(capsys: pytest.CaptureFixture[str], tiny_model_dir: Path, tmp_path: Path) -> None:
    d = Path(shutil.copytree(tiny_model_dir, tmp_path / "m"))
    f = d / "model.safetensors"
    f.write_bytes(f.read_bytes()[:100])
    code, _, err = run(["models", "info", str(d)], capsys)
    _one_line_error(code, err, "truncated")


def test_no_architecture(capsys: pytest.CaptureFixture[str], tiny_model_dir: Path, tmp_path: Path) -> None:
    d = Path(shutil.copytree(tiny_model_dir, tmp_path / "m"))
    (d / "config.json").write_text(json.dumps({"model_type": "llama"}))
    code, _, err = run(["models", "info", str(d)], capsys)
    _one_line_error(code, err, "architectures")


def test_mismatched_index(capsys: pytest.CaptureFixture[str], tiny_sharded_dir: Path, tmp_path: Path) -> None:
    d = Path(shutil.copytree(tiny_sharded_dir, tmp_path / "m"))
    idx = json.loads((d / "model.safetensors.index.json").read_text())
    idx["weight_map"]["ghost.weight"] = next(iter(idx["weight_map"].values()))
    (d / "model.safetensors.index.json").write_text(json.dumps(idx))
    code, _, err = run(["models", "info", str(d)], capsys)
    _one_line_error(code, err, "ghost.weight")


def test_pickle_needs_flag(capsys: pytest.CaptureFixture[str], tiny_model_dir: Path, tmp_path: Path) -> None:
    import torch
    from safetensors.torch import load_file

    d = tmp_path / "pkl"
    d.mkdir()
    shutil.copy(tiny_model_dir / "config.json", d)
    torch.save(load_file(str(tiny_model_dir / "model.safetensors")), d / "pytorch_model.bin")
    code, _, err = run(["models", "info", str(d)], capsys)
    _one_line_error(code, err, "--allow-pickle")
    main(["models", "info", str(d), "--allow-pickle"])
    assert "LlamaForCausalLM" in capsys.readouterr().out


def test_unknown_zoo_name_suggests(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["models", "fetch", "smollm2-135m-instrct"], capsys)
    _one_line_error(code, err, "smollm2-135m-instruct")


def test_debug_shows_traceback(tmp_path: Path) -> None:
    res = subprocess.run([sys.executable, "-m", "tutti.cli.main", "--debug", "models", "info", str(tmp_path / "x")],
                         capture_output=True, text=True)
    assert res.returncode != 0 and "Traceback" in res.stderr


def test_console_script_exit_code(tmp_path: Path) -> None:
    exe = Path(sys.executable).parent / "tutti"
    res = subprocess.run([str(exe), "models", "info", str(tmp_path / "x")], capture_output=True, text=True)
    assert res.returncode == 2 and "Traceback" not in res.stderr


def test_generate_prints_the_model_output(capsys: pytest.CaptureFixture[str], tiny_model_dir: Path) -> None:
    from tutti.models.hf import HFModel
    from tutti.models.interface import SamplingParams

    main(["generate", str(tiny_model_dir), "--prompt", "hello", "-n", "6"])
    printed = capsys.readouterr().out
    expected = HFModel.load(tiny_model_dir).generate([[{"role": "user", "content": "hello"}]],
                                                     params=SamplingParams(max_new_tokens=6))[0][0].text
    assert printed == expected + "\n"


def test_generate_needs_a_prompt(capsys: pytest.CaptureFixture[str], tiny_model_dir: Path) -> None:
    code, _, err = run(["generate", str(tiny_model_dir)], capsys)
    _one_line_error(code, err, "--prompt")
