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
                    "(-o OUT), named after the image (its path below a folder given as input). Several GPUs: "
                    "torchrun --nproc_per_node N -m dinokit extract ... shares the images among the processes.",
    )
    p.add_argument("images", nargs="+", help="image files, folders or glob patterns")
    p.add_argument("-o", "--out", required=True, type=Path, help="output folder")
    add_model_args(p)
    add_settings(p, ExtractSettings, "descriptors")
    g = p.add_argument_group("throughput (the files are the same whatever these are)")
    g.add_argument("--batch-size", type=_positive, default=None, metavar="N",
                   help="images of equal resized size per forward pass (default 16 on CUDA, 1 on CPU)")
    g.add_argument("--num-workers", type=_non_negative, default=None, metavar="N",
                   help="image-loading worker processes (default min(8, CPUs-1) on CUDA, 0 on CPU)")
    add_overwrite(p)
    add_fail_fast(p)
    add_quiet(p)
    p.set_defaults(func=run)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def run(args: argparse.Namespace) -> int:
    from ..features import list_images
    from ..distributed import setup, teardown
    from ..features.group import gather_finished, start_shared_run
    from ..features.pipeline import PipelineOptions, extract_folder
    from ..io import unique_output_names
    from ..runs import ItemFailures, summarize

    settings = settings_from_args(args, ExtractSettings)
    images = list_images(args.images, exclude=[args.out])
    names = unique_output_names(images, [Path(i) for i in args.images if Path(i).is_dir()])
    group = setup(args.device)
    try:
        if group.distributed:
            args.device = str(group.device)
        folder = start_shared_run(group, lambda write: start_run(args, "extract", settings, write_record=write))
        ex = extractor_from_args(args, settings) if folder.pending(names) else None
        failures = ItemFailures(args.fail_fast)
        options = PipelineOptions(args.batch_size, args.num_workers, progress=not args.quiet, rank=group.rank,
                                  world_size=group.world_size)
        report = extract_folder(ex, list(zip(names, images)), args.out, settings, folder, failures, options)
        done = gather_finished(group, folder, report.finished, failures)
        if group.rank != 0:
            return failures.exit_code
        return summarize("descriptors", args.out, done, report.skipped, failures)
    finally:
        teardown(group)
