"""What progress reports cost: a sweep with `progress=` off, a callable, and the tqdm bar.

The workload is `x**2 - 2x` over an `n x n` grid (starting points in [-5, 5] x learning rates
log-spaced in [1e-4, 1]), `max_iter=5000`: `n = 1000` timed, `n = 40` in the normal test run.
Each variant is compiled outside the timed call. The reports' overhead is the ratio of a
variant's time to `off` in the same run:

    pytest benchmarks/test_progress_bench.py --benchmark-only

or paired (`paired`: rounds in a shuffled order, the median of each round's ratio to `off`,
and `noise`, a second run of `off` against the first), in each of several processes (here 9
of 9 rounds) and the median over them, since on a shared machine a whole process can run
from a few percent faster to 20% slower than the next:

    python -m benchmarks.test_progress_bench 1000 9 9

How steady the reports are (`steadiness`): each report's time and members done, and the time
left a bar would show, `elapsed * (1 - done) / done`, against the time that was left:

    python -m benchmarks.test_progress_bench 3000 steady
"""

from __future__ import annotations

import json
import math
import random
import subprocess
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
    if kind in ("off", "again"):
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


def paired(n: int, rounds: int, seed: int = 0) -> dict[str, float]:
    """The reports' overhead over `off`, each the median over `rounds` of the ratio of a
    variant's seconds to `off`'s seconds in the same round. A round runs every variant once,
    in an order shuffled per round (a variant run first or last in every round would carry
    the machine's drift), and `off` a second time: `noise`, that second `off` over the first,
    is this machine's spread between two runs of one program, to read the overheads against.
    Also the median seconds of each variant."""
    kinds = ["off", "again", "callback", "bar"]
    order = random.Random(seed)
    order.shuffle(kinds)
    for kind in kinds:  # compiled in a shuffled order as well
        _sweep(n, _progress(kind, []))
    times: dict[str, list[float]] = {kind: [] for kind in kinds}
    for _ in range(rounds):
        order.shuffle(kinds)
        for kind in kinds:
            start = time.perf_counter()
            _sweep(n, _progress(kind, []))
            times[kind].append(time.perf_counter() - start)
    off = np.asarray(times["off"])
    out = {kind: float(np.median(t)) for kind, t in times.items() if kind != "again"}
    for name, kind in (
        ("callback_overhead", "callback"),
        ("bar_overhead", "bar"),
        ("noise", "again"),
    ):
        out[name] = float(np.median(np.asarray(times[kind]) / off) - 1)
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


def processes(n: int, rounds: int, count: int) -> dict[str, Any]:
    """`paired` in `count` fresh processes (seeds 0, 1, ...): each one's figures, and the
    median of each figure over them."""
    runs = []
    for seed in range(count):
        command = [sys.executable, "-m", "benchmarks.test_progress_bench", str(n), str(rounds)]
        out = subprocess.run([*command, "1", str(seed)], capture_output=True, text=True, check=True)
        runs.append(json.loads(out.stdout))
    medians = {key: float(np.median([run[key] for run in runs])) for key in runs[0]}
    return {"processes": runs, "median": medians}


if __name__ == "__main__":
    if sys.argv[2] == "steady":
        for row in steadiness(int(sys.argv[1])):
            print(json.dumps({k: round(v, 3) for k, v in row.items()}))
    else:
        n, rounds = int(sys.argv[1]), int(sys.argv[2])
        count = int(sys.argv[3]) if len(sys.argv) > 3 else 1
        seed = int(sys.argv[4]) if len(sys.argv) > 4 else 0
        result = paired(n, rounds, seed) if count == 1 else processes(n, rounds, count)
        print(json.dumps(result, indent=1))
