"""``dinokit similarity``: cosine-similarity heat maps of a point's descriptor over images."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..settings import SimilaritySettings
from .common import (add_model_args, already_finished, add_overwrite, add_quiet, add_settings, extractor_from_args, say,
                     settings_from_args, start_run)


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
    add_settings(p, SimilaritySettings, "descriptors and pictures (the reference inspector's defaults)")
    p.add_argument("--save-arrays", action="store_true",
                   help="also write the grid maps (point<k>_maps.safetensors, one (rows, cols) map per image)")
    add_overwrite(p)
    add_quiet(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..features import list_images
    from ..tasks.similarity import SimilarityIndex, check_points, save_similarity

    settings = settings_from_args(args, SimilaritySettings)
    paths = list_images(args.images, recursive=False, exclude=[args.out])
    check_points(paths[0], args.point)
    folder = start_run(args, "similarity", settings, points=args.point, images=[str(p) for p in paths],
                       save_arrays=args.save_arrays)
    if already_finished(folder, "points", "settings and points"):
        return 0
    index = SimilarityIndex.from_images(extractor_from_args(args, settings), paths, settings,
                                        progress=not args.quiet)
    record = save_similarity(index, paths, args.point, args.out, settings, args.save_arrays, progress=not args.quiet)
    folder.finish("points")
    say(f"wrote {len(record['points'])} heat map(s) to {args.out}")
    return 0
