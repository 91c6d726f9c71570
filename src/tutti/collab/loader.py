"""From a composite config to a composite model: resolve members, then build the registered strategy.

Strategies are entries of :data:`STRATEGIES` (``(config, members) -> Model``); a later strategy (router,
cascade, vote, MBR, fusion...) registers itself and needs no change here.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tutti.config.composite import (
    CompositeConfig,
    is_composite_dict,
    is_merge_dict,
    load_composite_config,
    parse_composite,
)
from tutti.errors import ConfigError, TuttiError
from tutti.registry import Registry

StrategyBuilder = Callable[[CompositeConfig, Sequence[Any]], Any]
STRATEGIES: Registry[StrategyBuilder] = Registry("composite strategy")


def register_builtins() -> None:
    """Import the modules that register the built-in strategies (idempotent)."""
    import importlib

    for mod in ("tutti.collab.strategies", "tutti.collab.speculative", "tutti.collab.bytes_align",
                "tutti.aggregate.strategies", "tutti.routing.register"):
        importlib.import_module(mod)


def _read_yaml(path: Path) -> Any:
    import yaml

    try:
        return yaml.safe_load(path.read_text())
    except OSError as e:
        raise ConfigError(f"{path}: cannot read ({e.strerror})") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: invalid YAML ({str(e).splitlines()[0]})") from None


def _merged_member(config: dict[str, Any] | Path, base: Path | None) -> Any:
    """Run a merge config once into the cache and load the result."""
    from tutti.merging import merge
    from tutti.models.hf import HFModel
    from tutti.paths import models_cache

    data = _read_yaml(config) if isinstance(config, Path) else config
    key = hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]
    out = models_cache() / "_merged" / key
    if not (out / "config.json").is_file():
        merge(data, out)
    return HFModel.load(out, name=f"merge-{key}")


def load_member(spec: Any, *, base: Path | None = None, dtype: str = "float32") -> Any:
    """One member: a loaded model object, a zoo name/path/hub id, a composite or merge (YAML path or dict)."""
    if hasattr(spec, "generate") and hasattr(spec, "next_token_logprobs"):
        return spec  # already a model (Python API)
    if isinstance(spec, dict):
        if is_composite_dict(spec):
            return load(spec, base=base)
        if is_merge_dict(spec):
            return _merged_member(spec, base)
        if set(spec) == {"remote"}:
            return _remote_member(spec["remote"])
        raise ConfigError(f"member {spec!r}: a dict member must be a composite (strategy:), a merge "
                          "(merge_method:) or a remote endpoint (remote: {base_url, model})")
    if not isinstance(spec, str | Path):
        raise ConfigError(f"member {spec!r}: expected a model name, a path or a config")
    s = str(spec)
    if s.endswith((".yaml", ".yml")):
        p = Path(s) if Path(s).is_absolute() or base is None else base / s
        if not p.is_file():
            raise ConfigError(f"member config {s!r} not found (looked at {p})")
        data = _read_yaml(p)
        if is_composite_dict(data):
            return load(p)
        if is_merge_dict(data):
            return _merged_member(p, p.parent)
        raise ConfigError(f"{p}: neither a composite (strategy:) nor a merge config (merge_method:)")
    from tutti.models.hf import HFModel

    if base is not None and not Path(s).is_absolute() and (base / s).exists():
        s = str(base / s)
    return HFModel.load(s, dtype=dtype, name=str(spec))


def _remote_member(spec: Any) -> Any:
    """An OpenAI-compatible endpoint as a member (``remote: {base_url, model, api_key_env, tokenizer}``)."""
    from tutti.config._io import validate
    from tutti.config.serve import RemoteSpec
    from tutti.models.remote import RemoteModel

    return RemoteModel.from_spec(validate(RemoteSpec, spec, source="member", prefix="remote."))


def load(spec: str | Path | dict[str, Any] | CompositeConfig, *, base: Path | None = None,
         members: Sequence[Any] | None = None) -> Any:
    """Build a composite model from a YAML path, a dict or a :class:`CompositeConfig`.

    Args:
        spec: the composite description.
        base: folder that relative member paths are resolved against (default: the YAML's folder).
        members: already-loaded member models to use instead of loading ``config.members`` (Python API).

    Returns:
        A model implementing :class:`tutti.models.interface.Model`.
    """
    if isinstance(spec, CompositeConfig):
        cfg = spec
    elif isinstance(spec, dict):
        cfg = parse_composite(spec)
    else:
        p = Path(spec)
        if not p.is_file():
            raise ConfigError(f"composite config {str(spec)!r} not found; give a YAML file path")
        cfg = load_composite_config(p)
        base = base or p.parent
    register_builtins()
    entry = STRATEGIES.entry(cfg.strategy)  # did-you-mean before loading any model
    if members is not None and len(members) != len(cfg.members):
        raise TuttiError(f"{len(members)} member models given for {len(cfg.members)} config members")
    loaded = list(members) if members is not None else [load_member(m, base=base, dtype=cfg.dtype)
                                                           for m in cfg.members]
    return entry.obj(cfg, loaded)
