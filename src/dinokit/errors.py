"""User-facing errors.

Every problem a user can fix (a bad file, a missing download, a wrong option)
is raised as :class:`DinokitError` with a one-line message that names the file
and the problem; the CLI prints it without a traceback.
"""

from __future__ import annotations


class DinokitError(Exception):
    """An error caused by input or environment that the user can act on."""


class WeightsError(DinokitError):
    """Weights could not be found, downloaded, read or matched to the model."""


class ImageError(DinokitError):
    """An image could not be read or is unusable (empty, too small, not an image)."""


class DatasetError(DinokitError):
    """A benchmark dataset is missing files, has an unexpected layout or a malformed annotation."""
