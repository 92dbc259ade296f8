"""``dinokit benchmark``: the papers' evaluation protocols on the standard datasets, with baseline rows."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ..eval.datasets.registry import (
    DEFAULT_ALPHAS,
    LAYOUTS,
    PART_GROUPINGS,
    BaselineSettings,
    MatchingSettings,
    PropagationSettings,
    benchmark,
    dataset_help,
    datasets_of,
)
from .common import add_model_args, add_overwrite, add_quiet, add_settings, settings_from_args

BOOL = argparse.BooleanOptionalAction


def _dataset(p: argparse.ArgumentParser, kind: str, required: bool = False) -> None:
    """``--dataset`` with the registry's datasets of ``kind`` (the first is the default unless required)."""
    names = list(datasets_of(kind))
    default = None if required else names[0]
    p.add_argument("--dataset", required=required, default=default, choices=names, metavar="NAME",
                   help=f"which dataset: {dataset_help(kind)}" + ("" if required else f" (default {default})"))


def _common(p: argparse.ArgumentParser, kind: str, default_text: str = "all") -> None:
    baselines = benchmark(kind).baselines
    p.add_argument("--root", required=True, type=Path, help="the dataset folder")
    p.add_argument("-o", "--out", required=True, type=Path,
                   help="output folder: run.json (settings), items.jsonl (per-item results, written as it goes), "
                        "cache/ (descriptors), results.json/.csv (final). A rerun into it resumes.")
    add_model_args(p)
    b = p.add_argument_group("baselines and run")
    b.add_argument("--baselines", nargs="*", choices=baselines, default=None, metavar="NAME",
                   help=f"baseline rows ({', '.join(baselines)}; default {default_text}; none: --baselines with "
                        "no name)")
    b.add_argument("--keep-cache", action="store_true",
                   help="keep cached descriptors after use (default: deleted once no pending item needs them)")
    add_overwrite(b)
    add_quiet(b)


def _method(p: argparse.ArgumentParser, kind: str, title: str) -> None:
    """The method's flags, generated from the benchmark's settings class (fields that don't apply left out)."""
    spec = benchmark(kind)
    add_settings(p, spec.settings, title, exclude=spec.exclude)


def _baseline_mask_args(p: argparse.ArgumentParser) -> None:
    add_settings(p, BaselineSettings, "baseline parameters")


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
    for add in (_add_correspondence, _add_cosegment, _add_video, _add_parts):
        add(bs)


def _add_correspondence(bs: argparse._SubParsersAction) -> None:
    c = bs.add_parser("correspondence", help="PCK of dense point matching (PF-WILLOW, SPair-71k, PF-PASCAL, CUB)",
                      description="For each source keypoint, the descriptor of its patch is matched (argmax of "
                                  "cosine similarity) over the target; PCK@alpha with alpha x the longer side of the "
                                  "target's box (PF-WILLOW: the keypoints' box; PF-PASCAL: the image by default).")
    _dataset(c, "correspondence", required=True)
    _common(c, "correspondence")
    _method(c, "correspondence", "descriptors (the paper's correspondence settings)")
    add_settings(c, MatchingSettings, "matching")
    e = c.add_argument_group("evaluation and data")
    e.add_argument("--alphas", type=float, nargs="+", default=list(DEFAULT_ALPHAS),
                   help=f"PCK thresholds (default {' '.join(map(str, DEFAULT_ALPHAS))})")
    by_image = [d.name for d in datasets_of("correspondence").values() if d.pck_by == "image"]
    e.add_argument("--pck-by", choices=["bbox", "image"], default=None,
                   help=f"reference length: the target box or image (default: bbox, image for {', '.join(by_image)})")
    e.add_argument("--split", default="test", help="SPair/PF-PASCAL/CUB split (default test)")
    e.add_argument("--categories", nargs="+", default=None, help="only these categories")
    e.add_argument("--max-pairs", type=int, default=None, help="at most N pairs, spread over the categories")
    e.add_argument("--max-images-per-category", type=int, default=None,
                   help="only pairs between the first N images of each category (few forward passes)")
    e.add_argument("--max-pairs-per-category", type=int, default=None, help="CUB: random pairs per class (seeded)")
    e.add_argument("--pairs-file", type=Path, default=None, help="CUB: explicit pair list")
    c.set_defaults(func=run_correspondence)


def _add_cosegment(bs: argparse._SubParsersAction) -> None:
    s = bs.add_parser("cosegment", help="co-segmentation Jaccard and precision (iCoseg, MSRC, Internet, PASCAL-CO)",
                      description="Each set is co-segmented on its own with the paper's defaults; masks are scored "
                                  "by Jaccard and precision, averaged per set then over sets.")
    _dataset(s, "cosegment")
    _common(s, "cosegment")
    _method(s, "cosegment", "co-segmentation (the paper's settings)")
    s.add_argument("--layout", choices=LAYOUTS, default="auto", help="folder layout (default: detected)")
    s.add_argument("--sets", nargs="+", default=None, help="only these sets")
    s.add_argument("--max-sets", type=int, default=None, help="only the first N sets")
    s.add_argument("--max-images", type=int, default=None, help="at most N images per set (the first by name)")
    s.add_argument("--refine", action=BOOL, default=True, help="GrabCut refinement (default on)")
    s.add_argument("--skip-empty-jaccard", action=BOOL, default=True,
                   help="leave images without the object (empty ground truth, e.g. the Internet dataset's noise "
                        "images) out of Jaccard; precision counts them (default on)")
    _baseline_mask_args(s)
    s.set_defaults(func=run_cosegment)


def _add_video(bs: argparse._SubParsersAction) -> None:
    v = bs.add_parser("video", help="DAVIS J and F: label propagation from the first frame (DINO's protocol) "
                                    "or unsupervised co-segmentation",
                      description="--protocol propagation (default, DINO's semi-supervised DAVIS protocol): the first "
                                  "frame's annotation is propagated to the later frames by patch-feature similarity "
                                  "and every object is scored by the DAVIS J (region IoU) and F (boundary) measures; "
                                  "baselines: the first mask copied to every frame, and the same propagation on raw "
                                  "pixels. --protocol unsupervised: the frames of each sequence are co-segmented as "
                                  "one set (no mask given) and the foreground is compared with the union of the "
                                  "objects; baselines: centre prior, saliency.")
    _dataset(v, "video")
    _common(v, "video", default_text="those of the protocol")
    v.add_argument("--protocol", choices=["propagation", "unsupervised"], default="propagation",
                   help="semi-supervised label propagation (default) or unsupervised co-segmentation")
    add_settings(v, PropagationSettings, "label propagation (DINO's defaults)")
    _method(v, "video", "unsupervised protocol: co-segmentation and part co-segmentation (the paper's settings)")
    v.add_argument("--split", default=None, help="DAVIS ImageSets split (official layout)")
    v.add_argument("--year", type=int, default=None, help="DAVIS year for --split (2016 or 2017)")
    v.add_argument("--resolution", default="480p", help="DAVIS resolution folder (default 480p)")
    v.add_argument("--sequences", nargs="+", default=None, help="only these sequences")
    v.add_argument("--frame-step", type=int, default=1, help="use every n-th frame (default 1)")
    v.add_argument("--max-frames", type=int, default=None, help="at most N frames per sequence (the first)")
    v.add_argument("--foreground", choices=["cosegmentation", "parts"], default="cosegmentation",
                   help="unsupervised: co-segmentation masks (default) or the part co-segmentation's parts")
    v.add_argument("--refine", action=BOOL, default=True, help="GrabCut refinement (cosegmentation; default on)")
    _baseline_mask_args(v)
    v.set_defaults(func=run_video)


def _add_parts(bs: argparse._SubParsersAction) -> None:
    q = bs.add_parser("parts", help="part co-segmentation NMI and ARI (PASCAL-Part pixels, CUB keypoints)",
                      description="The images of each category are part co-segmented as one set; NMI and ARI "
                                  "compare the labels with the annotated parts (PASCAL-Part: part pixels of the "
                                  "objects; CUB: visible keypoints), pooled per category, averaged over categories.")
    _dataset(q, "parts")
    _common(q, "parts")
    _method(q, "parts", "part co-segmentation (the paper's settings)")
    q.add_argument("--split", default="test", help="CUB split (default test)")
    q.add_argument("--categories", nargs="+", default=None, help="only these categories")
    q.add_argument("--max-categories", type=int, default=None, help="only the first N categories")
    q.add_argument("--max-images", type=int, default=None, help="at most N images per category (the first)")
    q.add_argument("--part-grouping", choices=PART_GROUPINGS, default=PART_GROUPINGS[0],
                   help="PASCAL-Part ground truth: numbered instances merged (wheel_1, wheel_2 -> wheel; default), "
                        "the annotated names, or head/torso/limbs/tail for animals and people")
    q.set_defaults(func=run_parts)


def _base_kwargs(args: argparse.Namespace, runner: Any) -> dict[str, Any]:
    """The options every runner takes, with the method settings the flags describe over the protocol's."""
    settings = settings_from_args(args, benchmark(runner.kind).settings, base=runner.PROTOCOL_SETTINGS)
    return dict(settings=settings, model=args.model, weights=args.weights, num_heads=args.num_heads,
                device=args.device, dtype=args.dtype, baselines=args.baselines, keep_cache=args.keep_cache,
                overwrite=args.overwrite, progress=not args.quiet)


def _report(bench: Any, args: argparse.Namespace) -> int:
    result = bench.run()
    print(result.report())
    c = bench.counts_  # the summary stays with --quiet, which hides only progress
    print(f"dinokit: {c['items_scored']} item(s) scored now, {c['items_from_log']} read from {args.out / 'items.jsonl'}"
          f"; results in {args.out / 'results.json'} and results.csv", file=sys.stderr)
    return 0


def run_correspondence(args: argparse.Namespace) -> int:
    from ..eval.benchmark import CorrespondenceBenchmark

    bench = CorrespondenceBenchmark(
        args.root, args.out, args.dataset, split=args.split, matching=settings_from_args(args, MatchingSettings),
        alphas=args.alphas, pck_by=args.pck_by,
        categories=args.categories, max_pairs=args.max_pairs,
        max_images_per_category=args.max_images_per_category, max_pairs_per_category=args.max_pairs_per_category,
        pairs_file=args.pairs_file, **_base_kwargs(args, CorrespondenceBenchmark))
    return _report(bench, args)


def run_cosegment(args: argparse.Namespace) -> int:
    from ..eval.benchmark import CosegBenchmark

    bench = CosegBenchmark(
        args.root, args.out, args.dataset, layout=args.layout, sets=args.sets, max_sets=args.max_sets,
        refine=args.refine, skip_empty_jaccard=args.skip_empty_jaccard, baseline=settings_from_args(args, BaselineSettings),
        max_images=args.max_images, **_base_kwargs(args, CosegBenchmark))
    return _report(bench, args)


def run_video(args: argparse.Namespace) -> int:
    from ..eval.benchmark import VideoBenchmark

    bench = VideoBenchmark(
        args.root, args.out, args.dataset, protocol=args.protocol, split=args.split, year=args.year,
        resolution=args.resolution, sequences=args.sequences, frame_step=args.frame_step, max_frames=args.max_frames,
        propagation=settings_from_args(args, PropagationSettings),
        foreground=args.foreground, refine=args.refine,
        baseline=settings_from_args(args, BaselineSettings),
        **_base_kwargs(args, VideoBenchmark))
    return _report(bench, args)


def run_parts(args: argparse.Namespace) -> int:
    from ..eval.benchmark import PartsBenchmark

    bench = PartsBenchmark(
        args.root, args.out, args.dataset, split=args.split, categories=args.categories,
        max_categories=args.max_categories, part_grouping=args.part_grouping, max_images=args.max_images,
        **_base_kwargs(args, PartsBenchmark))
    return _report(bench, args)
