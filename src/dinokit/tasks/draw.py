"""Drawing helpers shared by the tasks: colour palettes, heat-map overlays, points and side-by-side views.

All images are ``H x W x 3`` uint8 RGB numpy arrays and all points ``(x, y)``
in continuous pixel coordinates (top-left corner of the image at ``(0, 0)``,
the centre of pixel ``(row i, col j)`` at ``(j + 0.5, i + 0.5)``), as in
:mod:`dinokit.features.coords`. Drawing uses OpenCV with sub-pixel precision.
"""

from __future__ import annotations

import colorsys
from typing import Optional, Sequence, Union

import cv2
import numpy as np

__all__ = [
    "PALETTE",
    "COLORMAPS",
    "palette",
    "to_gray",
    "apply_colormap",
    "blend",
    "heatmap_overlay",
    "resize_image",
    "hstack",
    "draw_points",
    "draw_marker",
    "put_label",
    "draw_matches",
]

Color = tuple[int, int, int]

# Distinct, saturated colours that stay visible on photos (and against each other).
PALETTE: tuple[Color, ...] = (
    (230, 25, 75), (255, 225, 25), (0, 130, 200), (60, 220, 75), (245, 130, 48),
    (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212),
    (0, 128, 128), (220, 190, 255), (170, 110, 40), (255, 250, 200), (128, 0, 0),
    (170, 255, 195), (128, 128, 0), (255, 215, 180), (0, 0, 128), (255, 255, 255),
)

_SHIFT = 4  # cv2 fixed-point bits: coordinates are drawn with 1/16-pixel precision
COLORMAPS = {
    "jet": cv2.COLORMAP_JET,
    "turbo": cv2.COLORMAP_TURBO,
    "viridis": cv2.COLORMAP_VIRIDIS,
    "inferno": cv2.COLORMAP_INFERNO,
    "magma": cv2.COLORMAP_MAGMA,
    "plasma": cv2.COLORMAP_PLASMA,
    "hot": cv2.COLORMAP_HOT,
}


def palette(n: int) -> list[Color]:
    """``n`` distinct RGB colours: :data:`PALETTE` first, then evenly spaced hues."""
    out = list(PALETTE[: max(n, 0)])
    extra = n - len(out)
    for i in range(extra):
        h = (i * 0.618033988749895) % 1.0
        r, g, b = colorsys.hsv_to_rgb(h, 0.85, 0.95)
        out.append((int(r * 255), int(g * 255), int(b * 255)))
    return out


def to_gray(values: np.ndarray, vmin: Optional[float] = None, vmax: Optional[float] = None) -> np.ndarray:
    """Min-max scale a float map to uint8 (``vmin``/``vmax`` default to its finite range)."""
    v = np.asarray(values, dtype=np.float64)
    finite = v[np.isfinite(v)]
    lo = float(finite.min()) if vmin is None and finite.size else (vmin if vmin is not None else 0.0)
    hi = float(finite.max()) if vmax is None and finite.size else (vmax if vmax is not None else 1.0)
    scaled = (v - lo) / (hi - lo) if hi > lo else np.zeros_like(v)
    scaled = np.where(np.isfinite(scaled), scaled, 0.0)
    return np.clip(np.rint(scaled * 255.0), 0, 255).astype(np.uint8)


def apply_colormap(
    values: np.ndarray, vmin: Optional[float] = None, vmax: Optional[float] = None, cmap: str = "jet"
) -> np.ndarray:
    """Colour a 2-D float map with a named colormap (jet, turbo, viridis, ...); returns RGB uint8."""
    if cmap not in COLORMAPS:
        raise ValueError(f"unknown colormap {cmap!r}; choose from {', '.join(COLORMAPS)}")
    bgr = cv2.applyColorMap(to_gray(values, vmin, vmax), COLORMAPS[cmap])
    return np.ascontiguousarray(bgr[..., ::-1])


def blend(base: np.ndarray, overlay: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """``(1 - alpha) * base + alpha * overlay`` for two RGB uint8 images of the same size."""
    if base.shape != overlay.shape:
        raise ValueError(f"cannot blend images of shapes {base.shape} and {overlay.shape}")
    out = base.astype(np.float32) * (1.0 - alpha) + overlay.astype(np.float32) * alpha
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def heatmap_overlay(
    rgb: np.ndarray,
    values: np.ndarray,
    alpha: float = 0.55,
    cmap: str = "jet",
    vmin: Optional[float] = None,
    vmax: Optional[float] = None,
) -> np.ndarray:
    """A heat map (same ``H x W`` as ``rgb``) coloured and blended over the image."""
    if values.shape[:2] != rgb.shape[:2]:
        raise ValueError(f"heat map {values.shape[:2]} does not match the image {rgb.shape[:2]}")
    return blend(rgb, apply_colormap(values, vmin, vmax, cmap), alpha)


def resize_image(rgb: np.ndarray, height: Optional[int] = None, max_side: Optional[int] = None) -> tuple[np.ndarray, float]:
    """Resize to a height (or so the longest side is at most ``max_side``); returns the image and the scale."""
    h, w = rgb.shape[:2]
    scale = 1.0
    if height is not None:
        scale = height / h
    if max_side is not None and max(h, w) * scale > max_side:
        scale = max_side / max(h, w)
    if abs(scale - 1.0) < 1e-9:
        return rgb, 1.0
    size = (max(1, int(round(w * scale))), max(1, int(round(h * scale))))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    return cv2.resize(rgb, size, interpolation=interp), scale


def hstack(
    images: Sequence[np.ndarray], gap: int = 10, height: Optional[int] = None, background: int = 255
) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """Place images side by side, each scaled to ``height`` (default: the tallest).

    Returns the canvas and, per image, ``(x_offset, scale)`` so that a point
    ``p`` of image ``i`` lands at ``p * scale + (x_offset, 0)`` on the canvas.
    """
    if not images:
        raise ValueError("no images to stack")
    target = height if height is not None else max(im.shape[0] for im in images)
    scaled = [resize_image(im, height=target) for im in images]
    width = sum(im.shape[1] for im, _ in scaled) + gap * (len(images) - 1)
    canvas = np.full((target, width, 3), background, dtype=np.uint8)
    placements = []
    x = 0
    for im, s in scaled:
        canvas[: im.shape[0], x : x + im.shape[1]] = im
        placements.append((float(x), s))
        x += im.shape[1] + gap
    return canvas, placements


def _fixed(xy: Sequence[float]) -> tuple[int, int]:
    # continuous coordinates -> cv2's pixel-centre coordinates, in fixed point
    return int(round((xy[0] - 0.5) * (1 << _SHIFT))), int(round((xy[1] - 0.5) * (1 << _SHIFT)))


def _auto_radius(img: np.ndarray) -> int:
    return max(3, int(round(max(img.shape[:2]) / 90)))


def put_label(img: np.ndarray, text: str, xy: Sequence[float], color: Color = (255, 255, 255), scale: Optional[float] = None) -> None:
    """Write ``text`` with its lower-left corner at ``xy``, with a dark outline so it reads on any background."""
    scale = scale if scale is not None else max(0.35, max(img.shape[:2]) / 700)
    thick = max(1, int(round(scale * 1.6)))
    org = (int(round(xy[0])), int(round(xy[1])))
    cv2.putText(img, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), thick + 2, cv2.LINE_AA)
    cv2.putText(img, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, tuple(int(c) for c in color), thick, cv2.LINE_AA)


def draw_points(
    rgb: np.ndarray,
    points: np.ndarray,
    colors: Optional[Sequence[Color]] = None,
    labels: Union[bool, Sequence[str]] = True,
    radius: Optional[int] = None,
) -> np.ndarray:
    """A copy of ``rgb`` with filled, outlined discs at ``points`` ``(N, 2)`` and optional number labels."""
    out = np.ascontiguousarray(rgb.copy())
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    colors = list(colors) if colors is not None else palette(len(pts))
    r = radius if radius is not None else _auto_radius(out)
    texts = [str(i + 1) for i in range(len(pts))] if labels is True else (list(labels) if labels else [])
    for i, p in enumerate(pts):
        c = tuple(int(v) for v in colors[i % len(colors)])
        centre = _fixed(p)
        cv2.circle(out, centre, (r + 1) << _SHIFT, (0, 0, 0), -1, cv2.LINE_AA, _SHIFT)
        cv2.circle(out, centre, r << _SHIFT, c, -1, cv2.LINE_AA, _SHIFT)
        cv2.circle(out, centre, max(1, r // 3) << _SHIFT, (255, 255, 255), -1, cv2.LINE_AA, _SHIFT)
    for i, p in enumerate(pts[: len(texts)]):
        put_label(out, texts[i], (p[0] + r + 2, p[1] - r - 2), tuple(int(v) for v in colors[i % len(colors)]))
    return out


def draw_marker(rgb: np.ndarray, xy: Sequence[float], color: Color = (255, 255, 255), size: Optional[int] = None, kind: str = "cross") -> np.ndarray:
    """A copy of ``rgb`` with a cross (or ring) at ``xy``, outlined in black."""
    out = np.ascontiguousarray(rgb.copy())
    s = size if size is not None else 2 * _auto_radius(out)
    t = max(1, s // 6)
    c = _fixed(xy)
    if kind == "cross":
        for dx, dy in ((s, 0), (0, s)):
            a = (c[0] - (dx << _SHIFT), c[1] - (dy << _SHIFT))
            b = (c[0] + (dx << _SHIFT), c[1] + (dy << _SHIFT))
            cv2.line(out, a, b, (0, 0, 0), t + 2, cv2.LINE_AA, _SHIFT)
        for dx, dy in ((s, 0), (0, s)):
            a = (c[0] - (dx << _SHIFT), c[1] - (dy << _SHIFT))
            b = (c[0] + (dx << _SHIFT), c[1] + (dy << _SHIFT))
            cv2.line(out, a, b, tuple(int(v) for v in color), t, cv2.LINE_AA, _SHIFT)
    elif kind == "ring":
        cv2.circle(out, c, s << _SHIFT, (0, 0, 0), t + 2, cv2.LINE_AA, _SHIFT)
        cv2.circle(out, c, s << _SHIFT, tuple(int(v) for v in color), t, cv2.LINE_AA, _SHIFT)
    else:
        raise ValueError(f"marker kind is 'cross' or 'ring', not {kind!r}")
    return out


def draw_matches(
    rgb_a: np.ndarray,
    rgb_b: np.ndarray,
    points_a: np.ndarray,
    points_b: np.ndarray,
    colors: Optional[Sequence[Color]] = None,
    labels: bool = True,
    lines: bool = True,
    height: Optional[int] = None,
    gap: int = 10,
) -> np.ndarray:
    """Side-by-side view of two images with numbered, coloured corresponding points joined by lines.

    ``points_*`` are ``(N, 2)`` ``(x, y)`` in each image's own pixels; both
    images are scaled to ``height`` (default: the taller one).
    """
    pa = np.asarray(points_a, dtype=np.float64).reshape(-1, 2)
    pb = np.asarray(points_b, dtype=np.float64).reshape(-1, 2)
    if len(pa) != len(pb):
        raise ValueError(f"{len(pa)} points in the first image but {len(pb)} in the second")
    canvas, ((xa, sa), (xb, sb)) = hstack([rgb_a, rgb_b], gap=gap, height=height)
    ca = pa * sa + np.array([xa, 0.0])
    cb = pb * sb + np.array([xb, 0.0])
    colors = list(colors) if colors is not None else palette(len(pa))
    r = _auto_radius(canvas[:, : int(xb)])
    if lines:
        thick = max(1, r // 3)
        for i in range(len(pa)):
            c = tuple(int(v) for v in colors[i % len(colors)])
            cv2.line(canvas, _fixed(ca[i]), _fixed(cb[i]), (0, 0, 0), thick + 2, cv2.LINE_AA, _SHIFT)
            cv2.line(canvas, _fixed(ca[i]), _fixed(cb[i]), c, thick, cv2.LINE_AA, _SHIFT)
    per_point = [colors[i % len(colors)] for i in range(len(pa))] if colors else []
    texts = [str(i + 1) for i in range(len(pa))] * 2 if labels else False
    return draw_points(canvas, np.concatenate([ca, cb]), colors=per_point * 2, labels=texts, radius=r)
