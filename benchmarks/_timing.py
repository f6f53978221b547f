"""The one timing helper the benchmark scripts share."""

import statistics
import time


def timeit(fn, repeat=5, warmup=1):
    """Median wall time of ``repeat`` calls of ``fn`` after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)
