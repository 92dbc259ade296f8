"""Co-segmentation cost per stage and peak memory (issue 4).

Table 1 runs the real pipeline on iCoseg images (ViT-S/8, random weights, load
size 224, stride 4, the paper's defaults): seconds per stage (features, elbow
search, voting, GrabCut) and the process's peak memory, for 10 images and for
100, each in a fresh process. A row with the reference's low-resolution
saliency (a second forward pass) shows what the single-pass default saves.

Table 2 isolates the clustering memory on descriptors of realistic shape
(the grids of iCoseg images at load size 224 and stride 4, 384-d like ViT-S
keys, drawn from a mixture of prototypes so the elbow search runs several k):
dinokit's store (float16, on disk beyond 1 GB) against the reference's layout
(per-image float32 arrays, their concatenation and a normalised copy, faiss
search over all of it), at 10, 100 and 1,000 images. The 1,000-image dinokit
row also runs one real ViT-S/8 forward pass and GrabCut on a few images in
the same process, so its peak is the whole pipeline's; the reference layout at
1,000 images is computed, not run (it needs ~15 GB).

    python benchmarks/cosegmentation.py                # everything (the 100-image run takes a while)
    python benchmarks/cosegmentation.py --sizes 10     # only 10 real images
    python benchmarks/cosegmentation.py --skip-real    # only the memory table
"""

from __future__ import annotations

import sys
from pathlib import Path

# This folder holds scripts named like standard modules (inspect.py): keep it off the import path and
# load the shared helpers by file.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

import argparse  # noqa: E402
import importlib.util  # noqa: E402
import os  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

_spec = importlib.util.spec_from_file_location("_coseg_bench_util", _HERE / "_util.py")
_util = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_util)  # type: ignore[union-attr]
peak_rss_mb, print_table = _util.peak_rss_mb, _util.print_table


def run_isolated(kind: str, *args) -> tuple[dict, float]:
    """Run one measurement in a fresh interpreter (clean peak memory); returns its row and peak RSS (MiB)."""
    import json
    import subprocess

    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", kind, *map(str, args)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    return out["row"], out["peak"]


def child(kind: str, args: list[str]) -> None:
    import json

    import torch

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
    if kind == "real":
        row = real_run(int(args[0]), args[1] == "True")
    elif kind == "sim":
        row = simulated_run(int(args[0]), args[1] == "True")
    else:
        row = reference_layout_run(int(args[0]))
    print(json.dumps({"row": row, "peak": peak_rss_mb()}))

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("DINOKIT_SHARED", ROOT.parent / "shared")) / "data"
DIM = 384  # ViT-S key descriptors


def icoseg_images(n: int) -> list[Path]:
    """The first ``n`` iCoseg images, group after group (the six groups hold 134)."""
    groups = sorted((DATA / "icoseg").iterdir())
    images = [p for g in groups for p in sorted((g / "images").glob("*.jpg"))]
    if len(images) < n:
        raise SystemExit(f"only {len(images)} iCoseg images under {DATA}")
    return images[:n]


def real_run(n: int, low_res: bool) -> dict:
    import torch

    from dinokit.features import Extractor
    from dinokit.models import create_model
    from dinokit.tasks.cosegmentation import CoSegmentation

    torch.manual_seed(0)
    base = peak_rss_mb()
    ex = Extractor(create_model("dino_vits8", seed=0), stride=4, load_size=224, device="cpu")
    model = CoSegmentation(ex, load_size=224, stride=4, low_res_saliency_maps=low_res, progress=False)
    t0 = time.perf_counter()
    model.fit(icoseg_images(n))
    refined = sum(model.mask_with_info(i)[1] for i in range(len(model.items_)))
    total = time.perf_counter() - t0
    t = model.timings_
    store = model.features_.store
    row = dict(images=n, saliency="low-res (ref.)" if low_res else "same pass", features_s=t["features"],
               elbow_s=t["elbow"], voting_s=t["voting"], grabcut_s=t["grabcut"], total_s=total,
               k=model.n_clusters_, descriptors=store.total, store_MiB=store.nbytes / 2**20,
               store="disk" if store.on_disk else "RAM", grabcut_ok=f"{refined}/{n}", start_MiB=base)
    model.close()
    return row


# --- memory of the clustering stage on simulated descriptors -----------------------------------
def icoseg_grids(n: int) -> list[tuple[int, int]]:
    """Descriptor grids (stride 4, patch 8) of iCoseg images at load size 224, cycled to ``n``."""
    from PIL import Image

    from dinokit.features.image import resized_size

    grids = []
    for p in icoseg_images(134):
        with Image.open(p) as im:
            h, w = resized_size(im.height, im.width, 224)
        grids.append((1 + (h - 8) // 4, 1 + (w - 8) // 4))
    return [grids[i % len(grids)] for i in range(n)]


def simulated_descriptors(i: int, grid: tuple[int, int], protos: np.ndarray) -> np.ndarray:
    rng = np.random.default_rng(1000 + i)
    t = grid[0] * grid[1]
    which = rng.integers(0, len(protos), t)
    return (protos[which] + 0.6 * rng.standard_normal((t, DIM), dtype=np.float32)).astype(np.float32)


def simulated_run(n: int, with_forward: bool) -> dict:
    """dinokit's clustering pipeline on ``n`` simulated images (plus, optionally, one real forward and GrabCut)."""
    import torch

    from dinokit.tasks.cosegmentation import CoSegmentation, ImageItem, SetFeatures
    from dinokit.tasks.descriptor_store import DescriptorStore

    torch.manual_seed(0)
    if with_forward:
        from dinokit.features import Extractor
        from dinokit.models import create_model

        ex = Extractor(create_model("dino_vits8", seed=0), stride=4, load_size=224, device="cpu")
        img = icoseg_images(1)[0]
        ex.extract(img, 11, "key", saliency=True)  # the largest transient of the features stage
        del ex
    protos = np.random.default_rng(0).standard_normal((8, DIM)).astype(np.float32)
    grids = icoseg_grids(n)
    store = DescriptorStore("auto", expected_images=n)
    t0 = time.perf_counter()
    items, sal = [], []
    for i, g in enumerate(grids):
        desc = simulated_descriptors(i, g, protos)
        store.append(desc)
        sal.append((desc[:, 0] > 0).astype(np.float32) * 0.5)
        size = ((g[0] - 1) * 4 + 8, (g[1] - 1) * 4 + 8)
        items.append(ImageItem(f"sim{i}", np.zeros(size + (3,), np.uint8), size, size, g))
    t_store = time.perf_counter() - t0
    model = CoSegmentation(progress=False).fit_features(SetFeatures(items, store, sal, None, 224))
    if with_forward:  # GrabCut on a few images (its memory is per image)
        for i in range(3):
            rgb = np.random.default_rng(i).integers(0, 255, items[i].size + (3,), dtype=np.uint8)
            items[i].source = rgb
            model.mask(i)
    row = dict(images=n, layout="dinokit float16" + (" + forward + GrabCut" if with_forward else ""),
               descriptors=store.total, data_MiB=store.total * DIM * 4 / 2**20,
               store="disk" if store.on_disk else "RAM", store_s=t_store, elbow_s=model.timings_["elbow"],
               k=model.n_clusters_)
    store.close()
    return row


def reference_layout_run(n: int) -> dict:
    """The reference's memory layout: float32 per image, concatenated, normalised copy; faiss over all."""
    import faiss

    protos = np.random.default_rng(0).standard_normal((8, DIM)).astype(np.float32)
    grids = icoseg_grids(n)
    t0 = time.perf_counter()
    descs = [simulated_descriptors(i, g, protos) for i, g in enumerate(grids)]
    all_desc = np.ascontiguousarray(np.concatenate(descs))
    normed = all_desc.astype(np.float32)
    faiss.normalize_L2(normed)
    sampled = np.ascontiguousarray(np.concatenate([d[::100] for d in descs])).astype(np.float32)
    faiss.normalize_L2(sampled)
    t_store = time.perf_counter() - t0
    t1 = time.perf_counter()
    objs = []
    for k in range(1, 15):
        km = faiss.Kmeans(DIM, k, niter=300, nredo=10, seed=1234)
        km.train(sampled)
        d, labels = km.index.search(normed, 1)
        objs.append(d.sum() / len(normed))
        if len(objs) > 1 and objs[-1] > 0.975 * objs[-2]:
            break
    return dict(images=n, layout="reference float32 x3", descriptors=len(normed), data_MiB=normed.nbytes / 2**20,
                store="RAM", store_s=t_store, elbow_s=time.perf_counter() - t1, k=k)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10, 100], help="numbers of real iCoseg images")
    ap.add_argument("--sim-sizes", type=int, nargs="+", default=[10, 100, 1000], help="simulated set sizes")
    ap.add_argument("--skip-real", action="store_true")
    ap.add_argument("--skip-sim", action="store_true")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args.child[0], args.child[1:])
    os.environ["BENCH_THREADS"] = str(args.threads)
    if not args.skip_real:
        rows = []
        for n in args.sizes:
            row, peak = run_isolated("real", n, False)
            row["peak_MiB"] = peak
            rows.append(row)
            print(f"done {n} images", file=sys.stderr)
        row, peak = run_isolated("real", args.sizes[0], True)
        row["peak_MiB"] = peak
        rows.append(row)
        print_table(rows, "Co-segmentation of iCoseg images, ViT-S/8 random weights, load 224, stride 4 (seconds per stage)")
    if not args.skip_sim:
        rows = []
        for n in args.sim_sizes:
            full = n == max(args.sim_sizes)
            row, peak = run_isolated("sim", n, full)
            row["peak_MiB"] = peak
            row["ref_peak_ratio"] = 1.0
            rows.append(row)
            if n <= 300:
                ref, ref_peak = run_isolated("ref", n)
                ref["peak_MiB"] = ref_peak
                ref["ref_peak_ratio"] = ref_peak / peak
                rows.append(ref)
            else:
                total = row["descriptors"]
                rows.append(dict(images=n, layout="reference float32 x3 (computed)", descriptors=total,
                                 data_MiB=total * DIM * 4 / 2**20, store="RAM", store_s=None, elbow_s=None, k=None,
                                 peak_MiB=3 * total * DIM * 4 / 2**20,
                                 ref_peak_ratio=3 * total * DIM * 4 / 2**20 / peak))
            print(f"done simulated {n}", file=sys.stderr)
        print_table(rows, "Clustering memory on simulated 384-d descriptors (iCoseg grids at 224, stride 4)")


if __name__ == "__main__":
    main()
