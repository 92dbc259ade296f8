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

import importlib
from typing import Any, Callable

_WHERE = {
    "image_size": "common",
    "read_binary_mask": "common",
    "read_label_mask": "common",
    "read_rgb": "common",
    "VOC_CLASSES": "correspondence",
    "CorrespondencePair": "correspondence",
    "KeypointImage": "correspondence",
    "keypoint_bbox": "correspondence",
    "make_pair": "correspondence",
    "pairs_within_categories": "correspondence",
    "read_cub_keypoints": "correspondence",
    "read_cub_pairs": "correspondence",
    "read_pf_pascal": "correspondence",
    "read_pf_willow": "correspondence",
    "read_pf_willow_images": "correspondence",
    "read_spair": "correspondence",
    "MASK_DIR_NAMES": "coseg",
    "CosegItem": "coseg",
    "CosegSet": "coseg",
    "read_coseg": "coseg",
    "PartAnnotation": "parts",
    "PartImage": "parts",
    "PartObject": "parts",
    "read_part_masks": "parts",
    "read_pascal_part": "parts",
    "DATASETS": "registry",
    "BenchmarkDataset": "registry",
    "VOID_LABEL": "video",
    "VideoSequence": "video",
    "read_davis": "video",
}


def _readers() -> dict[str, Callable[..., Any]]:
    from .parts import read_part_masks
    from .registry import DATASETS

    readers: dict[str, Callable[..., Any]] = {}
    for entry in DATASETS:  # a name serving two benchmarks (cub) maps to its first entry's reader
        readers.setdefault(entry.name, entry.reader_function())
    readers["part-masks"] = read_part_masks
    return readers


def __getattr__(name: str) -> Any:
    """The readers and records of the submodules, imported on first use; :data:`READERS` is built then."""
    if name == "READERS":
        globals()["READERS"] = value = _readers()
        return value
    if name in _WHERE:
        return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
