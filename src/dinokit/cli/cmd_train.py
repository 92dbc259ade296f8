"""``dinokit train``: DINO self-supervised training of a ViT on a folder of images."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .common import add_overwrite, add_quiet

# (option, TrainConfig field, type, help). Defaults come from the preset, so every option defaults to None here.
_OPTIONS = [
    ("--arch", "arch", str, "vit_tiny, vit_small, vit_base, vit_large (default vit_small)"),
    ("--patch-size", "patch_size", int, "patch size in pixels (default 16)"),
    ("--embed-dim", "embed_dim", int, "override the preset's width (small custom models)"),
    ("--depth", "depth", int, "override the preset's number of blocks"),
    ("--img-size", "img_size", int, "size the positional embedding is stored for (default 224)"),
    ("--drop-path-rate", "drop_path_rate", float, "stochastic depth of the student (default 0.1)"),
    ("--out-dim", "out_dim", int, "head output dimension K (default 65536; small-data 4096)"),
    ("--head-hidden-dim", "head_hidden_dim", int, "head MLP width (default 2048)"),
    ("--head-bottleneck-dim", "head_bottleneck_dim", int, "head bottleneck (default 256)"),
    ("--momentum-teacher", "momentum_teacher", float, "initial teacher EMA momentum, raised to 1 by a cosine (default 0.996)"),
    ("--warmup-teacher-temp", "warmup_teacher_temp", float, "initial teacher temperature (default 0.04)"),
    ("--teacher-temp", "teacher_temp", float, "teacher temperature after warm-up (default 0.07; small-data 0.04)"),
    ("--warmup-teacher-temp-epochs", "warmup_teacher_temp_epochs", int, "teacher temperature warm-up (default 30 epochs)"),
    ("--student-temp", "student_temp", float, "student temperature (default 0.1)"),
    ("--center-momentum", "center_momentum", float, "center EMA momentum (default 0.9)"),
    ("--epochs", "epochs", int, "number of epochs (default 100)"),
    ("--batch-size", "batch_size", int, "images per process and step (default 64; small-data 32)"),
    ("--lr", "lr", float, "peak learning rate for a total batch of 256, scaled linearly (default 5e-4)"),
    ("--min-lr", "min_lr", float, "final learning rate of the cosine decay (default 1e-6)"),
    ("--warmup-epochs", "warmup_epochs", int, "linear learning-rate warm-up (default 10 epochs)"),
    ("--weight-decay", "weight_decay", float, "initial weight decay (default 0.04)"),
    ("--weight-decay-end", "weight_decay_end", float, "final weight decay (default 0.4)"),
    ("--clip-grad", "clip_grad", float, "per-parameter gradient norm clip, 0 disables (default 3.0)"),
    ("--freeze-last-layer", "freeze_last_layer", int, "epochs with the head's last layer frozen (default 1)"),
    ("--global-size", "global_size", int, "global crop size (default 224; small-data 128)"),
    ("--local-size", "local_size", int, "local crop size (default 96; small-data 64)"),
    ("--local-crops-number", "local_crops_number", int, "local crops per image (default 8; small-data 4)"),
    ("--seed", "seed", int, "random seed (default 0)"),
    ("--num-workers", "num_workers", int,
     "data-loading processes (default: min(8, CPUs-1) on GPU, 0 on CPU, where the step uses every core)"),
    ("--log-every", "log_every", int, "write a metrics line every N steps (default 10)"),
    ("--saveckp-freq", "saveckp_freq", int, "also keep checkpointNNNN.pth every N epochs (default 0: never)"),
]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="DINO self-supervised training (pretrain or fine-tune a ViT on your images)",
        description=(
            "Train a ViT with DINO on a folder of images (any layout; labels are not used). The run directory gets "
            "checkpoint.pth (every epoch, atomic), teacher_backbone.safetensors (use it with --weights in every "
            "dinokit command), config.json and metrics.jsonl. Ctrl-C or SIGTERM saves and stops; --resume continues "
            "exactly. Multi-GPU / multi-node: torchrun --nproc_per_node N -m dinokit train ... "
            "Presets: 'paper' (DINO's ViT-S/16 recipe) and 'small-data' (a few hundred to thousands of images: "
            "128/64 px crops, 4 local crops, batch 32, K=4096, teacher temperature 0.04)."
        ),
    )
    p.add_argument("--data", required=True, type=Path, help="folder of training images (searched recursively)")
    p.add_argument("-o", "--out", required=True, type=Path, help="run directory")
    p.add_argument("--preset", default="paper", help="hyperparameter preset: paper or small-data (default paper)")
    g = p.add_argument_group("hyperparameters (defaults from the preset)")
    for flag, dest, typ, text in _OPTIONS:
        g.add_argument(flag, dest=dest, type=typ, default=None, help=text)
    g.add_argument("--global-crops-scale", dest="global_crops_scale", type=float, nargs=2, default=None,
                   metavar=("MIN", "MAX"), help="area range of global crops (default 0.4 1.0)")
    g.add_argument("--local-crops-scale", dest="local_crops_scale", type=float, nargs=2, default=None,
                   metavar=("MIN", "MAX"), help="area range of local crops (default 0.05 0.4)")
    g.add_argument("--no-norm-last-layer", dest="norm_last_layer", action="store_const", const=False, default=None,
                   help="train the norms of the head's last layer (better for ViT-S, less stable)")
    g.add_argument("--use-bn-in-head", dest="use_bn_in_head", action="store_const", const=True, default=None,
                   help="batch norm in the projection head")
    g.add_argument("--batch-augment", dest="batch_augment", action=argparse.BooleanOptionalAction, default=None,
                   help="make the multi-crop augmentation on the device in batches (default: on with CUDA, off on CPU)")
    g.add_argument("--no-amp", dest="amp", action="store_const", const=False, default=None,
                   help="no mixed precision on GPU")
    m = p.add_argument_group("starting point (fine-tuning)")
    m.add_argument("--model", dest="init_model", default=None, help="start from a named pretrained model (see 'dinokit models')")
    m.add_argument("--weights", dest="init_weights", default=None, metavar="FILE",
                   help="start from a backbone weights file; the architecture comes from the weights")
    m.add_argument("--num-heads", dest="num_heads", type=int, default=None,
                   help="attention heads (for a custom --embed-dim, or weights without architecture metadata)")
    r = p.add_argument_group("run control")
    r.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    r.add_argument("--stop-after-epoch", type=int, default=None, metavar="N",
                   help="stop once N epochs are done (the schedules still span --epochs); continue later with --resume")
    r.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: this process's GPU if any)")
    add_overwrite(p)
    add_quiet(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..errors import one_line_warnings

    with one_line_warnings():  # shown with or without --quiet
        return _train(args)


def _train(args: argparse.Namespace) -> int:
    """Build the trainer from the options, fit it and report how the run ended."""
    from ..devices import resolve_device
    from ..runs import check_output_folder

    resolve_device(args.device)
    check_output_folder(args.out)  # before any data or model is read
    options = {dest: getattr(args, dest) for _, dest, _, _ in _OPTIONS}
    for dest in ("global_crops_scale", "local_crops_scale", "norm_last_layer", "use_bn_in_head", "amp", "batch_augment",
                 "init_model", "init_weights", "num_heads"):
        options[dest] = getattr(args, dest)
    if options["global_crops_scale"] is not None:
        options["global_crops_scale"] = tuple(options["global_crops_scale"])
    if options["local_crops_scale"] is not None:
        options["local_crops_scale"] = tuple(options["local_crops_scale"])
    options = {k: v for k, v in options.items() if v is not None}
    from ..train import DinoTrainer

    trainer = DinoTrainer(args.data, args.out, preset=args.preset, device=args.device, progress=not args.quiet,
                          overwrite=args.overwrite, **options)
    trainer.fit(resume=args.resume, stop_at_epoch=args.stop_after_epoch)
    if trainer.interrupted_:
        return 130 if trainer.interrupted_ == "SIGINT" else 143
    if os.environ.get("RANK", "0") == "0":  # the summary stays with --quiet, which hides only progress
        last = trainer.history_[-1] if trainer.history_ else None
        state = "finished" if trainer.finished_ else f"stopped after epoch {trainer.epochs_done_}"
        loss = f", last epoch loss {last['loss']:.4f}" if last else ""
        print(f"training {state}{loss}; teacher backbone: {trainer.backbone_path_} (use it with --weights)",
              file=sys.stderr)
    return 0
