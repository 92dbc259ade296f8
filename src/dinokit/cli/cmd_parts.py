"""``dinokit parts``: part co-segmentation of image sets and videos (Amir et al. 2021)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import DinokitError
from .cmd_cosegment import BOOL, add_set_args, method_kwargs, run_jobs
from .common import extractor_from_args


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
    add_set_args(p)
    g = p.add_argument_group("parts (the reference's options and defaults)")
    g.add_argument("--num-parts", type=int, default=4, help="number of common parts (default 4)")
    g.add_argument("--num-crop-augmentations", type=int, default=0,
                   help="random 95%% crops of each image and of its mirror image added to the clustering (default 0)")
    g.add_argument("--three-stages", action=BOOL, default=False,
                   help="foreground, then common objects (elbow), then parts: for small sets with distractors")
    g.add_argument("--elbow-second-stage", type=float, default=0.94,
                   help="elbow coefficient of the second stage with --three-stages (default 0.94)")
    g.add_argument("--crf", action=BOOL, default=True, help="smooth the parts with the dense CRF (default on)")
    v = p.add_argument_group("video")
    v.add_argument("--video", type=Path, default=None, metavar="FILE_OR_FRAMES_DIR",
                   help="a video file or a folder of frames: fit the parts once, label every frame")
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

    kwargs = method_kwargs(args)
    kwargs.update(num_parts=args.num_parts, num_crop_augmentations=args.num_crop_augmentations,
                  three_stages=args.three_stages, elbow_second_stage=args.elbow_second_stage, crf=args.crf)
    if args.video is None:
        return run_jobs(args, part_cosegment, kwargs)
    if args.images or args.sets_root is not None:
        raise DinokitError("--video takes the frames from the video; do not give images or --sets-root too")
    from ..tasks.video import video_part_cosegmentation

    ext = extractor_from_args(args, stride=args.stride, load_size=args.load_size)
    res = video_part_cosegmentation(
        args.video, args.out, ext, frame_step=args.frame_step, fit_every=args.fit_every, max_frames=args.max_frames,
        fps=args.fps, video_format=args.video_format, overwrite=args.overwrite, mask_size=args.mask_size, **kwargs)
    if res is None:
        print(f"dinokit: {args.out}: already done, skipped (use --overwrite to redo)", file=sys.stderr)
    elif not args.quiet:
        print(f"dinokit: {len(res['frames'])} frame(s), {res['num_parts']} parts; labels in {args.out / 'frames'}, "
              f"overlay {args.out / res['video']}", file=sys.stderr)
    return 0
