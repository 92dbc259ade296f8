"""User-facing errors.

Every problem a user can fix (a bad file, a missing download, a wrong option)
is raised as :class:`DinokitError` with a one-line message that names the file
and the problem; the CLI prints it without a traceback.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator


class DinokitError(Exception):
    """An error caused by input or environment that the user can act on."""


class WeightsError(DinokitError):
    """Weights could not be found, downloaded, read or matched to the model."""


class ImageError(DinokitError):
    """An image could not be read or is unusable (empty, too small, not an image)."""


class DatasetError(DinokitError):
    """A benchmark dataset is missing files, has an unexpected layout or a malformed annotation."""


class DinokitWarning(UserWarning):
    """A setting or input that makes a computation do less than it seems to (a shortfall the user should know)."""


def warn(message: str, stacklevel: int = 3) -> None:
    """Issue ``message`` as a :class:`DinokitWarning` (one line)."""
    import warnings

    warnings.warn(message, DinokitWarning, stacklevel=stacklevel)


@contextlib.contextmanager
def one_line_warnings() -> Iterator[None]:
    """Show :class:`DinokitWarning` (every time, not once per place) as ``dinokit: warning: ...`` on stderr."""
    import sys
    import warnings

    def show(message: Any, category: type, filename: str, lineno: int, file: Any = None, line: Any = None) -> None:
        if issubclass(category, DinokitWarning):
            print(f"dinokit: warning: {message}", file=sys.stderr, flush=True)
        else:
            previous(message, category, filename, lineno, file, line)

    with warnings.catch_warnings():
        previous = warnings.showwarning
        warnings.showwarning = show
        warnings.simplefilter("always", DinokitWarning)
        yield
