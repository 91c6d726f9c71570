"""Every after-inference and routing strategy loads from the composite YAML language with real tiny members."""

from __future__ import annotations

import json

import pytest
import yaml

import tutti.collab
from tutti.errors import ConfigError, TuttiError
from tutti.models.interface import SamplingParams

P = SamplingParams(max_new_tokens=4)


def test_strategies_registered() -> None:
    names = set(tutti.collab.STRATEGIES.names())
    assert {"vote", "mbr", "rank", "fusion", "debate", "router", "cascade"} <= names


@pytest.mark.parametrize(("strategy", "options"), [
    ("vote", {"samples": 2, "temperature": 0.8, "extract": "exact"}),
    ("mbr", {"utility": "chrf"}),
    ("rank", {"mode": "bubble"}),
    ("fusion", {"layers": 1, "aggregator": 1}),
    ("debate", {"rounds": 1}),
    ("cascade", {"scorer": "probability", "thresholds": [0.5]}),
])
def test_yaml_composites_generate(tiny_model_dirs, tmp_path, strategy: str, options: dict) -> None:
    cfg = {"strategy": strategy, "members": [str(tiny_model_dirs[0]), str(tiny_model_dirs[1])], "options": options}
    f = tmp_path / "c.yaml"
    f.write_text(yaml.safe_dump(cfg))
    m = tutti.collab.load(f)
    out = m.generate(["hello", [{"role": "user", "content": "hi"}]], params=P)
    assert len(out) == 2 and all(len(o) == 1 and isinstance(o[0].text, str) for o in out)
    assert out[0][0].info["strategy"] == strategy
    assert out[0][0].info["member_calls"] >= 1


def test_nested_composites(tiny_model_dirs) -> None:
    inner = {"strategy": "vote", "members": [str(tiny_model_dirs[0])], "options": {"samples": 2, "temperature": 1.0}}
    outer = {"strategy": "cascade", "members": [inner, str(tiny_model_dirs[1])],
             "options": {"scorer": "consistency", "scorer_options": {"samples": 2}, "thresholds": [1.1]}}
    m = tutti.collab.load(outer)
    o = m.generate(["abc"], params=P)[0][0]
    assert o.info["stage"] == 1  # threshold above 1 always escalates


def test_router_yaml_with_matrix(tiny_model_dirs, tmp_path) -> None:
    rows = [{"input": f"add {i} and {i}", "scores": {"a": 1.0, "b": 0.0}} for i in range(6)]
    rows += [{"input": f"name the capital of country {i}", "scores": {"a": 0.0, "b": 1.0}} for i in range(6)]
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = {"strategy": "router", "members": [str(tiny_model_dirs[0]), str(tiny_model_dirs[1])],
           "options": {"matrix": str(tmp_path / "m.jsonl"), "router": "knn", "router_options": {"k": 3},
                       "features": "causal_lm", "features_model": str(tiny_model_dirs[2])}}
    m = tutti.collab.load(cfg)
    assert m.route(["add 7 and 9", "name the capital of country 9"]) == [0, 1]
    out = m.generate(["add 7 and 9"], params=P)[0][0]
    assert out.info["route"] == 0 and out.info["strategy"] == "router"


def test_bad_options_are_one_line_errors(tiny_model_dirs) -> None:
    base = {"members": [str(tiny_model_dirs[0]), str(tiny_model_dirs[1])]}
    with pytest.raises(ConfigError, match=r"unknown key .options\.utilty."):
        tutti.collab.load({**base, "strategy": "mbr", "options": {"utilty": "bleu"}})
    with pytest.raises(ConfigError, match="give thresholds"):
        tutti.collab.load({**base, "strategy": "cascade"})
    with pytest.raises(TuttiError, match="Did you mean 'vote'"):
        tutti.collab.load({**base, "strategy": "vot"})
