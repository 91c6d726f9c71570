"""The evaluation engine: a resident base model per worker, particles swapped in place, batched utilities.

:class:`Evaluator` loads the base once, attaches the particle representation (one PEFT adapter, or the base
weights) and scores particles by copying each vector into the live tensors. :class:`LocalPool` runs one
evaluator in-process; :class:`RayPool` runs one evaluator per Ray actor and sends particles as tensors.
A failing evaluation (an exception or a NaN) comes back as NaN with the reason; it never stops the search.
"""

from __future__ import annotations

import math
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from tutti.config.swarm import UtilityConfig
from tutti.swarm.particles import Representation


@dataclass(frozen=True)
class EvalRecord:
    """One particle's evaluation: the utility (NaN on failure), timings and the failure reason."""

    value: float
    swap_s: float
    eval_s: float
    error: str = ""


class Evaluator:
    """One worker: the base model loaded once, a particle swapper, and the utility.

    Args:
        rep: the particle representation (with the base model path).
        utility: the utility config.
        allow_test: allow a test-split utility (reports after search, or the loud CLI flag).
        batch_size: sequences per forward pass.
        dtype: weights dtype of the resident model.
        device: where the resident model runs (``cpu``, ``cuda``, ``cuda:N``); particles stay on the CPU and
            are copied in.
        model: an already loaded :class:`~tutti.models.hf.HFModel` of the base to reuse.
    """

    def __init__(self, rep: Representation, utility: UtilityConfig, *, allow_test: bool = False,
                 batch_size: int = 16, dtype: str = "float32", device: str = "cpu",
                 model: Any | None = None) -> None:
        from tutti.evaluation.utilities import build_utility
        from tutti.models.hf import HFModel

        torch.manual_seed(0)  # nothing here should draw, but a worker's torch RNG is seeded all the same
        self.rep = rep
        self.model = model if model is not None else HFModel.load(rep.base, dtype=dtype, batch_size=batch_size,
                                                                 device=device, name="swarm-particle")
        self.swapper = rep.attach(self.model)
        self.utility = build_utility(utility, allow_test=allow_test)
        self.extra: dict[str, Any] = {}

    def evaluate(self, vec: torch.Tensor, utility: Any | None = None) -> EvalRecord:
        """Swap ``vec`` in and score it with the utility (or ``utility``, another built utility)."""
        t0 = time.perf_counter()
        try:
            self.swapper.load(vec)
        except Exception as e:  # a bad particle must not kill the run
            return EvalRecord(math.nan, time.perf_counter() - t0, 0.0, f"swap failed: {e}")
        t1 = time.perf_counter()
        try:
            value = float((utility or self.utility)(self.model).value)
            err = "" if math.isfinite(value) else "utility is not finite"
        except Exception as e:
            value, err = math.nan, f"{type(e).__name__}: {e} ({traceback.format_exc(limit=2).splitlines()[-1]})"
        return EvalRecord(value if not err else math.nan, t1 - t0, time.perf_counter() - t1, err)

    def evaluate_many(self, vecs: Sequence[torch.Tensor]) -> list[EvalRecord]:
        """Evaluate particles one after another."""
        return [self.evaluate(v) for v in vecs]

    def evaluate_split(self, vec: torch.Tensor, utility_cfg: UtilityConfig) -> float:
        """Score ``vec`` with another utility config (e.g. the test split, for the final report)."""
        from tutti.evaluation.utilities import build_utility

        key = utility_cfg.model_dump_json()
        if key not in self.extra:
            self.extra[key] = build_utility(utility_cfg, allow_test=True)
        return self.evaluate(vec, self.extra[key]).value


class LocalPool:
    """Evaluate particles sequentially in this process (one resident model)."""

    def __init__(self, evaluator: Evaluator) -> None:
        self.evaluator = evaluator
        self.workers = 1

    def evaluate(self, x: torch.Tensor) -> list[EvalRecord]:
        """Evaluate every row of ``x`` ``(N, D)``."""
        return self.evaluator.evaluate_many(list(x.unbind(0)))

    def close(self) -> None:
        """Nothing to release."""


class RayPool:
    """One :class:`Evaluator` per Ray actor; each holds the base model, particles travel as tensors.

    Args:
        address: ``"local"`` starts a local Ray instance; otherwise the address of a running cluster.
        workers: number of actors.
        num_cpus: CPUs of a local instance (ignored when connecting to a cluster).
        kwargs: passed to :class:`Evaluator` in every actor.
    """

    def __init__(self, address: str, workers: int, *, num_cpus: int | None = None, **kwargs: Any) -> None:
        import ray

        self._own = not ray.is_initialized()
        if self._own:
            init: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                                    "ignore_reinit_error": True}
            if address == "local":
                init["num_cpus"] = num_cpus or workers
            else:
                init["address"] = address
            _ray_init(init)
        actor = ray.remote(num_cpus=1)(_RayEvaluator)
        self.actors = [actor.remote(**kwargs) for _ in range(workers)]
        self.workers = workers

    def evaluate(self, x: torch.Tensor) -> list[EvalRecord]:
        """Evaluate the rows of ``x`` spread over the actors (contiguous blocks, results in order)."""
        import ray

        rows = list(x.unbind(0))
        per = math.ceil(len(rows) / self.workers)
        futures = [a.evaluate_many.remote([r.clone() for r in rows[i * per:(i + 1) * per]])
                   for i, a in enumerate(self.actors) if rows[i * per:(i + 1) * per]]
        return [rec for block in ray.get(futures) for rec in block]

    def close(self) -> None:
        """Stop the actors (and the local Ray instance if this pool started it)."""
        import ray

        for a in self.actors:
            ray.kill(a)
        if self._own:
            ray.shutdown()


def _ray_init(init: dict[str, Any], attempts: int = 3) -> None:
    """``ray.init`` with retries: a busy machine can miss Ray's fixed 30 s raylet start-up window."""
    import ray

    from tutti.errors import TuttiError

    for attempt in range(attempts):
        try:
            ray.init(**init)
            return
        except Exception as e:
            ray.shutdown()
            if "timed out during startup" not in str(e) or attempt == attempts - 1:
                raise TuttiError(f"could not start or reach Ray ({init.get('address', 'local')}): {e}") from e


class _RayEvaluator:
    def __init__(self, **kwargs: Any) -> None:
        torch.set_num_threads(1)
        self.ev = Evaluator(**kwargs)

    def evaluate_many(self, vecs: list[torch.Tensor]) -> list[EvalRecord]:
        return self.ev.evaluate_many(vecs)
