"""From predicted quality to a model choice: costs, willingness to pay, and calibration to target call shares.

The decision for prompt i is ``argmax_m pred[i, m] + offset[m] - willingness * cost[m]`` (ties: lowest index,
i.e. member order). The per-model offsets are what calibration sets: RouteLLM calibrates one threshold so a
target fraction p of calls goes to the strong model (the (1-p)-quantile of its win rates on user prompts);
:func:`calibrate_offsets` does the same for N models, hitting a target share for each.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from tutti.errors import TuttiError


def choose(pred: torch.Tensor, *, costs: Sequence[float] | torch.Tensor | None = None, willingness: float = 0.0,
           offsets: Sequence[float] | torch.Tensor | None = None) -> torch.Tensor:
    """Index of the model to call for each prompt, ``(n,)`` long."""
    u = pred.double().clone()
    if offsets is not None:
        u = u + torch.as_tensor(offsets, dtype=torch.float64)
    if costs is not None and willingness:
        u = u - willingness * torch.as_tensor(costs, dtype=torch.float64)
    return u.argmax(-1)  # first maximum on ties


def shares(choice: torch.Tensor, m: int) -> torch.Tensor:
    """Fraction of prompts sent to each of ``m`` models."""
    return torch.bincount(choice, minlength=m).double() / max(len(choice), 1)


def calibrate_offsets(pred: torch.Tensor, target: Sequence[float], *, sweeps: int = 30, tol: float = 1e-3
                      ) -> torch.Tensor:
    """Per-model offsets so that :func:`choose` sends ``target[m]`` of the calibration prompts to model m.

    Cyclic coordinate updates: model 0 keeps offset 0; each other model's offset is set, with the others fixed,
    to the target quantile of the margin it needs on each prompt (``max_{k != j}(pred_k + off_k) - pred_j``);
    repeat until every share is within ``tol`` (or ``sweeps``). For two models one update is exactly RouteLLM's
    quantile threshold on ``pred[:, 1] - pred[:, 0]``.

    Args:
        pred: ``(n, m)`` predictions on the user's own prompts.
        target: one share per model, summing to 1.
        sweeps: most passes over the models.
        tol: stop when every share is this close to its target.
    """
    n, m = pred.shape
    t = torch.as_tensor(target, dtype=torch.float64)
    if len(t) != m or (t < 0).any() or abs(float(t.sum()) - 1) > 1e-6:
        raise TuttiError(f"target shares {list(target)} must be {m} non-negative numbers summing to 1")
    if n == 0:
        raise TuttiError("calibration needs at least one prompt")
    p = pred.double()
    off = torch.zeros(m, dtype=torch.float64)
    for _ in range(sweeps):
        for j in range(1, m):
            others = torch.cat([p[:, :j] + off[:j], p[:, j + 1:] + off[j + 1:]], 1)
            need = (others.max(1).values - p[:, j]).sort().values  # (n,): offset above which j wins
            k = round(float(t[j]) * n)
            if k <= 0:
                off[j] = need[0] - 1.0
            elif k >= n:
                off[j] = need[-1] + 1.0
            else:
                off[j] = (need[k - 1] + need[k]) / 2
        if float((shares(choose(p, offsets=off), m) - t).abs().max()) <= tol:
            break
    return off
