"""The ``router`` composite: pick one member per prompt, call only that member (RouteLLM-style, N models).

Trained at load time from a correctness matrix (``tutti eval A B C --task T`` writes one)::

    strategy: router
    members: [arith-expert, facts-expert, base]
    options:
      router: knn                 # knn | logistic | mlp | mf | random
      features: minilm            # minilm | causal_lm
      matrix: runs/dev/matrix.jsonl
      costs: [1.0, 1.0, 0.5]
      target_shares: [0.4, 0.4, 0.2]         # calibrated on calibration_prompts (default: the matrix prompts)

The router reads the last user turn of a chat prompt (as RouteLLM). Log-likelihood requests go to the member the
router picks for their context, so routed models can also be scored on multiple-choice tasks.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from tutti.aggregate.base import last_user_text
from tutti.errors import TuttiError
from tutti.models.interface import (
    GenerationOutput,
    LoglikelihoodResult,
    Model,
    Prompt,
    SamplingParams,
    StreamChunk,
)
from tutti.routing.decide import calibrate_offsets, choose
from tutti.routing.matrix import CorrectnessMatrix


class RouterModel:
    """Members behind a trained router.

    Args:
        members: models, one per router output column.
        router: a fitted router (``predict(features) -> (n, m)``).
        featurizer: prompt featurizer used in training.
        costs: cost per call of each member (default 1 each).
        willingness: how much predicted quality one unit of cost is worth (0 = ignore cost).
        offsets: per-member calibration offsets (see :func:`tutti.routing.decide.calibrate_offsets`).
        name: model id.
    """

    def __init__(self, members: Sequence[Model], router: Any, featurizer: Any, *, costs: Sequence[float] | None = None,
                 willingness: float = 0.0, offsets: Sequence[float] | torch.Tensor | None = None,
                 name: str = "router") -> None:
        self.members = list(members)
        self.router = router
        self.featurizer = featurizer
        self.costs = list(costs) if costs is not None else [1.0] * len(self.members)
        if len(self.costs) != len(self.members):
            raise TuttiError(f"router: {len(self.costs)} costs for {len(self.members)} members")
        self.willingness = willingness
        self.offsets = offsets
        self.name = name
        self.router_file: Path | None = None  # where the fitted router is stored (train_router with store=)
        self.router_loaded = False  # True when it was read from there instead of fitted

    def predict(self, prompts: Sequence[Prompt]) -> torch.Tensor:
        """Predicted quality ``(n, members)`` of each member on each prompt."""
        pred = self.router.predict(self.featurizer.features([last_user_text(p) for p in prompts]))
        if pred.shape[1] != len(self.members):
            raise TuttiError(f"router predicts {pred.shape[1]} models but the composite has {len(self.members)} members")
        return pred

    def route(self, prompts: Sequence[Prompt]) -> list[int]:
        """The member index chosen for each prompt."""
        if not prompts:
            return []
        d = choose(self.predict(prompts), costs=self.costs, willingness=self.willingness, offsets=self.offsets)
        return [int(i) for i in d]

    def calibrate(self, prompts: Sequence[Prompt], target_shares: Sequence[float]) -> torch.Tensor:
        """Set offsets so that ``target_shares`` of ``prompts`` go to each member (cost term included)."""
        pred = self.predict(prompts).double()
        if self.willingness:
            pred = pred - self.willingness * torch.as_tensor(self.costs, dtype=torch.float64)
        self.offsets = calibrate_offsets(pred, target_shares)
        return self.offsets

    def _groups(self, prompts: Sequence[Prompt]) -> tuple[list[int], dict[int, list[int]]]:
        chosen = self.route(prompts)
        groups: dict[int, list[int]] = {}
        for i, j in enumerate(chosen):
            groups.setdefault(j, []).append(i)
        return chosen, groups

    def generate(self, prompts: Sequence[Prompt], *, params: SamplingParams) -> list[list[GenerationOutput]]:
        """Each prompt answered by its routed member (one batched call per member)."""
        _chosen, groups = self._groups(prompts)
        out: list[list[GenerationOutput]] = [[] for _ in prompts]
        for j, rows in groups.items():
            res = self.members[j].generate([prompts[i] for i in rows], params=params)
            for i, outs in zip(rows, res, strict=True):
                out[i] = [GenerationOutput(
                    text=o.text, token_ids=o.token_ids, finish_reason=o.finish_reason, prompt_tokens=o.prompt_tokens,
                    logprobs=o.logprobs,
                    info={**o.info, "strategy": "router", "routed_to": self.members[j].name, "route": j,
                          "cost": self.costs[j], "member_calls": o.info.get("member_calls", 1),
                          "generated_tokens": o.info.get("generated_tokens", o.completion_tokens)})
                    for o in outs]
        return out

    def stream(self, prompt: Prompt, *, params: SamplingParams) -> Iterator[StreamChunk]:
        """Stream from the routed member."""
        yield from self.members[self.route([prompt])[0]].stream(prompt, params=params)

    def next_token_logprobs(self, prompts: Sequence[Prompt]) -> torch.Tensor:
        """Next-token log-probs of each prompt's routed member (their vocabularies must have one size)."""
        _chosen, groups = self._groups(prompts)
        parts = {j: self.members[j].next_token_logprobs([prompts[i] for i in rows]) for j, rows in groups.items()}
        widths = {p.shape[1] for p in parts.values()}
        if len(widths) > 1:
            raise TuttiError("router: the chosen members have different vocabularies; next-token log-probs cannot "
                             "be stacked (use loglikelihood or generation)")
        out = torch.empty(len(prompts), widths.pop())
        for j, rows in groups.items():
            out[rows] = parts[j]
        return out

    def loglikelihood(self, requests: Sequence[tuple[Prompt, str]]) -> list[LoglikelihoodResult]:
        """Each request scored by the member routed for its context."""
        _chosen, groups = self._groups([c for c, _ in requests])
        out: list[LoglikelihoodResult | None] = [None] * len(requests)
        for j, rows in groups.items():
            for i, r in zip(rows, self.members[j].loglikelihood([requests[i] for i in rows]), strict=True):
                out[i] = r
        return out  # type: ignore[return-value]


def read_prompts(path: str | Path) -> list[str]:
    """Prompts from a JSONL file (``input`` field) or a text file (one per line)."""
    p = Path(path)
    if not p.is_file():
        raise TuttiError(f"calibration prompts {str(p)!r} not found")
    lines = [x for x in p.read_text(encoding="utf-8").splitlines() if x.strip()]
    if p.suffix == ".jsonl":
        try:
            return [str(json.loads(x)["input"]) for x in lines]
        except (json.JSONDecodeError, KeyError, TypeError):
            raise TuttiError(f"{p}: each line must be a JSON object with 'input'") from None
    return lines


def train_router(members: Sequence[Model], matrix: CorrectnessMatrix, *, router: str = "knn",
                 router_options: dict[str, Any] | None = None, features: str = "minilm",
                 features_model: str | None = None, columns: Sequence[str] | None = None,
                 store: bool | str | Path = False, **kw: Any) -> RouterModel:
    """Fit a router on ``matrix`` and wrap ``members`` with it.

    Args:
        members: models in the matrix's column order (or name the column of each with ``columns``).
        matrix: the training correctness matrix.
        router: registered router name; ``router_options`` its settings.
        features: registered featurizer (``minilm`` or ``causal_lm``); ``features_model`` its model.
        columns: matrix column of each member (default: members' names if they are all columns, else order).
        store: save the fitted router keyed by a hash of the matrix and the settings, and re-use it on the next
            load (see :mod:`tutti.routing.store`): True for ``$TUTTI_HOME/routers``, or a folder; False: always fit.
        **kw: :class:`RouterModel` settings (costs, willingness, name).
    """
    from tutti.routing.features import FEATURIZERS
    from tutti.routing.routers import build_router

    names = [getattr(m, "name", "") for m in members]
    if columns is None:
        columns = names if all(n in matrix.models for n in names) else None
    if columns is None:
        if len(matrix.models) != len(members):
            raise TuttiError(f"correctness matrix scores {len(matrix.models)} models ({', '.join(matrix.models)}) "
                             f"but the router has {len(members)} members; set options.columns")
        columns = list(matrix.models)
    sub = matrix.select(models=columns)
    feat_cls = FEATURIZERS.get(features)
    featurizer = feat_cls(features_model) if features_model else feat_cls()
    fitted = build_router(router, **(router_options or {}))
    path = None
    if store is not False:
        from tutti.routing.store import load_router_state, router_file, router_key

        key = router_key(sub, router=router, router_options=router_options or {}, features=features,
                         features_model=features_model)
        path = router_file(key, None if store is True else store)
        state = load_router_state(path)
        if state is not None:
            model = RouterModel(members, fitted.load_state(state), featurizer, **kw)
            model.router_file, model.router_loaded = path, True
            return model
    fitted.fit(featurizer.features(list(sub.prompts)), sub.scores)
    if path is not None:
        from tutti.routing.store import save_router

        save_router(path, fitted)
    model = RouterModel(members, fitted, featurizer, **kw)
    model.router_file, model.router_loaded = path, False
    return model
