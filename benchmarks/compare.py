"""Interleaved side-by-side timing of gdkernel and its peers on chosen workloads.

Interleaving makes load from other processes hit every implementation alike.

Each round runs every implementation once, in turn; the report gives, per implementation,
the median wall time, the median CPU time of this process, and the median over rounds of
the ratio to gdkernel (wall). Usage:

    python benchmarks/compare.py                  # W1 at 1e6 (both rates), W2 (both dtypes), W3, W4
    python benchmarks/compare.py --case W3 --rounds 3 --impl gdkernel reference numba
    python benchmarks/compare.py --cpu-devices 2  # JAX started with two CPU devices

JAX runs in its default configuration (one CPU device) unless `--cpu-devices` is given.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.peers import prepare
from benchmarks.test_workloads import CASES, applies, build


def measure(case: str, impls: list[str], rounds: int) -> dict[str, dict[str, float]]:
    p = build(case, timing=True)
    impls = [name for name in impls if applies(name, case)]
    with jax.enable_x64(p.dtype == "float64"):
        runners = {name: prepare(name, p) for name in impls}
        its = {}
        for name, runner in runners.items():  # compile and warm up
            its[name] = int(runner.unpack(runner.run())[1].sum())
        wall: dict[str, list[float]] = {name: [] for name in impls}
        cpu: dict[str, list[float]] = {name: [] for name in impls}
        for _ in range(rounds):
            for name, runner in runners.items():
                c, w = time.process_time(), time.perf_counter()
                runner.run()
                wall[name].append(time.perf_counter() - w)
                cpu[name].append(time.process_time() - c)
    base = np.array(wall[impls[0]])
    return {
        name: {
            "wall_s": float(np.median(wall[name])),
            "cpu_s": float(np.median(cpu[name])),
            "member_its_per_s": its[name] / float(np.median(wall[name])),
            "ratio_to_first": float(np.median(base / np.array(wall[name]))),
        }
        for name in impls
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--case",
        nargs="*",
        default=["W1-1e6-lr0.001", "W1-1e6-lr0.1", "W2", "W2-f32", "W3", "W4"],
        help=f"workloads, of: {' '.join(CASES)}",
    )
    parser.add_argument(
        "--impl",
        nargs="*",
        default=[
            "gdkernel",
            "gdkernel_1thread",
            "reference",
            "lax_map",
            "optax",
            "numba_lanes",
            "numba",
        ],
        help="implementations, the first being the one the others are compared with",
    )
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default 5)")
    parser.add_argument(
        "--cpu-devices",
        type=int,
        default=None,
        help="CPU devices JAX starts with (default: JAX's own, one)",
    )
    opts = parser.parse_args()
    if opts.cpu_devices is not None:
        jax.config.update("jax_num_cpu_devices", opts.cpu_devices)  # before JAX starts
    print(
        f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"{len(jax.devices())} JAX devices ({jax.default_backend()}), jax {jax.__version__}"
    )
    for case in opts.case:
        if case not in CASES:
            raise SystemExit(f"unknown case {case!r}; one of {CASES}")
        print(f"\n## {case}: median of {opts.rounds} interleaved rounds")
        print(
            "| implementation | wall (s) | CPU (s) | member-its/s (M) | speed vs "
            + opts.impl[0]
            + " |"
        )
        print("| --- | --- | --- | --- | --- |")
        for name, r in measure(case, opts.impl, opts.rounds).items():
            print(
                f"| {name} | {r['wall_s']:.3g} | {r['cpu_s']:.3g} | "
                f"{r['member_its_per_s'] / 1e6:,.0f} | {r['ratio_to_first']:.2f} |"
            )


if __name__ == "__main__":
    main()
