"""Image loading and the reference preprocessing.

The resize rule is the reference's (torchvision ``Resize(load_size)`` on a PIL
image): the smaller edge becomes ``load_size`` and the larger edge
``int(load_size * long / short)``, with LANCZOS. EXIF orientation is applied
and every PIL mode is converted to RGB (alpha composited over white, 16-bit
and float images rescaled to 8 bits).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import ImageError
from ..runs import is_output_folder
from ..models.config import IMAGENET_MEAN, IMAGENET_STD

PathLike = Union[str, os.PathLike]
LoadSize = Union[int, tuple[int, int], None]
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


@dataclass
class LoadedImage:
    """A preprocessed image and the sizes needed to map coordinates back.

    ``tensor`` is ``(3, H, W)`` normalised; ``rgb`` the resized ``H x W x 3``
    uint8 image; sizes are ``(height, width)``.
    """

    tensor: torch.Tensor
    rgb: np.ndarray
    original_size: tuple[int, int]
    path: Optional[Path] = None

    def __repr__(self) -> str:  # the pixel arrays would flood every result that holds an image
        return f"LoadedImage(path={self.path!r}, size={self.size}, original_size={self.original_size})"

    @property
    def size(self) -> tuple[int, int]:
        """Resized ``(height, width)``."""
        return (int(self.tensor.shape[-2]), int(self.tensor.shape[-1]))

    @property
    def name(self) -> str:
        return self.path.stem if self.path is not None else "image"


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any PIL mode to RGB (alpha over white; 16-bit/float rescaled to 8 bits)."""
    if image.mode == "RGB":
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(image, dtype=np.float64)
        if image.mode.startswith("I;16"):
            arr = arr / 257.0
        elif arr.size:
            lo, hi = float(arr.min()), float(arr.max())
            if lo < 0 or hi > 255:
                arr = (arr - lo) / max(hi - lo, 1e-12) * 255.0
        return Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), "L").convert("RGB")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def open_image(path: PathLike) -> Image.Image:
    """Open an image file as RGB with EXIF orientation applied, or raise a one-line :class:`ImageError`."""
    path = Path(path)
    if not path.exists():
        raise ImageError(f"{path}: no such file")
    if path.is_dir():
        raise ImageError(f"{path}: is a folder, not an image")
    if path.stat().st_size == 0:
        raise ImageError(f"{path}: the file is empty")
    try:
        with Image.open(path) as im:
            im.load()
            im = ImageOps.exif_transpose(im) or im
            rgb = to_rgb(im)
    except UnidentifiedImageError:
        raise ImageError(f"{path}: not an image file (or a format PIL cannot read)") from None
    except Image.DecompressionBombError as exc:
        raise ImageError(f"{path}: {exc} (raise PIL.Image.MAX_IMAGE_PIXELS to allow it)") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"{path}: cannot read the image ({exc})") from None
    if rgb.width == 0 or rgb.height == 0:
        raise ImageError(f"{path}: the image has no pixels")
    return rgb


def resized_size(height: int, width: int, load_size: LoadSize) -> tuple[int, int]:
    """Output ``(height, width)`` of the reference resize rule."""
    if load_size is None:
        return height, width
    if isinstance(load_size, (tuple, list)):
        return int(load_size[0]), int(load_size[1])
    short, long = (height, width) if height <= width else (width, height)
    new_short, new_long = int(load_size), int(int(load_size) * long / short)
    return (new_short, new_long) if height <= width else (new_long, new_short)


def preprocess(
    image: Union[PathLike, Image.Image],
    load_size: LoadSize = 224,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> LoadedImage:
    """Load (if a path), resize with the reference rule and normalise one image."""
    path = None
    if isinstance(image, Image.Image):
        pil = to_rgb(image)
    else:
        path = Path(image)
        pil = open_image(path)
    original = (pil.height, pil.width)
    h, w = resized_size(*original, load_size)
    if h < 1 or w < 1:
        raise ImageError(f"{path or 'image'}: resizing {original[1]}x{original[0]} to load size {load_size} leaves no pixels")
    if (h, w) != original:
        pil = pil.resize((w, h), Image.LANCZOS)
    rgb = np.asarray(pil, dtype=np.uint8).copy()
    t = torch.from_numpy(rgb).permute(2, 0, 1).float().div_(255.0)
    m = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)
    return LoadedImage((t - m) / s, rgb, original, path)


def list_images(inputs: Sequence[PathLike], recursive: bool = True,
                exclude: Sequence[PathLike] = ()) -> list[Path]:
    """Expand files, folders and glob patterns into a sorted, de-duplicated list of image files.

    Folders (searched recursively) and patterns keep the files with an image
    suffix (:data:`IMAGE_SUFFIXES`), leaving out hidden files and folders (a
    name starting with ``.``: macOS's ``._photo.jpg`` companions, unfinished
    temporary outputs) and dinokit's own outputs: the ``exclude`` folders (a
    command's output folder) and every folder holding a dinokit run record. A
    file named explicitly is taken as it is.
    """
    skip = [Path(e).resolve() for e in exclude]
    found: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found.extend(_images_in(p, recursive, skip))
        elif p.exists():
            found.append(p)
        elif any(ch in str(item) for ch in "*?["):
            found.extend(_images_matching(item, skip))
        else:
            raise ImageError(f"{item}: no such file or folder")
    seen: set[Path] = set()
    unique = []
    for f in found:
        key = f.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(f)
    if not unique:
        raise ImageError(f"{', '.join(map(str, inputs))}: no image files found")
    return unique


def _is_skipped(folder: Path, skip: Sequence[Path]) -> bool:
    full = folder.resolve()
    return is_output_folder(folder) or any(full == s or s in full.parents for s in skip)


def _images_in(folder: Path, recursive: bool, skip: Sequence[Path]) -> list[Path]:
    """Image files of ``folder`` (and below), leaving out hidden names and dinokit's output folders."""
    if _is_skipped(folder, skip):
        return []
    out: list[Path] = []
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            if recursive:
                out.extend(_images_in(entry, True, skip))
        elif entry.is_file() and entry.suffix.lower() in IMAGE_SUFFIXES:
            out.append(entry)
    return out


def _images_matching(pattern: PathLike, skip: Sequence[Path]) -> list[Path]:
    p = Path(pattern)
    matches = sorted(Path().glob(str(pattern))) if not p.is_absolute() else \
        sorted(Path(p.anchor).glob(str(p.relative_to(p.anchor))))
    if not matches:
        raise ImageError(f"{pattern}: the pattern matches no file")
    images = [m for m in matches if m.is_file() and m.suffix.lower() in IMAGE_SUFFIXES
              and not m.name.startswith(".") and not _is_skipped(m.parent, skip)]
    if not images:
        raise ImageError(f"{pattern}: the pattern matches no image file ({', '.join(IMAGE_SUFFIXES)})")
    return images


SET_SUBFOLDERS = ("images", "frames", "JPEGImages")


def folder_images(folder: PathLike) -> list[Path]:
    """The images of one set or video folder: its own image files (not its subfolders'), or, when it has
    none, those of its ``images/``, ``frames/`` or ``JPEGImages/`` subfolder. One rule for sets and videos."""
    p = Path(folder)
    own = sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES
                 and not f.name.startswith("."))
    for sub in SET_SUBFOLDERS:
        if not own and (p / sub).is_dir():
            own = folder_images(p / sub)
    if not own:
        raise ImageError(f"{p}: no image files found in this folder (nor in {'/, '.join(SET_SUBFOLDERS)}/)")
    return own
