"""``tutti serve`` CLI errors (exit 2, one line), the serve config schema, and the shipped example config."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from tutti.cli.main import main
from tutti.config.serve import load_serve_config, parse_serve_config
from tutti.errors import ConfigError

EXAMPLE = Path(__file__).parents[2] / "examples" / "serve.yaml"


def _run(capsys, *args: str) -> tuple[int, str, str]:
    code = 0
    try:
        main(["serve", *args])
    except SystemExit as e:
        code = int(e.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize(("yaml_text", "match"), [
    ("models: [{id: a}]", "exactly one of model / composite / remote"),
    ("models: [{id: a, model: x}, {id: a, model: y}]", "duplicate model ids: a"),
    ("models: [{id: a, model: x}]\nport: 99999", "port"),
    ("models: [{id: a, model: x}]\nqueue_sise: 3", "queue_sise"),
    ("models: []", "models"),
    ("models: [{id: a, remote: {base_url: u}}]", "model"),
    ("[1, 2]", "mapping"),
    ("models: [{id: 'a b', model: x}]", "id"),
])
def test_bad_configs_exit_2_with_one_line(tmp_path, capsys, yaml_text, match) -> None:
    p = tmp_path / "serve.yaml"
    p.write_text(yaml_text)
    code, _, err = _run(capsys, str(p))
    assert code == 2
    assert err.startswith("tutti: error: ") and match in err and err.count("\n") == 1


def test_missing_files_and_models_exit_2(tmp_path, capsys) -> None:
    code, _, err = _run(capsys, str(tmp_path / "nope.yaml"))
    assert code == 2 and "no such serve config" in err
    code, _, err = _run(capsys, "no-such-zoo-model-xyz", "--check")
    assert code == 2 and "no-such-zoo-model-xyz" in err


def test_api_key_env_must_be_set(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.delenv("NOT_SET_KEY", raising=False)
    p = tmp_path / "serve.yaml"
    p.write_text("models: [{id: a, model: x}]\napi_key_env: NOT_SET_KEY\n")
    with pytest.raises(ConfigError, match="NOT_SET_KEY"):
        load_serve_config(p).resolved_api_key()
    monkeypatch.setenv("NOT_SET_KEY", "s3cret")
    assert load_serve_config(p).resolved_api_key() == "s3cret"


def test_check_loads_the_models(tmp_path, capsys, tiny_model_dir) -> None:
    p = tmp_path / "serve.yaml"
    p.write_text(f"models:\n  - id: tiny\n    model: {tiny_model_dir}\nport: 8123\n")
    code, out, _ = _run(capsys, str(p), "--check")
    assert code == 0 and out.strip() == "ok: tiny"


def test_defaults_bind_loopback() -> None:
    cfg = parse_serve_config({"models": [{"id": "a", "model": "x"}]})
    assert cfg.host == "127.0.0.1" and cfg.api_key is None
    with pytest.raises(ValidationError):  # frozen
        cfg.port = 1  # type: ignore[misc]


def test_help_lists_routes(capsys) -> None:
    code, out, _ = _run(capsys, "--help")
    assert code == 0 and "/v1/chat/completions" in out and "--api-key" in out


def test_example_config_validates() -> None:
    cfg = load_serve_config(EXAMPLE)
    assert [m.id for m in cfg.models] == ["smollm2", "duo", "smollm2-remote"]
    assert cfg.models[1].composite is not None and cfg.models[2].remote is not None
