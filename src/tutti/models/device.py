"""One check of a ``device`` argument, shared by merging, model loading and the benchmarks."""

from __future__ import annotations

from tutti.errors import ConfigError


def check_device(device: str, *, hint: str = "") -> None:
    """Raise a one-line :class:`ConfigError` unless ``device`` names a device torch can use here.

    ``hint`` is appended to the message (what else the user could do).
    """
    import torch

    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {device}: CUDA is not available here; use --device cpu{hint}")
    if device != "cpu" and not device.startswith(("cuda", "mps", "xpu")):
        raise ConfigError(f"unknown device {device!r}; use cpu or cuda{hint}")
