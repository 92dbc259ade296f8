"""``dinokit attention``: the last block's CLS attention per head, as images (DINO's visualisation)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from ..errors import DinokitError
from ..devices import resolve_device
from ..features import list_images, parse_dtype
from ..tasks.attention import attention_maps, expected_files, save_attention_maps
from ..blocks.draw import COLORMAPS
from .common import add_model_args, add_overwrite, add_quiet, model_from_args, parse_load_size


def _threshold(text: str):
    if text.lower() in ("none", "off", "0"):
        return None
    value = float(text)
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError("threshold must be in (0, 1], or 'none'")
    return value


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "attention",
        help="per-head CLS self-attention maps of the last block (summary figure, PNG per head, mean map)",
        description=(
            "For each image, OUT/<name>/ gets summary.png (the image, the mean map and every head in one labelled "
            "figure), img.png, attn-head<h>.png (colour map), overlay-head<h>.png (over the image), "
            "mask-head<h>.png (the patches holding --threshold of the head's attention mass, as in DINO's "
            "figures) and the same for the mean over heads."
        ),
    )
    p.add_argument("images", nargs="+", help="image files, folders or glob patterns")
    p.add_argument("-o", "--out", required=True, type=Path, help="output folder")
    add_model_args(p)
    p.add_argument("--load-size", type=parse_load_size, default=480,
                   help="smaller image edge after resizing; 'none' keeps the size (default 480, as DINO's script)")
    p.add_argument("--stride", type=int, default=None, help="patch stride, must divide the patch size (default: patch size)")
    p.add_argument("--threshold", type=_threshold, default=0.6,
                   help="fraction of attention mass kept in the masks, or 'none' (default 0.6)")
    p.add_argument("--interpolation", choices=["nearest", "bilinear"], default="nearest",
                   help="upsampling of the patch maps (default nearest, as DINO's figures)")
    p.add_argument("--cmap", default="viridis", choices=sorted(COLORMAPS), help="colour map (default viridis)")
    p.add_argument("--save-arrays", action="store_true", help="also write attention.safetensors per image")
    add_overwrite(p)
    add_quiet(p)
    p.set_defaults(func=run)


def _names(images: list[Path]) -> list[str]:
    """Output folder per image: its stem, made unique with the parent folder's name (then a number) if needed."""
    stems = [p.stem for p in images]
    out: list[str] = []
    seen: set[str] = set()
    for p, stem in zip(images, stems):
        name = stem if stems.count(stem) == 1 else f"{p.parent.name}-{stem}"
        base, i = name, 1
        while name in seen:
            i += 1
            name = f"{base}-{i}"
        seen.add(name)
        out.append(name)
    return out


def run(args: argparse.Namespace) -> int:
    images = list_images(args.images)
    device = resolve_device(args.device)
    dtype = parse_dtype(args.dtype)
    model = model_from_args(args).to(device, dtype)
    if args.stride is not None and (args.stride <= 0 or model.patch_size % args.stride):
        raise DinokitError(f"--stride {args.stride} must divide the patch size {model.patch_size}")
    wanted = expected_files(model.num_heads, args.threshold, args.save_arrays)
    done = skipped = 0
    bar = None
    if not args.quiet:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(images), desc="attention", unit="img", dynamic_ncols=True)
    try:
        for path, name in zip(images, _names(images)):
            folder = args.out / name
            if not args.overwrite and all((folder / f).exists() for f in wanted):
                skipped += 1
            else:
                maps = attention_maps(model, path, load_size=args.load_size, stride=args.stride,
                                      threshold=args.threshold, interpolation=args.interpolation,
                                      device=device, dtype=dtype)
                save_attention_maps(maps, folder, cmap=args.cmap, save_arrays=args.save_arrays)
                done += 1
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    if not args.quiet:
        msg = f"wrote attention maps of {done} image(s) to {args.out}"
        if skipped:
            msg += f", skipped {skipped} already done (--overwrite to redo)"
        print(msg, file=sys.stderr)
    return 0
