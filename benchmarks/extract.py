"""Descriptor extraction speed and memory (issue: foundation).

Prints, for ViT-S/8 with random weights at 224x224 and 480x640, strides 8 and 4,
DINOv2 ViT-S/14 at 224x224 and 448x448, strides 14 and 7, and DINOv3 ViT-S/16 at
224x224 and 448x448, strides 16 and 8: seconds per image,
achieved GFLOP/s and its share of this machine's fp32 matmul GFLOP/s, peak
memory, and log-binning time against a straightforward per-position loop.

Every row runs in a fresh process, and the matmul baseline is measured in that
process right before and right after the row (the better of the two is the
row's baseline): the speed of a shared virtual machine drifts by 2x within
minutes, so a single baseline at the start would misstate the percentages.

    python benchmarks/extract.py            # the standard table
    python benchmarks/extract.py --huge     # also 1024x1024 at stride 4 (~65k tokens; tens of minutes)
    python benchmarks/extract.py --models dinov2_vits14   # only the DINOv2 rows
    python benchmarks/extract.py --only-huge               # just the 1024x1024 row
    python benchmarks/extract.py --models dinov3_vits16 --rope-overhead --no-binning   # DINOv3 rows + RoPE cost

``--rope-overhead`` times DINOv3 ViT-S/16 against the same network with a
learned position table instead of RoPE (DINOv2's layout: same tokens, same
4 extra tokens), alternating the two in one process so drift hits both alike.
The RoPE cos/sin are cached per grid, so what remains is the rotation of the
patch queries and keys in every block. GFLOP/s count the matmuls only, as for
every row (RoPE's elementwise work is not counted).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import dinokit  # noqa: F401  (before torch: dinokit's allocator setting)
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _util import best_time, print_table, run_isolated, run_with_baseline  # noqa: E402

HUGE = ("dino_vits8", (1024, 1024), 4)


def vit_flops(tokens: int, dim: int, depth: int, patch: int, mlp_ratio: float = 4.0) -> float:
    """Multiply-add FLOPs (x2) of a ViT forward through ``depth`` blocks."""
    per_block = 2 * tokens * dim * 3 * dim + 4 * tokens * tokens * dim + 2 * tokens * dim * dim
    per_block += 2 * 2 * tokens * dim * int(dim * mlp_ratio)
    embed = 2 * tokens * 3 * patch * patch * dim
    return depth * per_block + embed


def measure(model_name: str, size: tuple[int, int], stride: int, repeat: int, warmup: int) -> dict:
    """Best seconds of the key facet of the last block plus saliency (the full depth) on one image."""
    from dinokit.features import Extractor
    from dinokit.models import create_model

    torch.manual_seed(0)
    model = create_model(model_name, seed=0)
    ex = Extractor(model, stride=stride, device="cpu")
    x = torch.randn(1, 3, *size)
    run = lambda: ex.extract(x, layers=-1, facets="key", saliency=True)  # noqa: E731
    seconds = best_time(run, repeat=repeat, warmup=warmup)
    rows, cols = model.grid_size(*size, stride)
    tokens = model.num_prefix_tokens + rows * cols
    flops = vit_flops(tokens, model.embed_dim, len(model.blocks), model.patch_size, model.cfg.mlp_ratio)
    return dict(seconds=seconds, tokens=tokens, gflops=flops / seconds / 1e9)


def measure_rope_overhead(size: tuple[int, int], stride: int, repeat: int) -> dict:
    """Best seconds of DINOv3 ViT-S/16 and of the same ViT with a position table, interleaved."""
    import time

    from dinokit.features import Extractor
    from dinokit.models import create_model, get_spec

    torch.manual_seed(0)
    cfg = get_spec("dinov3_vits16").arch
    table = cfg.replace(pos="table", pos_embed_mode="dinov2", interpolate_offset=0.0, interpolate_antialias=True)
    runs = {}
    for key, arch in (("rope", cfg), ("table", table)):
        ex = Extractor(create_model(arch, seed=0), stride=stride, device="cpu")
        x = torch.randn(1, 3, *size)
        runs[key] = lambda ex=ex, x=x: ex.extract(x, layers=-1, facets="key", saliency=True)
        runs[key]()  # warm-up (and the RoPE cache)
    best = {k: float("inf") for k in runs}
    for _ in range(repeat):
        for key, run in runs.items():
            t0 = time.perf_counter()
            run()
            best[key] = min(best[key], time.perf_counter() - t0)
    return best


def rope_overhead_table(repeat: int) -> None:
    """Print the RoPE-against-table rows of DINOv3 ViT-S/16 (each pair in a fresh process)."""
    rows = []
    for size, stride in [((224, 224), 16), ((224, 224), 8), ((448, 448), 16), ((448, 448), 8)]:
        r, _ = run_isolated(measure_rope_overhead, size, stride, repeat)
        rows.append({"size": f"{size[0]}x{size[1]}", "stride": stride, "RoPE s/img": r["rope"],
                     "table s/img": r["table"], "RoPE overhead %": 100 * (r["rope"] / r["table"] - 1)})
    print_table(rows, "DINOv3 ViT-S/16: RoPE against a position table, equal tokens (key facet + saliency)")


def loop_bin(desc: torch.Tensor, rows: int, cols: int, out: torch.Tensor | None = None) -> torch.Tensor:
    """The reference's per-position log-binning loop (baseline), optionally into a reused buffer."""
    B, T, D = desc.shape
    x = desc.transpose(1, 2).reshape(B, D, rows, cols)
    pools = [torch.nn.AvgPool2d(3**k, 1, 3**k // 2, count_include_pad=False)(x) for k in range(2)]
    if out is None:
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


def measure_binning(rows: int, cols: int, dim: int, repeat: int, threads: int) -> dict:
    """Vectorised vs loop log-binning, each with a fresh output and with a reused output buffer."""
    from dinokit.features import log_bin

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    desc = torch.randn(1, rows * cols, dim)
    if not torch.equal(log_bin(desc, (rows, cols)), loop_bin(desc, rows, cols)):
        raise AssertionError(f"log_bin differs from the loop on a {rows}x{cols} grid")
    out = torch.empty(1, rows * cols, 17 * dim)
    loop_out = torch.zeros(1, 17 * dim, rows, cols)
    return dict(
        fast=best_time(lambda: log_bin(desc, (rows, cols)), repeat=repeat),
        slow=best_time(lambda: loop_bin(desc, rows, cols), repeat=1, warmup=0),
        fast_reuse=best_time(lambda: log_bin(desc, (rows, cols), out=out), repeat=repeat),
        slow_reuse=best_time(lambda: loop_bin(desc, rows, cols, loop_out), repeat=1, warmup=0),
        alloc=best_time(lambda: torch.empty(1, rows * cols, 17 * dim).fill_(1.0), repeat=repeat),
        memcpy=best_time(lambda: out.copy_(loop_out.view(out.shape)), repeat=repeat),
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--huge", action="store_true", help="add 1024x1024 at stride 4 (ViT-S/8, ~65k tokens)")
    ap.add_argument("--only-huge", action="store_true", help="run only the 1024x1024 row")
    ap.add_argument("--no-binning", action="store_true", help="skip the log-binning table")
    ap.add_argument("--binning-only", action="store_true", help="run only the log-binning table")
    ap.add_argument("--rope-overhead", action="store_true",
                    help="also time DINOv3 ViT-S/16 against the same ViT with a position table (equal tokens)")
    ap.add_argument("--models", nargs="*", default=None,
                    help="models of the standard grid (default dino_vits8 plus the extra backbone rows)")
    args = ap.parse_args()
    extra_names = {m for m, _, _ in EXTRA_CONFIGS}
    grid_models = [m for m in (args.models or ["dino_vits8"]) if m not in extra_names]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    configs = [(m, s, st) for m in grid_models for s in [(224, 224), (480, 640)] for st in (8, 4)]
    configs += [(m, s, st) for m, s, st in EXTRA_CONFIGS if args.models is None or m in args.models]
    if args.huge:
        configs.append(HUGE)
    if args.only_huge:
        configs = [HUGE]
    if args.binning_only:
        configs = []
    rows = []
    for name, size, stride in configs:
        large = size[0] * size[1] > 500_000
        rep, warm = (1, 0) if large else (args.repeat, 1)
        res, peak, matmul = run_with_baseline(measure, name, size, stride, rep, warm)
        rows.append({
            "model": name, "size": f"{size[0]}x{size[1]}", "stride": stride, "tokens": res["tokens"],
            "s/img": res["seconds"], "GFLOP/s": res["gflops"], "matmul GFLOP/s": matmul,
            "% of matmul": 100 * res["gflops"] / matmul, "peak MiB": peak,
        })
        print(f"  {rows[-1]['model']} {rows[-1]['size']} s{stride}: {res['seconds']:.3f} s, "
              f"{rows[-1]['% of matmul']:.0f}% of matmul, peak {peak:.0f} MiB", flush=True)
    if rows:
        print_table(rows, "Extraction: key facet of the last block + saliency, random weights, batch 1, fp32")
        print("matmul GFLOP/s: fp32 2048^3 torch.mm measured in the row's own process just before and after "
              "it (the better of the two); peak MiB: the process's peak RSS (Python and torch included).")
    if args.rope_overhead:
        rope_overhead_table(max(args.repeat, 3))
    if args.no_binning or args.only_huge:
        return

    bin_rows = []
    # The grids of ViT-S/8 (dim 384) at 224x224 and 480x640, strides 8 and 4.
    # One thread as well as the default: the copies are memory-bound (one thread nearly saturates the
    # memory bus), and a single-threaded time does not suffer when other processes share the cores.
    threads = sorted({1, torch.get_num_threads()})
    grids = [(28, 28), (55, 55), (60, 80), (119, 159)]
    for (rows_, cols_), n in [(g, n) for g in grids for n in threads]:
        r, _ = run_isolated(measure_binning, rows_, cols_, 384, 5, n)
        bin_rows.append({
            "grid": f"{rows_}x{cols_}", "threads": n, "dim": 384, "output MiB": rows_ * cols_ * 17 * 384 * 4 / 2**20,
            "loop s": r["slow"], "vectorised s": r["fast"], "speed-up": r["slow"] / r["fast"],
            "loop, reused out s": r["slow_reuse"], "vectorised, reused out s": r["fast_reuse"],
            "speed-up, reused out": r["slow_reuse"] / r["fast_reuse"], "fresh output alloc s": r["alloc"],
            "output memcpy s": r["memcpy"],
        })
    print_table(bin_rows, "Log-binning: vectorised vs per-position loop (outputs checked bit-identical)")
    print("'reused out': both write into a buffer allocated once (log_bin(..., out=buf)); 'fresh output alloc': "
          "the time to allocate and first touch an output of that size, paid by both when the output is new; "
          "'output memcpy s': copying a tensor of the output's size into the reused buffer (the floor).")


# Rows other backbones add (model name, (H, W), stride).
EXTRA_CONFIGS: list[tuple[str, tuple[int, int], int]] = [
    # DINOv2 ViT-S/14 (issue: more backbones): native patch stride and the stride trick at 7.
    ("dinov2_vits14", (224, 224), 14),
    ("dinov2_vits14", (224, 224), 7),
    ("dinov2_vits14", (448, 448), 14),
    ("dinov2_vits14", (448, 448), 7),
    # DINOv3 ViT-S/16 (RoPE, 4 storage tokens): native stride and overlapping patches at 8.
    ("dinov3_vits16", (224, 224), 16),
    ("dinov3_vits16", (224, 224), 8),
    ("dinov3_vits16", (448, 448), 16),
    ("dinov3_vits16", (448, 448), 8),
]

if __name__ == "__main__":
    main()
