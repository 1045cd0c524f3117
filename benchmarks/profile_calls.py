"""Where a sweep's time goes besides its loop: the fixed cost of a small call, of progress
reports, and of the unrolled adjoint's replay, on the default backend.

    python -m benchmarks.profile_calls              # every part
    python -m benchmarks.profile_calls small        # one part: small, progress, adjoint, device

- `small`: W1 at lr 0.1 (15 iterations a member) over 1,000 and 1e6 members, inputs on the
  device as the suite passes them: the median of `gd.sweep` against `jit(vmap(while_loop))`,
  then the Python profile of 30 sweeps (what the host does between the calls).
- `progress`: the progress benchmark's `n x n` grid with and without a callback: the
  median of each, when each report arrived (seconds after the call), and the profile of one
  sweep with reports.
- `adjoint`: the gradient of the adjoint benchmark's vmapped solve for each number of
  replayed steps a scan trip takes (`_adjoint.REPLAY_UNROLL`), against optimistix's
  checkpointed adjoint: first call and median.
- `device`: where the compiled program's own time goes, by XLA operation: `jax.profiler`
  traces 3 sweeps of W1 at lr 0.1 over 1e6 members on one host thread, and the time of each
  traced event is summed by name (per sweep, with the times it ran per sweep). Fusions
  inside the loop run once a trip or a refill (`cond`); the others once a call.
"""

from __future__ import annotations

import collections
import cProfile
import functools
import glob
import gzip
import json
import pstats
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gdkernel import _adjoint

from . import peers, test_adjoint_bench, test_progress_bench
from .problems import w1


def _median(call: Callable[[], Any], rounds: int) -> float:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        jax.block_until_ready(call())
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _profile(call: Callable[[], Any], calls: int, lines: int = 25) -> None:
    profile = cProfile.Profile()
    profile.enable()
    for _ in range(calls):
        jax.block_until_ready(call())
    profile.disable()
    stats = pstats.Stats(profile)
    stats.sort_stats("tottime").print_stats(lines)
    stats.sort_stats("cumulative").print_stats(lines)


def small() -> None:
    for members in (1_000, 1_000_000):
        p = w1(members, 0.1)
        ours, ref = peers.prepare("gdkernel", p), peers.prepare("reference", p)
        ours.run(), ref.run()
        print(
            f"W1 lr 0.1, {members} members: sweep {_median(ours.run, 30) * 1e3:.3f} ms, "
            f"jit(vmap(while_loop)) {_median(ref.run, 30) * 1e3:.3f} ms"
        )
    _profile(peers.prepare("gdkernel", w1(1_000, 0.1)).run, 30)


def progress(n: int = 1000) -> None:
    arrived: list[float] = []
    start = [0.0]

    def report(_: Any) -> None:
        arrived.append(time.perf_counter() - start[0])

    def with_reports() -> Any:
        start[0] = time.perf_counter()
        return test_progress_bench._sweep(n, report)

    def without() -> Any:
        return test_progress_bench._sweep(n, None)

    with_reports(), without()
    print(f"progress {n}x{n}: off {_median(without, 5) * 1e3:.1f} ms", end=", ")
    print(f"callback {_median(with_reports, 5) * 1e3:.1f} ms")
    arrived.clear()
    with_reports()
    print("reports at (s):", [round(t, 4) for t in arrived])
    _profile(with_reports, 3)


def adjoint(members: int = 1000) -> None:
    with jax.enable_x64(True):
        a, b, guesses = (jnp.asarray(v) for v in test_adjoint_bench.data(members))
        plain = _adjoint.REPLAY_UNROLL
        variants: list[tuple[str, int]] = [("gdkernel_unrolled", u) for u in (1, 4, 8, 16)]
        variants += [("gdkernel_implicit", plain), ("optimistix_checkpointed", plain)]
        for name, unroll in variants:
            jax.clear_caches()
            _adjoint.REPLAY_UNROLL = unroll
            grad = test_adjoint_bench.gradient(name)
            start = time.perf_counter()
            g = np.asarray(grad(guesses, a, b))
            first = time.perf_counter() - start
            want = -members * np.linalg.solve(np.asarray(a), np.asarray(b))
            error = float(np.abs(g - want).max() / np.abs(want).max())
            print(
                f"{name} (replay unroll {unroll}): first {first:.2f} s, "
                f"median {_median(functools.partial(grad, guesses, a, b), 7) * 1e3:.2f} ms, "
                f"relative error {error:.1e}"
            )
        _adjoint.REPLAY_UNROLL = plain


def device(members: int = 1_000_000, calls: int = 3, lines: int = 30) -> None:
    call = peers.prepare("gdkernel_1thread", w1(members, 0.1)).run
    call()
    with tempfile.TemporaryDirectory() as folder:
        with jax.profiler.trace(folder, create_perfetto_trace=True):
            for _ in range(calls):
                call()
        (path,) = glob.glob(f"{folder}/**/*.trace.json.gz", recursive=True)
        with gzip.open(path) as f:
            events = json.load(f)["traceEvents"]
    spent: collections.Counter[str] = collections.Counter()
    times: collections.Counter[str] = collections.Counter()
    for event in events:
        if event.get("ph") == "X" and not event["name"].startswith("$"):  # not Python's
            spent[event["name"]] += event.get("dur", 0)
            times[event["name"]] += 1
    print(f"W1 lr 0.1, {members} members, one thread: ms a sweep, times a sweep, event")
    for name, microseconds in spent.most_common(lines):
        print(f"{microseconds / calls / 1e3:9.3f}  {times[name] // calls:6d}  {name[:90]}")


if __name__ == "__main__":
    parts = {"small": small, "progress": progress, "adjoint": adjoint, "device": device}
    for part in sys.argv[1:] or list(parts):
        print(f"== {part} on {jax.devices()[0].device_kind}")
        parts[part]()
