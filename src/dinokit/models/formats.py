"""Checkpoint formats: one small adapter per way of naming a ViT's weights.

A :class:`CheckpointFormat` recognises a state dict (``detect``), renames it to
dinokit's layout (``convert``) and, when it can, reads the architecture from
the converted tensors' shapes (``arch``). The generic loader in
:mod:`dinokit.models.weights` walks :data:`FORMATS` in priority order and uses
the first adapter whose ``detect`` accepts the state dict; the modules that
know a layout (:mod:`.build` for DINO / DINOv2, :mod:`.hf`, :mod:`.timm`,
:mod:`.dinov3`) add theirs with :func:`register_format`. This module imports
no other model module, so the adapters never need to import the loader.
"""

from __future__ import annotations

from dataclasses import dataclass
import re
from typing import Callable, Mapping, Optional

from torch import Tensor

from ..errors import WeightsError
from .config import ArchConfig

State = Mapping[str, Tensor]


LayerKey = tuple[str, int, str, str, Tensor]


def split_keys(state: State, top: Mapping[str, str], layer: "re.Pattern[str]",
               ignored: tuple[str, ...] = ()) -> tuple[dict[str, Tensor], list[LayerKey], list[str]]:
    """Sort a foreign state dict's keys: the top-level ones renamed by ``top`` (a ``mask_token`` flattened to
    ``(1, D)``), the per-block ones as ``(key, block, module, param, value)`` from ``layer``'s three groups,
    and the unknown ones; keys starting with ``ignored`` (task heads) are dropped."""
    out: dict[str, Tensor] = {}
    blocks: list[LayerKey] = []
    unknown: list[str] = []
    for key, value in state.items():
        if key in top:
            out[top[key]] = value.reshape(1, -1) if top[key] == "mask_token" else value
        elif ignored and key.startswith(ignored):
            continue
        elif (m := layer.match(key)) is not None:
            blocks.append((key, int(m.group(1)), m.group(2), m.group(3), value))
        else:
            unknown.append(key)
    return out, blocks, unknown


def refuse_unknown(unknown: list[str], source: str, what: str) -> None:
    """One line naming (a few of) the weights a converter does not know."""
    if unknown:
        shown = ", ".join(unknown[:4]) + (f" (+{len(unknown) - 4} more)" if len(unknown) > 4 else "")
        raise WeightsError(f"{source}: not a {what} checkpoint of transformers: unexpected weights {shown}")


@dataclass(frozen=True)
class CheckpointFormat:
    """An adapter for one checkpoint layout.

    ``detect(state)`` says whether a (prefix-stripped) state dict is in this
    layout; ``convert(state, source)`` returns it in dinokit's layout;
    ``arch(state, num_heads, source)``, if given, builds the architecture of a
    converted state dict from its shapes. Lower ``priority`` is tried first.
    """

    name: str
    detect: Callable[[State], bool]
    convert: Callable[[State, str], dict[str, Tensor]]
    arch: Optional[Callable[[State, Optional[int], str], ArchConfig]] = None
    priority: int = 0


FORMATS: list[CheckpointFormat] = []


def register_format(fmt: CheckpointFormat) -> CheckpointFormat:
    """Add (or replace, by name) a checkpoint format, keeping :data:`FORMATS` in priority order."""
    FORMATS[:] = sorted([f for f in FORMATS if f.name != fmt.name] + [fmt], key=lambda f: f.priority)
    return fmt


def detect_format(state: State) -> Optional[CheckpointFormat]:
    """The first registered format that recognises ``state`` (``None`` if none does)."""
    return next((fmt for fmt in FORMATS if fmt.detect(state)), None)


def convert_checkpoint(state: State, source: str = "weights") -> tuple[dict[str, Tensor], Optional[CheckpointFormat]]:
    """``state`` in dinokit's layout, and the format it was recognised as (unchanged if none)."""
    fmt = detect_format(state)
    if fmt is None:
        return dict(state), None
    return fmt.convert(state, source), fmt


def arch_from_shapes(state: State, num_heads: Optional[int] = None, source: str = "weights") -> ArchConfig:
    """Architecture of a state dict in dinokit's layout, from the first format that can read it."""
    for fmt in FORMATS:
        if fmt.arch is not None and fmt.detect(state):
            return fmt.arch(state, num_heads, source)
    raise WeightsError(f"{source}: not a ViT backbone state dict (no patch_embed.proj.weight)")


__all__ = ["CheckpointFormat", "FORMATS", "arch_from_shapes", "convert_checkpoint", "detect_format", "register_format"]
