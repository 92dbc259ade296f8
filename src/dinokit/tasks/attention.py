"""Self-attention maps of the CLS token in the last block, per head, as in DINO's ``visualize_attention.py``.

For each head the attention of the CLS query to every patch is upsampled to
the image; optionally each head is thresholded to the smallest set of
patches holding a given fraction of its attention mass (0.6 in DINO's
figures). Works at any patch stride (overlapping patches give finer maps).
The result is a set of arrays (:func:`attention_maps`) and, for people to
look at, colour-mapped PNGs and overlays on the image (:func:`save_attention_maps`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import cv2
import numpy as np
import torch
from PIL import Image
from torch import Tensor

from ..blocks.draw import apply_colormap, label_band, palette, to_gray
from ..devices import resolve_device
from ..errors import DinokitError
from ..features.coords import GridGeometry
from ..features.extractor import parse_dtype, resolve_stride
from ..features.image import LoadedImage, preprocess
from ..features.saliency import cls_patch_attention
from ..io import save_image, save_tensors
from ..models.config import input_normalization
from ..settings import AttentionSettings

PathLike = Union[str, os.PathLike]
ImageInput = Union[PathLike, Image.Image, LoadedImage]


@dataclass
class AttentionMaps:
    """CLS attention of the last block for one image.

    ``grid_attention``: ``(heads, rows, cols)``, each head's attention to the
    patches (a row of the softmax, so it sums to at most 1 with the CLS
    token's own share left out). ``attention``: the same upsampled to the
    image, ``(heads, H, W)``; ``mean``: the average over heads ``(H, W)``.
    ``masks`` / ``mean_mask``: boolean ``(heads, H, W)`` / ``(H, W)`` maps of
    the patches kept by the mass threshold (``None`` without a threshold).
    ``image`` is the resized RGB image the maps align with.
    """

    grid_attention: np.ndarray
    attention: np.ndarray
    mean: np.ndarray
    masks: Optional[np.ndarray]
    mean_mask: Optional[np.ndarray]
    image: np.ndarray
    grid: tuple[int, int]
    patch_size: int
    stride: int
    threshold: Optional[float]

    @property
    def num_heads(self) -> int:
        return int(self.grid_attention.shape[0])


def keep_mass(attn: Tensor, fraction: float) -> Tensor:
    """Boolean mask of the largest values of each row that together hold ``fraction`` of the row's mass.

    DINO's rule: sort ascending, normalise to sum 1, keep the positions whose
    cumulative mass exceeds ``1 - fraction``.
    """
    if not 0.0 < fraction <= 1.0:
        raise DinokitError(f"threshold must be in (0, 1], got {fraction}")
    val, idx = torch.sort(attn, dim=-1)
    val = val / val.sum(dim=-1, keepdim=True)
    keep_sorted = torch.cumsum(val, dim=-1) > (1.0 - fraction)
    keep = torch.zeros_like(keep_sorted)
    keep.scatter_(-1, idx, keep_sorted)
    return keep


def _to_pixels(maps: np.ndarray, geometry: GridGeometry, mode: str) -> np.ndarray:
    """``(n, rows, cols)`` patch values to ``(n, H, W)`` pixels by :meth:`GridGeometry.upsample`."""
    if mode not in ("nearest", "bilinear"):
        raise DinokitError(f"unknown interpolation {mode!r}; choose nearest or bilinear")
    up = geometry.upsample(np.moveaxis(maps, 0, -1).astype(np.float32), "resized", mode)
    return np.moveaxis(up.reshape(*up.shape[:2], -1), -1, 0)


@torch.no_grad()
def attention_maps(
    model: torch.nn.Module,
    image: ImageInput,
    settings: Optional[AttentionSettings] = None,
    *,
    device: Union[str, torch.device, None] = None,
    dtype: Union[str, torch.dtype, None] = None,
    **overrides: Any,
) -> AttentionMaps:
    """Per-head CLS attention maps of ``model``'s last block for one image.

    Args:
        model: a dinokit :class:`~dinokit.models.VisionTransformer`.
        image: a path, a PIL image or an already loaded image.
        settings: :class:`~dinokit.settings.AttentionSettings` (DINO's: load
            size 480, stride = patch size, threshold 0.6, nearest
            upsampling); ``overrides`` change single fields.
    """
    st = AttentionSettings.resolve(settings, **overrides)
    load_size, threshold, interpolation = st.load_size, st.threshold, st.interpolation
    p = int(model.patch_size)
    s = resolve_stride(st.stride, p)
    dev = resolve_device(device)
    dt = parse_dtype(dtype)
    mean, std = input_normalization(model)
    loaded = image if isinstance(image, LoadedImage) else preprocess(image, load_size, mean, std)
    H, W = loaded.size
    if H < p or W < p:
        raise DinokitError(f"{loaded.path or 'image'}: {W}x{H} pixels is smaller than one {p}x{p} patch")
    model = model.to(dev, dt).eval()
    res = model.run(loaded.tensor[None].to(dev, dt), {-1: ("cls_attn",)}, stride=s)
    last = max(res.taps)
    # (heads, T); registers are taken out of the softmax (no-op without registers, as DINO)
    cls_attn = cls_patch_attention(res.taps[last]["cls_attn"][0].float(), res.num_prefix_tokens).cpu()
    rows, cols = res.grid
    heads = cls_attn.shape[0]
    grid_attn = cls_attn.reshape(heads, rows, cols).numpy()
    mean_grid = grid_attn.mean(axis=0, keepdims=True)
    geo = GridGeometry((rows, cols), p, s, (H, W), (H, W))
    up = _to_pixels(grid_attn, geo, interpolation)
    up_mean = _to_pixels(mean_grid, geo, interpolation)[0]
    masks = mean_mask = None
    if threshold is not None:
        keep = keep_mass(cls_attn, threshold).reshape(heads, rows, cols).numpy()
        keep_mean = keep_mass(torch.from_numpy(mean_grid.reshape(1, -1)), threshold).reshape(1, rows, cols).numpy()
        masks = _to_pixels(keep, geo, "nearest") > 0.5
        mean_mask = _to_pixels(keep_mean, geo, "nearest")[0] > 0.5
    return AttentionMaps(grid_attn, up, up_mean, masks, mean_mask, loaded.rgb, (rows, cols), p, s, threshold)


def mask_overlay(rgb: np.ndarray, mask: np.ndarray, color: Sequence[int], dim: float = 0.35) -> np.ndarray:
    """The image with everything outside ``mask`` darkened and the kept region outlined in ``color``.

    Darkening (rather than tinting the kept region) keeps the figure readable
    whatever the colours of the photo.
    """
    out = rgb.copy()
    outside = ~mask
    out[outside] = np.rint(rgb[outside].astype(np.float32) * dim).astype(np.uint8)
    return _contour(out, mask, color, pixels_per_line=240)


def attention_overlay(rgb: np.ndarray, values: np.ndarray, cmap: str = "viridis", alpha: float = 0.75) -> np.ndarray:
    """The colour-mapped ``values`` over the image, more opaque where the value is high.

    A uniform blend tints the whole photo with the colour map's low end; with
    the opacity following the (min-max scaled) value, weakly attended regions
    show the photo and strongly attended ones the colour map.
    """
    heat = apply_colormap(values, cmap=cmap).astype(np.float32)
    weight = (to_gray(values).astype(np.float32) / 255.0 * alpha)[..., None]
    out = rgb.astype(np.float32) * (1.0 - weight) + heat * weight
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _contour(img: np.ndarray, mask: np.ndarray, color: Sequence[int] = (255, 255, 255),
             pixels_per_line: int = 200) -> np.ndarray:
    """``img`` (modified in place) with the outer contours of ``mask`` drawn, one pixel thick per
    ``pixels_per_line`` of its smaller side."""
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    thickness = max(1, round(min(img.shape[:2]) / pixels_per_line))
    cv2.drawContours(img, contours, -1, tuple(int(c) for c in color), thickness)
    return img


def attention_summary(
    maps: AttentionMaps, cmap: str = "viridis", tile_height: int = 240, max_cols: int = 8, gap: int = 6
) -> np.ndarray:
    """One figure of an image's attention: the image, the mean map and every head, labelled, in a grid.

    Each map is colour-mapped on its own range (the label gives its peak
    value); with a threshold, the kept region is outlined in white, as in
    DINO's figures. Tiles are ``tile_height`` pixels high (at most the image's
    height), at most ``max_cols`` to a row.
    """
    H, W = maps.image.shape[:2]
    th = min(tile_height, H)
    tw = max(1, int(round(W * th / H)))

    def tile(img: np.ndarray, label: str) -> np.ndarray:
        t = cv2.resize(img, (tw, th), interpolation=cv2.INTER_AREA if th < H else cv2.INTER_NEAREST)
        label_band(t, label, scale=max(0.45, th / 420))
        return t

    def heat(values: np.ndarray, mask: Optional[np.ndarray]) -> np.ndarray:
        img = apply_colormap(values, cmap=cmap)
        return _contour(img, mask) if mask is not None else img

    stride = f", stride {maps.stride}" if maps.stride != maps.patch_size else ""
    tiles = [tile(maps.image, f"image{stride}")]
    tiles.append(tile(heat(maps.mean, maps.mean_mask), f"mean of {maps.num_heads} heads"))
    for h in range(maps.num_heads):
        mask = maps.masks[h] if maps.masks is not None else None
        tiles.append(tile(heat(maps.attention[h], mask), f"head {h}  peak {maps.grid_attention[h].max():.2g}"))
    n = len(tiles)
    nrows = -(-n // max(1, max_cols))
    ncols = -(-n // nrows)
    canvas = np.full((nrows * th + (nrows - 1) * gap, ncols * tw + (ncols - 1) * gap, 3), 255, np.uint8)
    for i, t in enumerate(tiles):
        r, c = divmod(i, ncols)
        canvas[r * (th + gap) : r * (th + gap) + th, c * (tw + gap) : c * (tw + gap) + tw] = t
    return canvas


def save_attention_maps(
    maps: AttentionMaps,
    out_dir: PathLike,
    cmap: str = "viridis",
    alpha: float = 0.75,
    save_arrays: bool = False,
    overwrite: bool = True,
) -> list[Path]:
    """Write the maps of one image into ``out_dir``; returns the files written.

    ``summary.png`` (image, mean and every head in one labelled figure);
    ``img.png`` (the resized image); per head ``attn-head{h}.png`` (colour
    map, each head scaled to its own range) and ``overlay-head{h}.png`` (the
    map over the image, opacity following the value); ``attn-mean.png`` /
    ``overlay-mean.png``; with a threshold, ``mask-head{h}.png`` /
    ``mask-mean.png`` (the kept region outlined, the rest darkened); with
    ``save_arrays``, ``attention.safetensors``.
    """
    out = Path(out_dir)
    written: list[Path] = []

    def put(name: str, img: np.ndarray) -> None:
        written.append(save_image(out / name, img, overwrite=overwrite))

    put("img.png", maps.image)
    colours = palette(maps.num_heads + 1)
    for h in range(maps.num_heads):
        put(f"attn-head{h}.png", apply_colormap(maps.attention[h], cmap=cmap))
        put(f"overlay-head{h}.png", attention_overlay(maps.image, maps.attention[h], cmap, alpha))
        if maps.masks is not None:
            put(f"mask-head{h}.png", mask_overlay(maps.image, maps.masks[h], colours[h]))
    put("attn-mean.png", apply_colormap(maps.mean, cmap=cmap))
    put("overlay-mean.png", attention_overlay(maps.image, maps.mean, cmap, alpha))
    if maps.mean_mask is not None:
        put("mask-mean.png", mask_overlay(maps.image, maps.mean_mask, colours[maps.num_heads]))
    if save_arrays:
        tensors = {"grid_attention": torch.from_numpy(maps.grid_attention), "mean": torch.from_numpy(maps.mean)}
        if maps.masks is not None:
            tensors["masks"] = torch.from_numpy(maps.masks.astype(np.uint8))
        meta = {"patch_size": str(maps.patch_size), "stride": str(maps.stride), "grid": f"{maps.grid[0]},{maps.grid[1]}",
                "threshold": "none" if maps.threshold is None else str(maps.threshold)}
        written.append(save_tensors(out / "attention.safetensors", tensors, meta, overwrite=overwrite))
    # written last: its presence marks the image as finished
    put("summary.png", attention_summary(maps, cmap=cmap))
    return written


def expected_files(num_heads: int, threshold: Optional[float], save_arrays: bool = False) -> list[str]:
    """Names :func:`save_attention_maps` writes (used to skip finished images)."""
    names = ["summary.png", "img.png", "attn-mean.png", "overlay-mean.png"]
    for h in range(num_heads):
        names += [f"attn-head{h}.png", f"overlay-head{h}.png"] + ([f"mask-head{h}.png"] if threshold is not None else [])
    if threshold is not None:
        names.append("mask-mean.png")
    if save_arrays:
        names.append("attention.safetensors")
    return names


__all__ = [
    "AttentionMaps",
    "attention_maps",
    "attention_overlay",
    "attention_summary",
    "expected_files",
    "keep_mass",
    "mask_overlay",
    "save_attention_maps",
]
