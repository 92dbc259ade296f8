"""PCA of dense ViT descriptors (Amir et al. 2021, Fig. 3 and the reference ``pca.py``).

The descriptors of one or many images are projected on their leading
principal components, jointly (one basis for all images, the paper's figures)
or per image. Each component is shown as a grayscale image min-max scaled per
image, and the last three together as an RGB image, resized to the image.
Defaults follow the reference: layer 11 keys, no binning, stride 4, load
size 224, 4 components.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Sequence, Union

import numpy as np
import torch
from torch import Tensor

from ..errors import DinokitError
from ..features.coords import GridGeometry
from ..features.extractor import Extractor, Features, ImageInput, extractor_for_settings
from ..features.image import LoadedImage
from ..settings import PCASettings

__all__ = [
    "save_pca","DescriptorPCA", "PCAResult", "pca_descriptors", "pca_images", "component_images"]


class DescriptorPCA:
    """Principal component analysis of descriptor rows, scikit-learn style.

    Args:
        n_components: number of components kept.

    After :meth:`fit`: ``mean_`` ``(D,)``, ``components_`` ``(k, D)`` (rows,
    unit norm, sign fixed so the largest-magnitude loading is positive),
    ``explained_variance_`` ``(k,)`` and ``explained_variance_ratio_``.
    Computed on the data's device, exactly in float64 from the ``D x D``
    covariance (or the SVD of the data when there are fewer rows than
    dimensions) while ``min(N, D) <= exact_max_dim``; beyond that (log-binned
    descriptors have thousands of dimensions, and an exact decomposition
    would take minutes) by seeded randomized SVD with power iterations
    (``torch.svd_lowrank``; scikit-learn's ``PCA`` switches likewise), which
    gives the leading components to float precision.
    """

    def __init__(self, n_components: int = 4, exact_max_dim: int = 2048, seed: int = 0) -> None:
        if not isinstance(n_components, int) or n_components < 1:
            raise DinokitError(f"n_components must be a positive integer, got {n_components!r}")
        self.n_components = n_components
        self.exact_max_dim = int(exact_max_dim)
        self.seed = int(seed)

    def fit(self, x: Tensor) -> "DescriptorPCA":
        """Fit on ``(N, D)`` rows."""
        x = torch.as_tensor(x)
        if x.dim() != 2:
            raise DinokitError(f"PCA expects (N, D) descriptors, got shape {tuple(x.shape)}")
        n, d = x.shape
        k = self.n_components
        if k > min(n, d):
            raise DinokitError(f"cannot take {k} components of {n} descriptors of dimension {d}")
        if min(n, d) > self.exact_max_dim:
            return self._fit_randomized(x)
        xd = x.double()
        mean = xd.mean(0)
        xc = xd - mean
        if n >= d:
            cov = xc.T @ xc / max(n - 1, 1)
            evals, evecs = torch.linalg.eigh(cov)
            order = torch.argsort(evals, descending=True)[:k]
            var, comps = evals[order].clamp_min(0), evecs[:, order].T
            total = torch.trace(cov)
        else:
            _, s, vh = torch.linalg.svd(xc, full_matrices=False)
            var, comps = (s[:k] ** 2) / max(n - 1, 1), vh[:k]
            total = (s**2).sum() / max(n - 1, 1)
        return self._set(mean, comps, var, total)

    def _fit_randomized(self, x: Tensor) -> "DescriptorPCA":
        n, k = x.shape[0], self.n_components
        xf = x.float()
        mean = xf.mean(0)
        xc = xf - mean
        q = min(k + 10, *xc.shape)
        devices = [xc.device] if xc.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):  # seeded without touching the caller's random state
            torch.manual_seed(self.seed)
            _, s, v = torch.svd_lowrank(xc, q=q, niter=7)
        var = s[:k].double() ** 2 / max(n - 1, 1)
        total = xc.double().pow(2).sum() / max(n - 1, 1)
        return self._set(mean.double(), v[:, :k].T.double(), var, total)

    def _set(self, mean: Tensor, comps: Tensor, var: Tensor, total: Tensor) -> "DescriptorPCA":
        idx = comps.abs().argmax(dim=1)
        signs = torch.sign(comps.gather(1, idx[:, None]))
        signs[signs == 0] = 1
        self.mean_ = mean.float()
        self.components_ = (comps * signs).float()
        self.explained_variance_ = var.float()
        self.explained_variance_ratio_ = (var / total.clamp_min(1e-300)).float()
        return self

    def transform(self, x: Tensor) -> Tensor:
        """Project ``(N, D)`` rows: ``(N, n_components)``."""
        if not hasattr(self, "components_"):
            raise DinokitError("call fit() before transform()")
        x = torch.as_tensor(x).float().to(self.mean_.device)
        return (x - self.mean_) @ self.components_.T

    def fit_transform(self, x: Tensor) -> Tensor:
        return self.fit(x).transform(x)


@dataclass
class PCAResult:
    """PCA projection of one image's descriptors.

    ``components`` is ``(rows, cols, k)`` float32 on the image's grid;
    ``geometry`` maps it to pixels; ``image`` is the preprocessed image.
    """

    components: np.ndarray
    geometry: GridGeometry
    image: Optional[LoadedImage]
    explained_variance_ratio: np.ndarray


def pca_descriptors(
    descriptors: Sequence[Tensor], geometries: Sequence[GridGeometry], n_components: int = 4, joint: bool = True,
    images: Optional[Sequence[Optional[LoadedImage]]] = None,
) -> list[PCAResult]:
    """PCA of ``(T_i, D)`` descriptor sets, one basis for all (``joint``) or one per image."""
    if len(descriptors) != len(geometries) or not descriptors:
        raise DinokitError("give one geometry per descriptor set (and at least one)")
    mats = []
    for d, g in zip(descriptors, geometries):
        d = torch.as_tensor(d)
        d = d[0] if d.dim() == 3 else d
        if d.shape[0] != g.num_patches:
            raise DinokitError(f"{d.shape[0]} descriptors for a {g.grid[0]}x{g.grid[1]} grid")
        mats.append(d)
    imgs = list(images) if images is not None else [None] * len(mats)
    out = []
    if joint:
        pca = DescriptorPCA(n_components).fit(torch.cat(mats, 0))
        projs = [pca.transform(m) for m in mats]
        ratios = [pca.explained_variance_ratio_] * len(mats)
    else:
        projs, ratios = [], []
        for m in mats:
            pca = DescriptorPCA(n_components).fit(m)
            projs.append(pca.transform(m))
            ratios.append(pca.explained_variance_ratio_)
    for p, g, im, r in zip(projs, geometries, imgs, ratios):
        out.append(PCAResult(p.reshape(g.grid[0], g.grid[1], -1).cpu().numpy(), g, im, r.cpu().numpy()))
    return out


def pca_images(
    extractor: Union[Extractor, str, None],
    images: Sequence[ImageInput],
    settings: Optional[PCASettings] = None,
    progress: bool = False,
    **overrides: Any,
) -> list[PCAResult]:
    """Extract the settings' descriptors of images (any sizes) and run :func:`pca_descriptors`.

    The defaults are the reference's (layer 11 keys, 4 components, one PCA
    for all images); the backbone runs at the settings' stride and load size.
    """
    st = PCASettings.resolve(settings, **overrides)
    extractor, st = extractor_for_settings(extractor, st, st.explicit(settings, overrides))
    feats: list[Features] = extractor.extract_many(list(images), progress=progress, layers=st.layer,
                                                   facets=st.facet, bin=st.bin)
    descs = [f.get()[0] for f in feats]
    return pca_descriptors(descs, [f.geometry[0] for f in feats], st.components, not st.per_image,
                           [f.images[0] for f in feats])


def _minmax(x: np.ndarray, axis=(0, 1)) -> np.ndarray:
    lo, hi = x.min(axis=axis, keepdims=True), x.max(axis=axis, keepdims=True)
    return (x - lo) / np.where(hi > lo, hi - lo, 1.0)


def component_images(
    result: PCAResult,
    to: Optional[str] = "original",
    mode: str = "nearest",
    value_range: Optional[tuple[np.ndarray, np.ndarray]] = None,
) -> tuple[list[np.ndarray], Optional[np.ndarray]]:
    """uint8 pictures of a result: one grayscale image per component and an RGB of the last three.

    Each component is min-max scaled over the image (the reference), or over
    ``value_range = (lo, hi)`` arrays of shape ``(k,)`` (e.g. over all
    images, to compare them). ``to`` resizes to the ``"original"`` or
    ``"resized"`` image (``None`` keeps the grid); ``mode`` is ``"nearest"``
    (the reference) or ``"bilinear"``. The RGB is ``None`` with fewer than 3
    components.
    """
    comps = result.components.astype(np.float32)
    if value_range is not None:
        lo, hi = (np.asarray(v, dtype=np.float32).reshape(1, 1, -1) for v in value_range)
        scaled = np.clip((comps - lo) / np.where(hi > lo, hi - lo, 1.0), 0, 1)
    else:
        scaled = _minmax(comps)
    if to is not None:
        scaled = result.geometry.upsample(scaled, to, mode)
        if scaled.ndim == 2:
            scaled = scaled[..., None]
    u8 = np.clip(np.rint(scaled * 255.0), 0, 255).astype(np.uint8)
    grays = [np.ascontiguousarray(u8[..., i]) for i in range(u8.shape[-1])]
    rgb = np.ascontiguousarray(u8[..., -3:]) if u8.shape[-1] >= 3 else None
    return grays, rgb


def save_pca(results: Sequence[PCAResult], images: Sequence[Any], out_dir: Any,
             settings: Optional[PCASettings] = None, names: Optional[Sequence[str]] = None,
             save_arrays: bool = False) -> dict[str, Any]:
    """Write ``<name>_pca<i>.png`` per component, ``<name>_pca_rgb.png`` (the last three as R, G, B),
    ``<name>_pca.npy`` with ``save_arrays`` and, last, ``pca.json``; returns the JSON record."""
    from pathlib import Path

    from ..io import save_image, save_json, unique_output_names, write_atomic

    st = settings if settings is not None else PCASettings()
    out = Path(out_dir)
    names = list(names) if names is not None else unique_output_names(images)
    for name, res in zip(names, results):
        grays, rgb = component_images(res, to="original", mode=st.interp)
        for i, g in enumerate(grays):
            save_image(out / f"{name}_pca{i}.png", g)
        if rgb is not None:
            save_image(out / f"{name}_pca_rgb.png", rgb)
        if save_arrays:
            arr = res.components.astype(np.float32)
            write_atomic(out / f"{name}_pca.npy", lambda tmp, a=arr: _save_npy(tmp, a))
    record = {
        "scope": "per image" if st.per_image else "joint",
        "settings": {**st.to_record(), "stride": results[0].geometry.stride if results else None},
        "images": [{"image": str(path), "name": name, "grid_rows_cols": list(res.geometry.grid),
                    "explained_variance_ratio": [float(v) for v in res.explained_variance_ratio]}
                   for path, name, res in zip(images, names, results)],
        "pictures": "<name>_pca<i>.png: component i (0 = largest variance), min-max scaled per image; "
                    "<name>_pca_rgb.png: the last three components as R, G, B",
    }
    save_json(out / "pca.json", record)
    return record


def _save_npy(path: Any, arr: np.ndarray) -> None:
    with open(path, "wb") as fh:
        np.save(fh, arr)
