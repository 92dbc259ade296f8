"""The benchmarks and their datasets, each defined once.

A :class:`Benchmark` entry says what a ``dinokit benchmark`` kind is: the task
settings class its method is configured with (:mod:`dinokit.settings`, so no
default is repeated), the settings fields that do not apply to the protocol and
its weight-free baselines. A :class:`BenchmarkDataset` entry says how one
dataset is read and scored: its reader, its title, the reader options that
change which items exist (recorded with the run) or only select some of them,
and, for correspondences, the default PCK normalisation and what "the box" is.

Adding a dataset is one reader in this package plus one entry in
:data:`DATASETS`; the runners and the CLI (choices, help) read everything else
from here. This module imports neither torch nor the runners: ``dinokit
benchmark --help`` reads it.
"""

from __future__ import annotations

import importlib
import math
from dataclasses import dataclass, fields
from typing import Any, Callable, ClassVar, Optional, Union

from ...errors import DinokitError
from ...settings import (
    CoSegmentationSettings,
    CorrespondenceSettings,
    PartSettings,
    TaskSettings,
    option,
    parse_optional_float,
)

LAYOUTS = ("auto", "sets", "single", "split")
"""Folder layouts of a co-segmentation dataset (the coseg reader's ``layout``)."""
DEFAULT_ALPHAS: tuple[float, ...] = (0.05, 0.10, 0.15)
"""PCK thresholds reported by default (fractions of the normalising length)."""

PART_GROUPINGS = ("instances", "annotated", "coarse")
"""How the part benchmark turns PASCAL-Part names into labels (the first is the default)."""
_DRAWING = ("max_side", "min_side", "mask_size")  # pictures and mask files: the benchmarks draw nothing


# --- protocol options: what a benchmark adds to its task's settings ---------------------------------------
@dataclass(frozen=True)
class MatchingSettings(TaskSettings):
    """The correspondence benchmark's matching: the paper's argmax, optionally restricted or refined."""

    task: ClassVar[str] = "matching"
    foreground: bool = option(False, "match only into the target's patches with saliency above --thresh")
    refine: bool = option(False, "sub-patch soft-argmax around the match")
    window: int = option(5, "soft-argmax window in patches (with --refine)")
    temperature: float = option(0.02, "soft-argmax temperature (with --refine)")
    cache_dtype: str = option("float32", "precision of the cached descriptors (float32: exact; float16: half the "
                                         "disk)", choices=("float32", "float16"))

    def check(self) -> None:
        if self.window < 1 or not self.temperature > 0:
            raise DinokitError(f"need window >= 1 and temperature > 0, got {self.window} and {self.temperature}")


@dataclass(frozen=True)
class BaselineSettings(TaskSettings):
    """The weight-free mask baselines of the co-segmentation and video benchmarks."""

    task: ClassVar[str] = "baselines"
    centre_prior_area: float = option(0.5, "share of the image the centre-prior ellipse covers")
    saliency_thresh: Optional[float] = option(None, "saliency baseline threshold (default: each image's mean "
                                                    "saliency)", parse=parse_optional_float, metavar="X|none")

    def check(self) -> None:
        if not 0 < self.centre_prior_area <= math.pi / 4:
            raise DinokitError(f"centre_prior_area must be in (0, {math.pi / 4:.3f}] (the inscribed ellipse), got "
                               f"{self.centre_prior_area}")


@dataclass(frozen=True)
class PropagationSettings(TaskSettings):
    """The video benchmark's label propagation (DINO's ``eval_video_segmentation.py`` defaults)."""

    task: ClassVar[str] = "propagation"
    short_side: int = option(480, "frame short side in pixels")
    multiple: int = option(64, "long side rounded down to a multiple of this")
    n_last_frames: int = option(7, "previous frames in the context (besides the first)")
    neighbourhood: int = option(12, "window radius in patches (0: no window)")
    topk: int = option(5, "neighbours voting per patch")
    temperature: float = option(0.1, "softmax temperature")

    def check(self) -> None:
        if self.n_last_frames < 0 or self.topk < 1 or not self.temperature > 0 or self.short_side < 1 \
                or self.multiple < 1 or self.neighbourhood < 0:
            raise DinokitError("propagation needs n_last_frames >= 0, topk >= 1, temperature > 0, neighbourhood "
                               ">= 0 and a positive short side and multiple")


@dataclass(frozen=True)
class Benchmark:
    """One ``dinokit benchmark`` kind: the settings of its method, the fields that don't apply, its baselines."""

    name: str
    settings: type[TaskSettings]
    exclude: tuple[str, ...]
    baselines: tuple[str, ...]
    default_baselines: Optional[dict[str, tuple[str, ...]]] = None  # per protocol, when they differ

    def method_fields(self) -> list[str]:
        """The settings fields the protocol uses (recorded with the run, offered as flags)."""
        return [f.name for f in fields(self.settings) if f.name not in self.exclude and f.metadata.get("cli", True)]


BENCHMARKS: dict[str, Benchmark] = {b.name: b for b in (
    Benchmark("correspondence", CorrespondenceSettings, ("num_pairs", "seed", *_DRAWING), ("identity", "rgb-patches")),
    Benchmark("cosegment", CoSegmentationSettings, _DRAWING, ("centre-prior", "saliency")),
    # the video benchmark's unsupervised protocol runs the co-segmentation or the part co-segmentation
    # (PartSettings holds both); crop augmentations would defeat its per-sequence feature cache
    Benchmark("video", PartSettings, ("num_crop_augmentations", *_DRAWING),
              ("first-frame", "rgb-patches", "centre-prior", "saliency"),
              {"propagation": ("first-frame", "rgb-patches"), "unsupervised": ("centre-prior", "saliency")}),
    Benchmark("parts", PartSettings, _DRAWING, ("grid",)),
)}
"""Benchmark kind -> its definition."""


@dataclass(frozen=True)
class BenchmarkDataset:
    """One dataset of one benchmark: how it is read and what its protocol uses by default.

    ``options`` are reader keywords that change which items exist (recorded in
    ``run.json``: a rerun with other values is another run); ``filters`` are
    reader keywords that only select items (recorded as limits). ``pck_by`` and
    ``box`` are the correspondence protocol's default PCK normalisation
    (``bbox`` or ``image``) and what the bounding box is; ``scored_on`` says
    what the part benchmark compares (``pixels`` or ``keypoints``).
    """

    name: str
    benchmark: str
    title: str
    reader: Union[str, Callable[..., Any]]
    options: tuple[str, ...] = ()
    filters: tuple[str, ...] = ()
    pck_by: Optional[str] = None
    box: Optional[str] = None
    scored_on: Optional[str] = None

    def reader_function(self) -> Callable[..., Any]:
        """The reader: a function, or ``module:function`` in this package imported on first use (so that the
        CLI reads the registry without loading NumPy)."""
        if callable(self.reader):
            return self.reader
        module, name = self.reader.split(":")
        return getattr(importlib.import_module(f"{__package__}.{module}"), name)

    def read(self, root: Any, values: dict[str, Any]) -> Any:
        """Call the reader with ``root`` and the entry's options and filters taken from ``values``."""
        return self.reader_function()(root, **{k: values[k] for k in (*self.options, *self.filters)})

    def recorded(self, values: dict[str, Any]) -> dict[str, Any]:
        """The options that identify the run (``values`` restricted to ``options``)."""
        return {k: values[k] for k in self.options}


_CORR, _COSEG = "correspondence", "cosegment"
DATASETS: tuple[BenchmarkDataset, ...] = (
    BenchmarkDataset("pf-willow", _CORR, "PF-WILLOW", "correspondence:read_pf_willow", pck_by="bbox",
                     box="the target keypoints' box"),
    BenchmarkDataset("spair", _CORR, "SPair-71k", "correspondence:read_spair", ("split",), ("categories",),
                     pck_by="bbox",
                     box="the target's annotated box"),
    BenchmarkDataset("pf-pascal", _CORR, "PF-PASCAL", "correspondence:read_pf_pascal", ("split",), pck_by="image",
                     box="the target's box"),
    BenchmarkDataset("cub", _CORR, "CUB-200-2011", "correspondence:read_cub_pairs",
                     ("split", "pairs_file", "max_pairs_per_category", "seed"), ("categories",), pck_by="bbox",
                     box="the target's annotated box"),
    *(BenchmarkDataset(name, _COSEG, title, "coseg:read_coseg", ("layout",), ("sets",)) for name, title in (
        ("icoseg", "iCoseg"), ("msrc", "MSRC"), ("internet", "Internet"), ("pascal-co", "PASCAL-CO"),
        ("coseg", "co-segmentation"))),
    BenchmarkDataset("davis", "video", "DAVIS", "video:read_davis", ("split", "year", "resolution"),
                     ("sequences",)),
    BenchmarkDataset("pascal-part", "parts", "PASCAL-Part", "parts:read_pascal_part", scored_on="pixels"),
    BenchmarkDataset("cub", "parts", "CUB-200-2011", "correspondence:read_cub_keypoints", ("split",),
                     ("categories",),
                     scored_on="keypoints"),
)
"""Every benchmark dataset (a name may serve two benchmarks: CUB pairs for correspondences, keypoints for parts)."""


def benchmark(kind: str) -> Benchmark:
    """The definition of benchmark ``kind``."""
    if kind not in BENCHMARKS:
        raise DinokitError(f"unknown benchmark {kind!r}; choose from {', '.join(BENCHMARKS)}")
    return BENCHMARKS[kind]


def datasets_of(kind: str) -> dict[str, BenchmarkDataset]:
    """Name -> entry of the datasets of benchmark ``kind`` (registry order)."""
    benchmark(kind)
    return {d.name: d for d in DATASETS if d.benchmark == kind}


def dataset_entry(kind: str, name: str) -> BenchmarkDataset:
    """The entry of dataset ``name`` of benchmark ``kind``; an unknown name lists the known ones."""
    known = datasets_of(kind)
    if name not in known:
        raise DinokitError(f"unknown {kind} dataset {name!r}; choose from {', '.join(known)}")
    return known[name]


def dataset_help(kind: str) -> str:
    """``name (Title)`` of every dataset of ``kind``, for the CLI's ``--dataset`` help."""
    return ", ".join(f"{d.name} ({d.title})" for d in datasets_of(kind).values())


__all__ = ["BENCHMARKS", "DATASETS", "DEFAULT_ALPHAS", "LAYOUTS", "Benchmark", "BenchmarkDataset", "PropagationSettings",
           "MatchingSettings", "BaselineSettings", "PART_GROUPINGS", "benchmark", "dataset_entry", "dataset_help",
           "datasets_of"]
