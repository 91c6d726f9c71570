"""Tokenizer merging (``tokenizer_source`` / ``tokenizer:``) across different vocabularies == mergekit 0.1.5.

Each case of ``cases/vocab.yaml`` runs through mergekit (the LGPL oracle, test-only) and ``tutti.merge``. The two
outputs must have the same tokens, the same tokenization of a sample text, the same ``vocab_size`` and every tensor
equal within 1e-6 of its largest magnitude. mergekit numbers union-added tokens in hash-map order (it changes
between runs), so vocab-indexed rows are compared token by token; the padding rows are compared in place. To add a
case, add one line to the YAML file.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from test_conformance import REL_TOL, read_all, run_mergekit

from tutti.errors import TuttiError

CASES: dict[str, dict] = yaml.safe_load((Path(__file__).parent / "cases" / "vocab.yaml").read_text())
VOCAB_TENSORS = ("model.embed_tokens.weight", "lm_head.weight")
TEXT = "The quick brown fox <tool> says 42 <think> café 東京 <|im_end|>"


def _variant(base: Path, dst: Path, tok: object, *, seed: int, rows: int | None = None) -> Path:
    """``base`` plus 25 % noise, with the vocab-indexed rows re-indexed to ``tok`` (new tokens: random rows)."""
    import torch
    from safetensors.torch import load_file, save_file
    from transformers import AutoTokenizer

    old = AutoTokenizer.from_pretrained(base).get_vocab()
    new = tok.get_vocab()  # type: ignore[attr-defined]
    rows = rows or len(new)
    g = torch.Generator().manual_seed(seed)
    out = {}
    for k, v in load_file(str(base / "model.safetensors")).items():
        v = v + 0.25 * v.abs().mean() * torch.randn(v.shape, generator=g)
        if k in VOCAB_TENSORS:
            emb = 0.02 * torch.randn((rows, v.shape[1]), generator=g)
            for t, i in new.items():
                if i < rows and t in old:
                    emb[i] = v[old[t]]
            v = emb
        out[k] = v.contiguous()
    dst.mkdir(parents=True)
    save_file(out, str(dst / "model.safetensors"), metadata={"format": "pt"})
    cfg = json.loads((base / "config.json").read_text())
    (dst / "config.json").write_text(json.dumps({**cfg, "vocab_size": rows}))
    tok.save_pretrained(dst)  # type: ignore[attr-defined]
    return dst


@pytest.fixture(scope="module")
def vocab_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """U0 (untied tiny LLaMA, 384 tokens), U1 (same vocab), VT and VT2 (+2 added tokens), VB (386-token BPE), VS (VT's
    tokenizer on 384 rows: the added tokens are stripped), VX (VB's tokenizer on 384 rows: 2 BPE tokens stripped);
    T0 and TT: a tied-embedding base and its copy with VT's tokenizer; VP: U0's tokenizer on 392 rows (8 padding)."""
    from tutti.testing import make_tiny_llama, tiny_tokenizer

    root = tmp_path_factory.mktemp("vocab_models")
    u0 = make_tiny_llama(root / "U0", seed=0, hidden=32, layers=2, tie_word_embeddings=False)
    tool = tiny_tokenizer(384)
    tool.add_tokens(["<tool>", "<think>"])
    return {"U0": u0, "U1": _variant(u0, root / "U1", tiny_tokenizer(384), seed=1),
            "VT": _variant(u0, root / "VT", tool, seed=2), "VT2": _variant(u0, root / "VT2", tool, seed=6),
            "VB": _variant(u0, root / "VB", tiny_tokenizer(400), seed=3),
            "VS": _variant(u0, root / "VS", tool, seed=4, rows=384),
            "VX": _variant(u0, root / "VX", tiny_tokenizer(400), seed=5, rows=384),
            "T0": (t0 := make_tiny_llama(root / "T0", seed=7, hidden=32, layers=2)),
            "TT": _variant(t0, root / "TT", tool, seed=8),
            "VP": _variant(u0, root / "VP", tiny_tokenizer(384), seed=9, rows=392)}


def _sub(node: object, models: dict[str, Path]) -> object:
    if isinstance(node, dict):
        return {k: _sub(v, models) for k, v in node.items()}
    if isinstance(node, list):
        return [_sub(v, models) for v in node]
    return str(models[node]) if isinstance(node, str) and node in models else node


def assert_same_vocab_merge(ours: Path, theirs: Path) -> None:
    """Same tokens, tokenization, vocab_size and tensors (vocab-indexed rows matched by token)."""
    import torch
    from transformers import AutoTokenizer

    to, tt = AutoTokenizer.from_pretrained(ours), AutoTokenizer.from_pretrained(theirs)
    vo, vt = to.get_vocab(), tt.get_vocab()
    assert sorted(vo) == sorted(vt)
    assert to.convert_ids_to_tokens(to(TEXT)["input_ids"]) == tt.convert_ids_to_tokens(tt(TEXT)["input_ids"])
    assert {t.content for t in to.added_tokens_decoder.values()} == {t.content for t in tt.added_tokens_decoder.values()}
    assert to.chat_template == tt.chat_template
    co, ct = (json.loads((p / "config.json").read_text()) for p in (ours, theirs))
    assert co["vocab_size"] == ct["vocab_size"]
    a, b = read_all(ours), read_all(theirs)
    assert sorted(a) == sorted(b)
    toks = sorted(vt)
    io, it = torch.tensor([vo[t] for t in toks]), torch.tensor([vt[t] for t in toks])
    for name in b:
        x, y = a[name], b[name]
        assert x.shape == y.shape and x.dtype == y.dtype, name
        if name in VOCAB_TENSORS:
            assert x.shape[0] == ct["vocab_size"], name
            x, y = torch.cat([x[io], x[len(vo):]]), torch.cat([y[it], y[len(vt):]])
        scale = max(float(y.float().abs().max()), 1e-12)
        err = float((x.float() - y.float()).abs().max())
        assert err <= REL_TOL[str(y.dtype).removeprefix("torch.")] * scale, f"{name}: max abs diff {err:.3e}"


@pytest.mark.parametrize("case", list(CASES))
def test_vocab_merge_matches_mergekit(case: str, vocab_models: dict[str, Path], tmp_path: Path) -> None:
    import tutti

    config = _sub(CASES[case], vocab_models)
    theirs = run_mergekit(config, tmp_path / "mergekit")
    ours = tutti.merge(config, tmp_path / "tutti")
    assert_same_vocab_merge(ours, theirs)
    shapes = {n: tuple(t.shape) for n, t in read_all(ours).items() if n in VOCAB_TENSORS}
    rows = json.loads((ours / "config.json").read_text())["vocab_size"]
    assert "model.embed_tokens.weight" in shapes and all(s == (rows, 32) for s in shapes.values())


def test_shared_vocab_copies_tokenizer_files(vocab_models: dict[str, Path], tmp_path: Path) -> None:
    import tutti

    config = _sub({"merge_method": "linear", "tokenizer_source": "union", "models": [
        {"model": "U0", "parameters": {"weight": 0.5}}, {"model": "U1", "parameters": {"weight": 0.5}}]}, vocab_models)
    out = tutti.merge(config, tmp_path / "out")
    for f in ("tokenizer.json", "tokenizer_config.json"):
        assert (out / f).read_bytes() == (vocab_models["U0"] / f).read_bytes()


def test_union_ids_are_deterministic(vocab_models: dict[str, Path], tmp_path: Path) -> None:
    """Union tokens are numbered in the order of their ids in their model (VB's two extra merges: 384, 385)."""
    from transformers import AutoTokenizer

    import tutti

    config = _sub({"merge_method": "linear", "tokenizer_source": "union", "models": [  # no base: VT's vocab first
        {"model": "VT", "parameters": {"weight": 0.5}}, {"model": "VB", "parameters": {"weight": 0.5}}]}, vocab_models)
    out = tutti.merge(config, tmp_path / "out")
    vocab, vb = AutoTokenizer.from_pretrained(out).get_vocab(), AutoTokenizer.from_pretrained(vocab_models["VB"])
    extra = sorted((i, t) for t, i in vb.get_vocab().items() if i >= 384)
    assert [vocab[t] for _, t in extra] == [386, 387]


BAD = {
    "source_lacks_token": ({"merge_method": "linear", "base_model": "U0", "tokenizer": {
        "source": "union", "tokens": {"<tool>": {"source": "U0"}}}}, "U0 does not have that token"),
    "unknown_source_token": ({"merge_method": "linear", "base_model": "U0", "tokenizer": {
        "source": "union", "tokens": {"<tool>": {"source": {"kind": "model_token", "model": "VB", "token": "zzz"}}}}},
        "token 'zzz' is not in"),
    "token_id_out_of_range": ({"merge_method": "linear", "base_model": "U0", "tokenizer": {
        "source": "base", "tokens": {"<q>": {"source": {"kind": "model_token", "model": "VB", "token_id": 999}}}}},
        "token id 999 is out of range"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_token_rule_is_one_line_error(case: str, vocab_models: dict[str, Path], tmp_path: Path) -> None:
    import tutti

    config, fragment = BAD[case]
    models = [{"model": m, "parameters": {"weight": 0.5}} for m in ("U0", "VB")]
    config = _sub({**config, "models": models}, vocab_models)
    with pytest.raises(TuttiError) as e:
        tutti.merge(config, tmp_path / "out")
    assert fragment.replace("U0", str(vocab_models["U0"])) in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "out").exists()


def test_stripping_a_non_bpe_tokenizer_is_refused(vocab_models: dict[str, Path], tmp_path: Path) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    import tutti

    words = Tokenizer(models.WordLevel({f"w{i}": i for i in range(390)}, unk_token="w0"))
    words.pre_tokenizer = pre_tokenizers.Whitespace()
    wl = tmp_path / "WL"
    shutil.copytree(vocab_models["U0"], wl)  # 384 rows, 390 tokens: 6 to strip
    for f in ("tokenizer.json", "tokenizer_config.json"):
        (wl / f).unlink()
    PreTrainedTokenizerFast(tokenizer_object=words, unk_token="w0").save_pretrained(wl)
    config = {"merge_method": "linear", "base_model": str(wl), "tokenizer_source": "union",
              "models": [{"model": str(wl), "parameters": {"weight": 1.0}},
                         {"model": str(vocab_models["U0"]), "parameters": {"weight": 1.0}}]}
    with pytest.raises(TuttiError, match=r"6 token\(s\) with ids >= vocab_size 384.*fast BPE tokenizers only, not "
                                         r"WordLevel"):
        tutti.merge(config, tmp_path / "out")


def test_stripping_bpe_tokens_drops_the_merges_that_make_them(vocab_models: dict[str, Path], tmp_path: Path) -> None:
    """VX's ids 384, 385 are BPE merge results; mergekit 0.1.5 crashes here, tutti drops those merges too."""
    from transformers import AutoTokenizer

    import tutti

    config = _sub({"merge_method": "linear", "base_model": "VX", "tokenizer_source": "base", "models": [
        {"model": "VX", "parameters": {"weight": 0.5}}, {"model": "VB", "parameters": {"weight": 0.5}}]}, vocab_models)
    out = tutti.merge(config, tmp_path / "out")
    tok, vb = AutoTokenizer.from_pretrained(out), AutoTokenizer.from_pretrained(vocab_models["VB"])
    stripped = {t for t, i in vb.get_vocab().items() if i >= 384}
    assert len(tok) == 384 and not stripped & set(tok.get_vocab())
    assert tok.decode(tok(TEXT)["input_ids"]) == TEXT
    assert json.loads((out / "config.json").read_text())["vocab_size"] == 384


def test_cli_runs_a_tokenizer_yaml_and_exits_2_on_a_bad_rule(vocab_models: dict[str, Path], tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    from transformers import AutoTokenizer

    from tutti.cli.main import main

    config = _sub(CASES["tokens_linear"], vocab_models)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(config, allow_unicode=True))
    main(["merge", str(cfg), str(tmp_path / "out"), "--no-progress", "--threads", "1"])
    assert {"<tool>", "<new>", "<x>"} <= set(AutoTokenizer.from_pretrained(tmp_path / "out").get_vocab())
    config["tokenizer"]["tokens"] = {"<tool>": {"source": str(vocab_models["U0"])}}
    cfg.write_text(yaml.safe_dump(config, allow_unicode=True))
    with pytest.raises(SystemExit) as e:
        main(["merge", str(cfg), str(tmp_path / "bad")])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and "does not have that token" in err and "\n" not in err
    assert not (tmp_path / "bad").exists()


def test_base_source_with_new_tokens_on_padded_rows(vocab_models: dict[str, Path], tmp_path: Path) -> None:
    """A new token never takes a padding row of the base (id 384 < its 392 rows): its rule decides (zero here).

    mergekit 0.1.5 crashes on ``source: base`` with new tokens, so this is checked on exact values instead.
    """
    import tutti
    from tutti.models.checkpoint import Checkpoint

    config = _sub({"merge_method": "linear", "base_model": "VP", "dtype": "float32", "models": [
        {"model": "VP", "parameters": {"weight": 0.5}}, {"model": "U0", "parameters": {"weight": 0.5}}],
        "tokenizer": {"source": "base", "tokens": {"<new>": {"source": {"kind": "zero"}}}}}, vocab_models)
    out = tutti.merge(config, tmp_path / "out")
    emb = Checkpoint(out).get("model.embed_tokens.weight")
    vp, u0 = (Checkpoint(vocab_models[k]).get("model.embed_tokens.weight") for k in ("VP", "U0"))
    assert emb.shape == (385, 32) and not emb[384].any()
    assert (emb[:384] - 0.5 * (vp[:384] + u0)).abs().max() < 1e-6
