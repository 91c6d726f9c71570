"""Collaborative decoding: composite models that behave like one model.

Stable public API (used by ``tutti generate`` and ``tutti serve``)::

    import tutti.collab
    model = tutti.collab.load("composite.yaml")      # or a dict, or a CompositeConfig
    model.generate(prompts, params=SamplingParams(...))  # + stream / next_token_logprobs / loglikelihood

``load(path_or_dict) -> Model`` returns an object implementing :class:`tutti.models.interface.Model`, whatever
the strategy. Strategies (``ensemble``, ``contrastive``, ``proxy``, ``speculative``) are entries of the
registry :data:`STRATEGIES`; combiners (:data:`COMBINERS`) and vocabulary aligners (:data:`ALIGNERS`) are
registries too. The YAML schema is :class:`tutti.config.composite.CompositeConfig`; see ``docs/composites.md``.
"""

from __future__ import annotations

from typing import Any

_LAZY = {
    "load": "tutti.collab.loader",
    "load_member": "tutti.collab.loader",
    "STRATEGIES": "tutti.collab.loader",
    "COMBINERS": "tutti.collab.combiners",
    "ALIGNERS": "tutti.collab.aligners",
    "TokenComposite": "tutti.collab.composite",
    "SpeculativeModel": "tutti.collab.speculative",
}
def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        importlib.import_module("tutti.collab.loader").register_builtins()
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'tutti.collab' has no attribute {name!r}")


__all__ = ["ALIGNERS", "COMBINERS", "STRATEGIES", "SpeculativeModel", "TokenComposite", "load", "load_member"]
