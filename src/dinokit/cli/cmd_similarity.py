"""``dinokit similarity``: cosine-similarity heat maps of a point's descriptor over images."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from ..errors import DinokitError
from ..features import FACETS, open_image
from ..io import save_image, save_json, save_tensors
from .common import STRIDE_HELP, parse_stride, add_model_args, add_overwrite, add_quiet, extractor_from_args, parse_load_size

RESULT_FILE = "similarity.json"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "similarity",
        help="heat maps of a point's descriptor similarity over other images",
        description="For each --point (x, y) in the first image's original pixels: the cosine similarity of its "
                    "descriptor to every patch of every image, drawn as heat maps side by side with the best match "
                    "marked (point<k>.png), plus similarity.json with the best matches.",
    )
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image A (holds the points), then the images to search")
    p.add_argument("--point", nargs=2, type=float, action="append", required=True, metavar=("X", "Y"),
                   help="query point in A's original pixels (repeatable)")
    p.add_argument("-o", "--out", required=True, type=Path, help="output folder")
    add_model_args(p)
    p.add_argument("--load-size", type=parse_load_size, default=224, help="smaller image edge after resizing (default 224)")
    p.add_argument("--stride", type=parse_stride, default="auto", help=STRIDE_HELP)
    p.add_argument("--layer", type=int, default=11, help="block of the descriptors (default 11)")
    p.add_argument("--facet", choices=FACETS, default="key", help="descriptor facet (default key)")
    p.add_argument("--bin", action="store_true", help="log-binned descriptors")
    p.add_argument("--cmap", default="jet", help="colormap: jet, turbo, viridis, inferno, magma, plasma, hot (default jet)")
    p.add_argument("--alpha", type=float, default=0.6, help="opacity of the heat map over the image (default 0.6)")
    p.add_argument("--scale", choices=["image", "joint"], default="image",
                   help="colour range of each heat map: its own (default, as the reference) or shared by all "
                        "images, so colours compare across images")
    p.add_argument("--height", type=int, default=None, help="height of each image panel in pixels (default: the tallest image, kept within 384..512)")
    p.add_argument("--save-arrays", action="store_true",
                   help="also write the grid maps (point<k>_maps.safetensors, one (rows, cols) map per image)")
    add_overwrite(p)
    add_quiet(p)
    p.set_defaults(func=run)


def render_point(rgbs: list[np.ndarray], maps, query_xy, cmap: str = "jet", alpha: float = 0.6,
                 height: int | None = None, scale: str = "image", names: list[str] | None = None) -> np.ndarray:
    """Side-by-side heat maps of one query, each panel titled and with its colour scale.

    The query image comes first with the query point ringed; every other
    image has its best match crossed. ``scale="image"`` colours each map over
    its own range (as the reference's inspector), ``"joint"`` over the range
    of all maps, so that colours compare across images.
    """
    from ..blocks.draw import caption, colorbar, draw_marker, heatmap_overlay, hstack, resize_image, vstack

    finite = [m.scores[np.isfinite(m.scores)] for m in maps]
    ranges = [(float(v.min()), float(v.max())) for v in finite]
    if scale == "joint":
        ranges = [(min(lo for lo, _ in ranges), max(hi for _, hi in ranges))] * len(maps)
    tallest = max(r.shape[0] for r in rgbs)
    h = height if height is not None else int(np.clip(tallest, 384, 512))
    font = float(np.clip(h / 700, 0.45, 0.7))
    marker = max(8, int(round(h / 40)))  # the same marker size on every panel
    columns = []
    for i, (rgb, m, (lo, hi)) in enumerate(zip(rgbs, maps, ranges)):
        panel, s = resize_image(heatmap_overlay(rgb, m.upsample("original"), alpha=alpha, cmap=cmap, vmin=lo, vmax=hi),
                                height=h)
        if i == 0:
            panel = draw_marker(panel, np.asarray(query_xy, dtype=np.float64) * s, (255, 255, 255), marker, "ring")
            text = f"query ({query_xy[0]:.0f}, {query_xy[1]:.0f})"
        else:
            panel = draw_marker(panel, m.best_xy * s, (255, 255, 255), marker, "cross")
            text = f"best {m.best_score:.3f} at ({m.best_xy[0]:.0f}, {m.best_xy[1]:.0f})"
        if names is not None:
            text = f"{names[i]}: {text}"
        columns.append(vstack([caption(panel.shape[1], text, font_scale=font), panel,
                               colorbar(panel.shape[1], lo, hi, cmap, label="cosine similarity", font_scale=font)]))
    canvas, _ = hstack(columns, height=None)
    return canvas


def run(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from ..features import list_images
    from ..tasks.similarity import SimilarityIndex

    paths = list_images(args.images, recursive=False)
    from ..blocks.draw import COLORMAPS

    if args.cmap not in COLORMAPS:
        raise DinokitError(f"--cmap {args.cmap!r} is unknown; choose from {', '.join(COLORMAPS)}")
    if args.alpha < 0 or args.alpha > 1:
        raise DinokitError(f"--alpha must be between 0 and 1, got {args.alpha}")
    out: Path = args.out
    if (out / RESULT_FILE).exists() and not args.overwrite:
        if not args.quiet:
            print(f"{out / RESULT_FILE} exists, nothing to do (--overwrite to redo)", file=sys.stderr)
        return 0
    rgbs = [np.asarray(open_image(p)) for p in paths]
    h, w = rgbs[0].shape[:2]
    for x, y in args.point:
        if not (0 <= x <= w and 0 <= y <= h):
            raise DinokitError(f"{paths[0]}: --point {x:g} {y:g} lies outside the image ({w}x{h} pixels)")
    ex = extractor_from_args(args, stride=args.stride, load_size=args.load_size)
    index = SimilarityIndex.from_images(ex, paths, layer=args.layer, facet=args.facet, bin=args.bin,
                                        progress=not args.quiet)
    records = []
    names = [p.name for p in paths]
    for k, (x, y) in enumerate(tqdm(args.point, desc="similarity", unit="point", disable=args.quiet or len(args.point) < 2), 1):
        maps = index.query(0, (x, y))
        save_image(out / f"point{k}.png",
                   render_point(rgbs, maps, (x, y), args.cmap, args.alpha, args.height, args.scale, names))
        if args.save_arrays:
            save_tensors(out / f"point{k}_maps.safetensors",
                         {f"image{i}": torch.from_numpy(m.scores.copy()) for i, m in enumerate(maps)},
                         metadata={"images": ",".join(str(p) for p in paths)})
        q_idx = index.point_index(0, (x, y))
        records.append({
            "point": k,
            "query": [x, y],
            "query_patch_center": index.geometries[0].index_to_xy(q_idx, original=True).tolist(),
            "matches": [{"image": str(p), "best_xy": m.best_xy.tolist(), "best_score": m.best_score,
                         "min_score": float(m.scores.min()), "grid_rows_cols": list(m.geometry.grid)}
                        for p, m in zip(paths, maps)],
        })
    save_json(out / RESULT_FILE, {
        "coordinates": "(x, y) pixels of the original images, origin at the top-left corner",
        "settings": {"layer": args.layer, "facet": args.facet, "bin": args.bin, "stride": ex.stride,
                     "load_size": args.load_size},
        "points": records,
    })
    if not args.quiet:
        print(f"wrote {len(records)} heat map(s) to {out}", file=sys.stderr)
    return 0
