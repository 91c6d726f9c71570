"""Options of the ``router`` and ``cascade`` strategies (frozen pydantic; no torch), under ``options:``."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class RouterOptions(BaseModel):
    """A router trained at load time from a correctness matrix.

    Args:
        matrix: JSONL correctness matrix (``tutti eval A B ... --task T --out DIR`` writes ``DIR/matrix.jsonl``).
        router: ``knn``, ``logistic``, ``mlp``, ``mf`` or ``random``; ``router_options`` its settings.
        features: ``minilm`` (all-MiniLM-L6-v2) or ``causal_lm``; ``features_model`` the model to use.
        columns: the matrix column of each member (default: by member name, else column order).
        costs: cost of one call to each member (default 1 each).
        willingness: predicted quality one unit of cost is worth (0 = ignore cost).
        target_shares: calibrate so these shares of calls go to each member ...
        calibration_prompts: ... on these prompts (JSONL with ``input`` or one per line; default: matrix prompts).
        store: save the fitted router, keyed by a hash of the matrix and these settings, and load it instead of
            refitting next time: true (default) under ``$TUTTI_HOME/routers``, a folder, or false (always fit).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    matrix: str
    router: str = "knn"
    router_options: dict[str, Any] = Field(default_factory=dict)
    features: str = "minilm"
    features_model: str | None = None
    columns: tuple[str, ...] | None = None
    costs: tuple[float, ...] | None = None
    willingness: float = Field(0.0, ge=0.0)
    target_shares: tuple[float, ...] | None = None
    calibration_prompts: str | None = None
    store: bool | str = True


class CascadeOptions(BaseModel):
    """A cascade over the members (cheapest first).

    Args:
        scorer: ``probability``, ``consistency`` or ``verifier``; ``scorer_options`` its settings.
        verifier: the verifier model (zoo name, path, composite) for ``scorer: verifier``.
        thresholds: acceptance threshold of each member but the last (required unless ``fit`` is given).
        fit: learn thresholds at load time, either from a dev correctness matrix with each member's answer
            probability (``{matrix: dev/matrix.jsonl, columns, max_cost, cost_weight}``; scorer ``probability``;
            no member is called) or by running the members on a task split (``{task, split: dev, metric:
            exact_match, max_cost, cost_weight, limit, max_new_tokens}``).
        costs: cost of one call to each member (default 1 each).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    scorer: Literal["probability", "consistency", "verifier"] = "probability"
    scorer_options: dict[str, Any] = Field(default_factory=dict)
    verifier: str | dict[str, Any] | None = None
    thresholds: tuple[float, ...] | None = None
    fit: dict[str, Any] | None = None
    costs: tuple[float, ...] | None = None

    @model_validator(mode="after")
    def _need(self) -> CascadeOptions:
        if self.thresholds is None and self.fit is None:
            raise ValueError("give thresholds (one per member but the last) or fit: {matrix: ...} / {task: ...} "
                             "to learn them")
        if self.scorer == "verifier" and self.verifier is None:
            raise ValueError("scorer 'verifier' needs options.verifier (a model)")
        return self
