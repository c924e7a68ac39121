"""Timing, bandwidth and table helpers shared by the benchmarks."""

from __future__ import annotations

import statistics
import time

import torch


def measure(fn, device: str, max_seconds: float = 2.0, min_reps: int = 5, max_reps: int = 200) -> float:
    """Median wall time of fn() in milliseconds: CUDA events on the GPU, a host
    clock (after synchronising) on the CPU. Warms up first; repeats until
    max_seconds or max_reps, at least min_reps."""
    fn()
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device == "cuda":
        torch.cuda.synchronize()
    once = time.perf_counter() - start
    reps = int(max(min_reps, min(max_reps, max_seconds / max(once, 1e-6))))
    times = []
    for _ in range(reps):
        if device == "cuda":
            begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            begin.record()
            fn()
            end.record()
            end.synchronize()
            times.append(begin.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def copy_bandwidth(device: str = "cuda", megabytes: int = 1024) -> float:
    """Device-to-device copy rate in bytes/s, counting bytes read plus written."""
    n = megabytes * 2**20 // 4
    src = torch.rand(n, device=device)
    dst = torch.empty_like(src)
    ms = measure(lambda: dst.copy_(src), device, max_seconds=1.0)
    return 2 * n * 4 / (ms * 1e-3)


class Rotating:
    """Cycles through several copies of the inputs so that repeated runs read
    memory, not a warm L2 cache (at least `min_bytes` in all, at most 8 sets)."""

    def __init__(self, make_inputs, bytes_per_set: int, device: str, min_bytes: int = 256 * 2**20):
        count = 1 if device != "cuda" else max(1, min(8, -(-min_bytes // max(bytes_per_set, 1))))
        self.sets = [make_inputs() for _ in range(count)]
        self.i = 0

    def next(self):
        self.i = (self.i + 1) % len(self.sets)
        return self.sets[self.i]


def print_table(title: str, columns: list[str], rows: list[list]) -> None:
    cells = [[str(c) for c in columns]] + [[_fmt(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    print(f"\n{title}")
    print("| " + " | ".join(c.ljust(w) for c, w in zip(cells[0], widths)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in cells[1:]:
        print("| " + " | ".join(c.rjust(w) for c, w in zip(row, widths)) + " |")


def _fmt(v):
    if isinstance(v, float):
        if v == 0:
            return "0"
        if abs(v) >= 100:
            return f"{v:.0f}"
        if abs(v) >= 1:
            return f"{v:.2f}"
        return f"{v:.3g}"
    return str(v)


def device_name(device: str) -> str:
    if device == "cuda":
        return torch.cuda.get_device_name()
    import os
    import platform

    return f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads of {os.cpu_count()} cores"
