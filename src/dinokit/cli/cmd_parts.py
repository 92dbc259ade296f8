"""``dinokit parts``: part co-segmentation of image sets and videos (Amir et al. 2021)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import DinokitError
from ..settings import PartSettings
from .cmd_cosegment import add_set_args, run_jobs
from .common import already_finished, extractor_from_args, say, settings_from_args, start_run


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "parts",
        help="co-segment the common parts of a set of images (or of a video's frames)",
        description="Part co-segmentation (Amir et al. 2021): the co-segmentation's foreground clusters, then "
                    "k-means into --num-parts on the foreground descriptors, smoothed by a dense CRF. Writes "
                    "<image>_parts.png (palette PNG: value = part + 1, 0 = background) and <image>_vis.png per "
                    "image, done.json last. With --video, parts are fitted once over the frames and applied to "
                    "every frame: frames/<frame>_parts.png and overlay.mp4 (or .gif).",
    )
    add_set_args(p, PartSettings)
    v = p.add_argument_group("video")
    v.add_argument("--video", type=Path, default=None, metavar="FILE_OR_FRAMES_DIR",
                   help="a video file or a folder of frames (or a sequence folder holding frames/): fit the parts "
                        "once, label every frame")
    v.add_argument("--frame-step", type=int, default=1, help="use every n-th frame (default 1: all)")
    v.add_argument("--fit-every", type=int, default=1,
                   help="fit the parts on every n-th of the used frames, apply to all (default 1)")
    v.add_argument("--max-frames", type=int, default=None, help="use at most this many frames")
    v.add_argument("--fps", type=float, default=None,
                   help="frame rate of the overlay (default: the video's / frame step; 24 / step for folders)")
    v.add_argument("--video-format", choices=["mp4", "gif"], default="mp4", help="overlay format (default mp4)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..tasks.parts import part_cosegment

    if args.video is None:
        return run_jobs(args, "parts", PartSettings, part_cosegment)
    if args.images or args.sets_root is not None:
        raise DinokitError("--video takes the frames from the video; do not give images or --sets-root too")
    from ..tasks.video import video_part_cosegmentation

    settings = settings_from_args(args, PartSettings)
    video = {"video": str(args.video), "frame_step": args.frame_step, "fit_every": args.fit_every,
             "max_frames": args.max_frames, "fps": args.fps, "video_format": args.video_format}
    folder = start_run(args, "parts-video", settings, **video)
    if already_finished(folder, "video", "settings"):
        return 0
    res = video_part_cosegmentation(
        args.video, args.out, extractor_from_args(args, settings), settings, frame_step=args.frame_step,
        fit_every=args.fit_every, max_frames=args.max_frames, fps=args.fps, video_format=args.video_format,
        overwrite=True, mask_size=settings.mask_size, offload_dir=args.offload_dir, progress=not args.quiet)
    folder.finish("video")
    say(f"{len(res['frames'])} frame(s), {res['num_parts']} parts; labels in {args.out / 'frames'}, "
        f"overlay {args.out / res['video']}")
    return 0
