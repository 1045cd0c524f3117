"""What progress reports cost: a sweep with `progress=` off, a callable, and the tqdm bar.

The workload is `x**2 - 2x` over an `n x n` grid (starting points in [-5, 5] x learning rates
log-spaced in [1e-4, 1]), `max_iter=5000`: `n = 1000` timed, `n = 40` in the normal test run.
Each variant is compiled outside the timed call. The reports' overhead is the ratio of a
variant's time to `off` in the same run:

    pytest benchmarks/test_progress_bench.py --benchmark-only

or, paired in one process (alternating rounds, the minimum of each):

    python -m benchmarks.test_progress_bench 1000 3

How steady the reports are (`steadiness`): each report's time and members done, and the time
left a bar would show, `elapsed * (1 - done) / done`, against the time that was left:

    python -m benchmarks.test_progress_bench 3000 steady
"""

from __future__ import annotations

import json
import math
import sys
import time
from typing import Any

import jax
import numpy as np
import pytest

import gdkernel as gd


def cost(x):
    return x**2 - 2 * x


def _sweep(n: int, progress: Any) -> gd.SweepResult:
    grid = gd.sweep(
        cost, np.linspace(-5, 5, n), np.geomspace(1e-4, 1.0, n), max_iter=5000, progress=progress
    )
    return jax.block_until_ready(grid)


def _progress(kind: str, seen: list) -> Any:
    if kind == "off":
        return None
    if kind == "callback":
        return seen.append
    return True  # the tqdm bar on stderr


@pytest.mark.benchmark(group="progress")
@pytest.mark.parametrize("kind", ["off", "callback", "bar"])
def test_progress_overhead(benchmark, timing: bool, kind: str) -> None:
    n = 1000 if timing else 40
    if kind == "bar":
        pytest.importorskip("tqdm")
    seen: list = []
    _sweep(n, _progress(kind, seen))  # compile
    seen.clear()
    grid = benchmark(_sweep, n, _progress(kind, seen))
    its = np.asarray(grid.iterations)
    benchmark.extra_info.update(members=n * n, member_iterations=int(its.sum()))
    if kind == "callback":  # one sweep's reports (the timed rounds appended theirs in turn)
        seen.clear()
        _sweep(n, _progress(kind, seen))
        assert seen[-1].members_done == n * n  # the last report counts every member
        done = [p.members_done for p in seen]
        assert done == sorted(done)
    # the reports change nothing: the iterations of the sweep without them
    np.testing.assert_array_equal(its, np.asarray(_sweep(n, None).iterations))


def paired(n: int, rounds: int) -> dict[str, float]:
    """Seconds of each variant (the minimum over `rounds` alternating rounds), and the
    callback's and bar's overhead over `off`."""
    kinds = ("off", "callback", "bar")
    for kind in kinds:
        _sweep(n, _progress(kind, []))
    times: dict[str, list[float]] = {kind: [] for kind in kinds}
    for _ in range(rounds):
        for kind in kinds:
            start = time.perf_counter()
            _sweep(n, _progress(kind, []))
            times[kind].append(time.perf_counter() - start)
    out = {kind: min(t) for kind, t in times.items()}
    out["callback_overhead"] = out["callback"] / out["off"] - 1
    out["bar_overhead"] = out["bar"] / out["off"] - 1
    return out


def steadiness(n: int) -> list[dict[str, float]]:
    """Per report of one sweep (compiled beforehand): seconds since the call, the share of
    members done, the time left estimated from that share, and the time that was left."""
    _sweep(n, lambda p: None)  # compile
    seen: list[tuple[float, int]] = []
    start = time.perf_counter()
    _sweep(n, lambda p: seen.append((time.perf_counter() - start, p.members_done)))
    total = time.perf_counter() - start
    rows = []
    for elapsed, done in seen:
        share = done / (n * n)
        estimate = elapsed * (1 - share) / share if share else math.inf
        rows.append(
            {"seconds": elapsed, "done": share, "estimated_left": estimate, "left": total - elapsed}
        )
    return rows


if __name__ == "__main__":
    if sys.argv[2] == "steady":
        for row in steadiness(int(sys.argv[1])):
            print(json.dumps({k: round(v, 3) for k, v in row.items()}))
    else:
        print(json.dumps(paired(int(sys.argv[1]), int(sys.argv[2])), indent=1))
