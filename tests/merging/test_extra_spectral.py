"""TSV-M, Iso-C and Iso-CTS: closed forms on hand-made matrices and the invariants the papers imply."""

from __future__ import annotations

import pytest
import torch

from tutti.errors import ConfigError
from tutti.merging.base import MERGE_METHODS, get_method
from tutti.merging.methods.extra_spectral import iso_c_merge, iso_cts_merge, nearest_orthogonal, tsv_merge


def _rand(*shape: int, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def test_tsv_one_task_without_truncation_reproduces_the_task_matrix() -> None:
    tau = _rand(6, 4, seed=0)
    torch.testing.assert_close(tsv_merge([tau], rank_fraction=1.0), tau, atol=1e-5, rtol=1e-5)


def test_tsv_on_orthogonal_tasks_is_the_sum_of_their_low_rank_parts() -> None:
    e = torch.eye(4)
    t1 = 3 * torch.outer(e[0], e[1]) + 1 * torch.outer(e[2], e[3])  # singular values 3, 1
    t2 = 2 * torch.outer(e[1], e[0]) + 0.5 * torch.outer(e[3], e[2])  # 2, 0.5
    # rank fraction 1/4 keeps the top direction of each: 3 e0 e1ᵀ and 2 e1 e0ᵀ, already orthogonal
    out = tsv_merge([t1, t2], rank_fraction=0.25, alpha=0.5)
    torch.testing.assert_close(out, 0.5 * (3 * torch.outer(e[0], e[1]) + 2 * torch.outer(e[1], e[0])))


def test_tsv_norm_is_the_norm_of_the_kept_singular_values() -> None:
    taus = [_rand(12, 10, seed=s) for s in range(3)]
    kept = torch.cat([torch.linalg.svdvals(t)[:3] for t in taus])  # default fraction 1/3 of rank 10 -> 3
    out = tsv_merge(taus, alpha=2.0)
    assert torch.linalg.matrix_norm(out) == pytest.approx(2.0 * float(kept.norm()), rel=1e-5)
    assert int(torch.linalg.matrix_rank(out)) == 9


def test_nearest_orthogonal_is_orthonormal_and_fixes_orthonormal_input() -> None:
    q = nearest_orthogonal(_rand(7, 3, seed=1))
    torch.testing.assert_close(q.T @ q, torch.eye(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(nearest_orthogonal(q), q, atol=1e-5, rtol=0)


def test_iso_c_of_one_task_flattens_the_spectrum_with_the_right_norm() -> None:
    tau = _rand(8, 5, seed=2)
    u, s, vh = torch.linalg.svd(tau, full_matrices=False)
    out = iso_c_merge([tau], alpha=1.5)
    torch.testing.assert_close(out, 1.5 * s.mean() * (u @ vh), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(torch.linalg.svdvals(out), torch.full((5,), 1.5 * float(s.mean())), atol=1e-5,
                               rtol=1e-5)
    assert torch.linalg.matrix_norm(out) == pytest.approx(1.5 * float(s.mean()) * 5**0.5, rel=1e-5)


def test_iso_c_uses_the_sum_of_the_task_matrices() -> None:
    a, b = _rand(6, 6, seed=3), _rand(6, 6, seed=4)
    torch.testing.assert_close(iso_c_merge([a, b]), iso_c_merge([a + b]), atol=1e-5, rtol=1e-5)


def test_iso_cts_of_one_task_equals_iso_c() -> None:
    tau = _rand(10, 8, seed=5)
    torch.testing.assert_close(iso_cts_merge([tau], common_space_fraction=0.5), iso_c_merge([tau]), atol=1e-4,
                               rtol=1e-4)


def test_iso_cts_spectrum_is_flat_and_full_rank() -> None:
    taus = [_rand(9, 9, seed=s) for s in range(3)]
    sv = torch.linalg.svdvals(iso_cts_merge(taus, common_space_fraction=0.7))
    assert sv.max() / sv.min() < 1 + 1e-4


@pytest.mark.parametrize("fn", [tsv_merge, iso_c_merge, iso_cts_merge])
def test_one_d_tensors_fall_back_to_the_mean_task_vector(fn) -> None:
    a, b = torch.tensor([1.0, -2.0, 4.0]), torch.tensor([3.0, 0.0, 0.0])
    torch.testing.assert_close(fn([a, b], alpha=0.5), torch.tensor([1.0, -0.5, 1.0]))


@pytest.mark.parametrize("name", ["tsv", "iso_c", "iso_cts"])
def test_permuting_the_experts_does_not_change_the_merge(name: str) -> None:
    base = _rand(8, 6, seed=9)
    experts = [base + 0.1 * _rand(8, 6, seed=10 + i) for i in range(3)]
    m = get_method(name)
    torch.testing.assert_close(m(experts, base), m(experts[::-1], base), atol=1e-5, rtol=1e-5)


def test_registered_wrappers_add_the_base_and_keep_the_dtype() -> None:
    base = _rand(6, 4, seed=11).bfloat16()
    expert = base + 0.25 * _rand(6, 4, seed=12).bfloat16()
    out = get_method("tsv")([expert], base, rank_fraction=1.0)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), expert.float(), atol=2e-2, rtol=2e-2)
    assert MERGE_METHODS.entry("iso_cts").obj.extra["mergekit"] is False


def test_bad_parameters_are_config_errors() -> None:
    base = torch.zeros(3, 3)
    with pytest.raises(ConfigError, match="rank_fraction"):
        get_method("tsv")([base], base, rank_fraction=1.5)
    with pytest.raises(ConfigError, match="common_space_fraction"):
        get_method("iso_cts")([base], base, common_space_fraction=-0.1)
    with pytest.raises(ConfigError, match="needs a base model"):
        get_method("iso_c").check_inputs(2, has_base=False)


def _low_rank(m: int, n: int, r: int, seed: int) -> torch.Tensor:
    return _rand(m, r, seed=seed) @ _rand(r, n, seed=seed + 100)


def test_iso_c_flattens_only_the_numerical_rank_of_low_rank_task_matrices() -> None:
    a, b = _low_rank(20, 16, 2, seed=1), _low_rank(20, 16, 3, seed=2)  # LoRA-like: rank 5 in total
    u, s, vh = torch.linalg.svd(a + b, full_matrices=False)
    out = iso_c_merge([a, b])
    torch.testing.assert_close(out, s[:5].mean() * (u[:, :5] @ vh[:5]), atol=1e-5, rtol=1e-4)
    assert int(torch.linalg.matrix_rank(out)) == 5


def test_tsv_and_iso_cts_ignore_null_directions_of_low_rank_tasks() -> None:
    a, b = _low_rank(24, 18, 2, seed=3), _low_rank(24, 18, 2, seed=4)
    # TSV with the default fraction 1/2 would keep 9 directions per task; only 2 are real
    full = tsv_merge([a, b])
    assert int(torch.linalg.matrix_rank(full)) == 4
    # a rank-4 union: 0.5 common -> 2 directions, 1 per task; spectrum flat over the 4 kept directions
    out = iso_cts_merge([a, b], common_space_fraction=0.5)
    sv = torch.linalg.svdvals(out)
    assert int(torch.linalg.matrix_rank(out)) == 4
    torch.testing.assert_close(sv[:4], torch.full((4,), float(sv[0])), atol=1e-5, rtol=1e-4)
