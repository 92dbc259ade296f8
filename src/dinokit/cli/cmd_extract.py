"""``dinokit extract``: dense descriptors of images to ``.safetensors`` files."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..settings import ExtractSettings
from .common import (add_fail_fast, add_model_args, add_overwrite, add_quiet, add_settings, extractor_from_args,
                     settings_from_args, start_run)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "extract",
        help="write dense descriptors (and saliency) of images to .safetensors files",
        description="Dense ViT descriptors of every image, one .safetensors file per image in the output folder "
                    "(-o OUT), named after the image (its path below a folder given as input).",
    )
    p.add_argument("images", nargs="+", help="image files, folders or glob patterns")
    p.add_argument("-o", "--out", required=True, type=Path, help="output folder")
    add_model_args(p)
    add_settings(p, ExtractSettings, "descriptors")
    add_overwrite(p)
    add_fail_fast(p)
    add_quiet(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..features import list_images
    from ..features.export import write_descriptor_file
    from ..io import unique_output_names
    from ..runs import ItemFailures, process_items, summarize

    settings = settings_from_args(args, ExtractSettings)
    images = list_images(args.images, exclude=[args.out])
    names = unique_output_names(images, [Path(i) for i in args.images if Path(i).is_dir()])
    folder = start_run(args, "extract", settings)
    ex = extractor_from_args(args, settings) if folder.pending(names) else None
    failures = ItemFailures(args.fail_fast)

    def work(name: str, path: Path) -> None:
        write_descriptor_file(ex, path, args.out / f"{name}.safetensors", settings, overwrite=folder.may_replace)

    done, skipped = process_items(list(zip(names, images)), folder, work, failures, "extract",
                                  progress=not args.quiet)
    return summarize("descriptors", args.out, done, skipped, failures)
