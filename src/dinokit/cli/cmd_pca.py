"""``dinokit pca``: principal components of dense descriptors as images (Amir et al. 2021)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from ..errors import DinokitError
from ..features import FACETS, list_images
from ..io import save_image, save_json, write_atomic
from .common import STRIDE_HELP, parse_stride, add_model_args, add_overwrite, add_quiet, extractor_from_args, parse_load_size


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
    p.add_argument("--components", type=int, default=4, help="number of components (default 4)")
    p.add_argument("--per-image", action="store_true", help="one PCA per image instead of one for all images")
    p.add_argument("--load-size", type=parse_load_size, default=224, help="smaller image edge after resizing (default 224)")
    p.add_argument("--stride", type=parse_stride, default="auto", help=STRIDE_HELP)
    p.add_argument("--layer", type=int, default=11, help="block of the descriptors (default 11)")
    p.add_argument("--facet", choices=FACETS, default="key", help="descriptor facet (default key)")
    p.add_argument("--bin", action="store_true", help="log-binned descriptors")
    p.add_argument("--interp", choices=["nearest", "bilinear"], default="nearest",
                   help="how components are resized to the image (default nearest, as the reference)")
    p.add_argument("--save-arrays", action="store_true", help="also write the components on the grid as .npy")
    add_overwrite(p)
    add_quiet(p)
    p.set_defaults(func=run)


def output_names(paths: list[Path]) -> list[str]:
    """Unique output prefixes: the file stems, with ``_2``, ``_3`` ... on repeats."""
    seen: dict[str, int] = {}
    names = []
    for p in paths:
        n = seen.get(p.stem, 0) + 1
        seen[p.stem] = n
        names.append(p.stem if n == 1 else f"{p.stem}_{n}")
    return names


def expected_files(name: str, k: int, arrays: bool) -> list[str]:
    files = [f"{name}_pca{i}.png" for i in range(k)]
    if k >= 3:
        files.append(f"{name}_pca_rgb.png")
    if arrays:
        files.append(f"{name}_pca.npy")
    return files


def _save_npy(path: Path, arr: np.ndarray) -> None:
    with open(path, "wb") as fh:
        np.save(fh, arr)


def run(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from ..tasks.pca import component_images, pca_images

    if args.components < 1:
        raise DinokitError(f"--components must be at least 1, got {args.components}")
    paths = list_images(args.images)
    names = output_names(paths)
    out: Path = args.out
    done = [all((out / f).exists() for f in expected_files(n, args.components, args.save_arrays)) for n in names]
    if all(done) and not args.overwrite:
        if not args.quiet:
            print(f"all outputs exist in {out}, nothing to do (--overwrite to redo)", file=sys.stderr)
        return 0
    ex = extractor_from_args(args, stride=args.stride, load_size=args.load_size)
    results = pca_images(ex, paths, args.components, layer=args.layer, facet=args.facet, bin=args.bin,
                         joint=not args.per_image, progress=not args.quiet)
    written = 0
    for name, res, finished in tqdm(list(zip(names, results, done)), desc="write", unit="img", disable=args.quiet):
        if finished and not args.overwrite:
            continue
        grays, rgb = component_images(res, to="original", mode=args.interp)
        for i, g in enumerate(grays):
            save_image(out / f"{name}_pca{i}.png", g)
        if rgb is not None:
            save_image(out / f"{name}_pca_rgb.png", rgb)
        if args.save_arrays:
            arr = res.components.astype(np.float32)
            write_atomic(out / f"{name}_pca.npy", lambda tmp, a=arr: _save_npy(tmp, a))
        written += 1
    save_json(out / "pca.json", {
        "scope": "per image" if args.per_image else "joint",
        "settings": {"components": args.components, "layer": args.layer, "facet": args.facet, "bin": args.bin,
                     "stride": ex.stride, "load_size": args.load_size, "interp": args.interp},
        "images": [{"image": str(path), "name": name, "grid_rows_cols": list(res.geometry.grid),
                    "explained_variance_ratio": [float(v) for v in res.explained_variance_ratio]}
                   for path, name, res in zip(paths, names, results)],
        "pictures": "<name>_pca<i>.png: component i (0 = largest variance), min-max scaled per image; "
                    "<name>_pca_rgb.png: the last three components as R, G, B",
    })
    if not args.quiet:
        ratio = ", ".join(f"{v:.3f}" for v in results[0].explained_variance_ratio)
        scope = "per image" if args.per_image else "joint"
        print(f"wrote PCA ({scope}; explained variance ratio of image 1: {ratio}) of {written} image(s) to {out}",
              file=sys.stderr)
    return 0
