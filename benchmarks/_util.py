"""Small helpers shared by the benchmark scripts: timing, peak memory, matmul speed, tables."""

from __future__ import annotations

import multiprocessing as mp
import resource
import time
from pathlib import Path
from typing import Any, Callable

import torch


def best_time(fn: Callable[[], Any], repeat: int = 3, warmup: int = 1) -> float:
    """Best wall-clock seconds of ``repeat`` calls after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def matmul_gflops(n: int = 2048, repeat: int = 5) -> float:
    """This machine's fp32 matrix-multiply speed (GFLOP/s) with the current thread count."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    t = best_time(lambda: torch.mm(a, b), repeat=repeat)
    return 2 * n**3 / t / 1e9


def peak_rss_mb() -> float:
    """Peak resident memory of this process (MiB): since the last :func:`reset_peak_rss`, else since start."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def reset_peak_rss() -> bool:
    """Reset the peak-RSS counter to the current RSS (Linux ``clear_refs``); ``False`` if unsupported."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _child(q, fn, args):
    base = peak_rss_mb()
    try:
        result = fn(*args)
        q.put((result, peak_rss_mb(), base))
    except BaseException as exc:  # report, don't hang the parent
        q.put((exc, peak_rss_mb(), base))


def run_isolated(fn: Callable, *args: Any) -> tuple[Any, float]:
    """Run ``fn(*args)`` in a fresh process; return its result and that process's peak RSS (MiB)."""
    result, peak, _ = _spawn(_child, fn, args)
    return result, peak


def _child_with_baseline(q, fn, args):
    # The matmul baseline is measured in this process right before and after the row,
    # so a speed change of the (shared, virtual) machine between rows does not skew
    # the row's percentage; the peak counter is reset after the first baseline so its
    # matrices do not count towards the row's memory.
    try:
        before = matmul_gflops()
        reset_peak_rss()
        result = fn(*args)
        peak = peak_rss_mb()
        after = matmul_gflops()
        q.put((result, peak, (before, after)))
    except BaseException as exc:  # report, don't hang the parent
        q.put((exc, peak_rss_mb(), None))


def run_with_baseline(fn: Callable, *args: Any) -> tuple[Any, float, float]:
    """Run ``fn(*args)`` in a fresh process between two matmul measurements.

    Returns the result, the row's peak RSS (MiB, the process's baseline
    included but not the matmul matrices) and the row's own fp32 matmul
    GFLOP/s (the better of the measurements just before and just after it).
    """
    result, peak, (before, after) = _spawn(_child_with_baseline, fn, args)
    return result, peak, max(before, after)


def _spawn(target: Callable, fn: Callable, args: tuple) -> tuple:
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=target, args=(q, fn, args))
    p.start()
    out = q.get()
    p.join()
    if isinstance(out[0], BaseException):
        raise out[0]
    return out


def print_table(rows: list[dict], title: str = "") -> None:
    """Print rows (dicts with the same keys) as a Markdown table."""
    if title:
        print(f"\n### {title}\n")
    if not rows:
        print("(no rows)")
        return
    keys = list(rows[0])
    cells = [[_fmt(r.get(k)) for k in keys] for r in rows]
    widths = [max(len(k), *(len(c[i]) for c in cells)) for i, k in enumerate(keys)]
    print("| " + " | ".join(k.ljust(w) for k, w in zip(keys, widths)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for c in cells:
        print("| " + " | ".join(v.ljust(w) for v, w in zip(c, widths)) + " |")


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        if v == 0:
            return "0"
        if abs(v) >= 100:
            return f"{v:.0f}"
        if abs(v) >= 1:
            return f"{v:.2f}"
        return f"{v:.4f}"
    return str(v)


def find_pair(shared: Path) -> tuple[Path, Path]:
    """The first two PF-WILLOW car images: the pair the correspondence and inspector benchmarks time."""
    files = sorted((shared / "data" / "pf-willow" / "car(G)").glob("*.png"))
    if len(files) < 2:
        raise SystemExit(f"no PF-WILLOW images under {shared / 'data'} (set DINOKIT_SHARED)")
    return files[0], files[1]
