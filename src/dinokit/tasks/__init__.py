"""Zero-shot tasks built on dense ViT descriptors: the public face of dinokit's Python API.

One module per task (``dinokit.tasks.<name>``), each a plain Python API that
the matching ``dinokit <name>`` command wraps; each task's paper defaults are
its settings object (:mod:`dinokit.settings`), re-exported here::

    from dinokit.tasks import CoSegmentation, CoSegmentationSettings

    seg = CoSegmentation("dino_vits8", CoSegmentationSettings(), elbow=0.95).fit("photos/")

Names are loaded on first use, so importing this package is cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "CorrespondenceFinder": "correspondences", "Correspondences": "correspondences",
    "find_correspondences": "correspondences", "save_correspondences": "correspondences",
    "draw_correspondences": "correspondences", "match_points": "correspondences",
    "CoSegmentation": "cosegmentation", "cosegment": "cosegmentation", "save_cosegmentation": "cosegmentation",
    "PartCoSegmentation": "parts", "part_cosegment": "parts", "save_part_cosegmentation": "parts",
    "video_part_cosegmentation": "video",
    "SimilarityIndex": "similarity", "similarity_maps": "similarity", "save_similarity": "similarity",
    "pca_images": "pca", "pca_descriptors": "pca", "save_pca": "pca",
    "attention_maps": "attention", "save_attention_maps": "attention",
}
_SETTINGS = ("CorrespondenceSettings", "CoSegmentationSettings", "PartSettings", "SimilaritySettings", "PCASettings",
             "AttentionSettings", "InspectorSettings", "ExtractSettings")


def __getattr__(name: str) -> Any:
    if name in _SETTINGS:
        return getattr(importlib.import_module("dinokit.settings"), name)
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + list(_EXPORTS) + list(_SETTINGS))


__all__ = sorted(list(_EXPORTS) + list(_SETTINGS))
