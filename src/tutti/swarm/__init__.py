"""Model Swarms: collaborative particle-swarm search over LLM experts (Feng et al., arXiv 2410.11163).

``search(config)`` runs a whole search; :class:`Swarm` is the ask/tell core that knows nothing about how
utilities are computed.
"""

from tutti.swarm.core import SearchParams, Swarm

__all__ = ["SearchParams", "Swarm", "SwarmResult", "search"]


def __getattr__(name: str):  # the run recipe imports torch-heavy pieces; load it on first use
    if name in ("search", "SwarmResult"):
        from tutti.swarm import run

        return getattr(run, name)
    raise AttributeError(name)
