"""``dinokit correspond``: sparse point correspondences between image pairs (Amir et al. 2021)."""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import numpy as np

from ..errors import DinokitError
from ..features import FACETS, IMAGE_SUFFIXES, open_image
from ..io import save_image, save_json
from .common import (STRIDE_HELP, add_model_args, add_overwrite, add_quiet, extractor_from_args, parse_heads,
                     parse_load_size, parse_stride)

RESULT_FILE = "correspondences.json"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "correspond",
        help="point correspondences between two images (or many pairs)",
        description="Sparse correspondences from best buddies of log-binned ViT descriptors, filtered by saliency "
                    "and spread by k-means (Amir et al. 2021). Writes a side-by-side PNG with numbered points, each "
                    "image with its points, and correspondences.json with (x, y) points in original-image pixels.",
    )
    p.add_argument("images", nargs="*", metavar="IMAGE", help="the two images A and B")
    p.add_argument("--pairs-dir", type=Path, default=None,
                   help="folder whose every subfolder holds one pair (two images, A = first by name)")
    p.add_argument("-o", "--out", required=True, type=Path, help="output folder (one subfolder per pair with --pairs-dir)")
    add_model_args(p)
    p.add_argument("--num-pairs", type=int, default=10, help="correspondences per pair (default 10)")
    p.add_argument("--load-size", type=parse_load_size, default=224, help="smaller image edge after resizing (default 224)")
    p.add_argument("--stride", type=parse_stride, default="auto", help=STRIDE_HELP)
    p.add_argument("--layer", type=int, default=9, help="block of the descriptors (default 9)")
    p.add_argument("--facet", choices=FACETS, default="key", help="descriptor facet (default key)")
    p.add_argument("--no-bin", dest="bin", action="store_false", help="plain instead of log-binned descriptors")
    p.add_argument("--thresh", type=float, default=0.05, help="saliency threshold of the foreground (default 0.05)")
    p.add_argument("--saliency-heads", type=parse_heads, default=None,
                   help="comma-separated heads of the last block averaged for saliency (default: the model's, else all)")
    p.add_argument("--seed", type=int, default=0, help="k-means seed (default 0)")
    p.add_argument("--max-side", type=int, default=1024, help="longest side of the drawn pictures, at most (default 1024)")
    p.add_argument("--min-side", type=int, default=512,
                   help="smaller images are drawn enlarged to this longest side, so that points and numbers stay "
                        "legible (default 512; 0 draws them at their own size)")
    add_overwrite(p)
    add_quiet(p)
    p.set_defaults(func=run)


def _pair_images(folder: Path) -> tuple[Path, Path]:
    found = sorted(f for f in folder.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
    if len(found) != 2:
        raise DinokitError(f"{folder}: holds {len(found)} image(s); a pair folder needs exactly 2")
    return found[0], found[1]


def _jobs(args: argparse.Namespace) -> list[tuple[Path, Path, Path]]:
    if args.pairs_dir is not None:
        if args.images:
            raise DinokitError("give either two images or --pairs-dir, not both")
        root = args.pairs_dir
        if not root.is_dir():
            raise DinokitError(f"{root}: no such folder")
        subs = sorted(d for d in root.iterdir() if d.is_dir())
        if not subs:
            raise DinokitError(f"{root}: has no pair subfolders")
        return [(*_pair_images(d), args.out / d.name) for d in subs]
    if len(args.images) != 2:
        raise DinokitError(f"give exactly two images (got {len(args.images)}) or --pairs-dir")
    a, b = (Path(i) for i in args.images)
    for f in (a, b):
        if not f.is_file():
            raise DinokitError(f"{f}: no such file")
    return [(a, b, args.out)]


def write_pair(finder, a: Path, b: Path, out: Path, max_side: int = 1024, overwrite: bool = True,
               min_side: int = 512) -> dict:
    """Find, draw and save the correspondences of one pair; ``correspondences.json`` is written last."""
    from ..tasks.correspondences import draw_correspondences

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        res = finder.find(a, b)
    rgb_a, rgb_b = np.asarray(open_image(a)), np.asarray(open_image(b))
    side, pa, pb = draw_correspondences(rgb_a, rgb_b, res, max_side=max_side or None, min_side=min_side or None)
    save_image(out / "pair.png", side, overwrite)
    save_image(out / f"A_{a.stem}.png", pa, overwrite)
    save_image(out / f"B_{b.stem}.png", pb, overwrite)
    info = {"image_a": str(a), "image_b": str(b), **res.to_dict()}
    save_json(out / RESULT_FILE, info, overwrite)
    return info


def run(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from ..tasks.correspondences import CorrespondenceFinder

    if args.num_pairs < 1:
        raise DinokitError(f"--num-pairs must be at least 1, got {args.num_pairs}")
    if args.max_side < 0 or args.min_side < 0 or (args.max_side and args.min_side > args.max_side):
        raise DinokitError(f"need 0 <= --min-side <= --max-side, got {args.min_side} and {args.max_side}")
    jobs = _jobs(args)
    todo = [j for j in jobs if args.overwrite or not (j[2] / RESULT_FILE).exists()]
    skipped = len(jobs) - len(todo)
    if todo:
        ex = extractor_from_args(args, stride=args.stride, load_size=args.load_size)
        finder = CorrespondenceFinder(ex, num_pairs=args.num_pairs, layer=args.layer, facet=args.facet, bin=args.bin,
                                      thresh=args.thresh, saliency_heads=args.saliency_heads, seed=args.seed)
        empty = []
        for a, b, out in tqdm(todo, desc="correspond", unit="pair", disable=args.quiet or len(todo) < 2):
            info = write_pair(finder, a, b, out, args.max_side, overwrite=True, min_side=args.min_side)
            if info["num_pairs"] == 0:
                empty.append(out)
        for out in empty:
            print(f"dinokit: warning: {out}: no best buddies on the foreground of both images, "
                  "no correspondences (try --thresh lower)", file=sys.stderr)
    if not args.quiet:
        msg = f"wrote {len(todo)} pair(s) to {args.out}"
        if skipped:
            msg += f", skipped {skipped} already done (--overwrite to redo)"
        print(msg, file=sys.stderr)
    return 0
