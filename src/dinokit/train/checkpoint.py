"""Training checkpoints and the metrics log of a run directory.

A checkpoint keeps the reference layout (``student``, ``teacher`` with
``backbone.``/``head.`` keys, ``optimizer``, ``epoch``, ``dino_loss``,
``fp16_scaler``) so ``dinokit --weights checkpoint.pth`` and DINO's own tools
read it; instead of a pickled ``argparse.Namespace`` it stores the
configuration as a plain dict, so it loads with ``weights_only=True``.
Files are written atomically: a crash while saving leaves the previous
checkpoint intact.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Union

import torch

from ..errors import DinokitError
from ..io import atomic_path, write_atomic
from ..models import save_backbone

if TYPE_CHECKING:
    from .state import TrainRun

PathLike = Union[str, os.PathLike]
CHECKPOINT_FORMAT = "dinokit-train-v1"
CHECKPOINT_NAME = "checkpoint.pth"
BACKBONE_NAME = "teacher_backbone.safetensors"
METRICS_NAME = "metrics.jsonl"
CONFIG_NAME = "config.json"


def save_checkpoint(path: PathLike, state: dict[str, Any]) -> Path:
    """Write ``state`` with ``torch.save`` to a temporary file and rename it onto ``path``."""
    state = dict(state, format=CHECKPOINT_FORMAT)
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    return Path(path)


def load_checkpoint(path: PathLike, map_location: Union[str, torch.device] = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (tensors and plain data only)."""
    path = Path(path)
    if not path.is_file():
        raise DinokitError(f"{path}: no checkpoint to resume from")
    try:
        state = torch.load(str(path), map_location=map_location, weights_only=True)
    except Exception as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DinokitError(f"{path}: not a readable dinokit training checkpoint ({first})") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise DinokitError(f"{path}: not a dinokit training checkpoint (no '{CHECKPOINT_FORMAT}' marker)")
    for key in ("student", "teacher", "optimizer", "dino_loss", "step", "config"):
        if key not in state:
            raise DinokitError(f"{path}: incomplete training checkpoint (no '{key}')")
    return state


def run_state(run: "TrainRun", epochs_done: int) -> dict[str, Any]:
    """What a checkpoint of ``run`` holds: networks, optimiser, scaler, center, position and configuration."""
    return {
        "student": run.student.state_dict(),
        "teacher": run.teacher.state_dict(),
        "optimizer": run.optimizer.state_dict(),
        "fp16_scaler": run.scaler.state_dict() if run.scaler is not None else None,
        "dino_loss": run.dino_loss.state_dict(),
        "epoch": epochs_done,
        "step": run.step,
        "epoch_loss": list(run.epoch_loss),
        "niter_per_epoch": run.niter,
        "world_size": run.info.world_size,
        "config": run.config.to_dict(),
        "arch": run.arch.to_metadata(),
    }


def save_run(run: "TrainRun") -> None:
    """Main process: write the checkpoint, export the teacher backbone and keep a numbered copy when due."""
    if not run.info.is_main:
        return
    step, epochs_done = run.step, run.step // run.niter
    save_checkpoint(run.checkpoint_path, run_state(run, epochs_done))
    save_backbone(run.teacher.backbone, run.run_dir / BACKBONE_NAME,
                  extra={"dinokit_train_step": str(step), "dinokit_train_epochs": str(epochs_done)})
    freq = run.config.saveckp_freq
    if freq and step % run.niter == 0 and epochs_done % freq == 0:
        with atomic_path(run.run_dir / f"checkpoint{epochs_done:04d}.pth") as tmp:
            shutil.copyfile(run.checkpoint_path, tmp)


class MetricsLog:
    """Append-only JSON-lines log (one record per line, flushed as written)."""

    def __init__(self, path: PathLike, enabled: bool = True) -> None:
        self.path = Path(path)
        self.enabled = enabled

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record, sort_keys=False) + "\n")
            f.flush()

    def records(self) -> list[dict[str, Any]]:
        return read_metrics(self.path)

    def truncate_after(self, step: int) -> None:
        """Drop records of steps after ``step`` (written after the checkpoint a run resumes from)."""
        if not self.enabled or not self.path.exists():
            return
        keep = [r for r in read_metrics(self.path) if int(r.get("step", 0)) <= step]
        text = "".join(json.dumps(r) + "\n" for r in keep)
        write_atomic(self.path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def read_metrics(path: PathLike) -> list[dict[str, Any]]:
    """Records of a metrics log; a torn last line (crash while writing) is ignored."""
    path = Path(path)
    if not path.exists():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def existing_outputs(run_dir: PathLike, names: Iterable[str] = (CHECKPOINT_NAME, BACKBONE_NAME, METRICS_NAME)) -> list[Path]:
    """The files among ``names`` that ``run_dir`` already holds."""
    run_dir = Path(run_dir)
    return [run_dir / n for n in names if (run_dir / n).exists()]


__all__ = [
    "BACKBONE_NAME",
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_NAME",
    "CONFIG_NAME",
    "METRICS_NAME",
    "MetricsLog",
    "existing_outputs",
    "load_checkpoint",
    "read_metrics",
    "run_state",
    "save_checkpoint",
    "save_run",
]
