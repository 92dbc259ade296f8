"""The ``dinokit`` command: a thin layer over the Python API.

Sub-commands live in modules named ``dinokit.cli.cmd_<name>``; each exposes
``register(subparsers)`` which adds its parser and sets ``func`` to a function
``run(args) -> int``. They are discovered automatically.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from typing import Optional, Sequence

from .. import __version__
from ..errors import DinokitError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dinokit",
        description="Self-supervised ViTs: DINO training, dense descriptors and zero-shot tasks.",
    )
    parser.add_argument("--version", action="version", version=f"dinokit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("cmd_"):
            importlib.import_module(f"{__name__}.{info.name}").register(sub)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the ``dinokit`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except DinokitError as exc:
        print(f"dinokit: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a file-system problem with a named path (permissions, not a folder, disk full ...)
        if not exc.filename:
            raise
        print(f"dinokit: error: {exc.filename}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("dinokit: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
