"""``dinokit inspect``: explore descriptors of images in a local web page."""

from __future__ import annotations

import argparse

from ..settings import InspectorSettings
from .common import add_model_args, add_quiet, add_settings, extractor_from_args, settings_from_args


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
    add_settings(p, InspectorSettings, "initial descriptors (each can be changed on the page)")
    p.add_argument("--port", type=int, default=0, help="TCP port (default: a free one)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1); a non-loopback address exposes the images to "
                        "the network and prints a warning")
    p.add_argument("--open", action="store_true", help="open the page in the default web browser")
    p.add_argument("--log-requests", action="store_true", help="log every HTTP request to stderr")
    add_quiet(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..devices import resolve_device
    from ..features import list_images
    from ..inspect.server import serve_inspector

    settings = settings_from_args(args, InspectorSettings)
    resolve_device(args.device)
    paths = list_images(args.images, recursive=False)
    return serve_inspector(paths, settings=settings, extractor=extractor_from_args(args, settings), host=args.host,
                           port=args.port, open_browser=args.open, log_requests=args.log_requests,
                           progress=not args.quiet)
