"""``dinokit pca``: principal components of dense descriptors as images (Amir et al. 2021)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..settings import PCASettings
from .common import (add_model_args, already_finished, add_overwrite, add_quiet, add_settings, extractor_from_args, say,
                     settings_from_args, start_run)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "pca",
        help="PCA of dense descriptors: each component as an image",
        description="PCA of the descriptors of all images together (default, as the paper's figures) or of each "
                    "image. Writes <name>_pca<i>.png per component (grayscale, min-max per image), "
                    "<name>_pca_rgb.png of the last three components, resized to the original image, "
                    "<name>_pca.npy (rows x cols x k) with --save-arrays, and pca.json (explained variance).",
    )
    p.add_argument("images", nargs="+", help="image files, folders or glob patterns")
    p.add_argument("-o", "--out", required=True, type=Path, help="output folder")
    add_model_args(p)
    add_settings(p, PCASettings, "descriptors and components (the reference's defaults)")
    p.add_argument("--save-arrays", action="store_true", help="also write the components on the grid as .npy")
    add_overwrite(p)
    add_quiet(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..features import list_images
    from ..io import unique_output_names
    from ..tasks.pca import pca_images, save_pca

    settings = settings_from_args(args, PCASettings)
    paths = list_images(args.images, exclude=[args.out])
    names = unique_output_names(paths, [Path(i) for i in args.images if Path(i).is_dir()])
    folder = start_run(args, "pca", settings, images=[str(p) for p in paths], save_arrays=args.save_arrays)
    if already_finished(folder, "pca", "settings and images"):
        return 0
    results = pca_images(extractor_from_args(args, settings), paths, settings, progress=not args.quiet)
    save_pca(results, paths, args.out, settings, names, args.save_arrays)
    folder.finish("pca")
    ratio = ", ".join(f"{v:.3f}" for v in results[0].explained_variance_ratio)
    scope = "per image" if settings.per_image else "joint"
    say(f"wrote PCA ({scope}; explained variance ratio of image 1: {ratio}) of {len(paths)} image(s) to {args.out}")
    return 0
