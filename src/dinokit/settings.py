"""The settings of every task, each default written once.

A task's settings are a frozen dataclass: the paper's defaults, the checks on
each value and the help text of each option. The estimators in
:mod:`dinokit.tasks` take a settings object plus keyword overrides, the CLI
generates its flags from the fields (:func:`dinokit.cli.common.add_settings`),
and the benchmark runners and the inspector read the same objects, so a
default cannot drift between them. Every output records the settings that
made it (:meth:`TaskSettings.to_record`), which is how a rerun knows whether
its results are still current.

This module imports neither torch nor NumPy: ``dinokit --help`` reads it.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field, fields, replace
from typing import Any, Callable, ClassVar, Optional, Sequence, TypeVar, Union

from .errors import DinokitError

DEFAULT_MODEL = "dino_vits8"
FACETS = ("key", "query", "value", "token")
COLORMAP_NAMES = ("jet", "turbo", "viridis", "inferno", "magma", "plasma", "hot", "gray")
LoadSize = Union[int, tuple[int, int], None]
Stride = Union[int, str, None]
S = TypeVar("S", bound="TaskSettings")


# --- value parsers, shared by the settings checks and the CLI -------------------------------------------
def parse_load_size(text: Any) -> LoadSize:
    """``224`` -> 224, ``none`` -> None (keep the image size), ``480x640`` -> (480, 640)."""
    if text is None or isinstance(text, int) and not isinstance(text, bool):
        value = text
    elif isinstance(text, (tuple, list)):
        value = tuple(int(v) for v in text)
    elif str(text).lower() in ("none", "full", "original"):
        return None
    elif "x" in str(text).lower():
        h, w = str(text).lower().split("x", 1)
        value = (int(h), int(w))
    else:
        value = int(text)
    sides = value if isinstance(value, tuple) else (value,) if value is not None else ()
    if any(v <= 0 for v in sides) or len(sides) > 2:
        raise argparse.ArgumentTypeError(f"load size must be a positive number, HxW or 'none', got {text!r}")
    return value


def parse_stride(text: Any) -> Stride:
    """``auto`` (half the patch size), ``none`` (the patch size) or a positive integer."""
    if text is None or text == "auto":
        return text
    if isinstance(text, str) and text.lower() == "none":
        return None
    try:
        value = int(text)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"stride must be a positive integer or 'auto', got {text!r}") from None
    if value <= 0 or isinstance(text, bool):
        raise argparse.ArgumentTypeError(f"stride must be a positive integer or 'auto', got {text!r}")
    return value


def parse_heads(text: Any) -> Optional[tuple[int, ...]]:
    """``0,2,4,5`` -> ``(0, 2, 4, 5)`` (attention head indices); a sequence of ints is kept."""
    if text is None:
        return None
    try:
        heads = tuple(int(v) for v in (text.split(",") if isinstance(text, str) else text) if str(v).strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated head indices such as 0,2,4,5, got {text!r}") from None
    if not heads or min(heads) < 0:
        raise argparse.ArgumentTypeError("give at least one head index, each 0 or more")
    return heads


def parse_ints(text: Any) -> tuple[int, ...]:
    """``9,11`` or ``-1`` -> a tuple of block indices (negative counts from the last block)."""
    try:
        values = tuple(int(v) for v in (text.split(",") if isinstance(text, str) else text) if str(v).strip())
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"expected comma-separated integers such as 9,11, got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError("give at least one value")
    return values


def parse_optional_float(text: Any) -> Optional[float]:
    """A number, or ``none``/``off`` for no value."""
    if text is None or (isinstance(text, str) and text.lower() in ("none", "off")):
        return None
    try:
        return float(text)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"expected a number or 'none', got {text!r}") from None


def option(default: Any, help: str, *, parse: Optional[Callable[[Any], Any]] = None,
           choices: Optional[Sequence[Any]] = None, metavar: Optional[str] = None, cli: bool = True) -> Any:
    """A settings field with its help text; ``parse`` turns a CLI string (or a loose value) into the value."""
    return field(default=default, metadata={"help": help, "parse": parse, "choices": choices, "metavar": metavar,
                                            "cli": cli})


def _between(name: str, value: float, lo: float, hi: float, lo_open: bool = False) -> None:
    if not (lo < value <= hi if lo_open else lo <= value <= hi):
        raise DinokitError(f"{name} must be in {'(' if lo_open else '['}{lo:g}, {hi:g}], got {value}")


def _at_least(name: str, value: int, lo: int) -> None:
    if value < lo:
        raise DinokitError(f"{name} must be at least {lo}, got {value}")


@dataclass(frozen=True)
class TaskSettings:
    """Common behaviour: value coercion and checks, overrides by keyword, a JSON record and differences."""

    task: ClassVar[str] = "task"

    def __post_init__(self) -> None:
        for f in fields(self):
            parse = f.metadata.get("parse")
            value = getattr(self, f.name)
            if parse is not None and value is not None and not isinstance(value, bool):
                try:
                    object.__setattr__(self, f.name, parse(value))
                except argparse.ArgumentTypeError as exc:
                    raise DinokitError(f"{f.name}: {exc}") from None
            choices = f.metadata.get("choices")
            if choices is not None and getattr(self, f.name) not in choices:
                raise DinokitError(f"{f.name} must be one of {', '.join(map(str, choices))}, got {value!r}")
        self.check()

    def check(self) -> None:
        """Raise :class:`DinokitError` for a value outside its range (subclasses add their rules)."""

    def replace(self: S, **changes: Any) -> S:
        """A copy with ``changes`` applied; an unknown name is an error that lists the known ones."""
        known = {f.name for f in fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise DinokitError(f"unknown setting(s) {', '.join(unknown)} for {type(self).__name__}; "
                               f"known: {', '.join(sorted(known))}")
        return replace(self, **changes) if changes else self

    @classmethod
    def resolve(cls: type[S], settings: Optional["TaskSettings"] = None, **overrides: Any) -> S:
        """``settings`` (default: the paper's) with ``overrides`` applied, checked."""
        base = settings if settings is not None else cls()
        if not isinstance(base, cls):
            raise DinokitError(f"expected {cls.__name__}, got {type(base).__name__}")
        return base.replace(**overrides)

    @staticmethod
    def explicit(settings: Optional["TaskSettings"], overrides: dict[str, Any]) -> set[str]:
        """Names the caller chose: every field of a settings object it passed, plus its keyword overrides."""
        return set(overrides) | ({f.name for f in fields(settings)} if settings is not None else set())

    def to_record(self) -> dict[str, Any]:
        """The settings as plain JSON values (tuples become lists), for the record stored with outputs."""
        return {f.name: _plain(getattr(self, f.name)) for f in fields(self)}


def _plain(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value


# --- descriptors: what every dense task starts from -------------------------------------------------------
STRIDE_HELP = ("patch stride, must divide the patch size; 'auto' is half the patch size: 4 for /8, 7 for /14, "
               "8 for /16")


def load_size_option(default: LoadSize = 224, help: str = "smaller image edge after resizing ('none' keeps the "
                                                           "size, HxW an exact size)") -> Any:
    """The ``load_size`` field: the paper's 224 unless a task says otherwise."""
    return option(default, help, parse=parse_load_size, metavar="N|HxW|none")


def stride_option(default: Stride = "auto", help: str = STRIDE_HELP) -> Any:
    """The ``stride`` field: "auto" (half the patch size, the paper's 4 for ViT-S/8) unless a task says otherwise."""
    return option(default, help, parse=parse_stride, metavar="N|auto")


@dataclass(frozen=True)
class DescriptorSettings(TaskSettings):
    """Which descriptors: image size, stride, block, facet, log-binning and the saliency heads."""

    load_size: LoadSize = load_size_option()
    stride: Stride = stride_option()
    layer: int = option(11, "block of the descriptors (0-based)")
    facet: str = option("key", "descriptor facet", choices=FACETS)
    bin: bool = option(False, "log-binned descriptors")
    saliency_heads: Optional[tuple[int, ...]] = option(
        None, "comma-separated heads of the last block averaged for saliency (default: the model's, else all)",
        parse=parse_heads, metavar="H,H,...")



@dataclass(frozen=True)
class CorrespondenceSettings(DescriptorSettings):
    """Sparse correspondences (Amir et al. 2021, Sec. 4.2): layer 9 log-binned keys, best buddies, k-means."""

    task: ClassVar[str] = "correspond"
    layer: int = option(9, "block of the descriptors (0-based)")
    bin: bool = option(True, "log-binned descriptors")
    num_pairs: int = option(10, "correspondences per pair")
    thresh: float = option(0.05, "saliency threshold of the foreground")
    seed: int = option(0, "k-means seed")
    max_side: int = option(1024, "longest side of the drawn pictures, at most")
    min_side: int = option(512, "smaller images are drawn enlarged to this longest side so that points and numbers "
                                "stay legible (0 draws them at their own size)")

    def check(self) -> None:
        _at_least("num_pairs", self.num_pairs, 1)
        if self.max_side < 0 or self.min_side < 0 or (self.max_side and self.min_side > self.max_side):
            raise DinokitError(f"need 0 <= min_side <= max_side, got {self.min_side} and {self.max_side}")


@dataclass(frozen=True)
class SimilaritySettings(DescriptorSettings):
    """Similarity heat maps of query points over every image."""

    task: ClassVar[str] = "similarity"
    cmap: str = option("jet", "colour map of the heat maps", choices=COLORMAP_NAMES)
    alpha: float = option(0.6, "opacity of the heat map over the image")
    scale: str = option("image", "colour range per image, or one joint range for all images",
                        choices=("image", "joint"))
    height: Optional[int] = option(None, "height of each image panel in pixels (default: the tallest image, kept "
                                         "within 384..512)")

    def check(self) -> None:
        _between("alpha", self.alpha, 0.0, 1.0)
        if self.height is not None:
            _at_least("height", self.height, 16)


@dataclass(frozen=True)
class PCASettings(DescriptorSettings):
    """PCA of descriptors, joint over the images or per image."""

    task: ClassVar[str] = "pca"
    components: int = option(4, "number of components")
    per_image: bool = option(False, "one PCA per image instead of one for all images")
    interp: str = option("nearest", "upsampling of the component maps to pixels", choices=("nearest", "bilinear"))

    def check(self) -> None:
        _between("components", self.components, 1, 64)


@dataclass(frozen=True)
class AttentionSettings(TaskSettings):
    """DINO's last-block CLS attention per head, thresholded as in DINO's figures."""

    task: ClassVar[str] = "attention"
    load_size: LoadSize = load_size_option(480, "smaller image edge after resizing (DINO's script: 480; 'none' keeps "
                                                "the size)")
    stride: Stride = stride_option(None, "patch stride, must divide the patch size (default: the patch size)")
    threshold: Optional[float] = option(0.6, "keep the patches holding this fraction of each head's attention mass "
                                             "('none': no masks)", parse=parse_optional_float, metavar="F|none")
    interpolation: str = option("nearest", "upsampling of the maps to pixels (nearest: blocky, as DINO's figures)",
                                choices=("nearest", "bilinear"))
    cmap: str = option("viridis", "colour map", choices=COLORMAP_NAMES)

    def check(self) -> None:
        if self.threshold is not None:
            _between("threshold", self.threshold, 0.0, 1.0, lo_open=True)


@dataclass(frozen=True)
class CoSegmentationSettings(DescriptorSettings):
    """Co-segmentation (Amir et al. 2021, Sec. 4.1), the reference's options and defaults."""

    task: ClassVar[str] = "cosegment"
    thresh: float = option(0.065, "mean saliency above which an image votes for a cluster")
    elbow: float = option(0.975, "elbow coefficient: the smallest k whose k-means objective reaches this fraction "
                                 "of the 2..max_clusters range")
    votes_percentage: float = option(75.0, "percentage of images that must vote for a foreground cluster")
    sample_interval: int = option(100, "k-means is fitted on every n-th descriptor")
    low_res_saliency_maps: bool = option(True, "saliency from a half-size, stride-8 pass as the reference (thresh "
                                               "was tuned on it); off: the sharper same-pass map")
    max_clusters: int = option(14, "largest k of the elbow search")
    remove_outliers: bool = option(False, "leave out images whose CLS descriptor is far from the mean (they get an "
                                          "empty mask)")
    outliers_thresh: float = option(0.7, "cosine similarity to the mean CLS descriptor below which an image is an "
                                         "outlier")
    seed: int = option(1234, "k-means seed (faiss's default)")
    kmeans_backend: str = option("auto", "k-means implementation: faiss on the CPU when installed, else torch",
                                 choices=("auto", "faiss", "torch"))
    store: str = option("auto", "where descriptors are kept: memory, disk, or auto (disk past the memory limit)",
                        choices=("auto", "memory", "disk"))
    store_dtype: str = option("float16", "precision of the stored descriptors (float32: the reference's exact "
                                         "numbers)", choices=("float16", "float32"))
    memory_limit_gb: float = option(1.0, "descriptor RAM budget for store auto, in GiB")
    mask_size: str = option("original", "size of the mask PNGs: the original image's or the resized one's",
                            choices=("original", "load"))

    def check(self) -> None:
        _between("elbow", self.elbow, 0.0, 1.0, lo_open=True)
        _between("thresh", self.thresh, 0.0, 1.0)
        _between("votes_percentage", self.votes_percentage, 0.0, 100.0)
        _between("outliers_thresh", self.outliers_thresh, -1.0, 1.0)
        _at_least("sample_interval", self.sample_interval, 1)
        _at_least("max_clusters", self.max_clusters, 1)
        if self.memory_limit_gb <= 0:
            raise DinokitError(f"memory_limit_gb must be positive, got {self.memory_limit_gb}")


@dataclass(frozen=True)
class PartSettings(CoSegmentationSettings):
    """Part co-segmentation (Amir et al. 2021, Sec. 4.1): the co-segmentation's foreground, then parts."""

    task: ClassVar[str] = "parts"
    remove_outliers: bool = option(False, "not part of the part co-segmentation (as in the reference)", cli=False)
    outliers_thresh: float = option(0.7, "unused by the part co-segmentation", cli=False)
    num_parts: int = option(4, "number of common parts")
    num_crop_augmentations: int = option(0, "random 95% crops of each image and of its mirror image added to the "
                                            "clustering")
    three_stages: bool = option(False, "foreground, then common objects (elbow), then parts: for small sets with "
                                       "distractors")
    elbow_second_stage: float = option(0.94, "elbow coefficient of the second stage with three_stages")
    crf: bool = option(True, "smooth the parts with the dense CRF")

    def check(self) -> None:
        super().check()
        if self.remove_outliers:
            raise DinokitError("remove_outliers is not part of the part co-segmentation (as in the reference)")
        _at_least("num_parts", self.num_parts, 1)
        _at_least("num_crop_augmentations", self.num_crop_augmentations, 0)
        _between("elbow_second_stage", self.elbow_second_stage, 0.0, 1.0, lo_open=True)


@dataclass(frozen=True)
class InspectorSettings(DescriptorSettings):
    """The inspector's initial descriptors (each can be changed on the page)."""

    task: ClassVar[str] = "inspect"


@dataclass(frozen=True)
class ExtractSettings(TaskSettings):
    """``dinokit extract``: which descriptors go into each image's file."""

    task: ClassVar[str] = "extract"
    load_size: LoadSize = load_size_option()
    stride: Stride = stride_option()
    layer: tuple[int, ...] = option((-1,), "blocks of the descriptors, comma-separated (negative counts from the "
                                           "last block)", parse=parse_ints, metavar="L,L,...")
    facet: tuple[str, ...] = option(("key",), "facets, comma-separated: key, query, value, token",
                                    parse=lambda v: _parse_facets(v), metavar="F,F,...")
    bin: bool = option(False, "log-binned descriptors")
    include_cls: bool = option(False, "keep the CLS token as row 0")
    saliency: bool = option(False, "also store the CLS-attention saliency map")
    saliency_layer: int = option(-1, "block used for saliency (-1: the last)")
    saliency_heads: Optional[tuple[int, ...]] = option(
        None, "comma-separated heads averaged for saliency (default: the model's, else all)", parse=parse_heads,
        metavar="H,H,...")


def _parse_facets(value: Any) -> tuple[str, ...]:
    items = tuple(v.strip() for v in (value.split(",") if isinstance(value, str) else value) if str(v).strip())
    bad = [v for v in items if v not in FACETS]
    if not items or bad:
        raise argparse.ArgumentTypeError(f"facets are {', '.join(FACETS)}; got {', '.join(bad) or 'none'}")
    return items


__all__ = [
    "TaskSettings", "DescriptorSettings", "CorrespondenceSettings", "SimilaritySettings", "PCASettings",
    "AttentionSettings", "CoSegmentationSettings", "PartSettings", "InspectorSettings", "ExtractSettings",
    "STRIDE_HELP", "FACETS", "DEFAULT_MODEL", "option", "load_size_option", "stride_option", "parse_load_size",
    "parse_stride", "parse_heads", "parse_ints", "parse_optional_float",
]
