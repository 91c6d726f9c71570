"""tutti merge == mergekit 0.1.5 on tiny models, for every case of ``cases/conformance.yaml``.

mergekit is the oracle (LGPL, test-only). Each case runs through ``mergekit.merge.run_merge`` and through
``tutti.merge`` into temporary folders; every output tensor must match within 1e-6 relative to the tensor's
largest magnitude (fp32), with the same names, shapes and dtypes, and the same layer count in ``config.json``.
To add a case, add one line to the YAML file.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

CASES_FILE = Path(__file__).parent / "cases" / "conformance.yaml"
CASES: dict[str, dict] = yaml.safe_load(CASES_FILE.read_text())
REL_TOL = {"float32": 1e-6, "bfloat16": 2**-7}


def run_mergekit(config: dict, out: Path, **options: object) -> Path:
    from mergekit.config import MergeConfiguration
    from mergekit.merge import run_merge
    from mergekit.options import MergeOptions

    run_merge(MergeConfiguration.model_validate(config), str(out),
              options=MergeOptions(copy_tokenizer=True, write_model_card=False, quiet=True, **options))
    return out


def read_all(folder: Path) -> dict:
    from tutti.models.checkpoint import Checkpoint

    ck = Checkpoint(folder)
    return {k: ck.get(k).clone() for k in ck}


def assert_same_checkpoint(ours: Path, theirs: Path) -> None:
    a, b = read_all(ours), read_all(theirs)
    assert sorted(a) == sorted(b)
    for name in b:
        x, y = a[name], b[name]
        assert x.shape == y.shape, name
        assert x.dtype == y.dtype, name
        tol = REL_TOL[str(y.dtype).removeprefix("torch.")]
        scale = max(float(y.float().abs().max()), 1e-12)
        err = float((x.float() - y.float()).abs().max())
        assert err <= tol * scale, f"{name}: max abs diff {err:.3e} > {tol:.0e} * {scale:.3e}"
    ca, cb = (json.loads((p / "config.json").read_text()) for p in (ours, theirs))
    assert ca["num_hidden_layers"] == cb["num_hidden_layers"]


@pytest.mark.parametrize("case", list(CASES))
def test_matches_mergekit(case: str, with_models, tmp_path: Path) -> None:
    import tutti

    config = with_models(CASES[case])
    theirs = run_mergekit(config, tmp_path / "mergekit")
    ours = tutti.merge(config, tmp_path / "tutti")
    assert_same_checkpoint(ours, theirs)
