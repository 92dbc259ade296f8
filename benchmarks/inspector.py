"""Inspector responsiveness: the HTTP round trip of a click, once descriptors are computed.

ViT-S/8 with random weights (speed does not depend on the weights), saved to
a temporary safetensors file and served by the real command
``dinokit inspect A B --weights FILE --load-size 224 --stride 4`` in its own
process; this script is the browser: it sends clicks (``GET /api/query`` at
random points of either image) and times each round trip, from sending the
request to having the parsed JSON with every image's heat map. Prints, per
descriptor setting (the inspector's default, layer 11 keys, and the paper's
correspondence setting, layer 9 log-binned keys):

* the seconds to compute the descriptors of both images (the baseline: what
  a click would cost if it recomputed them);
* the round trip of a click, median / 95th percentile / max, over a kept-alive
  connection (as a browser) and over a new connection per click;
* the server's own share (similarity, colouring + encoding) and the answer size;
* the target: 95th percentile under 100 ms.

The server is stopped with SIGINT (Ctrl-C) at the end and must exit with 0.

    python benchmarks/inspector.py
    python benchmarks/inspector.py --clicks 200 --load-size 224
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _util  # noqa: E402
from _util import find_pair, print_table  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


class Client:
    """A minimal browser: GET/POST JSON over one kept-alive connection (or a new one per request)."""

    def __init__(self, url: str, keep_alive: bool = True) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname, parts.port
        self.keep_alive = keep_alive
        self.conn: http.client.HTTPConnection | None = None

    def request(self, method: str, path: str, body: dict | None = None) -> tuple[int, dict, int]:
        if self.conn is None or not self.keep_alive:
            if self.conn is not None:
                self.conn.close()
            self.conn = http.client.HTTPConnection(self.host, self.port, timeout=120)
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"} if data is not None else {}
        self.conn.request(method, path, body=data, headers=headers)
        resp = self.conn.getresponse()
        raw = resp.read()
        return resp.status, json.loads(raw), len(raw)

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()


def clicks(client: Client, info: dict, n: int, rng: np.random.Generator) -> dict:
    """``n`` clicks at random points of random images: round-trip ms, server ms, answer bytes."""
    rt, sim, render, size = [], [], [], []
    for _ in range(n):
        i = int(rng.integers(len(info["images"])))
        im = info["images"][i]
        x, y = rng.uniform(0, im["width"]), rng.uniform(0, im["height"])
        t0 = time.perf_counter()
        status, res, nbytes = client.request("GET", f"/api/query?image={i}&x={x:.2f}&y={y:.2f}")
        rt.append((time.perf_counter() - t0) * 1e3)
        if status != 200 or len(res["maps"]) != len(info["images"]):
            raise SystemExit(f"bad answer to a click: {status} {str(res)[:200]}")
        sim.append(res["timing_ms"]["similarity"])
        render.append(res["timing_ms"]["render"])
        size.append(nbytes)
    return {"rt": np.array(rt), "sim": np.array(sim), "render": np.array(render), "bytes": np.array(size)}


def wait_ready(client: Client, timeout: float = 1200) -> dict:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        _, st, _ = client.request("GET", "/api/status")
        if st["state"] != "computing":
            return st
        time.sleep(0.1)
    raise SystemExit("the server did not finish computing descriptors")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--load-size", type=int, default=224)
    ap.add_argument("--stride", type=int, default=4)
    ap.add_argument("--clicks", type=int, default=100, help="clicks timed per setting and connection mode")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()

    import torch

    from dinokit.models import create_model, save_backbone

    shared = Path(os.environ.get("DINOKIT_SHARED", ROOT.parent / "shared"))
    img_a, img_b = find_pair(shared)
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        weights = Path(tmp) / "vits8_random.safetensors"
        save_backbone(create_model("dino_vits8", seed=0), weights)
        cmd = [sys.executable, "-m", "dinokit", "inspect", str(img_a), str(img_b), "--weights", str(weights),
               "--load-size", str(args.load_size), "--stride", str(args.stride), "--device", args.device, "-q"]
        t0 = time.perf_counter()
        # SIGINT is ignored by programs started in the background of a non-interactive shell; the server
        # must see Ctrl-C as a user's terminal sends it, so restore the default handling in the child
        server = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                                  preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        try:
            url = server.stdout.readline().strip()  # printed once the descriptors are computed
            if not url.startswith("http://127.0.0.1:"):
                raise SystemExit(f"the server did not start: {url!r} {server.stderr.read()[-2000:]}")
            startup = time.perf_counter() - t0
            alive = Client(url, keep_alive=True)
            fresh = Client(url, keep_alive=False)
            _, info, _ = alive.request("GET", "/api/info")
            rows, detail = [], []
            for label, settings in [("layer 11 key (default)", None),
                                    ("layer 9 key, log-binned (paper)", {"layer": 9, "facet": "key", "bin": True})]:
                if settings is not None:
                    alive.request("POST", "/api/settings", settings)
                st = wait_ready(alive)
                if st["state"] != "ready":
                    raise SystemExit(f"recomputing failed: {st}")
                forward_ms = st["seconds"] * 1e3
                clicks(alive, info, args.warmup, rng)
                for mode, client in (("kept-alive", alive), ("new per click", fresh)):
                    r = clicks(client, info, args.clicks, rng)
                    p95 = float(np.percentile(r["rt"], 95))
                    rows.append({
                        "setting": label, "connection": mode,
                        "descriptors s": st["seconds"],
                        "click median ms": float(np.median(r["rt"])), "p95 ms": p95, "max ms": float(r["rt"].max()),
                        "descriptors / click": forward_ms / float(np.median(r["rt"])),
                        "p95 < 100 ms": "yes" if p95 < 100 else "NO",
                    })
                    detail.append({
                        "setting": label, "connection": mode,
                        "server similarity ms": float(np.median(r["sim"])),
                        "server colour+encode ms": float(np.median(r["render"])),
                        "HTTP + JSON ms": float(np.median(r["rt"] - r["sim"] - r["render"])),
                        "answer KB": float(np.median(r["bytes"])) / 1024,
                    })
            alive.close()
            fresh.close()
            t1 = time.perf_counter()
            server.send_signal(signal.SIGINT)
            code = server.wait(timeout=30)
            stop_s = time.perf_counter() - t1
        finally:
            if server.poll() is None:
                server.kill()
                server.wait()

    g = [(im["resized"][1], im["resized"][0]) for im in info["images"]]
    print(f"ViT-S/8 random weights served by `dinokit inspect` in its own process; {img_a.name} "
          f"({g[0][1]}x{g[0][0]}) and {img_b.name} ({g[1][1]}x{g[1][0]}) at load size {args.load_size}, "
          f"stride {args.stride}; {args.clicks} clicks per row at random points; torch threads "
          f"{torch.get_num_threads()}, {os.cpu_count()} CPUs; machine matmul {_util.matmul_gflops():.0f} GFLOP/s")
    print(f"startup (load model + descriptors + listen): {startup:.2f} s; Ctrl-C: exit code {code} "
          f"after {stop_s:.2f} s")
    print_table(rows, "Click round trip (request sent -> every image's heat map parsed)")
    print_table(detail, "Where a click's time goes (medians)")


if __name__ == "__main__":
    main()
