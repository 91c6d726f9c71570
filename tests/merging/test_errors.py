"""Every bad input is a one-line TuttiError raised before any output exists; the CLI exits with code 2."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tutti.errors import TuttiError


def _lin(models: list[str], **extra: object) -> dict:
    return {"merge_method": "linear", "models": [{"model": m, "parameters": {"weight": 1.0}} for m in models],
            **extra}


BAD = {
    "unknown_top_key": (lambda: {**_lin(["M1", "M2"]), "merge_methd": "linear"}, "unknown key 'merge_methd'"),
    "unknown_nested_key": (lambda: {"merge_method": "linear", "models": [{"model": "M1", "paramters": {}}]},
                           "unknown key 'models.0.paramters'"),
    "unknown_method": (lambda: {**_lin(["M1", "M2"]), "merge_method": "tiess"}, "Did you mean 'ties'"),
    "unknown_param": (lambda: {"merge_method": "ties", "base_model": "M0",
                               "models": [{"model": "M1", "parameters": {"weight": 1, "densty": 0.5}}]},
                      "takes no parameter 'densty'. Did you mean 'density'"),
    "param_for_weightless_method": (lambda: {"merge_method": "sce", "base_model": "M0",
                                             "models": [{"model": "M1", "parameters": {"weight": 1}}]},
                                    "takes no parameter 'weight'"),
    "missing_base": (lambda: {"merge_method": "task_arithmetic",
                              "models": [{"model": "M1", "parameters": {"weight": 1}}]}, "needs a base model"),
    "missing_required_param": (lambda: {"merge_method": "linear", "models": [{"model": "M1"}, {"model": "M2"}]},
                               "needs parameter 'weight'"),
    "wrong_param_type": (lambda: {"merge_method": "ties", "base_model": "M0", "parameters": {"normalize": 3},
                                  "models": [{"model": "M1", "parameters": {"weight": 1}}]},
                         "'normalize' must be a bool"),
    "too_many_inputs": (lambda: {"merge_method": "slerp", "base_model": "M0", "parameters": {"t": 0.5},
                                 "models": [{"model": "M1"}, {"model": "M2"}]}, "at most 1"),
    "bad_dtype": (lambda: {**_lin(["M1"]), "dtype": "fp8"}, "dtype 'fp8'"),
    "both_forms": (lambda: {**_lin(["M1"]), "slices": [{"sources": [{"model": "M1", "layer_range": [0, 1]}]}]},
                   "exactly one of"),
    "missing_model": (lambda: _lin(["M1", "/nonexistent/model/dir"]), "not a local path"),
    "layer_range_past_end": (lambda: {"merge_method": "passthrough",
                                      "slices": [{"sources": [{"model": "M1", "layer_range": [2, 9]}]}]},
                             "goes past"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_config_is_one_line_error(case: str, with_models, tmp_path: Path) -> None:
    import tutti

    make, fragment = BAD[case]
    with pytest.raises(TuttiError) as e:
        tutti.merge(with_models(make()), tmp_path / "out")
    assert fragment in str(e.value)
    assert "\n" not in str(e.value)
    assert not (tmp_path / "out").exists()
    assert list(tmp_path.iterdir()) == []  # not even a temporary folder is left


def test_vocab_mismatch_is_an_error_unless_truncation_is_asked(merge_models, other_vocab_model, tmp_path):
    import tutti
    from tutti.models.checkpoint import Checkpoint

    config = _lin([str(merge_models["M1"]), str(other_vocab_model)], dtype="float32")
    with pytest.raises(TuttiError, match=r"model.embed_tokens.weight.*\[384, 32\].*\[386, 32\].*vocab sizes differ.*truncate"):
        tutti.merge(config, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    out = tutti.merge(config, tmp_path / "out", unsafe_truncate_embeddings=True)
    assert tuple(Checkpoint(out).info("model.embed_tokens.weight").shape) == (384, 32)


def test_shape_mismatch_names_tensor_and_both_shapes(merge_models, tmp_path):
    import tutti
    from tutti.testing import make_tiny_llama

    wide = make_tiny_llama(tmp_path / "wide", seed=1, hidden=64, layers=4)
    with pytest.raises(TuttiError, match=r"tensor 'model.embed_tokens.weight': shape \[384, 32\] in .* but \[384, 64\] in .*not the same"):
        tutti.merge(_lin([str(merge_models["M1"]), str(wide)]), tmp_path / "out")


def test_nan_input_is_an_error_and_nothing_is_written(merge_models, tmp_path):
    import shutil

    import torch
    from safetensors.torch import load_file, save_file

    import tutti

    bad = tmp_path / "nan_model"
    shutil.copytree(merge_models["M1"], bad)
    sd = load_file(str(bad / "model.safetensors"))
    sd["model.layers.3.mlp.up_proj.weight"][0, 0] = float("nan")
    save_file(sd, str(bad / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(TuttiError, match=r"'model.layers.3.mlp.up_proj.weight' in .*nan_model contains NaN"):
        tutti.merge(_lin([str(merge_models["M2"]), str(bad)]), tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["nan_model"]
    _ = torch


def test_failed_merge_keeps_previous_output(with_models, merge_models, tmp_path):
    import tutti

    out = tutti.merge(with_models(_lin(["M1", "M2"])), tmp_path / "out")
    before = (out / "model.safetensors").read_bytes()
    with pytest.raises(TuttiError):
        tutti.merge(with_models({**_lin(["M1", "M2"]), "merge_method": "tiess"}), tmp_path / "out")
    assert (out / "model.safetensors").read_bytes() == before


def test_cli_errors_exit_2_with_one_line(with_models, tmp_path, capsys):
    from tutti.cli.main import main

    cfg = tmp_path / "bad.yaml"
    cfg.write_text(yaml.safe_dump(with_models({**_lin(["M1", "M2"]), "merge_method": "tiess"})))
    with pytest.raises(SystemExit) as e:
        main(["merge", str(cfg), str(tmp_path / "out")])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("tutti: error:") and "Did you mean 'ties'" in err and "\n" not in err
    cfg.write_text("merge_method: [unclosed\n")
    with pytest.raises(SystemExit) as e:
        main(["merge", str(cfg), str(tmp_path / "out")])
    assert e.value.code == 2
    assert "not valid YAML" in capsys.readouterr().err
