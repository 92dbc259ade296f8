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
from typing import Any, Optional, Sequence

import torch
from safetensors import safe_open
from safetensors.torch import load_file

from ..errors import DinokitError
from ..io import save_tensors, unique_output_names
from ..settings import ExtractSettings
from .extractor import Extractor, Features
from .image import PathLike

FORMAT = "dinokit-descriptors-v1"


@dataclass
class ExportReport:
    """What :func:`extract_to_files` did."""

    written: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)


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


def write_descriptor_file(extractor: Extractor, image: PathLike, target: PathLike,
                          settings: Optional[ExtractSettings] = None, overwrite: bool = True) -> Path:
    """Extract one image's descriptors (and saliency) as ``settings`` say and write them to ``target``."""
    st = settings if settings is not None else ExtractSettings()
    feats = extract_as_settings(extractor, image, st)
    tensors, meta = file_contents(extractor, feats)
    return save_tensors(target, tensors, meta, overwrite=overwrite)


def extract_as_settings(extractor: Extractor, images: Any, settings: ExtractSettings) -> Features:
    """``extractor.extract`` of one image or an equal-size batch with the descriptors ``settings`` name."""
    st = settings
    return extractor.extract(images, list(st.layer), list(st.facet), bin=st.bin, include_cls=st.include_cls,
                             saliency=st.saliency, saliency_layer=st.saliency_layer, saliency_heads=st.saliency_heads)


def file_contents(extractor: Extractor, feats: Features, index: int = 0) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The tensors and metadata of image ``index``'s descriptor file (:func:`features_to_tensors` plus the model)."""
    tensors, meta = features_to_tensors(feats, index)
    meta.update({"model": str(getattr(extractor.model, "source", "")), "load_size": json.dumps(extractor.load_size)})
    return tensors, meta


def extract_to_files(
    extractor: Extractor,
    images: Sequence[PathLike],
    out_dir: PathLike,
    settings: Optional[ExtractSettings] = None,
    *,
    roots: Optional[Sequence[PathLike]] = None,
    overwrite: bool = False,
    progress: bool = True,
    **overrides: Any,
) -> ExportReport:
    """Extract descriptors for every image and write ``OUT_DIR/<name>.safetensors``.

    The model is used as given (loaded once); existing files are skipped
    unless ``overwrite``. Names follow :func:`dinokit.io.unique_output_names`.
    """
    from tqdm.auto import tqdm

    st = ExtractSettings.resolve(settings, **overrides)
    paths = [Path(p) for p in images]
    names = unique_output_names(paths, roots)
    out = Path(out_dir)
    report = ExportReport()
    for path, name in tqdm(list(zip(paths, names)), desc="extract", unit="img", disable=not progress):
        target = out / f"{name}.safetensors"
        if target.exists() and not overwrite:
            report.skipped.append(target)
            continue
        report.written.append(write_descriptor_file(extractor, path, target, st))
    return report
