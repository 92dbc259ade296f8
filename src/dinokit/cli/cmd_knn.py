"""``dinokit knn``: weighted k-NN classification accuracy of frozen features (DINO's protocol)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .common import add_model_args, add_overwrite, add_quiet, model_from_args


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "knn",
        help="weighted k-NN top-1/top-5 accuracy of a backbone's CLS features",
        description=(
            "Weighted k-NN evaluation as in DINO: CLS features, L2-normalised, each test image voted for by its k "
            "nearest training images with weights exp(similarity / T). TRAIN and TEST are folders in ImageFolder "
            "layout (one subfolder per class) or feature files (.safetensors/.npz with 'features' and 'labels'). "
            "Folder features are cached on disk."
        ),
    )
    p.add_argument("--train", required=True, type=Path, help="training folder (ImageFolder layout) or feature file")
    p.add_argument("--test", required=True, type=Path, help="test folder (ImageFolder layout) or feature file")
    add_model_args(p)
    p.add_argument("-k", "--k", dest="k", type=int, nargs="+", default=[10, 20, 100, 200],
                   help="numbers of neighbours, evaluated together (default 10 20 100 200, DINO's)")
    p.add_argument("-T", "--temperature", type=float, default=0.07, help="vote temperature (default 0.07)")
    p.add_argument("--image-size", type=int, default=224,
                   help="centre-crop size; images are first resized to 256/224 of it (default 224)")
    p.add_argument("--batch-size", type=int, default=64, help="images per forward pass (default 64)")
    p.add_argument("--num-workers", type=int, default=0, help="image-loading processes (default 0)")
    p.add_argument("--chunk-size", type=int, default=256, help="test images per similarity block (bounds memory)")
    p.add_argument("--cache-dir", type=Path, default=None,
                   help="feature cache (default: $DINOKIT_CACHE/features, else ~/.cache/dinokit/features)")
    p.add_argument("--no-cache", action="store_true", help="do not read or write cached features")
    p.add_argument("--save-features", type=Path, default=None, metavar="DIR",
                   help="also write train_features.safetensors / test_features.safetensors to DIR (reusable as inputs)")
    p.add_argument("-o", "--out", type=Path, default=None, help="write the results as JSON to this file")
    add_overwrite(p)
    add_quiet(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..errors import one_line_warnings

    with one_line_warnings():  # shown with or without --quiet
        return _knn(args)


def _knn(args: argparse.Namespace) -> int:
    """Features of both sets (from files, the cache or the model), the k-NN accuracies, the table and the JSON."""
    from ..devices import resolve_device
    from ..errors import DinokitError
    from ..eval.knn import (
        FeatureSet,
        align_classes,
        default_cache_dir,
        extract_folder_features,
        knn_classify,
        load_feature_file,
        save_result,
    )
    from ..features import parse_dtype

    if args.out is not None and args.out.exists() and not args.overwrite:
        raise DinokitError(f"{args.out}: already exists (pass --overwrite to replace it)")
    device = resolve_device(args.device)
    cache = None if args.no_cache else (args.cache_dir or default_cache_dir())
    model = None

    def features(source: Path, what: str) -> FeatureSet:
        nonlocal model
        if source.is_file():
            return load_feature_file(source)
        if not source.is_dir():
            raise DinokitError(f"{source}: no such {what} folder or feature file")
        if model is None:
            model = model_from_args(args).to(device, parse_dtype(args.dtype))
        return extract_folder_features(model, source, image_size=args.image_size, batch_size=args.batch_size,
                                       device=device, num_workers=args.num_workers, cache_dir=cache,
                                       progress=not args.quiet)

    train = features(args.train, "training")
    test = align_classes(train, features(args.test, "test"), str(args.test))
    if args.save_features is not None:
        train.save(args.save_features / "train_features.safetensors", overwrite=args.overwrite)
        test.save(args.save_features / "test_features.safetensors", overwrite=args.overwrite)
    num_classes = max(len(train.classes), int(train.labels.max()) + 1)
    result = knn_classify(train.features, train.labels, test.features, test.labels, k=args.k,
                          temperature=args.temperature, num_classes=num_classes, chunk_size=args.chunk_size,
                          device=device)
    print(f"weighted k-NN, T={args.temperature}, {result.num_train} training / {result.num_test} test images, "
          f"{result.num_classes} classes")
    print(result.table())
    if args.out is not None:
        extra = {"train": str(args.train), "test": str(args.test), "image_size": args.image_size}
        if model is not None:
            extra["model"] = str(getattr(model, "source", ""))
        save_result(args.out, result, extra)
        print(f"dinokit: wrote {args.out}", file=sys.stderr)  # the summary stays with --quiet
    return 0
