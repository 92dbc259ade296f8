"""``dinokit inspect``: explore descriptors of images in a local web page."""

from __future__ import annotations

import argparse

from ..features import FACETS
from .common import STRIDE_HELP, add_model_args, add_quiet, extractor_from_args, parse_load_size, parse_stride


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "inspect",
        help="interactive similarity inspector in the browser",
        description="Compute descriptors of the images once and serve a local page: click (or hover) a point in "
                    "any image to see its cosine-similarity heat map over every image with the best match marked; "
                    "switch layer, facet, binning and stride; view saliency, PCA and correspondences. The server "
                    "listens on 127.0.0.1 only (unless --host) and prints its URL; Ctrl-C stops it.",
    )
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files (the only files the page can show)")
    add_model_args(p)
    p.add_argument("--load-size", type=parse_load_size, default=224,
                   help="smaller image edge after resizing (default 224)")
    p.add_argument("--stride", type=parse_stride, default="auto", help="initial " + STRIDE_HELP)
    p.add_argument("--layer", type=int, default=11, help="initial block of the descriptors (default 11)")
    p.add_argument("--facet", choices=FACETS, default="key", help="initial descriptor facet (default key)")
    p.add_argument("--bin", action="store_true", help="start with log-binned descriptors")
    p.add_argument("--port", type=int, default=0, help="TCP port (default: a free one)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1); a non-loopback address exposes the images to "
                        "the network and prints a warning")
    p.add_argument("--open", action="store_true", help="open the page in the default web browser")
    p.add_argument("--log-requests", action="store_true", help="log every HTTP request to stderr")
    add_quiet(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..features import list_images
    from ..inspect.server import serve_inspector

    paths = list_images(args.images, recursive=False)
    ex = extractor_from_args(args, stride=args.stride, load_size=args.load_size)
    return serve_inspector(paths, extractor=ex, layer=args.layer, facet=args.facet, bin=args.bin, stride=ex.stride,
                           host=args.host, port=args.port, open_browser=args.open, log_requests=args.log_requests,
                           progress=not args.quiet)
