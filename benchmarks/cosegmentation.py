"""Co-segmentation cost per stage and peak memory (issue 4).

Table 1 runs the real pipeline on iCoseg images with the issue's settings
(ViT-S/8 random weights, load size 224, stride 4, every other option at the
paper's default, so the reference's low-resolution saliency): seconds per
stage (features, elbow search, voting, GrabCut) and the process's peak
memory, for 10 images and for 100, each in a fresh process; ``x_10`` is the
total time over the 10-image row's. One more row takes the saliency from the
descriptors' own pass (``--no-low-res-saliency-maps``). Random weights make
the saliency nearly uniform, so the votes tend to take all clusters or none
and GrabCut then falls back at once (``refined`` counts the images where it
ran); ``grabcut_ellipse_s`` is what GrabCut costs on the same images when it
does run, seeded with a central ellipse (not part of ``total_s``).

Table 2 is the memory at scale, up to the issue's 1,000 images. A ViT-S/8
forward at stride 4 costs ~0.5 TFLOP per image (5 s on two CPU cores, so
almost 1.5 hours for 1,000), so there the descriptors are synthetic, of
ViT-S/8's exact size: N distinct files (hard links to the 134 iCoseg images,
cycled) make the set; the real extractor loads and resizes each to 224, and a
stand-in for the forward returns a 384-d descriptor per patch of the stride-4
grid (a mixture of prototypes, a salient central "object") and a saliency
map. Everything after that is the real ``dinokit cosegment`` code: the
descriptor store (float16; on disk beyond 1 GB), elbow search, voting,
GrabCut on every image reloaded from its file, and writing every mask and
visualisation PNG. Each row first runs one real ViT-S/8 forward at stride 4
on the largest iCoseg image in the same process, so the model's weights and
its largest transient count towards the peak. The reference's layout
(float32 per image, a concatenated and a normalised copy, faiss over all,
after the same real forward) is run on the same synthetic descriptors at the
small sizes (``ref_peak/peak``: how much more it needs) and computed at 1,000
as three float32 copies of all descriptors (a lower bound: 6.6 GiB each).

    python benchmarks/cosegmentation.py                 # both tables (100 real images take a while)
    python benchmarks/cosegmentation.py --sizes 10      # table 1 with 10 images only
    python benchmarks/cosegmentation.py --skip-real     # only the memory table
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import dinokit  # noqa: F401  (before torch: dinokit's allocator setting applies to both sides of each row)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _util import matmul_gflops, peak_rss_mb, print_table  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("DINOKIT_SHARED", ROOT.parent / "shared")) / "data"
DIM = 384  # ViT-S key descriptors (6 heads x 64)
PATCH, STRIDE, LOAD = 8, 4, 224


def icoseg_images(n: int, cycle: bool = False) -> list[Path]:
    """The first ``n`` iCoseg images, group after group (the six groups hold 134); cycled if ``cycle``."""
    groups = sorted((DATA / "icoseg").iterdir())
    images = [p for g in groups for p in sorted((g / "images").glob("*.jpg"))]
    if not images or (len(images) < n and not cycle):
        raise SystemExit(f"only {len(images)} iCoseg images under {DATA}")
    return [images[i % len(images)] for i in range(n)]


def distinct_files(n: int, folder: Path) -> list[Path]:
    """``n`` distinct image files in ``folder`` (hard links, else copies, of the cycled iCoseg images): a set
    of ``n`` images, since a set lists each file once."""
    import shutil

    out = []
    for i, src in enumerate(icoseg_images(n, cycle=True)):
        dst = folder / f"{i:04d}_{src.name}"
        try:
            os.link(src, dst)
        except OSError:
            shutil.copyfile(src, dst)
        out.append(dst)
    return out


# --- fresh process per row ---------------------------------------------------------------
def run_isolated(kind: str, *args) -> dict:
    """Run one row in a fresh interpreter (its own peak memory); returns the row with ``peak_MiB``."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", kind, *map(str, args)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["row"]["peak_MiB"] = out["peak"]
    return out["row"]


def child(kind: str, args: list[str]) -> None:
    import torch

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
    if kind == "real":
        row = real_run(int(args[0]), args[1] == "True")
    elif kind == "scale":
        row = scale_run(int(args[0]))
    else:
        row = reference_layout_run(int(args[0]))
    print(json.dumps({"row": row, "peak": peak_rss_mb()}))


# --- table 1: the real pipeline ------------------------------------------------------------
def real_run(n: int, low_res: bool) -> dict:
    import torch

    from dinokit.features import Extractor
    from dinokit.models import create_model
    from dinokit.tasks.cosegmentation import CoSegmentation

    torch.manual_seed(0)
    ex = Extractor(create_model("dino_vits8", seed=0), stride=STRIDE, load_size=LOAD, device="cpu")
    model = CoSegmentation(ex, load_size=LOAD, stride=STRIDE, low_res_saliency_maps=low_res, progress=False)
    t0 = time.perf_counter()
    model.fit(icoseg_images(n))
    refined = sum(model.mask_with_info(i)[1] for i in range(len(model.items_)))
    total = time.perf_counter() - t0
    t = model.timings_
    # What GrabCut costs when it does run: seeded with a central ellipse on each image's grid (with random
    # weights the voted masks are often all or nothing, where GrabCut falls back at once).
    from dinokit.blocks.refine import grabcut_refine

    t_ellipse = 0.0
    for i, it in enumerate(model.items_):
        rgb = model.image(i)
        t1 = time.perf_counter()
        grabcut_refine(rgb, central_ellipse(it.grid))
        t_ellipse += time.perf_counter() - t1
    store = model.features_.store
    row = dict(images=n, saliency="low-res (default)" if low_res else "same pass", features_s=t["features"],
               elbow_s=t["elbow"], voting_s=t["voting"], grabcut_s=t["grabcut"], grabcut_ellipse_s=t_ellipse,
               total_s=total,
               s_per_image=total / n, k=model.n_clusters_, fg_clusters=len(model.salient_labels_),
               refined=f"{refined}/{n}", descriptors=store.total, store_MiB=store.nbytes / 2**20,
               store="disk" if store.on_disk else "RAM")
    model.close()
    return row


# --- table 2: memory at scale ----------------------------------------------------------------
def prototypes() -> np.ndarray:
    return np.random.default_rng(0).standard_normal((8, DIM)).astype(np.float32)


def stride_grid(height: int, width: int) -> tuple[int, int]:
    """The ViT-S/8 patch grid of a ``height x width`` image at stride 4."""
    return 1 + (height - PATCH) // STRIDE, 1 + (width - PATCH) // STRIDE


def central_ellipse(grid: tuple[int, int]) -> np.ndarray:
    """A boolean ``grid`` with an ellipse over the middle 60% of each side."""
    rows, cols = grid
    r, c = np.mgrid[0:rows, 0:cols]
    return ((r - rows / 2) / (0.3 * rows)) ** 2 + ((c - cols / 2) / (0.3 * cols)) ** 2 <= 1


def synthetic_keys(index: int, grid: tuple[int, int], protos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(T, 384)`` descriptors and ``(T,)`` saliency: a central ellipse of 3 "object" prototypes, 5 background."""
    rng = np.random.default_rng(1000 + index)
    obj = central_ellipse(grid).reshape(-1)
    which = np.where(obj, rng.integers(0, 3, obj.size), rng.integers(3, 8, obj.size))
    desc = protos[which] + 0.6 * rng.standard_normal((obj.size, DIM), dtype=np.float32)
    sal = np.where(obj, 0.6, 0.02) + 0.02 * rng.random(obj.size)
    return desc.astype(np.float32), sal.astype(np.float32)


def synthetic_extractor(model):
    """An :class:`Extractor` that loads and resizes for real but returns synthetic ViT-S/8 stride-4 keys."""
    import torch

    from dinokit.features import Extractor
    from dinokit.features.extractor import Features

    protos = prototypes()

    class SyntheticKeys(Extractor):
        calls = 0

        def extract(self, images, layers=-1, facets="key", *, bin=False, include_cls=False, saliency=False, **kw):
            loaded = self.load(images)
            h, w = loaded.size
            grid = stride_grid(h, w)
            desc, sal = synthetic_keys(SyntheticKeys.calls, grid, protos)
            SyntheticKeys.calls += 1
            layer = layers if isinstance(layers, int) else 11
            return Features({(layer, facets): torch.from_numpy(desc)[None]}, grid, [],
                            torch.from_numpy(sal)[None] if saliency else None, [loaded], {})

    return SyntheticKeys(model, stride=STRIDE, load_size=LOAD, device="cpu")


def largest_icoseg_image() -> Path:
    from PIL import Image

    def pixels(p: Path) -> int:
        with Image.open(p) as im:
            return im.width * im.height

    return max(icoseg_images(134), key=pixels)


def scale_run(n: int) -> dict:
    """The whole ``cosegment`` of ``n`` images with synthetic ViT-S/8-sized descriptors (see the module doc)."""
    import torch

    from dinokit.features import Extractor
    from dinokit.models import create_model
    from dinokit.tasks.cosegmentation import CoSegmentation, save_cosegmentation

    torch.manual_seed(0)
    vit = create_model("dino_vits8", seed=0)
    t0 = time.perf_counter()
    Extractor(vit, stride=STRIDE, load_size=LOAD, device="cpu").extract(largest_icoseg_image(), 11, "key", saliency=True)
    t_forward = time.perf_counter() - t0
    peak_after_forward = peak_rss_mb()
    model = CoSegmentation(load_size=LOAD, stride=STRIDE, low_res_saliency_maps=False, progress=False)
    model.extractor_ = synthetic_extractor(vit)  # the estimator's extractor (a copy would drop the stand-in)
    with tempfile.TemporaryDirectory(prefix="coseg-bench-") as tmp:
        (Path(tmp) / "images").mkdir()
        files = distinct_files(n, Path(tmp) / "images")
        t1 = time.perf_counter()
        model.fit(files)
        if len(model.items_) != n:
            raise SystemExit(f"the set has {len(model.items_)} images, not {n}")
        info = save_cosegmentation(model, Path(tmp) / "out", progress=False)
        written = len(list((Path(tmp) / "out").glob("*.png")))
        total = time.perf_counter() - t1
    t = model.timings_
    store = model.features_.store
    row = dict(images=n, layout="dinokit (float16 store)", descriptors=store.total,
               float32_MiB=store.total * DIM * 4 / 2**20, store="disk" if store.on_disk else "RAM",
               store_MiB=store.nbytes / 2**20, load_and_store_s=t["features"], elbow_s=t["elbow"],
               voting_s=t["voting"], grabcut_and_write_s=total - t["features"] - t["elbow"] - t["voting"],
               k=model.n_clusters_, refined=f"{sum(info['grabcut_refined'].values())}/{n}", pngs=written,
               vit_forward_s=t_forward, peak_after_forward_MiB=peak_after_forward)
    model.close()
    return row


def reference_layout_run(n: int) -> dict:
    """The reference's memory layout on the same synthetic descriptors: float32 per image, concatenated,
    normalised copy, sampled copy; faiss fit on the sample and search over all, per k."""
    import faiss
    from PIL import Image

    from dinokit.features.image import resized_size

    import torch

    from dinokit.features import Extractor
    from dinokit.models import create_model

    torch.manual_seed(0)  # the same real forward as the dinokit rows, so both peaks include the model
    Extractor(create_model("dino_vits8", seed=0), stride=STRIDE, load_size=LOAD, device="cpu").extract(
        largest_icoseg_image(), 11, "key", saliency=True)
    protos = prototypes()
    t0 = time.perf_counter()
    descs = []
    for i, p in enumerate(icoseg_images(n, cycle=True)):
        with Image.open(p) as im:
            h, w = resized_size(im.height, im.width, LOAD)
        descs.append(synthetic_keys(i, stride_grid(h, w), protos)[0])
    all_desc = np.ascontiguousarray(np.concatenate(descs))
    normed = all_desc.astype(np.float32)
    faiss.normalize_L2(normed)
    sampled = np.ascontiguousarray(np.concatenate([d[::100] for d in descs])).astype(np.float32)
    faiss.normalize_L2(sampled)
    t_store = time.perf_counter() - t0
    t1 = time.perf_counter()
    objs = []
    for k in range(1, 15):
        km = faiss.Kmeans(DIM, k, niter=300, nredo=10)
        km.train(sampled)
        d, labels = km.index.search(normed, 1)
        objs.append(d.sum() / len(normed))
        if len(objs) > 1 and objs[-1] > 0.975 * objs[-2]:
            break
    return dict(images=n, layout="reference (float32 x3, clustering only)", descriptors=len(normed),
                float32_MiB=normed.nbytes / 2**20, store="RAM", load_and_store_s=t_store,
                elbow_s=time.perf_counter() - t1, k=k)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10, 100], help="numbers of real iCoseg images (table 1)")
    ap.add_argument("--scale-sizes", type=int, nargs="+", default=[10, 100, 1000], help="set sizes of table 2")
    ap.add_argument("--reference-up-to", type=int, default=300,
                    help="run the reference layout up to this many images, compute it beyond (default 300)")
    ap.add_argument("--skip-real", action="store_true", help="skip table 1")
    ap.add_argument("--skip-scale", action="store_true", help="skip table 2")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args.child[0], args.child[1:])
    import torch

    os.environ["BENCH_THREADS"] = str(args.threads)
    torch.set_num_threads(args.threads)
    print(f"machine: {args.threads} threads, fp32 matmul {matmul_gflops():.0f} GFLOP/s (timings scale with it)")
    if not args.skip_real:
        rows = []
        for n in args.sizes:
            rows.append(run_isolated("real", n, True))
            print(f"done {n} real images", file=sys.stderr)
        rows.append(run_isolated("real", args.sizes[0], False))
        for r in rows:
            r["x_10"] = r["total_s"] / rows[0]["total_s"]
        print_table(rows, f"Co-segmentation of iCoseg images: ViT-S/8 random weights, load {LOAD}, stride {STRIDE}, "
                          "paper defaults (seconds per stage, peak RSS of the process)")
    if not args.skip_scale:
        rows = []
        for n in args.scale_sizes:
            row = run_isolated("scale", n)
            row["ref_peak/peak"] = 1.0
            rows.append(row)
            if n <= args.reference_up_to:
                ref = run_isolated("ref", n)
                ref["ref_peak/peak"] = ref["peak_MiB"] / row["peak_MiB"]
            else:  # three float32 copies of all descriptors: a lower bound of the reference's peak
                mib = row["descriptors"] * DIM * 4 / 2**20
                ref = dict(images=n, layout="reference, computed: 3 float32 copies", descriptors=row["descriptors"],
                           float32_MiB=mib, store="RAM", peak_MiB=3 * mib, **{"ref_peak/peak": 3 * mib / row["peak_MiB"]})
            rows.append(ref)
            print(f"done scale {n}", file=sys.stderr)
        keys = list(rows[0])
        rows = [{k: r.get(k) for k in keys} for r in rows]
        print_table(rows, f"Whole cosegment run at scale: real files, synthetic ViT-S/8 stride-{STRIDE} keys "
                          f"(384-d), load {LOAD}; peak RSS includes one real ViT-S/8 forward")


if __name__ == "__main__":
    main()
