"""Options shared by the sub-commands and the code that turns them into objects.

Nothing here imports torch at module level: ``dinokit --help`` and argument
errors answer without loading PyTorch. Task flags are generated from the
settings dataclasses of :mod:`dinokit.settings`, so a default and its help
text are written once.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import MISSING, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Optional, TypeVar

from ..settings import DEFAULT_MODEL, TaskSettings

if TYPE_CHECKING:  # pragma: no cover
    from ..features import Extractor
    from ..models import VisionTransformer
    from ..runs import OutputFolder

S = TypeVar("S", bound=TaskSettings)


def add_model_args(parser: argparse.ArgumentParser, default_model: Optional[str] = DEFAULT_MODEL) -> None:
    """``--model``, ``--weights``, ``--num-heads``, ``--device``, ``--dtype``."""
    g = parser.add_argument_group("model")
    g.add_argument("--model", default=None,
                   help=f"named model (see 'dinokit models'; default {default_model} unless --weights is given)")
    g.add_argument("--weights", default=None, metavar="FILE",
                   help="weights file (.pth/.pt/.safetensors, DINO training checkpoints too)")
    g.add_argument("--num-heads", type=int, default=None,
                   help="attention heads, for weights whose architecture cannot be read from the file")
    g.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: the current GPU when present)")
    g.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"],
                   help="precision of the backbone (default float32)")


def add_quiet(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-q", "--quiet", action="store_true",
                        help="no progress bars (warnings, errors and the closing summary are still printed)")


def add_overwrite(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--overwrite", action="store_true",
                        help="redo every output, also those made earlier with other settings")


def add_fail_fast(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--fail-fast", action="store_true",
                        help="stop at the first unreadable input instead of going on with the others")


def _default_text(value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, tuple):
        return ",".join(map(str, value))
    return "none" if value is None else str(value)


def _metavar(default: Any) -> Optional[str]:
    if isinstance(default, float):
        return "X"
    if isinstance(default, int) or default is None:
        return "N"
    return None


def add_settings(parser: Any, cls: type[TaskSettings], title: Optional[str] = None,
                 exclude: Iterable[str] = (), only: Optional[Iterable[str]] = None) -> None:
    """Add one flag per field of ``cls`` (``--load-size`` for ``load_size``), help and default from the field.

    Flags that are not given leave no attribute (``argparse.SUPPRESS``), so
    :func:`settings_from_args` applies only what the user typed over the
    settings' own defaults. Booleans get ``--name/--no-name``.
    """
    group = parser.add_argument_group(title) if title else parser
    skip = set(exclude)
    keep = set(only) if only is not None else None
    for f in fields(cls):
        if f.name in skip or (keep is not None and f.name not in keep) or not f.metadata.get("cli", True):
            continue
        meta = f.metadata
        flag = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not MISSING else None
        text = meta.get("help", "")
        if "default" not in text:
            text += f" (default {_default_text(default)})"
        if isinstance(default, bool):
            group.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS,
                               help=text)
            continue
        parse = meta.get("parse") or (type(default) if default is not None else _optional_int)
        if isinstance(default, tuple):  # a list: comma-separated, and the flag may be repeated
            group.add_argument(flag, dest=f.name, type=parse, action=_Extend, default=argparse.SUPPRESS,
                               metavar=meta.get("metavar"), help=(text + "; repeatable").replace("%", "%%"))
            continue
        group.add_argument(flag, dest=f.name, type=parse, default=argparse.SUPPRESS, choices=meta.get("choices"),
                           metavar=meta.get("metavar") or (None if meta.get("choices") else _metavar(default)),
                           help=text.replace("%", "%%"))


class _Extend(argparse.Action):
    """``--layer 9,11`` and ``--layer 9 --layer 11`` both give ``(9, 11)``."""

    def __call__(self, parser: Any, namespace: argparse.Namespace, values: Any, option_string: Any = None) -> None:
        setattr(namespace, self.dest, tuple(getattr(namespace, self.dest, ())) + tuple(values))


def _optional_int(text: str) -> Optional[int]:
    return None if text.lower() == "none" else int(text)


def settings_from_args(args: argparse.Namespace, cls: type[S], base: Optional[S] = None) -> S:
    """The settings the options describe: ``base`` (default: the paper's) with the typed flags applied."""
    given = {f.name: getattr(args, f.name) for f in fields(cls) if hasattr(args, f.name)}
    return cls.resolve(base, **given)


def model_name(args: argparse.Namespace) -> Optional[str]:
    """The named model the options ask for: ``--model``, else the default unless ``--weights`` is given."""
    return args.model if (args.model or args.weights) else DEFAULT_MODEL


def model_record(args: argparse.Namespace) -> dict[str, Any]:
    """What identifies the model of a run, for the output folder's record (a changed file is a new model)."""
    record: dict[str, Any] = {"model": model_name(args), "weights": None, "dtype": getattr(args, "dtype", "float32")}
    if args.weights:
        path = Path(args.weights)
        record["weights"] = str(path.resolve())
        if path.is_file():
            st = path.stat()
            record["weights_bytes"], record["weights_mtime"] = st.st_size, int(st.st_mtime)
    if args.num_heads:
        record["num_heads"] = args.num_heads
    return record


def start_run(args: argparse.Namespace, command: str, settings: Optional[TaskSettings] = None,
              out: Optional[Path] = None, write_record: bool = True, **extra: Any) -> "OutputFolder":
    """Check the device and the output folder before anything heavy, and apply the rerun rule.

    ``extra`` holds other inputs that change the results (query points,
    drawing options); they are recorded with the settings and the model.
    ``write_record=False`` reads the record without writing it (helper
    processes of a ``torchrun`` group).
    """
    from ..devices import resolve_device
    from ..runs import OutputFolder

    resolve_device(getattr(args, "device", None))
    record: dict[str, Any] = {"model": model_record(args)}
    if settings is not None:
        record["settings"] = settings.to_record()
    record.update({k: v for k, v in extra.items() if v is not None})
    return OutputFolder(out if out is not None else args.out, command, record, overwrite=args.overwrite,
                        write_record=write_record)


def model_from_args(args: argparse.Namespace) -> "VisionTransformer":
    """Load the backbone the options describe (default model when neither --model nor --weights)."""
    from ..models import load_model

    return load_model(model_name(args), args.weights, num_heads=args.num_heads, progress=not getattr(args, "quiet", False))


def extractor_from_args(args: argparse.Namespace, settings: Optional[TaskSettings] = None) -> "Extractor":
    """An :class:`Extractor` for the model options and the settings' stride, load size and saliency heads."""
    from ..features import Extractor

    kwargs: dict[str, Any] = {}
    for key in ("stride", "load_size", "saliency_heads"):
        if settings is not None and hasattr(settings, key):
            kwargs[key] = getattr(settings, key)
    return Extractor(model_from_args(args), device=args.device, dtype=args.dtype, **kwargs)


def already_finished(folder: "OutputFolder", item: str, what: str) -> bool:
    """For a command whose run is one item: say so and return True when a run with this record finished it."""
    if folder.is_finished(item):
        say(f"{folder.path}: already done with these {what}, nothing to do (--overwrite to redo)")
        return True
    return False


def say(message: str) -> None:
    """One line for the user on stderr (summaries, warnings); ``--quiet`` hides only progress bars."""
    print(f"dinokit: {message}", file=sys.stderr)
