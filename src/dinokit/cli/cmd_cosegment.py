"""``dinokit cosegment``: co-segmentation of image sets (Amir et al. 2021)."""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

from ..errors import DinokitError
from ..features import FACETS
from .common import (add_model_args, add_overwrite, add_quiet, extractor_from_args, parse_heads, parse_load_size,
                     parse_stride)

BOOL = argparse.BooleanOptionalAction


def add_set_args(p: argparse.ArgumentParser) -> None:
    """Inputs, outputs and the options the co-segmentation and part co-segmentation share."""
    p.add_argument("images", nargs="*", metavar="DIR_OR_IMAGES",
                   help="one set: a folder of images (its 'images/' or 'frames/' subfolder if it has none of its own), "
                        "image files or glob patterns")
    p.add_argument("--sets-root", type=Path, default=None, metavar="DIR",
                   help="run every subfolder of DIR as its own set (results in OUT/<subfolder>)")
    p.add_argument("-o", "--out", required=True, type=Path, help="output folder")
    add_model_args(p)
    g = p.add_argument_group("method (the reference's options and defaults)")
    g.add_argument("--load-size", type=parse_load_size, default=224,
                   help="smaller image edge after resizing; 'none' keeps the size (the reference CLI's default) "
                        "(default 224)")
    g.add_argument("--stride", type=parse_stride, default="auto",
                   help="patch stride, must divide the patch size; 'auto' (default) is half the patch size: "
                        "the reference's 4 for ViT-S/8, 8 for /16 models")
    g.add_argument("--layer", type=int, default=11, help="block of the descriptors (default 11)")
    g.add_argument("--facet", choices=FACETS, default="key", help="descriptor facet (default key)")
    g.add_argument("--bin", action=BOOL, default=False, help="log-binned descriptors (default off)")
    g.add_argument("--thresh", type=float, default=0.065,
                   help="mean saliency above which an image votes for a cluster (default 0.065)")
    g.add_argument("--saliency-heads", type=parse_heads, default=None, metavar="H,H,...",
                   help="last-block heads averaged for saliency (default: the model's, see 'dinokit models'; "
                        "all heads for models without one)")
    g.add_argument("--elbow", type=float, default=0.975,
                   help="stop adding clusters when the mean squared distance is above elbow x the previous "
                        "(default 0.975)")
    g.add_argument("--votes-percentage", type=float, default=75,
                   help="percent of the images that must vote for a foreground cluster (default 75)")
    g.add_argument("--sample-interval", type=int, default=100,
                   help="fit k-means on every n-th descriptor of each image (default 100)")
    g.add_argument("--low-res-saliency-maps", action=BOOL, default=True,
                   help="the reference's low-resolution saliency (half load size, stride 8, a cheap second pass), "
                        "on which --thresh was tuned (default on); --no-low-res-saliency-maps takes it from the "
                        "descriptors' own pass")
    g.add_argument("--max-clusters", type=int, default=14, help="largest k of the elbow search (default 14)")
    s = p.add_argument_group("clustering and memory")
    s.add_argument("--seed", type=int, default=1234, help="k-means seed (default 1234, faiss's default)")
    s.add_argument("--kmeans-backend", choices=["auto", "faiss", "torch"], default="auto",
                   help="auto: faiss on the CPU, torch on a GPU (default auto)")
    s.add_argument("--store", choices=["auto", "memory", "disk"], default="auto",
                   help="where float16 descriptors live: auto moves them to disk beyond --memory-limit-gb")
    s.add_argument("--store-dtype", choices=["float16", "float32"], default="float16",
                   help="precision of the stored descriptors (float32: the reference's exact numbers, twice the memory)")
    s.add_argument("--memory-limit-gb", type=float, default=1.0, help="descriptor RAM budget for --store auto (default 1)")
    s.add_argument("--offload-dir", type=Path, default=None, help="folder for on-disk descriptors (default: system temp)")
    o = p.add_argument_group("outputs")
    o.add_argument("--mask-size", choices=["original", "load"], default="original",
                   help="size of the mask PNGs: the original image's or the resized one's (default original)")
    o.add_argument("--save-intermediate", action="store_true", help="also save saliency and clustering maps")
    add_overwrite(p)
    add_quiet(p)


def method_kwargs(args: argparse.Namespace) -> dict:
    """Keyword arguments of :class:`~dinokit.tasks.cosegmentation.CoSegmentation` from the options."""
    return dict(
        load_size=args.load_size, stride=args.stride, layer=args.layer, facet=args.facet, bin=args.bin,
        thresh=args.thresh, elbow=args.elbow, votes_percentage=args.votes_percentage,
        sample_interval=args.sample_interval, low_res_saliency_maps=args.low_res_saliency_maps,
        max_clusters=args.max_clusters, seed=args.seed, kmeans_backend=args.kmeans_backend, store=args.store,
        store_dtype=args.store_dtype,
        memory_limit_gb=args.memory_limit_gb, offload_dir=args.offload_dir, progress=not args.quiet,
    )


def run_jobs(args: argparse.Namespace, run_one, kwargs: dict) -> int:
    """One set (positional inputs) or every set under ``--sets-root``; prints a line per set."""
    def log(msg: str) -> None:
        print(f"dinokit: {msg}", file=sys.stderr)

    if (args.sets_root is None) == (not args.images):
        raise DinokitError("give one set (a folder or images) or --sets-root DIR, not both" if args.images
                           else "give a folder or images to co-segment, or --sets-root DIR")
    ext = extractor_from_args(args, stride=args.stride, load_size=args.load_size)
    common = dict(extractor=ext, overwrite=args.overwrite, mask_size=args.mask_size,
                  save_intermediate=args.save_intermediate, **kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = lambda m, *a, **k: log(f"warning: {m}")
        if args.sets_root is not None:
            from ..tasks.cosegmentation import run_sets

            results = run_sets(args.sets_root, args.out, run_one, sets_progress=not args.quiet, log=log, **common)
            failed = [k for k, v in results.items() if isinstance(v, str) and v.startswith("error")]
            done = [k for k, v in results.items() if isinstance(v, dict)]
            if not args.quiet:
                log(f"{len(done)} set(s) written to {args.out}, {len(results) - len(done) - len(failed)} already done, "
                    f"{len(failed)} failed")
            return 1 if failed else 0
        res = run_one(args.images if len(args.images) > 1 else args.images[0], args.out, **common)
    if res is None:
        log(f"{args.out}: already done, skipped (use --overwrite to redo)")
    elif not args.quiet:
        log(f"{res['n_images']} image(s), {res['n_clusters']} clusters, foreground clusters "
            f"{res['salient_labels']}; results in {args.out}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "cosegment",
        help="co-segment the common object of a set of images",
        description="Co-segmentation (Amir et al. 2021): elbow k-means over key descriptors of all images, "
                    "saliency votes pick the foreground clusters, GrabCut refines each mask. Writes "
                    "<image>_mask.png (0/255) and <image>_vis.png (foreground over a checkerboard) per image and "
                    "done.json last; finished sets are skipped on a rerun.",
    )
    add_set_args(p)
    g = p.add_argument_group("outlier images")
    g.add_argument("--remove-outliers", action=BOOL, default=False,
                   help="leave out images whose CLS descriptor is far from the mean (they get an empty mask)")
    g.add_argument("--outliers-thresh", type=float, default=0.7,
                   help="cosine similarity to the mean CLS descriptor below which an image is an outlier (default 0.7)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..tasks.cosegmentation import cosegment

    kwargs = method_kwargs(args)
    kwargs.update(remove_outliers=args.remove_outliers, outliers_thresh=args.outliers_thresh)
    return run_jobs(args, cosegment, kwargs)
