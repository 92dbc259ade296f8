"""Writing descriptors to disk: one ``.safetensors`` file per image.

Each file holds ``descriptors.l<layer>.<facet>`` tensors ``(T, D)`` (and
``saliency`` ``(T,)``) with the grid shape, image sizes and settings as
metadata. Files are written atomically and existing ones are skipped unless
``overwrite``, so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

import torch
from safetensors import safe_open
from safetensors.torch import load_file

from ..errors import DinokitError
from ..io import save_tensors
from .extractor import Extractor, Features
from .image import PathLike

FORMAT = "dinokit-descriptors-v1"


@dataclass
class ExportReport:
    """What :func:`extract_to_files` did."""

    written: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)


def output_names(paths: Sequence[Path], roots: Optional[Sequence[Path]] = None) -> list[str]:
    """Output stems for input images: the file stem, or the path relative to its input folder.

    Two inputs that would write the same file raise an error naming both.
    """
    names = []
    for p in paths:
        rel = None
        for root in roots or ():
            try:
                rel = p.resolve().relative_to(root.resolve())
                break
            except ValueError:
                continue
        names.append(str(rel.with_suffix("")) if rel is not None else p.stem)
    seen: dict[str, Path] = {}
    for name, p in zip(names, paths):
        if name in seen:
            raise DinokitError(f"{seen[name]} and {p} would both be written as {name}.safetensors; run them separately")
        seen[name] = p
    return names


def geometry_metadata(geo: Any, settings: dict) -> dict[str, str]:
    """The string metadata of a descriptor file: format, grid and image sizes, patch and stride, settings."""
    return {
        "format": FORMAT,
        "grid": f"{geo.grid[0]},{geo.grid[1]}",
        "resized_size": f"{geo.resized_size[0]},{geo.resized_size[1]}",
        "original_size": f"{geo.original_size[0]},{geo.original_size[1]}",
        "patch_size": str(geo.patch_size),
        "stride": str(geo.stride),
        "settings": json.dumps(settings),
    }


def features_to_tensors(feats: Features, index: int = 0) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and string metadata for image ``index`` of ``feats``."""
    tensors = {f"descriptors.l{layer}.{facet}": d[index] for (layer, facet), d in feats.descriptors.items()}
    if feats.saliency is not None:
        tensors["saliency"] = feats.saliency[index]
    meta = geometry_metadata(feats.geometry[index], feats.settings)
    img = feats.images[index] if feats.images else None
    if img is not None and img.path is not None:
        meta["image"] = str(img.path)
    return tensors, meta


def read_descriptor_file(path: PathLike) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Read a file written by :func:`extract_to_files`: tensors and metadata."""
    path = Path(path)
    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
        tensors = load_file(str(path))
    except Exception as exc:
        raise DinokitError(f"{path}: not a readable descriptor file ({exc})") from None
    if meta.get("format") != FORMAT:
        raise DinokitError(f"{path}: not a dinokit descriptor file (format {meta.get('format')!r})")
    return tensors, meta


def extract_to_files(
    extractor: Extractor,
    images: Sequence[PathLike],
    out_dir: PathLike,
    *,
    layers: Iterable[int] = (-1,),
    facets: Iterable[str] = ("key",),
    bin: bool = False,
    include_cls: bool = False,
    saliency: bool = False,
    saliency_layer: int = -1,
    saliency_heads: Optional[Sequence[int]] = None,
    roots: Optional[Sequence[PathLike]] = None,
    overwrite: bool = False,
    progress: bool = True,
) -> ExportReport:
    """Extract descriptors for every image and write ``OUT_DIR/<name>.safetensors``.

    The model is used as given (loaded once); finished files are skipped
    unless ``overwrite``.
    """
    from tqdm.auto import tqdm

    paths = [Path(p) for p in images]
    names = output_names(paths, [Path(r) for r in roots or ()])
    out = Path(out_dir)
    report = ExportReport()
    extra = {"model": str(getattr(extractor.model, "source", "")), "load_size": json.dumps(extractor.load_size)}
    bar = tqdm(list(zip(paths, names)), desc="extract", unit="img", disable=not progress)
    for path, name in bar:
        target = out / f"{name}.safetensors"
        if target.exists() and not overwrite:
            report.skipped.append(target)
            continue
        feats = extractor.extract(
            path, list(layers), list(facets), bin=bin, include_cls=include_cls,
            saliency=saliency, saliency_layer=saliency_layer, saliency_heads=saliency_heads,
        )
        tensors, meta = features_to_tensors(feats)
        meta.update(extra)
        save_tensors(target, tensors, meta)
        report.written.append(target)
    return report
