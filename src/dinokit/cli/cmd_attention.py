"""``dinokit attention``: the last block's CLS attention per head, as images (DINO's visualisation)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..settings import AttentionSettings
from .common import (add_fail_fast, add_model_args, add_overwrite, add_quiet, add_settings, model_from_args,
                     settings_from_args, start_run)


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
    add_settings(p, AttentionSettings, "maps (DINO's defaults)")
    p.add_argument("--save-arrays", action="store_true", help="also write attention.safetensors per image")
    add_overwrite(p)
    add_fail_fast(p)
    add_quiet(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..features import list_images
    from ..io import unique_output_names
    from ..runs import ItemFailures, process_items, summarize
    from ..tasks.attention import attention_maps, save_attention_maps

    settings = settings_from_args(args, AttentionSettings)
    images = list_images(args.images, exclude=[args.out])
    folder = start_run(args, "attention", settings, save_arrays=args.save_arrays)
    failures = ItemFailures(args.fail_fast)
    names = unique_output_names(images, [Path(i) for i in args.images if Path(i).is_dir()])
    model = model_from_args(args) if folder.pending(names) else None

    def work(name: str, path: Path) -> None:
        maps = attention_maps(model, path, settings, device=args.device, dtype=args.dtype)
        save_attention_maps(maps, args.out / name, cmap=settings.cmap, save_arrays=args.save_arrays)

    done, skipped = process_items(list(zip(names, images)), folder, work, failures, "attention",
                                  progress=not args.quiet)
    return summarize("attention maps", args.out, done, skipped, failures)
