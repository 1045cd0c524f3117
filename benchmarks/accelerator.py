"""The accelerator figures: W1 at 1e8 members and W1-W4 against `jit(vmap(while_loop))`, and
W1 as a fraction of the device's memory-bandwidth roofline.

    python -m benchmarks.accelerator                 # 1e8 W1 members on an accelerator
    python -m benchmarks.accelerator --members 1e6 --rounds 3 --json figures.json

It runs on any backend (on a CPU it defaults to 1e6 W1 members and skips the roofline, and
an unknown `--case` is refused with the list of cases). Every implementation is
checked against `jit(vmap(while_loop))` (the fraction of members with the same iteration
count, and the largest difference in `x`) before it is timed; the timing is the median of
interleaved rounds after a first (compiling) call.

Implementations:
- `gdkernel`: `gd.sweep` as a user calls it (the route this backend takes by default);
- `gdkernel_rolled`: the same with each look's trips left in a loop (`_batch.unrolled`
  false, a CPU's choice), to show what the fused look gains on an accelerator (with
  `--rolled`);
- `gdkernel_look16`, `gdkernel_look32`: looks of 16 and 32 trips instead of
  `_lanes.CHECK_EVERY` (accelerators);
- `reference`: `jit(vmap(while_loop))` of the same rule (`benchmarks.peers`);
- `lax_map`: `lax.map` over chunks of the vmapped loop (W3 only; chunks of 65,536 members on
  an accelerator, where the CPU's 4,096 would run 64 sequential loops);
- `optax`: `optax.sgd` in `jit(vmap(while_loop))` (W2 only).

The roofline: a loop that keeps each member's iterate in device memory between iterations
reads and writes at least 8 bytes per float32 member-iteration, so the device's copy
bandwidth (measured here: a 4 GiB float32 array read and written once) over 8 bytes bounds
the member-iterations per second of any loop that takes one iteration per pass over the
members. A look that fuses several iterations into one pass can go past it.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import statistics
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any
from unittest import mock

import jax
import jax.numpy as jnp
import numpy as np

import gdkernel as gd
from gdkernel import _batch, _lanes

from . import peers
from .problems import Problem, w1, w2, w3, w4

GIB = 2**30
BYTES_PER_MEMBER_ITERATION = 8  # float32 iterate read and written once per trip


def copy_bandwidth(gib: int = 4, repeats: int = 30) -> float:
    """Bytes per second of reading and writing a float32 array of `gib` GiB once (a fused
    `a * c + 1`), the fastest of `repeats`."""
    a = jax.random.uniform(jax.random.key(0), (gib * GIB // 4,), jnp.float32)
    f = jax.jit(lambda a: a * 1.0001 + 1.0)
    jax.block_until_ready(f(a))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(f(a))
        times.append(time.perf_counter() - start)
    return 2 * gib * GIB / min(times)


def _own_cost(p: Problem) -> Problem:
    """`p` with a cost function of its own, so its compiled programs are traced afresh."""
    cost = p.cost
    return replace(p, cost=lambda x, *args: cost(x, *args))


def implementations(case: str, p: Problem, rolled: bool = False) -> list[str]:
    names = ["gdkernel"]
    if jax.default_backend() != "cpu":
        names += ["gdkernel_rolled"] * rolled + ["gdkernel_look16", "gdkernel_look32"]
    names.append("reference")
    if case == "W3":
        names.append("lax_map")
    if case == "W2":
        names.append("optax")
    return names


def _runner(name: str, p: Problem) -> tuple[peers.Runner, Callable[[], Any]]:
    """The runner of `name`, and the context to run it in."""
    if name == "gdkernel_rolled":  # each look's trips in a loop, on every backend
        route = functools.partial(mock.patch.object, _batch, "unrolled", lambda: False)
        return peers.prepare("gdkernel", _own_cost(p)), route
    if name.startswith("gdkernel_look"):  # looks of 16 or 32 trips
        trips = int(name.removeprefix("gdkernel_look"))
        route = functools.partial(mock.patch.object, _lanes, "CHECK_EVERY", trips)
        return peers.prepare("gdkernel", _own_cost(p)), route
    return peers.prepare(name, p), contextlib.nullcontext


def measure(case: str, p: Problem, rounds: int, rolled: bool = False) -> dict[str, dict[str, Any]]:
    """Per implementation: first call, median wall time, member-iterations per second, and
    agreement with the reference."""
    names = implementations(case, p, rolled)
    out: dict[str, dict[str, Any]] = {}
    with jax.enable_x64(p.dtype == "float64"):
        runners = {name: _runner(name, p) for name in names}
        results = {}
        for name, (runner, route) in runners.items():
            with route():
                start = time.perf_counter()
                results[name] = runner.unpack(runner.run())
                out[name] = {"first_call_s": time.perf_counter() - start, "wall": []}
        x_ref, it_ref = results["reference"][0], results["reference"][1]
        # the members gdkernel ends CONVERGED or MAX_ITER: the reference has no divergence
        # rule, and runs a diverging member on (to a huge or non-finite point)
        status = results["gdkernel"][2]
        finite = (status == gd.Status.CONVERGED) | (status == gd.Status.MAX_ITER)
        for name, (x, its, _) in results.items():
            out[name]["member_iterations"] = int(its.sum())
            out[name]["same_iterations"] = float(np.mean(its[finite] == it_ref[finite]))
            diff = np.abs(x[finite].astype(np.float64) - x_ref[finite].astype(np.float64))
            out[name]["max_x_difference"] = float(diff.max())
        for _ in range(rounds):
            for name, (runner, route) in runners.items():
                with route():
                    start = time.perf_counter()
                    runner.run()
                    out[name]["wall"].append(time.perf_counter() - start)
    for r in out.values():
        r["wall_s"] = statistics.median(r.pop("wall"))
        r["member_its_per_s"] = r["member_iterations"] / r["wall_s"]
    return out


def cases(members: int) -> dict[str, Callable[[], Problem]]:
    """Each case's name and how to build it (built only when chosen)."""
    out: dict[str, Callable[[], Problem]] = {
        f"W1-{members:.0e}-lr0.001": lambda: w1(members, 1e-3),
        f"W1-{members:.0e}-lr0.1": lambda: w1(members, 0.1),
    }
    out.setdefault(f"W1-{1_000_000:.0e}-lr0.001", lambda: w1(1_000_000, 1e-3))
    out.update(W2=lambda: w2(10_000), W3=w3, W4=w4)
    return out


def main() -> None:
    accelerator = jax.default_backend() != "cpu"
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--members",
        type=float,
        default=1e8 if accelerator else 1e6,
        help="W1 members (default 1e8 on an accelerator, 1e6 on a CPU)",
    )
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    parser.add_argument("--case", nargs="*", default=None, help="cases to run (default all)")
    parser.add_argument("--json", default=None, help="write the figures to this file")
    parser.add_argument(
        "--rolled", action="store_true", help="also time each look's trips left in a loop"
    )
    opts = parser.parse_args()
    chosen = cases(int(opts.members))
    unknown = sorted(set(opts.case or ()) - set(chosen))
    if unknown:
        parser.error(f"--case: unknown {unknown}; the cases are {list(chosen)}")
    names = [name for name in chosen if not opts.case or name in opts.case]
    if accelerator:
        peers.MAP_CHUNK = 65_536
    device = jax.devices()[0]
    print(f"# {device.device_kind} ({jax.default_backend()}), jax {jax.__version__}")
    bandwidth = roofline = None
    if accelerator and any(name.startswith("W1") for name in names):  # a CPU has no such roof
        bandwidth = copy_bandwidth()
        roofline = bandwidth / BYTES_PER_MEMBER_ITERATION
        print(
            f"copy bandwidth {bandwidth / 1e12:.2f} TB/s: roofline "
            f"{roofline / 1e9:.0f} G member-its/s at {BYTES_PER_MEMBER_ITERATION} bytes each"
        )
    figures: dict[str, Any] = {
        "device": device.device_kind,
        "backend": jax.default_backend(),
        "jax": jax.__version__,
        "copy_bandwidth_bytes_per_s": bandwidth,
        "cases": {},
    }
    for case in names:
        p = chosen[case]()
        rows = measure(case, p, opts.rounds, opts.rolled)
        figures["cases"][case] = rows
        ref = rows["reference"]["wall_s"]
        print(f"\n## {case} ({p.size:,} members, {p.dtype})")
        print("| implementation | first call (s) | wall (s) | G member-its/s | vs reference |")
        print("| --- | --- | --- | --- | --- |")
        for name, r in rows.items():
            print(
                f"| {name} | {r['first_call_s']:.3g} | {r['wall_s']:.4g} | "
                f"{r['member_its_per_s'] / 1e9:.3g} | {ref / r['wall_s']:.2f}x |"
                f" same its {r['same_iterations']:.4f}, max |dx| {r['max_x_difference']:.2g}"
            )
        if roofline and case.startswith("W1") and p.dtype == "float32":
            for name, r in rows.items():
                share = r["member_its_per_s"] / roofline
                r["roofline_fraction"] = share
                print(f"{name}: {share:.1%} of the memory-bandwidth roofline")
    w3_rows = figures["cases"].get("W3")
    w1_rows = figures["cases"].get(f"W1-{int(opts.members):.0e}-lr0.001")
    if w3_rows and w1_rows:
        best = max(r["member_its_per_s"] for r in w1_rows.values())
        ideal = w3_rows["reference"]["member_iterations"] / best
        print(f"\nW3 useful-work ideal at the best W1 rate: {ideal:.4g} s")
        for name, r in w3_rows.items():
            print(f"W3 {name}: {r['wall_s'] / ideal:.2f}x the ideal")
    if opts.json:
        with open(opts.json, "w") as f:
            json.dump(figures, f, indent=1)


if __name__ == "__main__":
    main()
