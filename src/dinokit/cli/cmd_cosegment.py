"""``dinokit cosegment``: co-segmentation of image sets (Amir et al. 2021)."""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path
from typing import Any, Callable

from ..errors import DinokitError
from ..settings import CoSegmentationSettings, TaskSettings
from .common import (add_fail_fast, add_model_args, add_overwrite, add_quiet, add_settings, extractor_from_args, say,
                     settings_from_args, start_run)


def add_set_args(p: argparse.ArgumentParser, settings_class: type[TaskSettings]) -> None:
    """Inputs, outputs, the method's settings and the options the co-segmentation and parts share."""
    p.add_argument("images", nargs="*", metavar="DIR_OR_IMAGES",
                   help="one set: a folder (its images, or those of its images/ or frames/ subfolder) or image files")
    p.add_argument("--sets-root", type=Path, default=None, metavar="DIR",
                   help="a folder whose every subfolder is one set (results in OUT/<set>)")
    p.add_argument("-o", "--out", required=True, type=Path, help="output folder")
    add_model_args(p)
    add_settings(p, settings_class, "method (the reference's options and defaults)")
    o = p.add_argument_group("outputs and memory")
    o.add_argument("--offload-dir", type=Path, default=None,
                   help="folder for on-disk descriptors (default: the system's temporary folder)")
    o.add_argument("--save-intermediate", action="store_true", help="also save saliency and clustering maps")
    add_overwrite(p)
    add_fail_fast(p)
    add_quiet(p)


def set_jobs(args: argparse.Namespace) -> list[tuple[str, Any, Path]]:
    """``(item name, images, output folder)`` per set: one set, or every subfolder of ``--sets-root``."""
    if (args.sets_root is None) == (not args.images):
        raise DinokitError("give one set (a folder or images) or --sets-root DIR, not both" if args.images
                           else "give a folder or images to co-segment, or --sets-root DIR")
    if args.sets_root is not None:
        from ..tasks.cosegmentation import list_sets

        return [(d.name, d, args.out / d.name) for d in list_sets(args.sets_root, exclude=[args.out])]
    images = args.images if len(args.images) > 1 else args.images[0]
    return [("set", images, args.out)]


def run_jobs(args: argparse.Namespace, command: str, settings_class: type[TaskSettings],
             run_one: Callable[..., Any]) -> int:
    """Every set of the command through :func:`run_one`, under the output-folder rule; a line per set."""
    from ..runs import ItemFailures, process_items, summarize

    settings = settings_from_args(args, settings_class)
    jobs = set_jobs(args)
    folder = start_run(args, command, settings, save_intermediate=args.save_intermediate)
    ext = extractor_from_args(args, settings) if folder.pending([j[0] for j in jobs]) else None
    failures = ItemFailures(args.fail_fast or args.sets_root is None, "set")  # one set given: its error ends the run

    def work(name: str, job: tuple[Any, Path]) -> None:
        images, out = job
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.showwarning = lambda m, *a, **k: say(f"warning: {name}: {m}")
            try:
                res = run_one(images, out, ext, settings=settings, overwrite=folder.may_replace,
                              mask_size=settings.mask_size, save_intermediate=args.save_intermediate,
                              offload_dir=args.offload_dir, progress=not args.quiet)
            except DinokitError as exc:
                raise DinokitError(f"set {name}: {exc}" if args.sets_root is not None else str(exc)) from None
        if res is not None:
            say(f"{out}: {res.get('n_images', len(res.get('frames', [])))} image(s), {res['n_clusters']} clusters, "
                f"foreground clusters {res['salient_labels']}")

    done, skipped = process_items([(n, (imgs, out)) for n, imgs, out in jobs], folder, work, failures, "sets",
                                  unit="set", progress=not args.quiet)
    return summarize("results", args.out, done, skipped, failures)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "cosegment",
        help="co-segment the common object of a set of images",
        description="Co-segmentation (Amir et al. 2021): elbow k-means over key descriptors of all images, "
                    "saliency votes pick the foreground clusters, GrabCut refines each mask. Writes "
                    "<image>_mask.png (0/255) and <image>_vis.png (foreground over a checkerboard) per image and "
                    "done.json last; finished sets are skipped on a rerun with the same settings.",
    )
    add_set_args(p, CoSegmentationSettings)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..tasks.cosegmentation import cosegment

    return run_jobs(args, "cosegment", CoSegmentationSettings, cosegment)

