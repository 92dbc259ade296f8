"""Small helpers shared by the benchmark scripts: timing, peak memory, matmul speed, tables."""

from __future__ import annotations

import multiprocessing as mp
import resource
import time
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
    """Peak resident memory of this process so far (MiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _child(q, fn, args):
    base = peak_rss_mb()
    try:
        result = fn(*args)
        q.put((result, peak_rss_mb(), base))
    except BaseException as exc:  # report, don't hang the parent
        q.put((exc, peak_rss_mb(), base))


def run_isolated(fn: Callable, *args: Any) -> tuple[Any, float]:
    """Run ``fn(*args)`` in a fresh process; return its result and that process's peak RSS (MiB)."""
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_child, args=(q, fn, args))
    p.start()
    result, peak, _ = q.get()
    p.join()
    if isinstance(result, BaseException):
        raise result
    return result, peak


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
