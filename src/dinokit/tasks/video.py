"""Video part co-segmentation: parts fitted once over a video's frames, applied to every frame.

Frames come from a video file (read with imageio/ffmpeg) or a folder of
frame images (sorted by name); every ``frame_step``-th frame is used. The part
co-segmentation (:class:`~dinokit.tasks.parts.PartCoSegmentation`) is fitted
once, on every ``fit_every``-th of those frames, and its part model then labels
every frame, so a part keeps its label (and colour) over time. Outputs: a
label PNG per frame and an overlay video (mp4) or GIF (parts over the frame, a
legend of the label values below), written frame by frame so memory does not
grow with the video's length.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np

from ..errors import DinokitError, ImageError
from ..features import Extractor
from ..features.image import folder_images
from ..settings import PartSettings
from ..io import atomic_path, save_image, save_json
from .cosegmentation import DONE_FILE, set_is_done
from .parts import PartCoSegmentation, label_png, parts_overlay, with_legend

__all__ = ["VIDEO_SUFFIXES", "video_frames", "video_fps", "video_part_cosegmentation", "write_video"]

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".gif")
DEFAULT_FOLDER_FPS = 24.0  # DAVIS's frame rate; folders of frames carry none


def video_fps(path: Union[str, Path]) -> Optional[float]:
    """Frames per second of a video file (``None`` for a folder or when unknown)."""
    p = Path(path)
    if p.is_dir():
        return None
    import imageio.v2 as iio

    try:
        reader = iio.get_reader(str(p), format="FFMPEG")
        fps = reader.get_meta_data().get("fps")
        reader.close()
    except Exception:
        return None
    return float(fps) if fps else None


def video_frames(source: Union[str, Path], frame_step: int = 1, frames_dir: Optional[Union[str, Path]] = None,
                 max_frames: Optional[int] = None) -> list[Path]:
    """Paths of every ``frame_step``-th frame of a video file or frames folder.

    A video file's frames are decoded to PNG files in ``frames_dir`` (which
    must be given for a video file) so they can be read again after fitting.
    """
    if frame_step < 1:
        raise DinokitError(f"frame step must be a positive integer, got {frame_step}")
    p = Path(source)
    if p.is_dir():
        frames = folder_images(p)[::frame_step]
        return frames[:max_frames] if max_frames else frames
    if not p.exists():
        raise ImageError(f"{p}: no such video file or frames folder")
    if p.suffix.lower() not in VIDEO_SUFFIXES:
        raise ImageError(f"{p}: not a video file ({', '.join(VIDEO_SUFFIXES)}) or a folder of frames")
    if frames_dir is None:
        raise DinokitError("frames_dir is needed to decode a video file")
    import imageio.v2 as iio

    out_dir = Path(frames_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    try:
        reader = iio.get_reader(str(p)) if p.suffix.lower() == ".gif" else iio.get_reader(str(p), format="FFMPEG")
        for i, frame in enumerate(reader):
            if i % frame_step:
                continue
            arr = np.asarray(frame)
            if arr.ndim == 2:
                arr = np.repeat(arr[..., None], 3, axis=2)
            f = out_dir / f"{i:05d}.png"
            save_image(f, np.ascontiguousarray(arr[..., :3].astype(np.uint8)))
            paths.append(f)
            if max_frames and len(paths) >= max_frames:
                break
        reader.close()
    except (OSError, RuntimeError, ValueError) as exc:
        raise ImageError(f"{p}: cannot read the video ({exc})") from None
    if not paths:
        raise ImageError(f"{p}: the video has no frames")
    return paths


class VideoWriter:
    """Append RGB frames to an mp4 (H.264) or GIF, written atomically when closed."""

    def __init__(self, path: Union[str, Path], fps: float) -> None:
        import imageio.v2 as iio

        self.path = Path(path)
        fmt = self.path.suffix.lower()
        if fmt not in (".mp4", ".gif"):
            raise DinokitError(f"{self.path}: the overlay video must be .mp4 or .gif")
        self._ctx = atomic_path(self.path)
        tmp = self._ctx.__enter__()
        if fmt == ".mp4":
            self._writer = iio.get_writer(str(tmp), format="FFMPEG", fps=fps, codec="libx264", quality=8,
                                          macro_block_size=1, ffmpeg_log_level="error")
        else:
            self._writer = iio.get_writer(str(tmp), format="GIF", duration=1000.0 / fps, loop=0)
        self._mp4 = fmt == ".mp4"
        self.count = 0

    def append(self, rgb: np.ndarray) -> None:
        if self._mp4:  # H.264 in yuv420p needs even sizes
            rgb = rgb[: rgb.shape[0] // 2 * 2, : rgb.shape[1] // 2 * 2]
        self._writer.append_data(np.ascontiguousarray(rgb))
        self.count += 1

    def close(self, ok: bool = True) -> None:
        self._writer.close()
        if ok:
            self._ctx.__exit__(None, None, None)
        else:
            self._ctx.__exit__(RuntimeError, RuntimeError("aborted"), None)


def write_video(frames: Any, path: Union[str, Path], fps: float) -> Path:
    """Write an iterable of RGB frames as mp4 or GIF (by suffix), atomically."""
    w = VideoWriter(path, fps)
    try:
        for f in frames:
            w.append(f)
    except BaseException:
        w.close(ok=False)
        raise
    w.close()
    return Path(path)


def video_part_cosegmentation(
    source: Union[str, Path],
    output_dir: Union[str, Path],
    extractor: Union[Extractor, str, Path, None] = None,
    settings: Optional[PartSettings] = None,
    *,
    frame_step: int = 1,
    fit_every: int = 1,
    max_frames: Optional[int] = None,
    fps: Optional[float] = None,
    video_format: str = "mp4",
    overwrite: bool = False,
    mask_size: str = "original",
    **kwargs: Any,
) -> Optional[dict]:
    """Part co-segmentation of a video; writes ``frames/<frame>_parts.png`` and ``overlay.<video_format>``.

    ``settings`` and ``kwargs`` configure :class:`PartCoSegmentation`. Returns the content of
    ``done.json``, or ``None`` when ``output_dir`` already holds a finished run.
    """
    from tqdm.auto import tqdm

    from .cosegmentation import mask_output_size

    if video_format not in ("mp4", "gif"):
        raise DinokitError(f"video format must be mp4 or gif, got {video_format!r}")
    if fit_every < 1:
        raise DinokitError(f"fit_every must be a positive integer, got {fit_every}")
    out = Path(output_dir)
    if not overwrite and set_is_done(out, "video_part_cosegmentation"):
        return None
    tmp_frames = None
    model = PartCoSegmentation(extractor, settings, **kwargs)
    try:
        src = Path(source)
        if not src.is_dir():
            out.mkdir(parents=True, exist_ok=True)
            tmp_frames = Path(tempfile.mkdtemp(prefix=".frames-", dir=out))
        frames = video_frames(src, frame_step, tmp_frames, max_frames)
        if len(frames) < 2:
            raise DinokitError(f"{src}: {len(frames)} frame(s) selected; the parts need at least 2 frames")
        fit_frames = frames[::fit_every]
        if len(fit_frames) < 2:
            fit_frames = frames[:2]
        model.fit(fit_frames)
        fitted = {Path(p).resolve(): i for i, p in enumerate(fit_frames)}
        rate = fps if fps is not None else (video_fps(src) or DEFAULT_FOLDER_FPS) / frame_step
        n_parts = model.part_model_.num_parts
        names = []
        writer = VideoWriter(out / f"overlay.{video_format}", rate)
        ok = False
        try:
            for frame in tqdm(frames, desc="frames", unit="frame", disable=not model.progress):
                idx = fitted.get(Path(frame).resolve())
                if idx is not None:
                    labels, rgb = model.parts(idx), model.image(idx)
                    size = mask_output_size(model.items_[idx], mask_size)
                else:
                    labels, rgb = model.predict(frame)
                    size = rgb.shape[:2] if mask_size == "load" else _original_size(frame)
                name = Path(frame).stem
                names.append(name)
                save_image(out / "frames" / f"{name}_parts.png", label_png(labels, n_parts, size))
                writer.append(with_legend(parts_overlay(rgb, labels, n_parts), n_parts))
            ok = True
        finally:
            writer.close(ok)
        info = model.summary()
        info.update(method="video_part_cosegmentation", source=str(src), frame_step=frame_step, fit_every=fit_every,
                    frames=names, fit_frames=[Path(p).stem for p in fit_frames], fps=rate,
                    video=f"overlay.{video_format}", mask_size=mask_size)
        info.pop("images", None)
        save_json(out / DONE_FILE, info)
        return info
    finally:
        model.close()
        if tmp_frames is not None:
            shutil.rmtree(tmp_frames, ignore_errors=True)


def _original_size(path: Union[str, Path]) -> tuple[int, int]:
    from PIL import Image

    with Image.open(path) as im:
        return im.height, im.width
