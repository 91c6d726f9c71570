"""Fisher merging and RegMean: closed forms, oracles for the collected statistics, and an end-to-end merge of
tiny real models with a JSONL prompt set (statistics cached on disk and reused)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from tutti.errors import TuttiError
from tutti.merging.data_aware import fisher_merge, regmean_merge, weighted_average
from tutti.merging.data_aware.collect import StatsSettings, collect_fisher, collect_grams
from tutti.merging.data_aware.data import Example, load_examples

ROWS = [
    {"prompt": "What is 12 plus 30?", "completion": " The answer is 42."},
    {"prompt": [{"role": "user", "content": "Capital of France?"}], "completion": "Paris."},
    {"text": "The quick brown fox jumps over the lazy dog."},
    {"prompt": "Convert 3 km to m:"},  # no completion: Fisher samples one from the model
]


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    p = tmp_path / "prompts.jsonl"
    p.write_text("\n".join(json.dumps(r) for r in ROWS) + "\n\n")
    return p


def _g(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ----------------------------------------------------------------------------- closed forms
def test_fisher_merge_by_hand_and_with_equal_fishers() -> None:
    t1, t2 = torch.tensor([0.0, 1.0]), torch.tensor([4.0, 3.0])
    f1, f2 = torch.tensor([1.0, 0.0]), torch.tensor([3.0, 0.0])
    # entry 0: (1*0 + 3*4) / 4 = 3; entry 1: no information, floored -> plain average 2
    torch.testing.assert_close(fisher_merge([t1, t2], [f1, f2]), torch.tensor([3.0, 2.0]))
    a, b = torch.randn(5, 4, generator=_g(0)), torch.randn(5, 4, generator=_g(1))
    f = torch.rand(5, 4, generator=_g(2))
    torch.testing.assert_close(fisher_merge([a, b], [f, f], [1.0, 3.0]), (a + 3 * b) / 4)


def test_regmean_with_identical_grams_is_the_average() -> None:
    ws = [torch.randn(3, 5, generator=_g(s)) for s in range(3)]
    x = torch.randn(20, 5, generator=_g(9))
    g = x.T @ x
    torch.testing.assert_close(regmean_merge(ws, [g, g, g], alpha=0.7), weighted_average(ws, [1, 1, 1]),
                               atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(regmean_merge(ws, [g, 2 * g, g], [1.0, 0.5, 2.0]),
                               weighted_average(ws, [1.0, 1.0, 2.0]), atol=1e-5, rtol=1e-5)


def test_regmean_is_the_least_squares_solution() -> None:
    ws = [torch.randn(4, 6, generator=_g(s), dtype=torch.float64) for s in range(2)]
    xs = [torch.randn(30, 6, generator=_g(10 + s), dtype=torch.float64) for s in range(2)]
    # min_W Σ_t ‖X_t Wᵀ - X_t W_tᵀ‖²: one stacked least-squares problem
    lhs = torch.cat(xs)
    rhs = torch.cat([x @ w.T for x, w in zip(xs, ws, strict=True)])
    want = torch.linalg.lstsq(lhs, rhs).solution.T
    got = regmean_merge([w.float() for w in ws], [(x.T @ x).float() for x in xs], alpha=1.0)
    torch.testing.assert_close(got, want.float(), atol=1e-4, rtol=1e-4)


def test_regmean_alpha_zero_is_a_per_feature_weighted_average() -> None:
    w1, w2 = torch.tensor([[1.0, 10.0]]), torch.tensor([[3.0, 20.0]])
    g1, g2 = torch.tensor([[1.0, 5.0], [5.0, 4.0]]), torch.tensor([[3.0, -1.0], [-1.0, 1.0]])
    # diagonal Grams: feature 0 weights 1 and 3, feature 1 weights 4 and 1
    want = torch.tensor([[(1 * 1 + 3 * 3) / 4, (4 * 10 + 1 * 20) / 5]])
    torch.testing.assert_close(regmean_merge([w1, w2], [g1, g2], alpha=0.0), want)


def test_regmean_averages_input_features_no_model_saw() -> None:
    w1, w2 = torch.tensor([[1.0, 2.0]]), torch.tensor([[3.0, 6.0]])
    g = torch.tensor([[2.0, 0.0], [0.0, 0.0]])  # feature 1 never active
    torch.testing.assert_close(regmean_merge([w1, w2], [g, g]), torch.tensor([[2.0, 4.0]]))


# ----------------------------------------------------------------------------- data files
def test_dataset_errors_name_the_file_and_line(tmp_path: Path) -> None:
    with pytest.raises(TuttiError, match="not found"):
        load_examples(tmp_path / "nope.jsonl")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "ok"}\n{"prompt": \n')
    with pytest.raises(TuttiError, match=r"bad.jsonl:2: not valid JSON"):
        load_examples(bad)
    bad.write_text('{"question": "x"}\n')
    with pytest.raises(TuttiError, match=r"bad.jsonl:1: no 'prompt' or 'text'"):
        load_examples(bad)


# ----------------------------------------------------------------------------- statistics oracles
@pytest.fixture(scope="module")
def tiny(tiny_model_dir: Path):
    from tutti.models.hf import HFModel

    return HFModel.load(tiny_model_dir, name="tiny")


def test_grams_equal_the_layer_inputs_and_ignore_padding(tiny, dataset: Path) -> None:
    examples = load_examples(dataset)
    g1 = collect_grams(tiny, examples, StatsSettings(batch_size=1))
    g4 = collect_grams(tiny, examples, StatsSettings(batch_size=4))  # padded batch
    name = "model.layers.0.self_attn.q_proj.weight"
    torch.testing.assert_close(g1[name], g4[name], atol=1e-5, rtol=1e-4)
    # oracle: the input of layer 0's q_proj is input_layernorm(embeddings), every token of every sequence
    xs = []
    for ex in examples:
        if ex.whole_text:
            ids = tiny.tokenizer(ex.prompt)["input_ids"]
        else:
            p = list(ex.prompt) if isinstance(ex.prompt, tuple) else ex.prompt
            c, k = tiny.split_continuation(p, ex.completion) if ex.completion else (tiny.encode(p), [])
            ids = c + k
        with torch.no_grad():
            h = tiny.module.model.embed_tokens(torch.tensor([ids]))
            xs.append(tiny.module.model.layers[0].input_layernorm(h)[0])
    x = torch.cat(xs)
    torch.testing.assert_close(g1[name], x.T @ x / x.shape[0], atol=1e-5, rtol=1e-4)
    assert "model.layers.1.mlp.down_proj.weight" in g1 and g1["model.layers.1.mlp.down_proj.weight"].shape == (128, 128)


def test_fisher_is_the_squared_gradient_of_the_log_likelihood(tiny) -> None:
    ex = Example("What is 12 plus 30?", " The answer is 42.")
    fis = collect_fisher(tiny, [ex], StatsSettings())
    c, k = tiny.split_continuation(ex.prompt, ex.completion)
    ids = torch.tensor([c + k])
    tiny.module.zero_grad()
    logp = torch.log_softmax(tiny.module(input_ids=ids).logits[0].float(), -1)
    ll = sum(logp[len(c) - 1 + j, t] for j, t in enumerate(k))
    ll.backward()
    p = tiny.module.model.layers[1].mlp.up_proj.weight
    torch.testing.assert_close(fis["model.layers.1.mlp.up_proj.weight"], p.grad.square(), atol=1e-9, rtol=1e-4)
    tiny.module.zero_grad(set_to_none=True)
    assert all(q.grad is None for q in tiny.module.parameters())


def test_sampled_fisher_repeats_with_the_seed(tiny) -> None:
    ex = [Example("Convert 3 km to m:")]
    s = StatsSettings(max_new_tokens=4, seed=7)
    a, b = collect_fisher(tiny, ex, s), collect_fisher(tiny, ex, s)
    name = "model.layers.0.self_attn.v_proj.weight"
    assert torch.equal(a[name], b[name]) and a[name].abs().sum() > 0


# ----------------------------------------------------------------------------- end to end
def _config(models: list[Path], method: str, dataset: Path, **params: object) -> dict:
    return {"models": [{"model": str(m)} for m in models], "merge_method": method, "dtype": "float32",
            "parameters": {"dataset": str(dataset), **params}}


def test_regmean_merge_end_to_end_with_cache(tiny_model_dirs: list[Path], dataset: Path, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    import tutti.merging.data_aware.collect as collect
    import tutti.merging.methods.extra_data_aware as methods
    from tutti.merging import merge

    monkeypatch.setenv("TUTTI_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(methods, "_MEMO", {})
    monkeypatch.setattr(collect, "_OPEN", {})
    from tutti.cli.main import main

    cfg_path = tmp_path / "regmean.yaml"
    cfg_path.write_text(yaml.safe_dump(_config(tiny_model_dirs, "regmean", dataset, alpha=0.9)))
    main(["merge", str(cfg_path), str(tmp_path / "out")])  # `tutti merge CONFIG OUT`
    out = tmp_path / "out"
    merged = load_file(out / "model.safetensors")
    ins = [load_file(m / "model.safetensors") for m in tiny_model_dirs]
    cached = sorted((tmp_path / "home" / "merge-stats").glob("regmean-*.safetensors"))
    assert len(cached) == 3
    assert not list((tmp_path / "home" / "merge-stats").glob(".*"))  # no temp file left beside the cache
    grams = [load_file(next(c for c in cached if f"-{m.name}-" in c.name)) for m in tiny_model_dirs]
    name = "model.layers.1.self_attn.o_proj.weight"
    want = regmean_merge([s[name] for s in ins], [g[name] for g in grams], alpha=0.9)
    torch.testing.assert_close(merged[name], want, atol=1e-6, rtol=1e-6)
    assert not torch.allclose(merged[name], weighted_average([s[name] for s in ins], [1, 1, 1]), atol=1e-4)
    norm = "model.layers.0.input_layernorm.weight"  # not a linear layer: averaged
    torch.testing.assert_close(merged[norm], weighted_average([s[norm] for s in ins], [1, 1, 1]))

    # a re-run reads the cache from disk instead of recomputing
    monkeypatch.setattr(methods, "_MEMO", {})
    monkeypatch.setattr(collect, "_OPEN", {})

    def boom(*_a: object, **_k: object) -> None:
        raise AssertionError("statistics recomputed")

    monkeypatch.setattr(collect, "compute_statistics", boom)
    again = load_file(merge(_config(tiny_model_dirs, "regmean", dataset, alpha=0.9), tmp_path / "out2")
                      / "model.safetensors")
    assert torch.equal(again[name], merged[name])


def test_fisher_merge_end_to_end(tiny_model_dirs: list[Path], dataset: Path, tmp_path: Path,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from tutti.merging import merge

    monkeypatch.setenv("TUTTI_HOME", str(tmp_path / "home"))
    cfg = _config(tiny_model_dirs[:2], "fisher", dataset, max_new_tokens=4)
    own = tmp_path / "own.jsonl"  # model 2 gets its own data, as in the paper (one task per model)
    own.write_text(json.dumps(ROWS[0]) + "\n")
    # per-model values live under each model's parameters (mergekit)
    cfg["models"][1]["parameters"] = {"weight": 2.0, "dataset": str(own)}
    out = merge(cfg, tmp_path / "out")
    merged = load_file(out / "model.safetensors")
    ins = [load_file(m / "model.safetensors") for m in tiny_model_dirs[:2]]
    fis = [load_file(next((tmp_path / "home" / "merge-stats").glob(f"fisher-{m.name}-*"))) for m in
           tiny_model_dirs[:2]]
    from safetensors import safe_open

    used = [safe_open(str(next((tmp_path / "home" / "merge-stats").glob(f"fisher-{m.name}-*"))), "pt").metadata()
            for m in tiny_model_dirs[:2]]
    assert [u["dataset"] for u in used] == [str(dataset), str(own)]
    for name in ("model.layers.0.mlp.gate_proj.weight", "model.norm.weight", "model.embed_tokens.weight"):
        want = fisher_merge([s[name] for s in ins], [f[name] for f in fis], [1.0, 2.0])
        torch.testing.assert_close(merged[name], want, atol=1e-6, rtol=1e-6)


def test_data_aware_methods_refuse_in_memory_merges_and_bad_values(dataset: Path) -> None:
    from tutti.errors import ConfigError
    from tutti.merging.base import get_method

    w = torch.zeros(2, 2)
    with pytest.raises(TuttiError, match="needs the model folder"):
        get_method("regmean")([w, w], dataset=str(dataset))
    with pytest.raises(ConfigError, match="alpha"):
        get_method("regmean")([w, w], dataset=str(dataset), alpha=2.0)
    with pytest.raises(ConfigError, match="needs parameter 'dataset'"):
        get_method("fisher")([w, w])


def test_cli_reports_a_missing_dataset(tiny_model_dirs: list[Path], tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    from tutti.cli.main import main

    cfg_path = tmp_path / "bad.yaml"
    cfg_path.write_text(yaml.safe_dump(_config(tiny_model_dirs[:2], "regmean", tmp_path / "missing.jsonl")))
    with pytest.raises(SystemExit) as e:
        main(["merge", str(cfg_path), str(tmp_path / "out")])
    assert e.value.code == 2
    assert "missing.jsonl' not found" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.real_model
def test_statistics_on_the_real_smollm2(smollm2) -> None:
    """Grams and Fishers of the real SmolLM2-135M-Instruct (chat template, tied embeddings) match autograd."""
    examples = [Example("What is 12 plus 30?", " 42"),
                Example(({"role": "user", "content": "Name a colour."},), "Blue.")]
    grams = collect_grams(smollm2, examples, StatsSettings(batch_size=2))
    xs = []
    for ex in examples:
        p = list(ex.prompt) if isinstance(ex.prompt, tuple) else ex.prompt
        c, k = smollm2.split_continuation(p, ex.completion)
        with torch.no_grad():  # layer 0's attention input: input_layernorm(embeddings)
            h = smollm2.module.model.embed_tokens(torch.tensor([c + k]))
            xs.append(smollm2.module.model.layers[0].input_layernorm(h)[0])
    x = torch.cat(xs)
    q = "model.layers.0.self_attn.q_proj.weight"
    torch.testing.assert_close(grams[q], x.T @ x / x.shape[0], atol=1e-4, rtol=1e-4)
    assert grams["model.layers.0.mlp.gate_proj.weight"].shape == (576, 576)
    assert grams["model.layers.29.mlp.down_proj.weight"].shape == (1536, 1536)

    fis = collect_fisher(smollm2, examples[:1], StatsSettings())
    c, k = smollm2.split_continuation(examples[0].prompt, examples[0].completion)
    module = smollm2.module
    try:
        logp = torch.log_softmax(module(input_ids=torch.tensor([c + k])).logits[0].float(), -1)
        sum(logp[len(c) - 1 + j, t] for j, t in enumerate(k)).backward()
        for pname in ("model.layers.29.mlp.down_proj.weight", "model.embed_tokens.weight"):
            grad = dict(module.named_parameters())[pname].grad
            torch.testing.assert_close(fis[pname], grad.square(), atol=1e-12, rtol=1e-3)
    finally:
        module.zero_grad(set_to_none=True)
