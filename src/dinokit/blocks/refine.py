"""Mask refinement at image resolution: GrabCut (OpenCV) and a fully connected CRF (pydensecrf2).

Both follow the reference code of Amir et al. (2021):

* :func:`grabcut_refine` upsamples a coarse patch-grid mask to the image,
  erodes foreground and background by a 7x7 square to get sure seeds, marks
  the band between them probably-foreground, runs 5 GrabCut iterations
  initialised from that mask, and falls back to the unrefined mask when
  GrabCut cannot run (no foreground or no background seeds).
* :func:`dense_crf` smooths per-pixel label energies with a Gaussian kernel
  (sxy 3, compat 50) and a bilateral kernel (sxy 5, srgb 13, compat 15),
  diagonal kernels, symmetric normalisation, 10 mean-field iterations.
  :func:`crf_from_distances` builds those energies from per-patch squared
  distances to cluster centres, as the part co-segmentation does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..errors import DinokitError

__all__ = ["GrabCutResult", "upsample_mask", "grabcut_refine", "dense_crf", "crf_from_distances", "upsample_energies"]


def _rgb(image: Union[np.ndarray, Image.Image]) -> np.ndarray:
    arr = np.asarray(image.convert("RGB") if isinstance(image, Image.Image) else image)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise DinokitError(f"expected an RGB image (H, W, 3), got shape {arr.shape}")
    return np.ascontiguousarray(arr, dtype=np.uint8)


def upsample_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of a boolean ``mask`` to ``size = (H, W)`` (PIL's pixel-centre rule)."""
    m = np.asarray(mask, dtype=bool)
    if m.shape == tuple(size):
        return m.copy()
    return np.array(Image.fromarray(m).resize((size[1], size[0]), Image.NEAREST), dtype=bool)


@dataclass
class GrabCutResult:
    """A refined mask ``(H, W)`` bool and whether GrabCut actually ran (``False``: the unrefined fallback)."""

    mask: np.ndarray
    refined: bool


def grabcut_refine(
    image: Union[np.ndarray, Image.Image],
    coarse_mask: np.ndarray,
    kernel_size: int = 7,
    iter_count: int = 5,
    seed: int = 0,
) -> GrabCutResult:
    """Refine a coarse foreground mask (any resolution) with GrabCut on ``image`` (H, W, 3 uint8 RGB).

    The mask is first resized to the image with nearest neighbour. Pixels
    whose ``kernel_size`` x ``kernel_size`` neighbourhood is all foreground
    (background) are sure foreground (background); the rest start as probable
    foreground.
    """
    import cv2

    rgb = _rgb(image)
    h, w = rgb.shape[:2]
    up = upsample_mask(coarse_mask, (h, w))
    kernel = np.ones((kernel_size, kernel_size), np.uint8)
    sure_fg = cv2.erode(up.astype(np.uint8), kernel)
    sure_bg = cv2.erode((~up).astype(np.uint8), kernel)
    gc = np.full((h, w), cv2.GC_PR_FGD, np.uint8)
    gc[sure_bg == 1] = cv2.GC_BGD
    gc[sure_fg == 1] = cv2.GC_FGD
    bgd_model = np.zeros((1, 65), np.float64)
    fgd_model = np.zeros((1, 65), np.float64)
    # GrabCut's GMMs start from cv2.kmeans on OpenCV's global RNG: reseed so that
    # each image's result does not depend on what ran before. (The channel order
    # does not matter to GrabCut, so RGB is passed as the reference does.)
    cv2.setRNGSeed(seed)
    try:
        cv2.grabCut(rgb, gc, None, bgd_model, fgd_model, iter_count, cv2.GC_INIT_WITH_MASK)
    except cv2.error:
        return GrabCutResult(up, False)
    return GrabCutResult((gc == cv2.GC_FGD) | (gc == cv2.GC_PR_FGD), True)


def upsample_energies(energies: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of ``(rows, cols, L)`` energies to ``(H, W, L)`` (torch's floor rule)."""
    t = torch.from_numpy(np.ascontiguousarray(energies, dtype=np.float32)).permute(2, 0, 1)[None]
    return F.interpolate(t, size=tuple(size), mode="nearest")[0].permute(1, 2, 0).numpy()


def dense_crf(
    image: Union[np.ndarray, Image.Image],
    unary: np.ndarray,
    *,
    gaussian_sxy: float = 3,
    gaussian_compat: float = 50,
    bilateral_sxy: float = 5,
    bilateral_srgb: float = 13,
    bilateral_compat: float = 15,
    iterations: int = 10,
) -> np.ndarray:
    """Labels ``(H, W)`` int minimising a dense CRF with per-pixel ``unary`` energies ``(H, W, L)`` (lower = likelier)."""
    import pydensecrf.densecrf as dcrf

    rgb = _rgb(image)
    h, w = rgb.shape[:2]
    if unary.ndim != 3 or unary.shape[:2] != (h, w):
        raise DinokitError(f"unary energies of shape {unary.shape} do not match a {h}x{w} image")
    n_labels = unary.shape[2]
    crf = dcrf.DenseCRF2D(w, h, n_labels)
    crf.setUnaryEnergy(np.ascontiguousarray(unary.reshape(-1, n_labels).T, dtype=np.float32))
    crf.addPairwiseGaussian(sxy=(gaussian_sxy, gaussian_sxy), compat=gaussian_compat,
                            kernel=dcrf.DIAG_KERNEL, normalization=dcrf.NORMALIZE_SYMMETRIC)
    crf.addPairwiseBilateral(sxy=bilateral_sxy, srgb=bilateral_srgb, rgbim=rgb, compat=bilateral_compat,
                             kernel=dcrf.DIAG_KERNEL, normalization=dcrf.NORMALIZE_SYMMETRIC)
    q = np.asarray(crf.inference(int(iterations)), dtype=np.float32)
    return q.argmax(axis=0).reshape(h, w)


def crf_from_distances(image: Union[np.ndarray, Image.Image], distances: np.ndarray, **crf_kwargs) -> np.ndarray:
    """Pixel labels from per-patch squared distances ``(rows, cols, L)`` to ``L`` centres.

    As in the reference, each patch's distances minus their maximum are the
    unary energies, upsampled (nearest) to the image and smoothed by
    :func:`dense_crf`.
    """
    rgb = _rgb(image)
    d = np.asarray(distances, dtype=np.float32)
    d = d - d.max(axis=-1, keepdims=True)
    return dense_crf(rgb, upsample_energies(d, rgb.shape[:2]), **crf_kwargs)
