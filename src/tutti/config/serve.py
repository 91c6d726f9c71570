"""The ``tutti serve`` config: which models and composites to serve, under which ids, and how.

Frozen, validated data; imports no torch. Example::

    host: 127.0.0.1
    port: 8000
    api_key_env: TUTTI_API_KEY        # or api_key: "..." (the env var is safer)
    models:
      - id: smol
        model: smollm2-135m-instruct  # zoo name, local folder or hub id
      - id: duo
        composite: configs/duo.yaml   # a composite YAML (or an inline dict), built by tutti.collab
      - id: far
        remote: {base_url: "http://10.0.0.2:8000/v1", model: smol}
    queue_size: 64
    max_batch_size: 8
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from tutti.config._io import read_yaml, validate
from tutti.errors import ConfigError


class RemoteSpec(BaseModel):
    """An OpenAI-compatible endpoint used as a model.

    Args:
        base_url: the API root, e.g. ``http://127.0.0.1:8001/v1``.
        model: the model id on that endpoint.
        api_key_env: name of the environment variable holding its key (never the key itself in a file).
        tokenizer: a local tokenizer (zoo name, folder, hub id) to map top-log-prob tokens to ids, needed for
            ``next_token_logprobs`` (top-k token ensembles).
        top_logprobs: how many alternatives to ask for per position in ``next_token_logprobs``.
        timeout_s: HTTP timeout per call.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    base_url: str
    model: str
    api_key_env: str | None = None
    tokenizer: str | None = None
    top_logprobs: int = Field(20, ge=1, le=100)
    timeout_s: float = Field(120.0, gt=0)


class ModelEntry(BaseModel):
    """One served model id and where its model comes from (exactly one of model / composite / remote).

    Args:
        id: the name clients pass as ``model``.
        model: zoo name, local folder or hub id, loaded with the HF backend.
        composite: a composite config (YAML path or inline dict) built by ``tutti.collab.load``.
        remote: an OpenAI-compatible endpoint.
        dtype: weights dtype for ``model`` (fp32 default; bf16 is slow on most CPUs).
        trust_remote_code: allow custom model code from the checkpoint (off by default).
        max_batch_size: override of the server-wide batch size for this model.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(min_length=1, pattern=r"^[^\s/]+(/[^\s/]+)*$")
    model: str | None = None
    composite: str | dict[str, Any] | None = None
    remote: RemoteSpec | None = None
    dtype: str = "float32"
    trust_remote_code: bool = False
    max_batch_size: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _one_source(self) -> ModelEntry:
        given = [k for k in ("model", "composite", "remote") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"model {self.id!r}: give exactly one of model / composite / remote (got {given or 'none'})")
        return self


class ServeConfig(BaseModel):
    """Everything ``tutti serve`` needs.

    Args:
        models: the served entries (ids must be unique).
        host: bind address (loopback by default; use 0.0.0.0 deliberately).
        port: TCP port.
        api_key: required bearer key (prefer ``api_key_env``); None = no key.
        api_key_env: environment variable holding the key.
        queue_size: most waiting requests per model; more get HTTP 503.
        max_batch_size: most requests merged into one ``generate`` call.
        batch_wait_ms: how long the worker waits to fill a batch after the first request.
        request_timeout_s: per-request limit; a request past it gets HTTP 504 (or an error event when streaming).
        default_max_tokens: ``max_tokens`` when the client gives none (clamped to the context left).
        max_n: largest ``n`` accepted.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    models: tuple[ModelEntry, ...] = Field(min_length=1)
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    api_key: str | None = None
    api_key_env: str | None = None
    queue_size: int = Field(64, ge=1)
    max_batch_size: int = Field(8, ge=1)
    batch_wait_ms: float = Field(5.0, ge=0)
    request_timeout_s: float = Field(300.0, gt=0)
    default_max_tokens: int = Field(256, ge=1)
    max_n: int = Field(8, ge=1)

    @model_validator(mode="after")
    def _unique_ids(self) -> ServeConfig:
        ids = [m.id for m in self.models]
        dup = sorted({i for i in ids if ids.count(i) > 1})
        if dup:
            raise ValueError(f"duplicate model ids: {', '.join(dup)}")
        return self

    def resolved_api_key(self) -> str | None:
        """The key clients must send: ``api_key``, else the value of ``api_key_env``."""
        if self.api_key:
            return self.api_key
        if self.api_key_env:
            key = os.environ.get(self.api_key_env)
            if not key:
                raise ConfigError(f"api_key_env {self.api_key_env!r} is not set; export it or drop api_key_env")
            return key
        return None


def parse_serve_config(data: dict[str, Any], *, source: str = "config") -> ServeConfig:
    """Validate a dict as a :class:`ServeConfig`; raises :class:`ConfigError` with a one-line message."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: a serve config is a mapping with a 'models' list")
    return validate(ServeConfig, data, source=source)


def load_serve_config(path: str | Path) -> ServeConfig:
    """Read and validate a serve YAML file; relative composite paths are resolved against its folder."""
    p = Path(path)
    data = read_yaml(p, what="serve config")
    if isinstance(data, dict):
        for m in data.get("models") or []:
            comp = m.get("composite") if isinstance(m, dict) else None
            if isinstance(comp, str) and not Path(comp).is_absolute() and (p.parent / comp).exists():
                m["composite"] = str(p.parent / comp)
    return parse_serve_config(data, source=str(p))
