"""Data-aware merges: Fisher merging and RegMean, with statistics collected through the HF backend.

* :mod:`~tutti.merging.data_aware.maths`: the closed forms, pure tensor functions;
* :mod:`~tutti.merging.data_aware.data`: the JSONL prompt sets;
* :mod:`~tutti.merging.data_aware.collect`: Fisher / Gram collection (batched, progress bar) and the on-disk
  cache keyed by model, dataset bytes and settings.

The registered ``fisher`` and ``regmean`` merge methods live in :mod:`tutti.merging.methods.extra_data_aware`.
"""

from __future__ import annotations

from tutti.merging.data_aware.maths import fisher_merge, regmean_merge, weighted_average

__all__ = ["fisher_merge", "regmean_merge", "weighted_average"]
