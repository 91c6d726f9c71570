"""The evaluation harness: exact metering on stub models, composites, the correctness matrix, and the CLI."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pytest

from tutti.evaluation.harness import MeteredModel, evaluate, evaluate_many
from tutti.models.interface import GenerationOutput, LoglikelihoodResult, SamplingParams, TokenLogprob


class Answers:
    """Stub model: answers each prompt from a dict (by the user message), 3 tokens, log-prob -0.5 each."""

    def __init__(self, name: str, table: dict[str, str]) -> None:
        self.name, self.table, self.calls = name, table, 0

    def generate(self, prompts: Sequence, *, params: SamplingParams) -> list[list[GenerationOutput]]:
        self.calls += 1
        out = []
        for p in prompts:
            text = self.table[p if isinstance(p, str) else p[-1]["content"]]
            lps = tuple(TokenLogprob("t", -0.5) for _ in range(3)) if params.logprobs else None
            out.append([GenerationOutput(text=text, token_ids=(1, 2, 3), finish_reason="stop", logprobs=lps)
                        for _ in range(params.n)])
        return out

    def loglikelihood(self, requests: Sequence) -> list[LoglikelihoodResult]:
        return [LoglikelihoodResult(-float(len(c)), True, 1) for _, c in requests]


@pytest.fixture
def task(tmp_path: Path) -> Path:
    d = tmp_path / "task"
    d.mkdir()
    rows = [{"id": f"q{i}", "input": f"What is {i} plus {i}?", "target": str(2 * i)} for i in range(5)]
    (d / "dev.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    mc = [{"id": "m0", "input": "Pick", "target": "bb", "choices": ["a", "bb", "cccc"]},
          {"id": "m1", "input": "Pick", "target": "a", "choices": ["a", "bb", "cccc"]}]
    (d / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in mc))
    return d


def _good(i: int) -> str:
    return f"The answer is {2 * i}"


def test_evaluate_exact_metering(task: Path, tmp_path: Path) -> None:
    m = Answers("m", {f"What is {i} plus {i}?": _good(i) if i < 3 else "no idea" for i in range(5)})
    r = evaluate(m, task, split="dev", batch_size=2, out_dir=tmp_path / "out", progress=False)
    assert (r.accuracy, r.examples, r.utility) == (0.6, 5, "exact_match")
    assert (r.generated_tokens, r.model_calls) == (15.0, 5.0)
    assert m.calls == 3  # 5 prompts in batches of 2
    assert r.scores == [1.0, 1.0, 1.0, 0.0, 0.0]
    rows = [json.loads(x) for x in (tmp_path / "out" / "predictions.jsonl").read_text().splitlines()]
    assert rows[0]["prediction"] == "The answer is 0" and rows[3]["score"] == 0.0
    assert rows[0]["confidence"] == pytest.approx(0.6065306597)  # exp(-0.5)
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["accuracy"] == 0.6 and summary["generated_tokens"] == 15 and summary["model_calls"] == 5
    assert summary["wall_seconds"] >= 0


def test_multiple_choice_default_and_loglik_calls(task: Path) -> None:
    r = evaluate(Answers("m", {}), task, split="test", progress=False)
    # shortest choice has the highest stub log-likelihood -> predicts "a": right on m1 only
    assert (r.utility, r.accuracy, r.model_calls, r.generated_tokens) == ("mc_loglik", 0.5, 6.0, 0.0)


def test_composite_counts_member_work(task: Path) -> None:
    from tutti.aggregate import Vote, VoteOptions

    a = Answers("a", {f"What is {i} plus {i}?": _good(i) for i in range(5)})
    b = Answers("b", {f"What is {i} plus {i}?": "The answer is 1" for i in range(5)})
    r = evaluate(Vote([a, b, a], VoteOptions(extract="number")), task, progress=False)
    assert r.accuracy == 1.0 and r.model_calls == 15 and r.generated_tokens == 45


def test_matrix_for_routers(task: Path, tmp_path: Path) -> None:
    from tutti.routing.matrix import CorrectnessMatrix

    a = Answers("a", {f"What is {i} plus {i}?": _good(i) if i % 2 == 0 else "x" for i in range(5)})
    b = Answers("b", {f"What is {i} plus {i}?": _good(i) if i % 2 == 1 else "x" for i in range(5)})
    results, _ = evaluate_many([a, b], task, out_dir=tmp_path / "o", progress=False)
    back = CorrectnessMatrix.load(tmp_path / "o" / "matrix.jsonl")
    assert back.models == ("a", "b") and back.ids == ("q0", "q1", "q2", "q3", "q4")
    assert back.scores.tolist() == [[1, 0], [0, 1], [1, 0], [0, 1], [1, 0]]
    assert back.confidence is not None and back.prompts[1] == "What is 1 plus 1?"
    assert (tmp_path / "o" / "a" / "predictions.jsonl").is_file() and [r.accuracy for r in results] == [0.6, 0.4]


def test_metered_strips_logprobs_it_added() -> None:
    m = MeteredModel(Answers("m", {"q": "x"}), progress=False)
    out = m.generate(["q"], params=SamplingParams())
    assert out[0][0].logprobs is None and m.records[0]["tokens"] == 3


def test_cli_eval_tiny_model_and_errors(task: Path, tmp_path: Path, tiny_model_dir: Path, capsys) -> None:
    from tutti.cli.main import main

    out = tmp_path / "cli"
    main(["eval", str(tiny_model_dir), "--task", str(task), "--limit", "2", "--out", str(out),
          "--max-new-tokens", "3", "--no-chat", "--no-progress"])
    summary = json.loads(next(out.glob("*/summary.json")).read_text())
    assert summary["examples"] == 2 and summary["model_calls"] == 2 and summary["generated_tokens"] <= 6
    assert (out / "matrix.jsonl").is_file()
    with pytest.raises(SystemExit) as e:
        main(["eval", str(tiny_model_dir), "--task", str(tmp_path / "nope")])
    assert e.value.code == 2
    assert "task" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["eval", str(tiny_model_dir), "--task", str(task), "--option", "oops"])
    assert e.value.code == 2
