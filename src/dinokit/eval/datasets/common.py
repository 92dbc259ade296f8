"""File helpers shared by the dataset readers: listing, image headers, masks, ``.mat`` files.

Every failure is raised as :class:`~dinokit.errors.DatasetError` with a one-line
message that names the offending file, so a user with a broken download knows
exactly what to fix.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np

from ...errors import DatasetError

PathLike = Union[str, os.PathLike]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
"""File suffixes (lower case) recognised as images when a folder is listed."""

LOSSY_SUFFIXES = (".jpg", ".jpeg", ".webp")

# Keypoints may sit on the last pixel in 1-based annotation tools (x == width);
# allow that much slack before calling an annotation out of bounds.
BOUNDS_SLACK = 1.0


def require_dir(path: PathLike, what: str) -> Path:
    """Return ``path`` as a Path, raising if it is not a directory."""
    path = Path(path)
    if not path.is_dir():
        raise DatasetError(f"{path}: {what} not found (expected a directory)")
    return path


def require_file(path: PathLike, what: str) -> Path:
    """Return ``path`` as a Path, raising if it is not a file."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: {what} not found")
    return path


def is_image_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def list_images(folder: Path) -> list[Path]:
    """Image files directly inside ``folder``, sorted by name (hidden files skipped)."""
    return sorted((p for p in folder.iterdir() if is_image_file(p)), key=lambda p: p.name)


def image_size(path: PathLike, cache: Optional[dict[Path, tuple[int, int]]] = None) -> tuple[int, int]:
    """``(width, height)`` of an image, read from its header only.

    ``cache`` (a dict) avoids re-reading images shared by many pairs.
    """
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if cache is not None and path in cache:
        return cache[path]
    if not path.is_file():
        raise DatasetError(f"{path}: image not found")
    try:
        with Image.open(path) as im:
            size = (int(im.size[0]), int(im.size[1]))
    except (UnidentifiedImageError, OSError) as exc:
        raise DatasetError(f"{path}: not a readable image ({exc.__class__.__name__})") from None
    if size[0] <= 0 or size[1] <= 0:
        raise DatasetError(f"{path}: image has zero size")
    if cache is not None:
        cache[path] = size
    return size


def read_rgb(path: PathLike) -> np.ndarray:
    """Load an image as an ``HxWx3`` uint8 RGB array."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: image not found")
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, OSError) as exc:
        raise DatasetError(f"{path}: not a readable image ({exc.__class__.__name__})") from None


def _open_mask(path: Path) -> tuple[np.ndarray, str]:
    from PIL import Image, UnidentifiedImageError

    if not path.is_file():
        raise DatasetError(f"{path}: mask not found")
    try:
        with Image.open(path) as im:
            mode = im.mode
            if mode in ("RGB", "RGBA", "LA", "CMYK", "YCbCr"):
                im = im.convert("L")
            arr = np.asarray(im)
    except (UnidentifiedImageError, OSError) as exc:
        raise DatasetError(f"{path}: not a readable mask image ({exc.__class__.__name__})") from None
    if arr.ndim != 2:
        raise DatasetError(f"{path}: mask must be a single-channel image, got shape {arr.shape}")
    return arr, mode


def read_binary_mask(path: PathLike) -> np.ndarray:
    """Load a foreground mask as an ``HxW`` bool array.

    Conventions: 1-bit images are used as they are; palette images are
    foreground where the index is neither 0 nor 255 (VOC-style void border);
    lossless grey images (PNG, BMP, TIFF) are foreground where non-zero; lossy
    ones (JPEG) where above 127, so compression noise is not foreground.
    """
    path = Path(path)
    arr, mode = _open_mask(path)
    if mode == "1":
        return arr.astype(bool)
    if mode == "P":
        return (arr != 0) & (arr != 255)
    if path.suffix.lower() in LOSSY_SUFFIXES:
        return arr > 127
    return arr != 0


def read_label_mask(path: PathLike) -> np.ndarray:
    """Load an object-label mask (DAVIS style) as ``HxW`` uint8: 0 background, 1..K objects, 255 void.

    Palette PNGs carry object indices directly (DAVIS 2017). Grey masks whose
    only values are 0 and 255 are binary single-object masks (DAVIS 2016), so
    255 becomes object 1; other grey masks are read as indices.
    """
    path = Path(path)
    arr, mode = _open_mask(path)
    if mode == "1":
        return arr.astype(np.uint8)
    if arr.dtype != np.uint8:
        if arr.size and (arr.min() < 0 or arr.max() > 255):
            raise DatasetError(f"{path}: label mask values outside 0..255")
        arr = arr.astype(np.uint8)
    if mode != "P":
        values = np.unique(arr)
        if np.isin(values, (0, 255)).all():
            return (arr == 255).astype(np.uint8)
    return arr


def load_mat(path: PathLike) -> dict[str, Any]:
    """Read a MATLAB ``.mat`` file (v5/v7) with :func:`scipy.io.loadmat`."""
    import scipy.io

    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: annotation file not found")
    try:
        return scipy.io.loadmat(str(path))
    except NotImplementedError:
        raise DatasetError(f"{path}: MATLAB v7.3 (HDF5) files are not supported; re-save with -v7") from None
    except Exception as exc:  # scipy raises ValueError/TypeError/OSError for corrupt files
        raise DatasetError(f"{path}: not a readable .mat file ({exc.__class__.__name__}: {exc})") from None


def as_points(value: Any, where: str, allow_nan: bool = False) -> np.ndarray:
    """Convert ``value`` to an ``(N, 2)`` float64 array of (x, y), checking shape and finiteness."""
    try:
        pts = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise DatasetError(f"{where}: keypoints are not numeric") from None
    if pts.size == 0:
        return np.zeros((0, 2), dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 2:
        raise DatasetError(f"{where}: keypoints must be N x 2 (x, y), got shape {pts.shape}")
    bad = ~np.isfinite(pts)
    if allow_nan:
        bad &= ~np.isnan(pts)
    if bad.any():
        raise DatasetError(f"{where}: keypoints contain non-finite values")
    return pts


def as_bbox(value: Any, where: str) -> np.ndarray:
    """Convert ``value`` to a ``(4,)`` float64 box ``(x1, y1, x2, y2)`` with ``x1 <= x2``, ``y1 <= y2``."""
    try:
        box = np.asarray(value, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise DatasetError(f"{where}: bounding box is not numeric") from None
    if box.shape != (4,) or not np.isfinite(box).all():
        raise DatasetError(f"{where}: bounding box must be 4 finite numbers (x1, y1, x2, y2), got {box.tolist()}")
    if box[2] < box[0] or box[3] < box[1]:
        raise DatasetError(f"{where}: bounding box {box.tolist()} has x2 < x1 or y2 < y1")
    return box


def check_points_in_image(points: np.ndarray, size: tuple[int, int], where: str) -> None:
    """Raise if a (non-NaN) keypoint lies outside a ``(width, height)`` image (with 1 px slack)."""
    pts = points[~np.isnan(points).any(axis=1)] if points.size else points
    if pts.size == 0:
        return
    w, h = size
    outside = (
        (pts[:, 0] < -BOUNDS_SLACK)
        | (pts[:, 0] > w + BOUNDS_SLACK)
        | (pts[:, 1] < -BOUNDS_SLACK)
        | (pts[:, 1] > h + BOUNDS_SLACK)
    )
    if outside.any():
        x, y = pts[np.argmax(outside)]
        raise DatasetError(f"{where}: keypoint ({x:g}, {y:g}) lies outside the {w}x{h} image")


def check_mask_matches_image(mask_path: Path, image_path: Path, cache: Optional[dict] = None) -> None:
    """Raise if a mask's size differs from its image's."""
    ms, isz = image_size(mask_path, cache), image_size(image_path, cache)
    if ms != isz:
        raise DatasetError(
            f"{mask_path}: mask is {ms[0]}x{ms[1]} but its image {image_path.name} is {isz[0]}x{isz[1]}"
        )


def select_named(items: list, wanted: Optional[Any], root: PathLike, what: str, check: bool) -> list:
    """Keep the items named in ``wanted`` (all when ``None``), failing on unknown names or an empty result.

    ``what`` names one item in messages ("co-segmentation set", "sequence"); with ``check`` every
    kept item is validated (files readable, masks matching their images).
    """
    if wanted is not None:
        items = [it for it in items if it.name in wanted]
        missing = set(wanted) - {it.name for it in items}
        if missing:
            raise DatasetError(f"{root}: no {what} named {', '.join(sorted(missing))}")
    if not items:
        raise DatasetError(f"{root}: no {what}s found")
    if check:
        cache: dict = {}
        for it in items:
            it.validate(cache)
    return items
