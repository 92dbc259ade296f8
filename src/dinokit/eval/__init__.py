"""Evaluation on the benchmarks of the seed papers: dataset readers and metrics.

:mod:`dinokit.eval.datasets` reads correspondence (PF-WILLOW, SPair-71k,
PF-PASCAL, CUB), co-segmentation (iCoseg, MSRC, Internet, PASCAL-CO), video
(DAVIS) and part (PASCAL-Part) benchmarks; :mod:`dinokit.eval.metrics` scores
predictions on them (PCK, Jaccard/precision, DAVIS J and F, NMI/ARI).
"""

from . import datasets, metrics
from .datasets import (
    READERS,
    CorrespondencePair,
    CosegItem,
    CosegSet,
    KeypointImage,
    PartAnnotation,
    PartImage,
    VideoSequence,
    read_coseg,
    read_cub_keypoints,
    read_cub_pairs,
    read_davis,
    read_pascal_part,
    read_pf_pascal,
    read_pf_willow,
    read_spair,
)
from .metrics import (
    CosegAccumulator,
    DavisAccumulator,
    PartAccumulator,
    PCKAccumulator,
    ari,
    boundary_f_measure,
    coseg_precision,
    jaccard,
    nmi,
    pck,
    region_similarity,
)

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
