"""``tutti merge --device cuda`` == ``--device cpu`` for every conformance case and the randomised methods.

Runs only where CUDA is available (CI has no GPU; run it on a GPU machine with
``pytest tests/merging/test_cuda.py``). The maths is the same code on either device; the seed contract draws
its masks on the CPU (NumPy), so randomised methods must give the same masks on a GPU: any mask difference
would show as an error of the size of a task vector, far above the tolerance.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tests.merging.test_conformance import CASES, read_all

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

#: float32 results may differ by reduction order between devices; a mask or formula difference is far larger
REL_TOL = {"float32": 1e-5, "bfloat16": 2**-7}
#: methods that select entries by a score computed with reductions (softmax, KL): a score within rounding of
#: the threshold can fall on the other side on another device; the share of entries allowed to differ
THRESHOLDED = {"arcee_fusion": 5e-3}
RANDOM = {
    "dare_ties": {"merge_method": "dare_ties", "dtype": "float32", "base_model": "M0", "models": [
        {"model": "M1", "parameters": {"weight": 0.6, "density": 0.4}},
        {"model": "M2", "parameters": {"weight": 0.4, "density": 0.7}}]},
    "dare_linear": {"merge_method": "dare_linear", "dtype": "float32", "base_model": "M0", "models": [
        {"model": "M1", "parameters": {"weight": 0.6, "density": 0.3}},
        {"model": "M2", "parameters": {"weight": 0.4, "density": 0.5}}]},
    "della": {"merge_method": "della", "dtype": "float32", "base_model": "M0", "parameters": {"epsilon": 0.1},
              "models": [{"model": "M1", "parameters": {"weight": 0.6, "density": 0.4}},
                         {"model": "M2", "parameters": {"weight": 0.4, "density": 0.6}}]},
    "della_linear": {"merge_method": "della_linear", "dtype": "float32", "base_model": "M0",
                     "parameters": {"epsilon": 0.15}, "models": [
                         {"model": "M1", "parameters": {"weight": 0.6, "density": 0.5}},
                         {"model": "M3", "parameters": {"weight": 0.4, "density": 0.5}}]},
}


@pytest.mark.parametrize("case", [*CASES, *RANDOM])
def test_cuda_equals_cpu(case: str, with_models, tmp_path: Path) -> None:
    import tutti

    config = with_models(CASES.get(case) or RANDOM[case])
    cpu = read_all(tutti.merge(config, tmp_path / "cpu", device="cpu", random_seed=7))
    gpu = read_all(tutti.merge(config, tmp_path / "cuda", device="cuda", random_seed=7))
    assert sorted(cpu) == sorted(gpu)
    for name, x in cpu.items():
        y = gpu[name]
        assert (x.shape, x.dtype) == (y.shape, y.dtype), name
        scale = max(float(x.float().abs().max()), 1e-12)
        off = (x.float() - y.float()).abs() > REL_TOL[str(x.dtype).removeprefix("torch.")] * scale
        if case in THRESHOLDED:  # entries at the selection threshold may flip; nothing else may differ
            assert float(off.float().mean()) <= THRESHOLDED[case], f"{name}: {int(off.sum())} entries differ"
        else:
            assert not off.any(), f"{name}: {int(off.sum())} entries differ, max {float((x - y).abs().max()):.3e}"
