"""LoRA-native merging: exactness of the concatenated-rank merge, the factor-wise cross terms, SVD
re-compression errors, and peft loading the result with outputs equal to the dense application."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tutti.errors import TuttiError
from tutti.merging.lora_merge import merge_lora_exact, merge_lora_factors, truncate_factors
from tutti.models.lora import LoraAdapter, apply_lora, load_lora, save_lora


def _make_adapter(base_dir: Path, out: Path, *, r: int, alpha: int, seed: int, targets: list[str],
                  rslora: bool = False) -> Path:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base_dir)
    cfg = LoraConfig(r=r, lora_alpha=alpha, target_modules=targets, init_lora_weights=False, use_rslora=rslora)
    peft_model = get_peft_model(model, cfg)
    peft_model.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def adapters(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root = tmp_path_factory.mktemp("loras")
    return [
        _make_adapter(tiny_model_dir, root / "a", r=4, alpha=8, seed=1, targets=["q_proj", "v_proj"]),
        _make_adapter(tiny_model_dir, root / "b", r=2, alpha=2, seed=2, targets=["q_proj", "down_proj"],
                      rslora=True),
        _make_adapter(tiny_model_dir, root / "c", r=4, alpha=16, seed=3, targets=["q_proj", "v_proj"]),
    ]


def _dense_sum(adapters: list[LoraAdapter], weights: list[float]) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for a, w in zip(adapters, weights, strict=True):
        for name, d in a.dense_deltas().items():
            out[name] = out.get(name, torch.zeros_like(d)) + w * d
    return out


def test_exact_merge_equals_the_weighted_sum_of_dense_updates(adapters: list[Path], tmp_path: Path) -> None:
    ads = [load_lora(p) for p in adapters]
    weights = [0.5, -1.25, 2.0]
    res = merge_lora_exact(ads, weights)
    assert res.errors == {} and res.max_error == 0.0
    save_lora(res.adapter, tmp_path / "merged")
    got = load_lora(tmp_path / "merged").dense_deltas()  # through the saved config's rank/alpha patterns
    want = _dense_sum(ads, weights)
    assert set(got) == set(want)
    for name in want:
        torch.testing.assert_close(got[name], want[name], atol=1e-6, rtol=1e-6)
    q = "model.layers.0.self_attn.q_proj"
    assert res.adapter.pairs()[q].A.shape[0] == 4 + 2 + 4


def test_one_adapter_with_weight_one_reproduces_itself(adapters: list[Path]) -> None:
    ad = load_lora(adapters[1])  # rsLoRA scale alpha / sqrt(r)
    for res in (merge_lora_exact([ad]), merge_lora_factors([ad], [1.0])):
        got = res.adapter.dense_deltas()
        for name, d in ad.dense_deltas().items():
            torch.testing.assert_close(got[name], d, atol=1e-6, rtol=1e-6)


def test_factor_merge_has_cross_terms(adapters: list[Path]) -> None:
    a, c = load_lora(adapters[0]), load_lora(adapters[2])
    w = [0.3, 0.7]
    got = merge_lora_factors([a, c], w).adapter.dense_deltas()
    exact = _dense_sum([a, c], w)
    for module, pa in a.pairs().items():
        pc = c.pairs()[module]
        # factors scaled by sqrt(s_i) (scales differ): B'A' = Σ_ij w_i w_j sqrt(s_i s_j) B_i A_j
        cross = sum(wi * wj * (pi.scale * pj.scale) ** 0.5 * (pi.B @ pj.A)
                    for wi, pi in zip(w, (pa, pc), strict=True) for wj, pj in zip(w, (pa, pc), strict=True))
        torch.testing.assert_close(got[f"{module}.weight"], cross, atol=1e-6, rtol=1e-6)
        rel = (got[f"{module}.weight"] - exact[f"{module}.weight"]).norm() / exact[f"{module}.weight"].norm()
        assert rel > 0.1  # not the average of the updates


def test_factor_merge_of_identical_adapters_is_the_adapter(adapters: list[Path]) -> None:
    a = load_lora(adapters[0])
    got = merge_lora_factors([a, a, a]).adapter
    for name, d in a.dense_deltas().items():
        torch.testing.assert_close(got.dense_deltas()[name], d, atol=1e-6, rtol=1e-6)
    assert got.config["r"] == 4 and got.scale_for("model.layers.0.self_attn.q_proj") == a.scale_for("x")


def test_truncation_error_is_the_tail_of_the_spectrum() -> None:
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(6, 20, generator=g), torch.randn(30, 6, generator=g)
    full = b @ a
    s = torch.linalg.svdvals(full)
    a3, b3, err = truncate_factors(a, b, 3)
    assert a3.shape == (3, 20) and b3.shape == (30, 3)
    assert err == pytest.approx(float(s[3:].norm() / s.norm()), rel=1e-5)
    assert float((full - b3 @ a3).norm() / full.norm()) == pytest.approx(err, rel=1e-4)
    _, _, none = truncate_factors(a, b, 6)
    assert none == pytest.approx(0.0, abs=1e-6)


def test_exact_merge_with_rank_reports_errors(adapters: list[Path]) -> None:
    ads = [load_lora(p) for p in adapters]
    res = merge_lora_exact(ads, [1.0, 1.0, 1.0], rank=3)
    assert set(res.errors) == {m for a in ads for m in a.pairs() if sum(
        x.pairs()[m].A.shape[0] for x in ads if m in x.pairs()) > 3}
    assert 0 < res.max_error < 1
    assert all(p.A.shape[0] <= 3 for p in res.adapter.pairs().values())


def test_peft_loads_the_merged_adapter_and_matches_dense_application(
    adapters: list[Path], tiny_model_dir: Path, tmp_path: Path
) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    ads = [load_lora(p) for p in adapters]
    weights = [0.7, 0.4, -0.2]
    out = save_lora(merge_lora_exact(ads, weights).adapter, tmp_path / "merged")
    ids = torch.tensor([[5, 17, 99, 3, 250, 42, 7]])
    peft_model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), out).eval()
    dense = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    sd = dense.state_dict()
    for a, w in zip(ads, weights, strict=True):
        sd = apply_lora(sd, a, weight=w)
    dense.load_state_dict(sd)
    with torch.no_grad():
        torch.testing.assert_close(peft_model(ids).logits, dense(ids).logits, atol=1e-5, rtol=1e-5)


def test_unsupported_adapters_are_refused(adapters: list[Path]) -> None:
    a = load_lora(adapters[0])
    dora = LoraAdapter({**a.config, "use_dora": True}, a.tensors)
    with pytest.raises(TuttiError, match="use_dora"):
        merge_lora_exact([a, dora])
    with pytest.raises(TuttiError, match="weights for"):
        merge_lora_exact([a], [1.0, 2.0])
    with pytest.raises(TuttiError, match=r"equal ranks|other modules"):
        merge_lora_factors([a, load_lora(adapters[1])])


def test_cli_merge_lora_exact_with_rank_and_errors(adapters: list[Path], tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    from tutti.cli.main import main

    main(["merge-lora", str(adapters[0]), str(adapters[2]), "--out", str(tmp_path / "m"), "--weights", "0.5,0.5"])
    got = load_lora(tmp_path / "m").dense_deltas()
    want = _dense_sum([load_lora(adapters[0]), load_lora(adapters[2])], [0.5, 0.5])
    for name in want:
        torch.testing.assert_close(got[name], want[name], atol=1e-6, rtol=1e-6)
    main(["merge-lora", str(adapters[0]), str(adapters[2]), "-o", str(tmp_path / "r"), "--rank", "2"])
    assert "relative Frobenius error max" in capsys.readouterr().out
    main(["merge-lora", str(adapters[0]), str(adapters[2]), "-o", str(tmp_path / "f"), "--method", "factors"])
    assert load_lora(tmp_path / "f").r == 4

    for argv, msg in [
        (["--weights", "1"], "1 values for 2 adapters"),
        (["--method", "exactly"], "Did you mean 'exact'"),
        (["--method", "factors", "--rank", "2"], "--rank applies to --method exact only"),
        (["--weights", "a,b"], "comma-separated numbers"),
    ]:
        with pytest.raises(SystemExit) as e:
            main(["merge-lora", str(adapters[0]), str(adapters[2]), "-o", str(tmp_path / "x"), *argv])
        assert e.value.code == 2
        assert msg in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["merge-lora", str(tmp_path), "-o", str(tmp_path / "y")])
    assert e.value.code == 2 and "adapter_config.json" in capsys.readouterr().err


def test_oracle_peft_add_weighted_adapter(adapters: list[Path], tiny_model_dir: Path) -> None:
    """exact == peft 'cat'; factors with weights w == peft 'linear' with weights w² (different scales too)."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    pm = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), adapters[0],
                                   adapter_name="a")
    pm.load_adapter(adapters[2], adapter_name="c")
    w = [0.3, 0.7]
    pm.add_weighted_adapter(["a", "c"], w, "cat", combination_type="cat")
    pm.add_weighted_adapter(["a", "c"], [x * x for x in w], "lin", combination_type="linear")
    ours = {"cat": merge_lora_exact([load_lora(adapters[0]), load_lora(adapters[2])], w).adapter,
            "lin": merge_lora_factors([load_lora(adapters[0]), load_lora(adapters[2])], w).adapter}
    for layer in range(2):
        for proj in ("q_proj", "v_proj"):
            mod = getattr(pm.base_model.model.model.layers[layer].self_attn, proj)
            for name, adapter in ours.items():
                want = (mod.lora_B[name].weight @ mod.lora_A[name].weight) * mod.scaling[name]
                got = adapter.dense_deltas()[f"model.layers.{layer}.self_attn.{proj}.weight"]
                torch.testing.assert_close(got, want.detach(), atol=1e-6, rtol=1e-5)
