"""Drawing helpers shared by the tasks: colour palettes, heat-map overlays, points and side-by-side views.

All images are ``H x W x 3`` uint8 RGB numpy arrays and all points ``(x, y)``
in continuous pixel coordinates (top-left corner of the image at ``(0, 0)``,
the centre of pixel ``(row i, col j)`` at ``(j + 0.5, i + 0.5)``), as in
:mod:`dinokit.features.coords`. Drawing uses OpenCV with sub-pixel precision.
"""

from __future__ import annotations

import colorsys
from typing import Callable, Optional, Sequence, Union

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
    "caption",
    "colorbar",
    "vstack",
    "write_note",
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


def resize_image(
    rgb: np.ndarray, height: Optional[int] = None, max_side: Optional[int] = None, longest: Optional[int] = None
) -> tuple[np.ndarray, float]:
    """Resize to a height, or so the longest side is ``longest``, and at most ``max_side``; returns the image and the scale."""
    h, w = rgb.shape[:2]
    scale = 1.0
    if height is not None:
        scale = height / h
    elif longest is not None:
        scale = longest / max(h, w)
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
    return max(4, int(round(max(img.shape[:2]) / 90)))


def put_label(img: np.ndarray, text: str, xy: Sequence[float], color: Color = (255, 255, 255), scale: Optional[float] = None) -> None:
    """Write ``text`` with its lower-left corner at ``xy``, with a dark outline so it reads on any background."""
    scale = scale if scale is not None else max(0.35, max(img.shape[:2]) / 700)
    thick = max(1, int(round(scale * 1.6)))
    org = (int(round(xy[0])), int(round(xy[1])))
    cv2.putText(img, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), thick + 2, cv2.LINE_AA)
    cv2.putText(img, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, tuple(int(c) for c in color), thick, cv2.LINE_AA)


def label_band(img: np.ndarray, text: str, scale: Optional[float] = None, darkness: float = 0.65) -> None:
    """Write ``text`` in white on a dark band across the top of ``img`` (in place).

    Unlike an outline, the band keeps small digits apart on bright or busy
    backgrounds ("0.0019" stays "0.0019").
    """
    scale = scale if scale is not None else max(0.4, max(img.shape[:2]) / 700)
    thick = max(1, int(round(scale * 1.4)))
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
    pad = max(3, int(round(th * 0.35)))
    h = min(img.shape[0], th + base + 2 * pad)
    w = min(img.shape[1], tw + 2 * pad)
    band = img[:h, :w].astype(np.float32) * (1.0 - darkness)
    img[:h, :w] = np.clip(np.rint(band), 0, 255).astype(np.uint8)
    cv2.putText(img, text, (pad, pad + th), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), thick, cv2.LINE_AA)


def _ink(color: Sequence[int]) -> Color:
    """Black or white, whichever reads better on ``color`` (relative luminance)."""
    r, g, b = (float(c) for c in color[:3])
    return (0, 0, 0) if 0.2126 * r + 0.7152 * g + 0.0722 * b > 140 else (255, 255, 255)


Box = tuple[float, float, float, float]  # x0, y0, x1, y1


def _overlap(a: Box, b: Box) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    return w * h if w > 0 and h > 0 else 0.0


def _place_label(p: np.ndarray, size: tuple[float, float], gap: float, bounds: Box, taken: list[Box],
                 dots: list[Box]) -> Box:
    """The box of a ``size`` label next to point ``p``: inside ``bounds``, clear of ``taken`` labels if possible.

    Tries the eight places around the point (upper right first) and keeps the
    first that fits inside ``bounds`` and overlaps no other label or marker;
    otherwise the one with the least overlap, pushed inside ``bounds``.
    """
    w, h = size
    x, y = float(p[0]), float(p[1])
    candidates = [(x + gap, y - gap - h), (x - gap - w, y - gap - h), (x + gap, y + gap), (x - gap - w, y + gap),
                  (x + gap, y - h / 2), (x - gap - w, y - h / 2), (x - w / 2, y - gap - h), (x - w / 2, y + gap)]
    best, best_cost = None, None
    for x0, y0 in candidates:
        box = (x0, y0, x0 + w, y0 + h)
        outside = (max(0.0, bounds[0] - box[0]) + max(0.0, box[2] - bounds[2])) * h + \
                  (max(0.0, bounds[1] - box[1]) + max(0.0, box[3] - bounds[3])) * w
        cost = 4 * outside + 2 * sum(_overlap(box, t) for t in taken) + sum(_overlap(box, d) for d in dots)
        if cost == 0:
            return box
        if best_cost is None or cost < best_cost:
            best, best_cost = box, cost
    assert best is not None
    dx = max(bounds[0] - best[0], 0.0) - max(best[2] - bounds[2], 0.0)
    dy = max(bounds[1] - best[1], 0.0) - max(best[3] - bounds[3], 0.0)
    return (best[0] + dx, best[1] + dy, best[2] + dx, best[3] + dy)


def draw_points(
    rgb: np.ndarray,
    points: np.ndarray,
    colors: Optional[Sequence[Color]] = None,
    labels: Union[bool, Sequence[str]] = True,
    radius: Optional[int] = None,
    bounds: Optional[Sequence[Box]] = None,
) -> np.ndarray:
    """A copy of ``rgb`` with filled, outlined discs at ``points`` ``(N, 2)`` and number tags.

    Each tag is a box in the point's colour with black or white digits (legible
    on any background), placed beside its point inside ``bounds[i]`` (default:
    the whole image; a side-by-side view passes each panel's rectangle) and
    away from the other tags and discs where there is room. Sizes follow the
    image size unless ``radius`` is given.
    """
    out = np.ascontiguousarray(rgb.copy())
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    colors = list(colors) if colors is not None else palette(len(pts))
    r = radius if radius is not None else _auto_radius(out)
    h_img, w_img = out.shape[:2]
    texts = [str(i + 1) for i in range(len(pts))] if labels is True else (list(labels) if labels else [])
    cols = [tuple(int(v) for v in colors[i % len(colors)]) for i in range(len(pts))]
    for p, c in zip(pts, cols):
        centre = _fixed(p)
        cv2.circle(out, centre, (r + 1) << _SHIFT, (0, 0, 0), -1, cv2.LINE_AA, _SHIFT)
        cv2.circle(out, centre, r << _SHIFT, c, -1, cv2.LINE_AA, _SHIFT)
        cv2.circle(out, centre, max(1, r // 3) << _SHIFT, (255, 255, 255), -1, cv2.LINE_AA, _SHIFT)
    if not texts:
        return out
    scale = max(0.4, 2.4 * r / 22.0)  # Hershey simplex digits are ~22 px tall at scale 1
    thick = max(1, int(round(scale * 1.7)))
    pad = max(2, int(round(r / 3)))
    dots = [(p[0] - r - 1, p[1] - r - 1, p[0] + r + 1, p[1] + r + 1) for p in pts]
    taken: list[Box] = []
    for i, p in enumerate(pts[: len(texts)]):
        (tw, th), base = cv2.getTextSize(texts[i], cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
        size = (tw + 2 * pad, th + base + 2 * pad - 1)
        lim = tuple(bounds[i]) if bounds is not None else (0.0, 0.0, float(w_img), float(h_img))
        others = dots[:i] + dots[i + 1:]
        x0, y0, x1, y1 = _place_label(p, size, r * 0.7 + 1, lim, taken, others)
        taken.append((x0, y0, x1, y1))
        a, b = (int(round(x0)), int(round(y0))), (int(round(x1)) - 1, int(round(y1)) - 1)
        cv2.rectangle(out, a, b, cols[i], -1, cv2.LINE_AA)
        cv2.rectangle(out, a, b, (0, 0, 0), 1, cv2.LINE_AA)
        org = (a[0] + pad, b[1] - pad - base + 1)
        cv2.putText(out, texts[i], org, cv2.FONT_HERSHEY_SIMPLEX, scale, _ink(cols[i]), thick, cv2.LINE_AA)
    return out


def draw_marker(rgb: np.ndarray, xy: Sequence[float], color: Color = (255, 255, 255), size: Optional[int] = None, kind: str = "cross") -> np.ndarray:
    """A copy of ``rgb`` with a cross (or ring) at ``xy``, outlined in black."""
    out = np.ascontiguousarray(rgb.copy())
    s = size if size is not None else 2 * _auto_radius(out)
    t = max(2, s // 5)
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
    images are scaled to ``height`` (default: the taller one). Each number
    tag stays inside its own image.
    """
    pa = np.asarray(points_a, dtype=np.float64).reshape(-1, 2)
    pb = np.asarray(points_b, dtype=np.float64).reshape(-1, 2)
    if len(pa) != len(pb):
        raise ValueError(f"{len(pa)} points in the first image but {len(pb)} in the second")
    canvas, ((xa, sa), (xb, sb)) = hstack([rgb_a, rgb_b], gap=gap, height=height)
    ca = pa * sa + np.array([xa, 0.0])
    cb = pb * sb + np.array([xb, 0.0])
    colors = list(colors) if colors is not None else palette(len(pa))
    h = canvas.shape[0]
    r = _auto_radius(canvas[:, : int(xb)])
    if lines:
        thick = max(1, r // 3)
        for i in range(len(pa)):
            c = tuple(int(v) for v in colors[i % len(colors)])
            cv2.line(canvas, _fixed(ca[i]), _fixed(cb[i]), (0, 0, 0), thick + 2, cv2.LINE_AA, _SHIFT)
            cv2.line(canvas, _fixed(ca[i]), _fixed(cb[i]), c, thick, cv2.LINE_AA, _SHIFT)
    per_point = [colors[i % len(colors)] for i in range(len(pa))] if colors else []
    texts = [str(i + 1) for i in range(len(pa))] * 2 if labels else False
    box_a = (0.0, 0.0, float(xb - gap), float(h))
    box_b = (float(xb), 0.0, float(canvas.shape[1]), float(h))
    return draw_points(canvas, np.concatenate([ca, cb]), colors=per_point * 2, labels=texts, radius=r,
                       bounds=[box_a] * len(pa) + [box_b] * len(pb))


def _text_scale(width: int) -> float:
    return float(np.clip(width / 900.0, 0.4, 0.7))


def caption(width: int, text: str, height: Optional[int] = None, background: int = 255,
            font_scale: Optional[float] = None) -> np.ndarray:
    """A ``width``-wide strip with ``text`` in dark grey, left-aligned.

    Lines (``\n``) that do not fit are wrapped at spaces; only a single word
    wider than the strip is cut, with an ellipsis. ``height`` fixes the height
    of each line.
    """
    scale = font_scale if font_scale is not None else _text_scale(max(width, 1) * 1.6)
    thick = 1
    (_, th), base = cv2.getTextSize("Ag", cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
    h = height if height is not None else th + base + 10

    def fits(t: str) -> bool:
        return cv2.getTextSize(t, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)[0][0] <= width - 8

    lines = [ln for part in text.split("\n") for ln in _wrap(part, fits)]
    strips = []
    for line in lines or [""]:
        strip = np.full((h, width, 3), background, dtype=np.uint8)
        cv2.putText(strip, line, (4, (h + th) // 2), cv2.FONT_HERSHEY_SIMPLEX, scale, (40, 40, 40), thick,
                    cv2.LINE_AA)
        strips.append(strip)
    return np.concatenate(strips, axis=0)


def _wrap(text: str, fits: Callable[[str], bool]) -> list[str]:
    """Greedy word wrap of one line; a word that fits nowhere is cut with an ellipsis."""
    out: list[str] = []
    current = ""
    for word in text.split(" "):
        trial = f"{current} {word}" if current else word
        if fits(trial):
            current = trial
            continue
        if current:
            out.append(current)
        current = word
        if not fits(current):
            while len(current) > 1 and not fits(current + "..."):
                current = current[:-1]
            current += "..."
    out.append(current)
    return out


def colorbar(
    width: int, vmin: float, vmax: float, cmap: str = "jet", label: str = "", bar_height: Optional[int] = None,
    background: int = 255, font_scale: Optional[float] = None,
) -> np.ndarray:
    """A horizontal colour scale ``width`` pixels wide: the colormap from ``vmin`` (left) to ``vmax``, with ticks.

    Ticks at both ends and the middle carry their values; ``label`` (e.g.
    ``"cosine similarity"``) is written under the middle.
    """
    if cmap not in COLORMAPS:
        raise ValueError(f"unknown colormap {cmap!r}; choose from {', '.join(COLORMAPS)}")
    margin = 8
    inner = max(2, width - 2 * margin)
    scale = font_scale if font_scale is not None else _text_scale(width)
    bh = bar_height if bar_height is not None else max(10, int(round(24 * scale)))
    (_, th), base = cv2.getTextSize("0.00", cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    total = 6 + bh + 4 + th + base + 4 + (th + base + 4 if label else 0)
    strip = np.full((total, width, 3), background, dtype=np.uint8)
    ramp = np.tile(np.linspace(0.0, 1.0, inner, dtype=np.float32), (bh, 1))
    strip[6 : 6 + bh, margin : margin + inner] = apply_colormap(ramp, 0.0, 1.0, cmap)
    cv2.rectangle(strip, (margin - 1, 5), (margin + inner, 6 + bh), (60, 60, 60), 1)
    y_text = 6 + bh + 4 + th
    values = [vmin, (vmin + vmax) / 2, vmax]
    for k, v in enumerate(values):
        x = margin + int(round(k * (inner - 1) / 2))
        cv2.line(strip, (x, 6 + bh), (x, 6 + bh + 3), (60, 60, 60), 1)
        text = f"{v:.2f}"
        tw = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)[0][0]
        tx = int(np.clip(x - tw / 2, 0, width - tw))
        cv2.putText(strip, text, (tx, y_text), cv2.FONT_HERSHEY_SIMPLEX, scale, (40, 40, 40), 1, cv2.LINE_AA)
    if label:
        tw = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)[0][0]
        cv2.putText(strip, label, (max(0, (width - tw) // 2), y_text + th + base + 4), cv2.FONT_HERSHEY_SIMPLEX,
                    scale, (90, 90, 90), 1, cv2.LINE_AA)
    return strip


def vstack(parts: Sequence[np.ndarray], background: int = 255) -> np.ndarray:
    """Stack RGB images top to bottom, left-aligned, padding narrower ones with ``background``."""
    width = max(p.shape[1] for p in parts)
    rows = [p if p.shape[1] == width else
            np.concatenate([p, np.full((p.shape[0], width - p.shape[1], 3), background, np.uint8)], 1) for p in parts]
    return np.concatenate(rows, 0)


def write_note(rgb: np.ndarray, text: str) -> np.ndarray:
    """A copy of ``rgb`` with ``text`` on a dark band across its top (e.g. to say that nothing was found)."""
    out = np.ascontiguousarray(rgb.copy())
    scale = _text_scale(out.shape[1])
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    band = th + base + 12
    top = out[:band].astype(np.float32)
    out[:band] = np.clip(top * 0.35, 0, 255).astype(np.uint8)
    cv2.putText(out, text, (8, 6 + th), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)
    return out
