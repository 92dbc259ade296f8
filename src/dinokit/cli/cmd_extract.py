"""``dinokit extract``: dense descriptors of images to ``.safetensors`` files."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..features import FACETS, list_images
from ..features.export import extract_to_files, output_names
from .common import (STRIDE_HELP, add_model_args, add_overwrite, add_quiet, extractor_from_args, parse_heads,
                     parse_load_size, parse_stride)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "extract",
        help="write dense descriptors (and saliency) of images to .safetensors files",
        description="Dense ViT descriptors of every image, one .safetensors file per image in OUTDIR.",
    )
    p.add_argument("images", nargs="+", help="image files, folders or glob patterns")
    p.add_argument("-o", "--out", required=True, type=Path, help="output folder")
    add_model_args(p)
    p.add_argument("--load-size", type=parse_load_size, default=224,
                   help="smaller image edge after resizing; 'none' keeps the size (default 224)")
    p.add_argument("--stride", type=parse_stride, default="auto", help=STRIDE_HELP + " (the reference's default)")
    p.add_argument("--layer", type=int, action="append", default=None,
                   help="block index (repeatable; negative counts from the end; default -1, the last block: 11 for ViT-S/B)")
    p.add_argument("--facet", action="append", choices=FACETS, default=None, help="key, query, value or token (repeatable; default key)")
    p.add_argument("--bin", action="store_true", help="log-binned descriptors")
    p.add_argument("--include-cls", action="store_true", help="keep the CLS token as row 0")
    p.add_argument("--saliency", action="store_true", help="also store the CLS-attention saliency map")
    p.add_argument("--saliency-layer", type=int, default=-1, help="block used for saliency (default: last)")
    p.add_argument("--saliency-heads", type=parse_heads, default=None,
                   help="comma-separated heads averaged for saliency (default: the model's default, else all)")
    add_overwrite(p)
    add_quiet(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    images = list_images(args.images)
    roots = [Path(i) for i in args.images if Path(i).is_dir()]
    if not args.overwrite and all((args.out / f"{n}.safetensors").exists() for n in output_names(images, roots)):
        if not args.quiet:  # nothing to do: do not even load the model
            print(f"all {len(images)} file(s) already in {args.out} (--overwrite to redo)", file=sys.stderr)
        return 0
    ext = extractor_from_args(args, stride=args.stride, load_size=args.load_size)
    report = extract_to_files(
        ext, images, args.out,
        layers=args.layer or [-1], facets=args.facet or ["key"], bin=args.bin, include_cls=args.include_cls,
        saliency=args.saliency, saliency_layer=args.saliency_layer, saliency_heads=args.saliency_heads,
        roots=roots, overwrite=args.overwrite, progress=not args.quiet,
    )
    if not args.quiet:
        msg = f"wrote {len(report.written)} file(s) to {args.out}"
        if report.skipped:
            msg += f", skipped {len(report.skipped)} already done (--overwrite to redo)"
        print(msg, file=sys.stderr)
    return 0
