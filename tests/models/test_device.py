"""A device argument torch cannot use here is one clear error, wherever it is given."""

from __future__ import annotations

import pytest
import torch

from tutti.errors import ConfigError
from tutti.models.device import check_device


def test_unknown_and_unavailable_devices_are_one_line_errors(tiny_model_dir):
    from tutti.models.hf import HFModel

    check_device("cpu")
    with pytest.raises(ConfigError, match="unknown device 'gpu'; use cpu or cuda"):
        check_device("gpu")
    with pytest.raises(ConfigError, match="unknown device 'gpu'"):
        HFModel.load(tiny_model_dir, device="gpu")  # before any weights are read
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="--device cuda: CUDA is not available here; use --device cpu, or x"):
            check_device("cuda", hint=", or x")
        with pytest.raises(ConfigError, match="CUDA is not available"):
            HFModel.load(tiny_model_dir, device="cuda")
