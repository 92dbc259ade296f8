"""Descriptor extraction speed and memory (issue: foundation).

Prints, for ViT-S/8 with random weights at 224x224 and 480x640, strides 8 and 4,
and DINOv2 ViT-S/14 at 224x224 and 448x448, strides 14 and 7: seconds per image, achieved GFLOP/s and its share of this machine's fp32
matmul GFLOP/s (measured in the same run), peak memory, and log-binning time
against a straightforward per-position loop.

    python benchmarks/extract.py            # the standard table
    python benchmarks/extract.py --huge     # also 1024x1024 at stride 4 (~65k tokens; minutes)
    python benchmarks/extract.py --models dinov2_vits14   # only the DINOv2 rows
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _util import best_time, matmul_gflops, print_table, run_isolated  # noqa: E402


def vit_flops(tokens: int, dim: int, depth: int, patch: int, mlp_ratio: float = 4.0) -> float:
    """Multiply-add FLOPs (x2) of a ViT forward through ``depth`` blocks."""
    per_block = 2 * tokens * dim * 3 * dim + 4 * tokens * tokens * dim + 2 * tokens * dim * dim
    per_block += 2 * 2 * tokens * dim * int(dim * mlp_ratio)
    embed = 2 * tokens * 3 * patch * patch * dim
    return depth * per_block + embed


def measure(model_name: str, size: tuple[int, int], stride: int, repeat: int) -> dict:
    from dinokit.features import Extractor
    from dinokit.models import create_model

    torch.manual_seed(0)
    model = create_model(model_name, seed=0)
    ex = Extractor(model, stride=stride, device="cpu")
    x = torch.randn(1, 3, *size)
    run = lambda: ex.extract(x, layers=-1, facets="key", saliency=True)  # noqa: E731
    seconds = best_time(run, repeat=repeat)
    feats = run()
    tokens = 1 + feats.grid[0] * feats.grid[1]
    flops = vit_flops(tokens, model.embed_dim, len(model.blocks), model.patch_size)
    return dict(seconds=seconds, tokens=tokens, gflops=flops / seconds / 1e9)


def loop_bin(desc: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """The reference's per-position log-binning loop (baseline)."""
    B, T, D = desc.shape
    x = desc.transpose(1, 2).reshape(B, D, rows, cols)
    pools = [torch.nn.AvgPool2d(3**k, 1, 3**k // 2, count_include_pad=False)(x) for k in range(2)]
    out = torch.zeros(B, 17 * D, rows, cols)
    for y in range(rows):
        for xx in range(cols):
            part = 0
            for k in range(2):
                ks = 3**k
                for i in range(y - ks, y + ks + 1, ks):
                    for j in range(xx - ks, xx + ks + 1, ks):
                        if i == y and j == xx and k:
                            continue
                        ii, jj = max(0, min(i, rows - 1)), max(0, min(j, cols - 1))
                        out[:, part * D:(part + 1) * D, y, xx] = pools[k][:, :, ii, jj]
                        part += 1
    return out.flatten(2).permute(0, 2, 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--huge", action="store_true", help="add 1024x1024 at stride 4")
    ap.add_argument("--models", nargs="*", default=None,
                    help="models of the standard grid (default dino_vits8 plus the extra backbone rows)")
    args = ap.parse_args()
    extra_names = {m for m, _, _ in EXTRA_CONFIGS}
    grid_models = [m for m in (args.models or ["dino_vits8"]) if m not in extra_names]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    peak_matmul = matmul_gflops()
    print(f"fp32 matmul (2048^3): {peak_matmul:.1f} GFLOP/s")
    configs = [(m, s, st) for m in grid_models for s in [(224, 224), (480, 640)] for st in (8, 4)]
    configs += [(m, s, st) for m, s, st in EXTRA_CONFIGS if args.models is None or m in args.models]
    if args.huge:
        configs.append(("dino_vits8", (1024, 1024), 4))
    rows = []
    for name, size, stride in configs:
        rep = 1 if size[0] * size[1] > 500_000 else args.repeat
        res, peak = run_isolated(measure, name, size, stride, rep)
        rows.append({
            "model": name, "size": f"{size[0]}x{size[1]}", "stride": stride, "tokens": res["tokens"],
            "s/img": res["seconds"], "GFLOP/s": res["gflops"], "% of matmul": 100 * res["gflops"] / peak_matmul,
            "peak MiB": peak,
        })
    print_table(rows, "Extraction: key facet of the last block + saliency, random weights, batch 1")

    from dinokit.features import log_bin

    bin_rows = []
    for (rows_, cols_), dim in [((27, 27), 384), ((55, 55), 384)]:
        desc = torch.randn(1, rows_ * cols_, dim)
        fast = best_time(lambda: log_bin(desc, (rows_, cols_)), repeat=5)
        slow = best_time(lambda: loop_bin(desc, rows_, cols_), repeat=1, warmup=0)
        torch.testing.assert_close(log_bin(desc, (rows_, cols_)), loop_bin(desc, rows_, cols_))
        bin_rows.append({"grid": f"{rows_}x{cols_}", "dim": dim, "vectorised s": fast, "loop s": slow, "speed-up": slow / fast})
    print_table(bin_rows, "Log-binning: vectorised vs per-position loop (outputs checked equal)")


# Rows other backbones add (model name, (H, W), stride).
EXTRA_CONFIGS: list[tuple[str, tuple[int, int], int]] = [
    # DINOv2 ViT-S/14 (issue: more backbones): native patch stride and the stride trick at 7.
    ("dinov2_vits14", (224, 224), 14),
    ("dinov2_vits14", (224, 224), 7),
    ("dinov2_vits14", (448, 448), 14),
    ("dinov2_vits14", (448, 448), 7),
]

if __name__ == "__main__":
    main()
