"""Run every dinokit command on a device with small real inputs and check the outputs (not only exit codes).

Usage, on the machine with the GPU (a few minutes)::

    python benchmarks/gpu.py --prepare /tmp/dk-gpu       # here: copy the few inputs + the tiny trained model
    # carry /tmp/dk-gpu and the repository to the GPU machine, then
    python benchmarks/gpu.py --data /tmp/dk-gpu           # --device cuda by default

``--device cpu`` is a dry run of the same checks; without ``--data`` the
inputs are prepared from ``../shared/data`` into a temporary folder. Prints a
table (command, seconds, check, note) and exits with 1 when a check fails.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.request
from pathlib import Path
from typing import Callable, Optional

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("DINOKIT_SHARED", ROOT.parent / "shared"))
WEIGHTS = "weights/dino_vit_tiny16_shared_data_pretrain.pth"
PF_CLASS = "car(G)"


class CheckFailed(Exception):
    """A command ran but its outputs are wrong."""


def check(cond: bool, message: str) -> None:
    if not cond:
        raise CheckFailed(message)


# --------------------------------------------------------------------------- inputs
def _copy(files: list[Path], dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    for f in files:
        shutil.copy2(f, dest / f.name)


def prepare(dest: Path, shared: Path = SHARED) -> Path:
    """Copy the few inputs every check needs, and the trained tiny model, into ``dest``."""
    data = shared / "data"
    if not data.is_dir():
        raise SystemExit(f"{data}: shared data not found (set DINOKIT_SHARED)")
    (dest / "weights").mkdir(parents=True, exist_ok=True)
    shutil.copy2(shared / "golden" / Path(WEIGHTS).name, dest / WEIGHTS)
    pf = data / "pf-willow" / PF_CLASS
    pngs = sorted(pf.glob("*.png"))
    _copy(pngs[:2], dest / "pair")
    _copy(pngs[:4] + sorted((data / "msrc-cow" / "images").glob("*"))[:2], dest / "images")
    _copy(pngs + sorted(pf.glob("*.mat")), dest / "pf-willow" / PF_CLASS)
    _copy(sorted((data / "msrc-cow" / "images").glob("*"))[:3], dest / "coseg")
    _copy(sorted((data / "afhq" / "ref" / "cat").glob("*.jpg"))[:3], dest / "parts")
    _copy(sorted((data / "davis2016" / "blackswan" / "frames").glob("*.jpg"))[:4], dest / "video" / "frames")
    for cls in ("cat", "dog", "wild"):
        _copy(sorted((data / "afhq" / "ref" / cls).glob("*.jpg"))[:4], dest / "knn" / "train" / cls)
        _copy(sorted((data / "afhq" / "src" / cls).glob("*.jpg"))[:2], dest / "knn" / "test" / cls)
    _copy(sorted((data / "afhq" / "ref").glob("*/*.jpg"))[:16], dest / "train")
    return dest


# --------------------------------------------------------------------------- running
class Runner:
    """Runs ``python -m dinokit ...`` with the model options and collects one table row per check."""

    def __init__(self, data: Path, work: Path, device: str) -> None:
        self.data, self.work, self.device = data, work, device
        self.rows: list[dict] = []
        self.env = dict(os.environ, PYTHONPATH=str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""))

    def model(self, dtype: str = "float32", device: Optional[str] = None) -> list[str]:
        return ["--weights", str(self.data / WEIGHTS), "--device", device or self.device, "--dtype", dtype]

    def dinokit(self, *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
        cmd = [sys.executable, "-m", "dinokit", *map(str, args)]
        proc = subprocess.run(cmd, env=self.env, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise CheckFailed(f"exit {proc.returncode}: {tail[:200]}")
        return proc

    def step(self, name: str, fn: Callable[[], str]) -> None:
        t0 = time.perf_counter()
        try:
            note, ok = fn(), True
        except CheckFailed as exc:
            note, ok = str(exc), False
        except Exception as exc:  # a bug in a check is a failure too, with its place
            note, ok = f"{type(exc).__name__}: {exc}"[:200], False
            traceback.print_exc()
        self.rows.append({"command": name, "seconds": time.perf_counter() - t0, "check": "ok" if ok else "FAILED",
                          "note": note})
        print(f"  {name}: {'ok' if ok else 'FAILED'} ({time.perf_counter() - t0:.1f} s) {note}", file=sys.stderr,
              flush=True)


# --------------------------------------------------------------------------- checks
def _descriptor_files(out: Path) -> dict[str, tuple[dict, dict]]:
    from dinokit.features.export import read_descriptor_file

    return {p.stem: read_descriptor_file(p) for p in sorted(out.glob("*.safetensors"))}


def _rel_err(a, b) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm().clamp_min(1e-12))


def check_extract(r: Runner, dtype: str) -> str:
    """Files for every image; grid = 1 + (size - 16) // 8 (ViT-Ti/16, stride 8); (T, 192) key + (T,) saliency;
    float32 on an accelerator equals float32 on the CPU within 1e-4; half precision close to float32."""
    import torch

    out = r.work / f"extract-{dtype}"
    flags = ["--load-size", "224", "--stride", "8", "--layer", "11", "--facet", "key", "--saliency",
             "--batch-size", "4", "--num-workers", "2", "-q"]
    r.dinokit("extract", r.data / "images", "-o", out, *r.model(dtype), *flags)
    files = _descriptor_files(out)
    check(len(files) == len(list((r.data / "images").iterdir())), f"{len(files)} files for the images")
    for name, (t, meta) in files.items():
        h, w = map(int, meta["resized_size"].split(","))
        rows, cols = map(int, meta["grid"].split(","))
        check((rows, cols) == (1 + (h - 16) // 8, 1 + (w - 16) // 8), f"{name}: grid {rows}x{cols} for {h}x{w}")
        check(tuple(t["descriptors.l11.key"].shape) == (rows * cols, 192), f"{name}: key {t['descriptors.l11.key'].shape}")
        check(tuple(t["saliency"].shape) == (rows * cols,), f"{name}: saliency {tuple(t['saliency'].shape)}")
        check(all(bool(torch.isfinite(v).all()) for v in t.values()), f"{name}: not finite")
    if dtype == "float32" and r.device != "cpu":
        ref = r.work / "extract-cpu"
        r.dinokit("extract", r.data / "images", "-o", ref, *r.model("float32", "cpu"), *flags[:-5], "-q")
        cpu = _descriptor_files(ref)
        worst = max(_rel_err(files[n][0][k], cpu[n][0][k]) for n in files for k in files[n][0])
        check(worst <= 1e-4, f"{r.device} vs cpu float32: relative error {worst:.2e} > 1e-4")
        return f"{len(files)} files; vs cpu fp32: rel err {worst:.1e}"
    if dtype != "float32" and (r.work / "extract-float32").is_dir():
        fp32 = _descriptor_files(r.work / "extract-float32")
        worst = max(_rel_err(files[n][0]["descriptors.l11.key"], fp32[n][0]["descriptors.l11.key"]) for n in files)
        check(worst <= 0.1, f"{dtype} vs float32: relative error {worst:.2e} > 0.1")
        return f"{len(files)} files; vs fp32: rel err {worst:.1e}"
    return f"{len(files)} files, shapes right" + (" (cpu: no cpu reference to compare)" if r.device == "cpu" else "")


def check_correspond(r: Runner) -> str:
    out = r.work / "correspond"
    a, b = sorted((r.data / "pair").iterdir())
    r.dinokit("correspond", a, b, "-o", out, *r.model(), "--num-pairs", "5", "-q")
    data = json.loads((out / "correspondences.json").read_text())
    pairs = _find_points(data)
    check(pairs >= 1, "no correspondence in correspondences.json")
    check(any(p.suffix == ".png" for p in out.iterdir()), "no picture")
    return f"{pairs} pairs"


def _find_points(data) -> int:
    """The number of correspondences in correspondences.json (a list of point pairs under some key)."""
    if isinstance(data, dict):
        for key in ("correspondences", "pairs", "points_a", "points1", "a"):
            if key in data and isinstance(data[key], list):
                return len(data[key])
        return max((_find_points(v) for v in data.values()), default=0)
    return len(data) if isinstance(data, list) else 0


def check_similarity(r: Runner) -> str:
    out = r.work / "similarity"
    a, b = sorted((r.data / "pair").iterdir())
    r.dinokit("similarity", a, b, "--point", "100", "100", "-o", out, *r.model(), "--save-arrays", "-q")
    check((out / "point1.png").is_file(), "no point1.png")
    json.loads((out / "similarity.json").read_text())
    from safetensors.torch import load_file

    maps = load_file(str(out / "point1_maps.safetensors"))
    check(len(maps) == 2 and all(m.dim() == 2 for m in maps.values()), f"maps {[tuple(m.shape) for m in maps.values()]}")
    return f"2 maps {tuple(next(iter(maps.values())).shape)}"


def check_pca(r: Runner) -> str:
    out = r.work / "pca"
    r.dinokit("pca", r.data / "pair", "-o", out, *r.model(), "--components", "3", "-q")
    rgb = sorted(out.glob("*_pca_rgb.png"))
    check(len(rgb) == 2, f"{len(rgb)} pca_rgb pictures for 2 images")
    info = json.loads((out / "pca.json").read_text())
    return f"pca.json keys: {', '.join(sorted(info))[:60]}"


def _masks(out: Path, suffix: str, sources: Path) -> str:
    """One mask per image, of the image's size, with some foreground."""
    import numpy as np
    from PIL import Image

    images = sorted(p for p in sources.iterdir() if p.is_file())
    files = sorted(out.rglob(f"*{suffix}"))
    check(len(files) == len(images), f"{len(files)} *{suffix} files for {len(images)} images")
    masks = [np.asarray(Image.open(f)) for f in files]
    sizes = [Image.open(p).size[::-1] for p in images]
    check(all(m.shape[:2] == s for m, s in zip(masks, sizes)), "masks not of the images' sizes")
    fg = [float((m > 0).mean()) for m in masks]
    check(max(fg) > 0, "every mask is empty")
    values = sorted(set(int(x) for m in masks for x in np.unique(m)))
    return f"{len(files)} masks, foreground {', '.join(f'{f:.2f}' for f in fg)}, values {values[:6]}"


def check_cosegment(r: Runner) -> str:
    out = r.work / "cosegment"
    # three images: a cluster needs the votes of 1 of 3 (the paper's 75% suits larger sets)
    r.dinokit("cosegment", r.data / "coseg", "-o", out, *r.model(), "--votes-percentage", "34", "-q")
    check((out / "done.json").is_file(), "no done.json")
    return _masks(out, "_mask.png", r.data / "coseg")


def check_parts(r: Runner) -> str:
    out = r.work / "parts"
    r.dinokit("parts", r.data / "parts", "-o", out, *r.model(), "--num-parts", "3", "--crf", "-q")
    check((out / "done.json").is_file(), "no done.json")
    return _masks(out, "_parts.png", r.data / "parts") + " (CRF on the CPU)"


def check_video(r: Runner) -> str:
    out = r.work / "video"
    r.dinokit("parts", "--video", r.data / "video" / "frames", "-o", out, *r.model(), "--num-parts", "3",
              "--video-format", "gif", "-q")
    frames = sorted((out / "frames").glob("*_parts.png"))
    check(len(frames) == 4, f"{len(frames)} frame part maps for 4 frames")
    check((out / "overlay.gif").is_file(), "no overlay.gif")
    return "4 frames + overlay.gif"


def check_attention(r: Runner) -> str:
    out = r.work / "attention"
    r.dinokit("attention", r.data / "pair", "-o", out, *r.model(), "--load-size", "224", "--save-arrays", "-q")
    summaries = sorted(out.glob("*/summary.png"))
    check(len(summaries) == 2, f"{len(summaries)} summary.png for 2 images")
    heads = sorted(summaries[0].parent.glob("attn-head*.png"))
    check(len(heads) >= 3, f"{len(heads)} head maps")
    return f"2 images, {len(heads)} head maps each"


TRAIN = ["--arch", "vit_tiny", "--patch-size", "16", "--img-size", "64", "--out-dim", "256", "--head-hidden-dim", "128",
         "--head-bottleneck-dim", "64", "--batch-size", "8", "--global-size", "64", "--local-size", "32",
         "--local-crops-number", "2", "--warmup-epochs", "1", "--warmup-teacher-temp-epochs", "1", "--num-workers", "2",
         "--log-every", "1"]


def check_train(r: Runner) -> str:
    """2 epochs, then --resume for a 3rd: the checkpoint's epoch and step, 3 epoch records, a loadable backbone."""
    from dinokit.models import load_model
    from dinokit.train import load_checkpoint, read_metrics

    out = r.work / "train"
    r.dinokit("train", "--data", r.data / "train", "-o", out, "--epochs", "2", "--device", r.device, *TRAIN, "-q")
    first = load_checkpoint(out / "checkpoint.pth")
    check(int(first.get("epoch", -1)) == 2 and int(first["step"]) == 4, f"after 2 epochs: epoch {first.get('epoch')} step {first['step']}")
    r.dinokit("train", "--data", r.data / "train", "-o", out, "--epochs", "3", "--resume", "--device", r.device,
              *TRAIN, "-q")
    ckpt = load_checkpoint(out / "checkpoint.pth")
    check(int(ckpt.get("epoch", -1)) == 3 and int(ckpt["step"]) == 6, f"after resuming: epoch {ckpt.get('epoch')} step {ckpt['step']}")
    epochs = [m for m in read_metrics(out / "metrics.jsonl") if m.get("type") == "epoch"]
    losses = [m["loss"] for m in read_metrics(out / "metrics.jsonl") if m.get("type") == "step"]
    check(len(epochs) == 3 and len(losses) == 6, f"{len(epochs)} epoch / {len(losses)} step records")
    check(all(l == l and abs(l) < 1e4 for l in losses), f"losses {losses}")
    load_model(None, out / "teacher_backbone.safetensors", progress=False)
    return f"3 epochs, 6 steps, loss {losses[0]:.3f} -> {losses[-1]:.3f}"


def check_knn(r: Runner) -> str:
    out = r.work / "knn.json"
    r.dinokit("knn", "--train", r.data / "knn" / "train", "--test", r.data / "knn" / "test", *r.model(),
              "-k", "1", "3", "--image-size", "112", "--batch-size", "8", "--no-cache", "-o", out, "-q")
    res = json.loads(out.read_text())
    check(res["num_train"] == 12 and res["num_test"] == 6, f"{res['num_train']} train / {res['num_test']} test")
    top1 = {row["k"]: row["top1"] for row in res["results"]}
    check(set(top1) == {1, 3} and all(0 <= v <= 100 for v in top1.values()), f"results {res['results']}")
    return "top-1 " + ", ".join(f"k={k}: {v:.0f}%" for k, v in top1.items())


def check_benchmark(r: Runner) -> str:
    out = r.work / "benchmark"
    r.dinokit("benchmark", "correspondence", "--dataset", "pf-willow", "--root", r.data / "pf-willow", "-o", out,
              *r.model(), "--categories", PF_CLASS, "--max-pairs", "2", "--baselines", "-q")
    row = json.loads((out / "results.json").read_text())["results"][0]
    check(row["pairs"] == 2 and row["points"] == 20, f"{row['pairs']} pairs, {row['points']} points")
    check(all(0 <= row[f"pck@{a}"] <= 1 for a in ("0.05", "0.1", "0.15")), f"PCK {row}")
    return f"2 pairs, 20 points, PCK@0.1 {row['pck@0.1']:.2f} (tiny model)"


def check_inspect(r: Runner) -> str:
    """Start the server, wait for /api/status to say ready, ask /api/query and /api/pca, stop it with Ctrl-C."""
    a, b = sorted((r.data / "pair").iterdir())
    cmd = [sys.executable, "-m", "dinokit", "inspect", str(a), str(b), *r.model(), "-q"]
    server = subprocess.Popen(cmd, env=r.env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        url = server.stdout.readline().strip()
        check(url.startswith("http://"), f"no URL printed: {url!r} {server.stderr.read()[-200:] if server.poll() is not None else ''}")
        state = _wait_ready(url)
        query = _get(url + "/api/query?image=0&x=50&y=50")
        check(len(query.get("maps", [])) == 2, f"/api/query: {str(query)[:100]}")
        pca = _get(url + "/api/pca")
        check(isinstance(pca, dict) and "error" not in pca, f"/api/pca: {str(pca)[:100]}")
    finally:
        server.send_signal(signal.SIGINT)
        try:
            code = server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            code = -9
    check(code == 0, f"the server exited with {code} after Ctrl-C")
    return f"status {state}, query 2 maps, pca ok, clean stop"


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=300) as resp:
        return json.loads(resp.read())


def _wait_ready(url: str, timeout: float = 300) -> str:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        state = _get(url + "/api/status").get("state")
        if state == "ready":
            return state
        check(state == "computing", f"/api/status: {state}")
        time.sleep(0.2)
    raise CheckFailed("the server never became ready")


# --------------------------------------------------------------------------- main
def checks(r: Runner) -> list[tuple[str, Callable[[], str]]]:
    steps = [(f"extract {d}", lambda d=d: check_extract(r, d)) for d in ("float32", "bfloat16", "float16")]
    return steps + [
        ("correspond", lambda: check_correspond(r)), ("similarity", lambda: check_similarity(r)),
        ("pca", lambda: check_pca(r)), ("cosegment", lambda: check_cosegment(r)), ("parts", lambda: check_parts(r)),
        ("parts --video", lambda: check_video(r)), ("attention", lambda: check_attention(r)),
        ("train + resume", lambda: check_train(r)), ("knn", lambda: check_knn(r)),
        ("benchmark correspondence", lambda: check_benchmark(r)), ("inspect", lambda: check_inspect(r)),
    ]


def print_table(rows: list[dict]) -> None:
    widths = {k: max(len(k), *(len(_cell(row[k])) for row in rows)) for k in rows[0]}
    print("| " + " | ".join(k.ljust(w) for k, w in widths.items()) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths.values()) + "|")
    for row in rows:
        print("| " + " | ".join(_cell(row[k]).ljust(w) for k, w in widths.items()) + " |")


def _cell(v) -> str:
    return f"{v:.1f}" if isinstance(v, float) else str(v)


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda", help="device of every command (default cuda; cpu for a dry run)")
    ap.add_argument("--data", type=Path, default=None, help="inputs made by --prepare (default: prepared from "
                                                              "../shared/data into a temporary folder)")
    ap.add_argument("--prepare", type=Path, metavar="DIR", help="only copy the inputs and the tiny model into DIR")
    ap.add_argument("--work", type=Path, default=None, help="folder for the outputs (default: a temporary one)")
    ap.add_argument("--only", nargs="*", default=None, help="run only the checks whose names start with these")
    args = ap.parse_args(argv)
    if args.prepare:
        print(f"prepared {prepare(args.prepare)}")
        return 0
    with tempfile.TemporaryDirectory(prefix="dinokit-gpu-") as tmp:
        data = args.data if args.data else prepare(Path(tmp) / "data")
        work = args.work or Path(tmp) / "work"
        work.mkdir(parents=True, exist_ok=True)
        r = Runner(data, work, args.device)
        print(f"dinokit GPU check on {args.device}: data {data}, outputs {work}", file=sys.stderr)
        for name, fn in checks(r):
            if args.only is None or any(name.startswith(o) for o in args.only):
                r.step(name, fn)
        print_table(r.rows)
        failed = [row["command"] for row in r.rows if row["check"] != "ok"]
        print(f"{len(r.rows) - len(failed)} of {len(r.rows)} checks ok" + (f"; failed: {', '.join(failed)}" if failed else ""))
        return 1 if failed else 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT / "src"))
    sys.exit(main())
