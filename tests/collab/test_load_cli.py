"""``tutti.collab.load`` from YAML/dicts, config errors, nesting, and ``tutti generate COMPOSITE.yaml``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

import tutti.collab
from tutti.cli.main import main
from tutti.errors import ConfigError, TuttiError
from tutti.models.interface import Model, SamplingParams


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tutti.testing import make_tiny_llama

    root = tmp_path_factory.mktemp("collab_yaml")
    for s in (1, 2):
        make_tiny_llama(root / f"m{s}", seed=s, init_std=0.2)
    return root


def write(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def test_yaml_ensemble_with_relative_members_is_a_model(models_dir: Path) -> None:
    cfg = write(models_dir / "ens.yaml", {"strategy": "ensemble", "members": ["m1", "m2"],
                                          "combine": {"method": "mean", "weights": [0.6, 0.4]}})
    m = tutti.collab.load(cfg)
    assert isinstance(m, Model)
    out = m.generate(["The quick"], params=SamplingParams(max_new_tokens=4))[0][0]
    assert out.info["strategy"] == "ensemble" and out.info["member_forward_calls"][0] >= 1
    assert m.name == "ensemble:m1+m2"


def test_composites_nest(models_dir: Path) -> None:
    inner = {"strategy": "ensemble", "members": ["m1", "m2"], "combine": "product"}
    outer = tutti.collab.load({"strategy": "contrastive", "members": [inner, "m2"], "alpha": 0.1},
                              base=models_dir)
    flat = tutti.collab.load(inner, base=models_dir)
    params = SamplingParams(max_new_tokens=5)
    assert outer.generate(["Paris is"], params=params)[0][0].text
    # an inner composite scores exactly as it does on its own
    import torch

    s = flat.open_session([flat.encode("Paris is")])
    assert torch.allclose(s.logprobs(), flat.next_token_logprobs(["Paris is"]), atol=1e-5)
    yml = write(models_dir / "inner.yaml", inner)
    spec = tutti.collab.load({"strategy": "ensemble", "members": [str(yml), "m1"], "combine": "mean"},
                             base=models_dir)
    assert spec.generate(["Paris is"], params=params)[0][0].info["member_forward_calls"]


@pytest.mark.parametrize(("data", "message"), [
    ({"strategy": "ensembel", "members": ["m1"]}, "Did you mean 'ensemble'"),
    ({"strategy": "ensemble", "members": ["m1"], "colour": 1}, "unknown key 'colour'; remove it"),
    ({"strategy": "contrastive", "members": ["m1"]}, "exactly 2 members"),
    ({"strategy": "ensemble", "members": ["m1", "m2"], "combine": {"weights": [1]}}, "1 entries for 2 members"),
    ({"strategy": "ensemble", "members": ["m1", "m2"], "align": "unoin"}, "Did you mean 'union'"),
    ({"strategy": "ensemble", "members": ["m1", "m2"], "combine": "maen"}, "Did you mean 'mean'"),
    ({"strategy": "ensemble", "members": []}, "at least one member"),
    ({"strategy": "ensemble", "members": [{"foo": 1}]}, "composite .strategy:., a merge .merge_method:. or a remote"),
])
def test_config_errors_are_one_line(models_dir: Path, data: dict, message: str) -> None:
    with pytest.raises(TuttiError, match=message) as e:
        tutti.collab.load(data, base=models_dir)
    assert "\n" not in str(e.value)


def test_missing_file_and_bad_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        tutti.collab.load(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("strategy: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        tutti.collab.load(bad)


def run_cli(args: list[str]) -> int:
    try:
        main(args)
    except SystemExit as e:
        return int(e.code or 0)
    return 0


def test_cli_generate_composite(models_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = write(models_dir / "cli.yaml", {"strategy": "ensemble", "members": ["m1", "m2"],
                                          "combine": {"method": "gated", "threshold": 0.9}})
    assert run_cli(["generate", str(cfg), "--prompt", "Paris", "--raw", "-n", "4", "--info"]) == 0
    out = capsys.readouterr()
    facts = json.loads(out.err.strip().splitlines()[-1])
    assert facts["strategy"] == "ensemble" and 0.0 <= facts["ensembled_share"] <= 1.0
    msgs = models_dir / "chat.json"
    msgs.write_text(json.dumps([{"role": "user", "content": "hi"}]))
    assert run_cli(["generate", str(cfg), "--messages", str(msgs), "-n", "3", "--stream", "--temperature", "0.7",
                    "--seed", "1"]) == 0
    assert capsys.readouterr().out.endswith("\n")


def test_cli_errors_exit_2(models_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = write(models_dir / "bad.yaml", {"strategy": "speculative", "members": ["m1"]})
    assert run_cli(["generate", str(bad), "--prompt", "x"]) == 2
    assert "exactly 2 members" in capsys.readouterr().err
    msgs = models_dir / "notchat.json"
    msgs.write_text(json.dumps({"role": "user"}))
    assert run_cli(["generate", str(bad), "--messages", str(msgs)]) == 2
    assert "list of" in capsys.readouterr().err


def test_every_shipped_example_config_validates() -> None:
    from tutti.collab.aligners import ALIGNERS
    from tutti.collab.combiners import COMBINERS
    from tutti.collab.loader import STRATEGIES, register_builtins
    from tutti.config.composite import load_composite_config

    register_builtins()
    examples = sorted((Path(__file__).parents[2] / "examples" / "composites").glob("*.yaml"))
    assert len(examples) >= 5
    for path in examples:
        cfg = load_composite_config(path)
        assert cfg.strategy in STRATEGIES and cfg.align in ALIGNERS and cfg.combine.method in COMBINERS
