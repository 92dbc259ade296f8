"""Readers for the benchmarks the seed papers evaluate on.

One module per dataset family: :mod:`.correspondence` (PF-WILLOW, SPair-71k,
PF-PASCAL, CUB keypoints), :mod:`.coseg` (iCoseg, MSRC, Internet, PASCAL-CO and
any images+masks folders), :mod:`.video` (DAVIS 2016/2017) and :mod:`.parts`
(PASCAL-Part, part label masks). Readers return plain dataclasses holding paths
and numpy arrays, validate what they read, and raise
:class:`~dinokit.errors.DatasetError` naming the offending file.
:mod:`.registry` holds the benchmarks and their datasets (reader, title,
options, protocol defaults): adding a dataset is one reader plus one entry
there. :data:`READERS` (name -> reader) is derived from it.
"""

from __future__ import annotations

from typing import Any, Callable

from .common import image_size, read_binary_mask, read_label_mask, read_rgb
from .correspondence import (
    VOC_CLASSES,
    CorrespondencePair,
    KeypointImage,
    keypoint_bbox,
    make_pair,
    pairs_within_categories,
    read_cub_keypoints,
    read_cub_pairs,
    read_pf_pascal,
    read_pf_willow,
    read_pf_willow_images,
    read_spair,
)
from .coseg import MASK_DIR_NAMES, CosegItem, CosegSet, read_coseg
from .parts import PartAnnotation, PartImage, PartObject, read_part_masks, read_pascal_part
from .registry import DATASETS, BenchmarkDataset
from .video import VOID_LABEL, VideoSequence, read_davis

READERS: dict[str, Callable[..., Any]] = {}
for _entry in DATASETS:  # a name serving two benchmarks (cub) maps to its first entry's reader
    READERS.setdefault(_entry.name, _entry.reader)
READERS["part-masks"] = read_part_masks
del _entry
"""Dataset name -> reader (from :data:`.registry.DATASETS`); every reader takes the dataset folder first."""

__all__ = [
    "READERS",
    "DATASETS",
    "BenchmarkDataset",
    "VOC_CLASSES",
    "VOID_LABEL",
    "MASK_DIR_NAMES",
    "CorrespondencePair",
    "KeypointImage",
    "CosegItem",
    "CosegSet",
    "VideoSequence",
    "PartObject",
    "PartAnnotation",
    "PartImage",
    "image_size",
    "keypoint_bbox",
    "make_pair",
    "pairs_within_categories",
    "read_binary_mask",
    "read_label_mask",
    "read_rgb",
    "read_pf_willow",
    "read_pf_willow_images",
    "read_spair",
    "read_pf_pascal",
    "read_cub_keypoints",
    "read_cub_pairs",
    "read_coseg",
    "read_davis",
    "read_pascal_part",
    "read_part_masks",
]
