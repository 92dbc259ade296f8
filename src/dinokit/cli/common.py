"""Options shared by the sub-commands and the code that turns them into objects."""

from __future__ import annotations

import argparse
from typing import Optional

from ..features import Extractor
from ..models import DEFAULT_MODEL, VisionTransformer, load_model


def add_model_args(parser: argparse.ArgumentParser, default_model: Optional[str] = DEFAULT_MODEL) -> None:
    """``--model``, ``--weights``, ``--num-heads``, ``--device``, ``--dtype``."""
    g = parser.add_argument_group("model")
    g.add_argument("--model", default=None,
                   help=f"named model (see 'dinokit models'; default {default_model} unless --weights is given)")
    g.add_argument("--weights", default=None, metavar="FILE",
                   help="weights file (.pth/.pt/.safetensors, DINO training checkpoints too)")
    g.add_argument("--num-heads", type=int, default=None,
                   help="attention heads, for weights whose architecture cannot be read from the file")
    g.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda when present)")
    g.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"],
                   help="precision of the backbone (default float32)")


def add_quiet(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")


def add_overwrite(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs instead of skipping them")


def model_from_args(args: argparse.Namespace) -> VisionTransformer:
    """Load the backbone the options describe (default model when neither --model nor --weights)."""
    name = args.model if (args.model or args.weights) else DEFAULT_MODEL
    return load_model(name, args.weights, num_heads=args.num_heads, progress=not getattr(args, "quiet", False))


def extractor_from_args(args: argparse.Namespace, stride: Optional[int] = None, load_size="default") -> Extractor:
    """An :class:`Extractor` for the model options plus ``stride`` and ``load_size``."""
    kwargs = {}
    if load_size != "default":
        kwargs["load_size"] = load_size
    if getattr(args, "saliency_heads", None) is not None:
        kwargs["saliency_heads"] = args.saliency_heads
    return Extractor(model_from_args(args), stride=stride, device=args.device, dtype=args.dtype, **kwargs)


def parse_heads(text: str) -> list[int]:
    """``0,2,4,5`` -> ``[0, 2, 4, 5]`` (attention head indices)."""
    try:
        heads = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated head indices such as 0,2,4,5, got {text!r}") from None
    if not heads:
        raise argparse.ArgumentTypeError("give at least one head index")
    return heads


def parse_load_size(text: str):
    """``224`` -> 224, ``none`` -> None (keep the image size), ``480x640`` -> (480, 640)."""
    if text.lower() in ("none", "full", "original"):
        return None
    if "x" in text.lower():
        h, w = text.lower().split("x", 1)
        return int(h), int(w)
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("load size must be positive")
    return value


STRIDE_HELP = "patch stride, must divide the patch size; 'auto' (default) is half the patch size: 4 for /8, 7 for /14, 8 for /16"


def parse_stride(text: str):
    """``auto`` or a positive integer."""
    if text == "auto":
        return text
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("stride must be positive")
    return value
