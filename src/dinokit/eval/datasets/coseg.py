"""Co-segmentation benchmarks: sets of images that share a foreground object, with masks.

One reader, :func:`read_coseg`, covers the folder layouts in use:

``sets``
    ``<root>/<set>/images/*`` with ``<root>/<set>/masks/*`` (iCoseg as shipped in
    ``shared/data``), or ``<root>/<set>/*.jpg`` with ``<root>/<set>/GroundTruth/*.png``
    (the Internet dataset of Rubinstein et al. 2013: ``Data/Airplane100`` ...).
``single``
    ``<root>/images/*`` with ``<root>/masks/*``: one set named after ``root``
    (MSRC cow in ``shared/data``).
``split``
    ``<root>/images/<set>/*`` with ``<root>/<GT|masks|...>/<set>/*`` (the layout the
    PASCAL-VOC co-segmentation set of Faktor & Irani, used by DeepCO3 and
    later work, is usually distributed in).

Masks pair with images by file stem; the mask folder may be called any of
:data:`MASK_DIR_NAMES`. Masks are read as bool foreground (see
:func:`~dinokit.eval.datasets.read_binary_mask`); an all-zero mask is valid
(the Internet dataset has images without the object).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional, Sequence

import numpy as np

from ...errors import DatasetError
from .registry import LAYOUTS
from .common import (
    PathLike,
    check_mask_matches_image,
    is_image_file,
    list_images,
    read_binary_mask,
    read_rgb,
    require_dir,
    select_named,
)

MASK_DIR_NAMES = ("masks", "GroundTruth", "groundtruth", "ground_truth", "GT", "gt", "Masks", "annotations")
"""Folder names searched, in this order, for the masks of a set."""

IMAGE_DIR_NAMES = ("images", "Images", "JPEGImages")



@dataclass(frozen=True)
class CosegItem:
    """One image of a co-segmentation set and its foreground mask file."""

    name: str
    image_path: Path
    mask_path: Path

    def load_image(self) -> np.ndarray:
        """``HxWx3`` uint8 RGB."""
        return read_rgb(self.image_path)

    def load_mask(self) -> np.ndarray:
        """``HxW`` bool foreground."""
        return read_binary_mask(self.mask_path)

    def validate(self, cache: Optional[dict] = None) -> None:
        """Check that both files are readable and the mask has the image's size."""
        check_mask_matches_image(self.mask_path, self.image_path, cache)


@dataclass(frozen=True)
class CosegSet:
    """A named group of images to co-segment together."""

    name: str
    items: tuple[CosegItem, ...]
    root: Path

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[CosegItem]:
        return iter(self.items)

    @property
    def image_paths(self) -> list[Path]:
        return [it.image_path for it in self.items]

    def validate(self, cache: Optional[dict] = None) -> None:
        for it in self.items:
            it.validate(cache)


def _first_dir(parent: Path, names: Sequence[str]) -> Optional[Path]:
    for n in names:
        if (parent / n).is_dir():
            return parent / n
    return None


def _pair_by_stem(name: str, image_dir: Path, mask_dir: Path, require_masks: bool) -> CosegSet:
    images = list_images(image_dir)
    if not images:
        raise DatasetError(f"{image_dir}: no images in co-segmentation set {name!r}")
    masks: dict[str, Path] = {}
    for m in list_images(mask_dir):
        if m.stem in masks:
            raise DatasetError(f"{m}: two masks with stem {m.stem!r} in {mask_dir}")
        masks[m.stem] = m
    stems = {p.stem for p in images}
    if len(stems) != len(images):
        dup = next(p for p in images if sum(q.stem == p.stem for q in images) > 1)
        raise DatasetError(f"{dup}: two images with stem {dup.stem!r} in {image_dir}")
    orphan = sorted(set(masks) - stems)
    if orphan:
        raise DatasetError(f"{masks[orphan[0]]}: mask has no image with the same name in {image_dir}")
    items = []
    for img in images:
        if img.stem not in masks:
            if require_masks:
                raise DatasetError(f"{img}: no mask named {img.stem}.* in {mask_dir}")
            continue
        items.append(CosegItem(name=img.stem, image_path=img, mask_path=masks[img.stem]))
    if not items:
        raise DatasetError(f"{mask_dir}: no masks match the images of set {name!r}")
    return CosegSet(name=name, items=tuple(items), root=image_dir)


def _set_from_folder(folder: Path, require_masks: bool) -> CosegSet:
    image_dir = _first_dir(folder, IMAGE_DIR_NAMES) or folder
    mask_dir = _first_dir(folder, MASK_DIR_NAMES)
    if mask_dir is None:
        raise DatasetError(f"{folder}: no mask folder (looked for {', '.join(MASK_DIR_NAMES)})")
    return _pair_by_stem(folder.name, image_dir, mask_dir, require_masks)


def _subdirs(folder: Path) -> list[Path]:
    return sorted((d for d in folder.iterdir() if d.is_dir() and not d.name.startswith(".")), key=lambda d: d.name)


def _has_images(folder: Path) -> bool:
    return any(is_image_file(p) for p in folder.iterdir())


def _detect(root: Path) -> str:
    img_dir = _first_dir(root, IMAGE_DIR_NAMES)
    if img_dir is not None:
        return "single" if _has_images(img_dir) else "split"
    if _first_dir(root, MASK_DIR_NAMES) is not None and _has_images(root):
        return "single"
    return "sets"


def read_coseg(
    root: PathLike,
    layout: str = "auto",
    sets: Optional[Sequence[str]] = None,
    require_masks: bool = True,
    check: bool = True,
) -> list[CosegSet]:
    """Read a co-segmentation dataset as a list of :class:`CosegSet`, sorted by name.

    ``layout`` is ``auto`` (detected from the folders), ``sets``, ``single`` or
    ``split`` (see the module docstring). ``sets`` keeps only the named sets.
    With ``require_masks=False`` images without a mask are skipped instead of
    being an error. ``check`` opens every image and mask header to confirm
    they are readable and of equal size.
    """
    root = require_dir(root, "co-segmentation folder")
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}; got {layout!r}")
    if layout == "auto":
        layout = _detect(root)
    if layout == "single":
        out = [_set_from_folder(root, require_masks)]
    elif layout == "split":
        img_root = _first_dir(root, IMAGE_DIR_NAMES)
        mask_root = _first_dir(root, MASK_DIR_NAMES)
        if img_root is None or mask_root is None:
            raise DatasetError(f"{root}: 'split' layout needs images/<set>/ and one of "
                               f"{', '.join(MASK_DIR_NAMES)}/<set>/")
        out = []
        for d in _subdirs(img_root):
            md = mask_root / d.name
            if not md.is_dir():
                raise DatasetError(f"{md}: mask folder for set {d.name!r} not found")
            out.append(_pair_by_stem(d.name, d, md, require_masks))
    else:
        out = [_set_from_folder(d, require_masks) for d in _subdirs(root)
               if (sets is None or d.name in sets)]
    return select_named(out, sets, root, "co-segmentation set", check)
