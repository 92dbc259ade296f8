"""``dinokit benchmark``: the papers' evaluation protocols on the standard datasets, with baseline rows."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ..settings import FACETS, parse_heads, parse_load_size, parse_stride
from .common import add_model_args, add_overwrite, add_quiet

BOOL = argparse.BooleanOptionalAction


def _common(p: argparse.ArgumentParser, baselines: tuple[str, ...], default: Any = "all") -> None:
    p.add_argument("--root", required=True, type=Path, help="the dataset folder")
    p.add_argument("-o", "--out", required=True, type=Path,
                   help="output folder: run.json (settings), items.jsonl (per-item results, written as it goes), "
                        "cache/ (descriptors), results.json/.csv (final). A rerun into it resumes.")
    add_model_args(p)
    b = p.add_argument_group("baselines and run")
    b.add_argument("--baselines", nargs="*", choices=baselines, default=list(baselines) if default == "all" else default,
                   metavar="NAME", help=f"baseline rows ({', '.join(baselines)}; default "
                                        f"{'all' if default == 'all' else 'those of the protocol'}; "
                                        "none: --baselines with no name)")
    b.add_argument("--keep-cache", action="store_true",
                   help="keep cached descriptors after use (default: deleted once no pending item needs them)")
    add_overwrite(b)
    add_quiet(b)


def _coseg_args(p: argparse.ArgumentParser, layer: int = 11) -> None:
    g = p.add_argument_group("co-segmentation (the paper's defaults)")
    g.add_argument("--load-size", type=parse_load_size, default=224, help="smaller image edge (default 224)")
    g.add_argument("--stride", type=int, default=4, help="patch stride (default 4)")
    g.add_argument("--layer", type=int, default=layer, help=f"descriptor block (default {layer})")
    g.add_argument("--facet", choices=FACETS, default="key", help="descriptor facet (default key)")
    g.add_argument("--bin", action=BOOL, default=False, help="log-binned descriptors (default off)")
    g.add_argument("--thresh", type=float, default=0.065, help="saliency vote threshold (default 0.065)")
    g.add_argument("--elbow", type=float, default=0.975, help="elbow coefficient (default 0.975)")
    g.add_argument("--votes-percentage", type=float, default=75, help="percent of images voting (default 75)")
    g.add_argument("--sample-interval", type=int, default=100, help="k-means on every n-th descriptor (default 100)")
    g.add_argument("--low-res-saliency-maps", action=BOOL, default=True,
                   help="the reference's low-resolution saliency (default on)")
    g.add_argument("--max-clusters", type=int, default=14, help="largest k of the elbow search (default 14)")
    g.add_argument("--seed", type=int, default=1234, help="k-means seed (default 1234)")
    g.add_argument("--kmeans-backend", choices=["auto", "faiss", "torch"], default="auto")
    g.add_argument("--store-dtype", choices=["float16", "float32"], default="float16",
                   help="precision of the stored (and cached) descriptors (default float16)")


def _baseline_mask_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("baseline parameters")
    g.add_argument("--centre-prior-area", type=float, default=0.5,
                   help="share of the image the centre-prior ellipse covers (default 0.5)")
    g.add_argument("--saliency-thresh", type=float, default=None,
                   help="saliency baseline threshold (default: each image's mean saliency)")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "benchmark", help="evaluate a model on the papers' benchmarks (correspondence, cosegment, video, parts)",
        description="Run a paper's evaluation protocol with its default hyperparameters on a standard dataset, "
                    "for any model and weights. Prints a table (the model and weight-free baselines, then a "
                    "breakdown per category/set/sequence) and writes results.json (scores and the exact settings), "
                    "results.csv and results_per_<group>.csv into --out. Per-item results and descriptors are saved "
                    "as the run goes: rerun the same command to resume.")
    bs = p.add_subparsers(dest="benchmark", metavar="BENCHMARK")
    bs.required = True

    c = bs.add_parser("correspondence", help="PCK of dense point matching (PF-WILLOW, SPair-71k, PF-PASCAL, CUB)",
                      description="For each source keypoint, the descriptor of its patch is matched (argmax of "
                                  "cosine similarity) over the target; PCK@alpha with alpha x the longer side of the "
                                  "target's box (PF-WILLOW: the keypoints' box; PF-PASCAL: the image by default).")
    c.add_argument("--dataset", required=True, choices=["pf-willow", "spair", "pf-pascal", "cub"])
    _common(c, ("identity", "rgb-patches"))
    g = c.add_argument_group("descriptors and matching (the paper's correspondence settings)")
    g.add_argument("--load-size", type=parse_load_size, default=224, help="smaller image edge (default 224)")
    g.add_argument("--stride", type=int, default=4, help="patch stride (default 4)")
    g.add_argument("--layer", type=int, default=9, help="descriptor block (default 9)")
    g.add_argument("--facet", choices=FACETS, default="key", help="descriptor facet (default key)")
    g.add_argument("--bin", action=BOOL, default=True, help="log-binned descriptors (default on)")
    g.add_argument("--foreground", action=BOOL, default=False,
                   help="match only into the target's salient patches (default off)")
    g.add_argument("--thresh", type=float, default=0.05, help="saliency threshold for --foreground (default 0.05)")
    g.add_argument("--refine", action=BOOL, default=False, help="sub-patch soft-argmax around the match (default off)")
    g.add_argument("--saliency-heads", type=int, nargs="+", default=None, help="heads averaged for saliency")
    g.add_argument("--cache-dtype", choices=["float32", "float16"], default="float32",
                   help="precision of the cached descriptors (default float32: exact)")
    e = c.add_argument_group("evaluation and data")
    e.add_argument("--alphas", type=float, nargs="+", default=[0.05, 0.1, 0.15], help="PCK thresholds")
    e.add_argument("--pck-by", choices=["bbox", "image"], default=None,
                   help="reference length: the target box or image (default: bbox, image for PF-PASCAL)")
    e.add_argument("--split", default="test", help="SPair/PF-PASCAL/CUB split (default test)")
    e.add_argument("--categories", nargs="+", default=None, help="only these categories")
    e.add_argument("--max-pairs", type=int, default=None, help="at most N pairs, spread over the categories")
    e.add_argument("--max-images-per-category", type=int, default=None,
                   help="only pairs between the first N images of each category (few forward passes)")
    e.add_argument("--max-pairs-per-category", type=int, default=None, help="CUB: random pairs per class (seeded)")
    e.add_argument("--pairs-file", type=Path, default=None, help="CUB: explicit pair list")
    c.set_defaults(func=run_correspondence)

    s = bs.add_parser("cosegment", help="co-segmentation Jaccard and precision (iCoseg, MSRC, Internet, PASCAL-CO)",
                      description="Each set is co-segmented on its own with the paper's defaults; masks are scored "
                                  "by Jaccard and precision, averaged per set then over sets.")
    s.add_argument("--dataset", default="icoseg", choices=["icoseg", "msrc", "internet", "pascal-co", "coseg"],
                   help="dataset name (the folder layout is detected; default icoseg)")
    _common(s, ("centre-prior", "saliency"))
    _coseg_args(s)
    s.add_argument("--layout", choices=["auto", "sets", "single", "split"], default="auto", help="folder layout")
    s.add_argument("--sets", nargs="+", default=None, help="only these sets")
    s.add_argument("--max-sets", type=int, default=None, help="only the first N sets")
    s.add_argument("--max-images", type=int, default=None, help="at most N images per set (the first by name)")
    s.add_argument("--refine", action=BOOL, default=True, help="GrabCut refinement (default on)")
    s.add_argument("--remove-outliers", action=BOOL, default=False, help="the co-segmentation's outlier removal")
    s.add_argument("--outliers-thresh", type=float, default=0.7, help="outlier threshold (default 0.7)")
    s.add_argument("--skip-empty-jaccard", action=BOOL, default=True,
                   help="leave images without the object (empty ground truth, e.g. the Internet dataset's noise "
                        "images) out of Jaccard; precision counts them (default on)")
    _baseline_mask_args(s)
    s.set_defaults(func=run_cosegment)

    v = bs.add_parser("video", help="DAVIS J and F: label propagation from the first frame (DINO's protocol) "
                                    "or unsupervised co-segmentation",
                      description="--protocol propagation (default, DINO's semi-supervised DAVIS protocol): the first "
                                  "frame's annotation is propagated to the later frames by patch-feature similarity "
                                  "and every object is scored by the DAVIS J (region IoU) and F (boundary) measures; "
                                  "baselines: the first mask copied to every frame, and the same propagation on raw "
                                  "pixels. --protocol unsupervised: the frames of each sequence are co-segmented as "
                                  "one set (no mask given) and the foreground is compared with the union of the "
                                  "objects; baselines: centre prior, saliency.")
    _common(v, ("first-frame", "rgb-patches", "centre-prior", "saliency"), default=None)
    v.add_argument("--protocol", choices=["propagation", "unsupervised"], default="propagation",
                   help="semi-supervised label propagation (default) or unsupervised co-segmentation")
    pg = v.add_argument_group("label propagation (DINO's defaults)")
    pg.add_argument("--short-side", type=int, default=480, help="frame short side in pixels (default 480)")
    pg.add_argument("--multiple", type=int, default=64, help="long side rounded down to a multiple of (default 64)")
    pg.add_argument("--n-last-frames", type=int, default=7, help="previous frames in the context (default 7)")
    pg.add_argument("--neighbourhood", type=int, default=12, help="window radius in patches (default 12; 0: none)")
    pg.add_argument("--topk", type=int, default=5, help="neighbours voting per patch (default 5)")
    pg.add_argument("--temperature", type=float, default=0.1, help="softmax temperature (default 0.1)")
    _coseg_args(v)
    v.add_argument("--split", default=None, help="DAVIS ImageSets split (official layout)")
    v.add_argument("--year", type=int, default=None, help="DAVIS year for --split (2016 or 2017)")
    v.add_argument("--resolution", default="480p", help="DAVIS resolution folder (default 480p)")
    v.add_argument("--sequences", nargs="+", default=None, help="only these sequences")
    v.add_argument("--frame-step", type=int, default=1, help="use every n-th frame (default 1)")
    v.add_argument("--max-frames", type=int, default=None, help="at most N frames per sequence (the first)")
    v.add_argument("--foreground", choices=["cosegmentation", "parts"], default="cosegmentation",
                   help="unsupervised: co-segmentation masks (default) or the part co-segmentation's parts")
    v.add_argument("--refine", action=BOOL, default=True, help="GrabCut refinement (cosegmentation; default on)")
    v.add_argument("--num-parts", type=int, default=4, help="parts (--foreground parts; default 4)")
    v.add_argument("--crf", action=BOOL, default=True, help="dense CRF (--foreground parts; default on)")
    _baseline_mask_args(v)
    v.set_defaults(func=run_video)

    q = bs.add_parser("parts", help="part co-segmentation NMI and ARI (PASCAL-Part pixels, CUB keypoints)",
                      description="The images of each category are part co-segmented as one set; NMI and ARI "
                                  "compare the labels with the annotated parts (PASCAL-Part: part pixels of the "
                                  "objects; CUB: visible keypoints), pooled per category, averaged over categories.")
    q.add_argument("--dataset", default="pascal-part", choices=["pascal-part", "cub"],
                   help="dataset (default pascal-part)")
    _common(q, ("grid",))
    _coseg_args(q)
    q.add_argument("--split", default="test", help="CUB split (default test)")
    q.add_argument("--categories", nargs="+", default=None, help="only these categories")
    q.add_argument("--max-categories", type=int, default=None, help="only the first N categories")
    q.add_argument("--max-images", type=int, default=None, help="at most N images per category (the first)")
    q.add_argument("--num-parts", type=int, default=4, help="number of parts (default 4)")
    q.add_argument("--num-crop-augmentations", type=int, default=0, help="crop augmentations per image (default 0)")
    q.add_argument("--three-stages", action=BOOL, default=False, help="the three-stage variant")
    q.add_argument("--elbow-second-stage", type=float, default=0.94, help="second-stage elbow (default 0.94)")
    q.add_argument("--crf", action=BOOL, default=True, help="dense CRF smoothing (default on)")
    q.add_argument("--part-grouping", choices=["instances", "annotated", "coarse"], default="instances",
                   help="PASCAL-Part ground truth: numbered instances merged (wheel_1, wheel_2 -> wheel; default), "
                        "the annotated names, or head/torso/limbs/tail for animals and people")
    q.set_defaults(func=run_parts)


def _base_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    return dict(model=args.model, weights=args.weights, num_heads=args.num_heads, device=args.device,
                dtype=args.dtype, baselines=args.baselines, keep_cache=args.keep_cache, overwrite=args.overwrite,
                progress=not args.quiet)


def _coseg_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    return dict(load_size=args.load_size, stride=args.stride, layer=args.layer, facet=args.facet, bin=args.bin,
                thresh=args.thresh, elbow=args.elbow, votes_percentage=args.votes_percentage,
                sample_interval=args.sample_interval, low_res_saliency_maps=args.low_res_saliency_maps,
                max_clusters=args.max_clusters, seed=args.seed, kmeans_backend=args.kmeans_backend,
                store_dtype=args.store_dtype)


def _report(bench: Any, args: argparse.Namespace) -> int:
    result = bench.run()
    print(result.report())
    if not args.quiet:
        c = bench.counts_
        print(f"dinokit: {c['items_scored']} item(s) scored now, {c['items_from_log']} read from {args.out / 'items.jsonl'}"
              f"; results in {args.out / 'results.json'} and results.csv", file=sys.stderr)
    return 0


def run_correspondence(args: argparse.Namespace) -> int:
    from ..eval.benchmark import CorrespondenceBenchmark

    bench = CorrespondenceBenchmark(
        args.root, args.out, args.dataset, split=args.split, load_size=args.load_size, stride=args.stride,
        layer=args.layer, facet=args.facet, bin=args.bin, foreground=args.foreground, thresh=args.thresh,
        refine=args.refine, saliency_heads=args.saliency_heads, alphas=args.alphas, pck_by=args.pck_by,
        categories=args.categories, max_pairs=args.max_pairs,
        max_images_per_category=args.max_images_per_category, max_pairs_per_category=args.max_pairs_per_category,
        pairs_file=args.pairs_file, cache_dtype=args.cache_dtype, **_base_kwargs(args))
    return _report(bench, args)


def run_cosegment(args: argparse.Namespace) -> int:
    from ..eval.benchmark import CosegBenchmark

    bench = CosegBenchmark(
        args.root, args.out, args.dataset, layout=args.layout, sets=args.sets, max_sets=args.max_sets,
        refine=args.refine, remove_outliers=args.remove_outliers, outliers_thresh=args.outliers_thresh,
        skip_empty_jaccard=args.skip_empty_jaccard, centre_prior_area=args.centre_prior_area,
        saliency_thresh=args.saliency_thresh,
        max_images=args.max_images, **_coseg_kwargs(args), **_base_kwargs(args))
    return _report(bench, args)


def run_video(args: argparse.Namespace) -> int:
    from ..eval.benchmark import VideoBenchmark

    bench = VideoBenchmark(
        args.root, args.out, "davis", protocol=args.protocol, split=args.split, year=args.year,
        resolution=args.resolution, sequences=args.sequences, frame_step=args.frame_step, max_frames=args.max_frames,
        short_side=args.short_side, multiple=args.multiple, n_last_frames=args.n_last_frames,
        neighbourhood=args.neighbourhood, topk=args.topk, temperature=args.temperature,
        foreground=args.foreground, refine=args.refine, num_parts=args.num_parts, crf=args.crf,
        centre_prior_area=args.centre_prior_area, saliency_thresh=args.saliency_thresh,
        **_coseg_kwargs(args), **_base_kwargs(args))
    return _report(bench, args)


def run_parts(args: argparse.Namespace) -> int:
    from ..eval.benchmark import PartsBenchmark

    bench = PartsBenchmark(
        args.root, args.out, args.dataset, split=args.split, categories=args.categories,
        max_categories=args.max_categories, num_parts=args.num_parts,
        num_crop_augmentations=args.num_crop_augmentations, three_stages=args.three_stages,
        elbow_second_stage=args.elbow_second_stage, crf=args.crf, part_grouping=args.part_grouping,
        max_images=args.max_images,
        **_coseg_kwargs(args), **_base_kwargs(args))
    return _report(bench, args)
