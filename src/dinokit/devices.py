"""One rule for choosing the device, shared by every command and estimator.

``None`` means the default: the current CUDA device when CUDA is present, else
the CPU. A device the user names explicitly must exist: ``cuda`` on a machine
without CUDA, ``cuda:3`` on a machine with two GPUs, or a misspelt name stops
with one line that names the device and lists what is available, instead of a
traceback from deep inside PyTorch.
"""

from __future__ import annotations

from typing import Union

import torch

from .errors import DinokitError

DeviceLike = Union[str, torch.device, None]


def available_devices() -> list[str]:
    """Names of the devices this process can use, CPU first (``cpu``, ``cuda:0``, ``mps`` ...)."""
    names = ["cpu"]
    if torch.cuda.is_available():
        names += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        names.append("mps")
    return names


def default_device() -> torch.device:
    """The current CUDA device when present (with its index), else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def resolve_device(device: DeviceLike = None) -> torch.device:
    """Turn ``device`` into a usable ``torch.device`` or raise a one-line :class:`DinokitError`.

    A CUDA device always comes back with its index (``cuda`` -> ``cuda:0``, the
    current device), which ``torch.cuda.set_device`` and peer copies require.
    """
    if device is None or (isinstance(device, str) and device.strip().lower() in ("", "auto")):
        return default_device()
    try:
        dev = device if isinstance(device, torch.device) else torch.device(str(device).strip())
    except (RuntimeError, ValueError):
        raise DinokitError(f"device {device!r} is not a device name; available here: "
                           f"{', '.join(available_devices())}") from None
    if dev.type == "cpu":
        return torch.device("cpu")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            why = "this PyTorch build has no CUDA" if torch.version.cuda is None else "no CUDA GPU is visible"
            raise DinokitError(f"device {device!s} requested but {why}; available here: "
                               f"{', '.join(available_devices())} (use --device cpu)")
        index = torch.cuda.current_device() if dev.index is None else dev.index
        if index >= torch.cuda.device_count():
            raise DinokitError(f"device {device!s} requested but there are only {torch.cuda.device_count()} "
                               f"CUDA device(s); available here: {', '.join(available_devices())}")
        return torch.device("cuda", index)
    if str(dev) not in available_devices() and dev.type not in available_devices():
        raise DinokitError(f"device {device!s} is not available here; available: {', '.join(available_devices())}")
    return dev


def select_device(device: DeviceLike, world_size: int = 1, local_rank: int = 0) -> torch.device:
    """This process's device, by :func:`dinokit.devices.resolve_device`'s rule, with ``torchrun``'s twist.

    With several processes, the default and a bare ``cuda`` mean this
    process's own GPU, ``cuda:LOCAL_RANK``; an explicit index is kept. A
    device that does not exist raises a one-line :class:`DinokitError`.
    """
    text = "" if device is None else str(device).strip().lower()
    own_gpu = text == "cuda" or (text in ("", "auto") and torch.cuda.is_available())
    if world_size > 1 and own_gpu:
        return resolve_device(f"cuda:{local_rank}")
    return resolve_device(device)


__all__ = ["DeviceLike", "available_devices", "default_device", "resolve_device", "select_device"]
