"""``dinokit correspond``: sparse point correspondences between image pairs (Amir et al. 2021)."""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

from ..errors import DinokitError
from ..settings import CorrespondenceSettings
from .common import (add_fail_fast, add_model_args, add_overwrite, add_quiet, add_settings, extractor_from_args, say,
                     settings_from_args, start_run)

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
    add_settings(p, CorrespondenceSettings, "method and pictures (the paper's defaults)")
    add_overwrite(p)
    add_fail_fast(p)
    add_quiet(p)
    p.set_defaults(func=run)


def _jobs(args: argparse.Namespace) -> list[tuple[Path, Path, Path, str]]:
    """``(a, b, output folder, item name)`` per pair."""
    if args.pairs_dir is not None:
        if args.images:
            raise DinokitError("give either two images or --pairs-dir, not both")
        from ..tasks.correspondences import pair_folders

        return [(a, b, args.out / name, name) for name, a, b in pair_folders(args.pairs_dir, exclude=[args.out])]
    if len(args.images) != 2:
        raise DinokitError(f"give exactly two images (got {len(args.images)}) or --pairs-dir")
    a, b = (Path(i) for i in args.images)
    for f in (a, b):
        if not f.is_file():
            raise DinokitError(f"{f}: no such file")
    return [(a, b, args.out, f"{a.name}|{b.name}")]


def run(args: argparse.Namespace) -> int:
    from ..runs import ItemFailures, process_items, summarize
    from ..tasks.correspondences import CorrespondenceFinder, save_correspondences, shortfall_reason

    settings = settings_from_args(args, CorrespondenceSettings)
    jobs = _jobs(args)
    folder = start_run(args, "correspond", settings)
    pending = folder.pending([name for *_, name in jobs])
    finder = CorrespondenceFinder(extractor_from_args(args, settings), settings) if pending else None

    def work(name: str, job: tuple[Path, Path, Path]) -> None:
        a, b, out = job
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # said below, with the reason
            res = finder.find(a, b)
        save_correspondences(res, a, b, out, max_side=settings.max_side, min_side=settings.min_side,
                             overwrite=folder.may_replace)
        reason = shortfall_reason(res, settings.num_pairs)
        if reason:
            say(f"warning: {out}: {reason}")

    failures = ItemFailures(args.fail_fast, "pair")
    done, skipped = process_items([(name, (a, b, out)) for a, b, out, name in jobs], folder, work, failures,
                                  "correspond", unit="pair", progress=not args.quiet)
    return summarize("correspondences", args.out, done, skipped, failures)
