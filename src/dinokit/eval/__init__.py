"""Evaluation on the benchmarks of the seed papers: dataset readers and metrics.

:mod:`dinokit.eval.datasets` reads correspondence (PF-WILLOW, SPair-71k,
PF-PASCAL, CUB), co-segmentation (iCoseg, MSRC, Internet, PASCAL-CO), video
(DAVIS) and part (PASCAL-Part) benchmarks; :mod:`dinokit.eval.metrics` scores
predictions on them (PCK, Jaccard/precision, DAVIS J and F, NMI/ARI).
"""

import importlib
from typing import Any

_SUBMODULES = ("datasets", "metrics", "benchmark", "knn", "baselines")


def __getattr__(name: str) -> Any:
    """Submodules and the names of :mod:`.datasets` and :mod:`.metrics`, imported on first use (so that the
    CLI can read the dataset registry without loading NumPy)."""
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    for module in ("datasets", "metrics"):
        mod = importlib.import_module(f"{__name__}.{module}")
        if name in getattr(mod, "__all__", ()):
            return getattr(mod, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "datasets",
    "metrics",
    "READERS",
    "CorrespondencePair",
    "CosegItem",
    "CosegSet",
    "KeypointImage",
    "PartAnnotation",
    "PartImage",
    "VideoSequence",
    "read_coseg",
    "read_cub_keypoints",
    "read_cub_pairs",
    "read_davis",
    "read_pascal_part",
    "read_pf_pascal",
    "read_pf_willow",
    "read_spair",
    "CosegAccumulator",
    "DavisAccumulator",
    "PartAccumulator",
    "PCKAccumulator",
    "ari",
    "boundary_f_measure",
    "coseg_precision",
    "jaccard",
    "nmi",
    "pck",
    "region_similarity",
]
