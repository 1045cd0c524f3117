"""Scale-out benchmarks: per-device loops vs a globally synchronised loop, and dealing.

W3 (the straggler workload): `x**2` over 256 log-spaced learning rates in [1e-4, 1] x 1,024
starting points in [-3, 3], precision 1e-5, max_iter 10,000; run counts differ by orders of
magnitude (lr = 1 never converges: it runs to max_iter). It runs on 4 CPU devices made with
`XLA_FLAGS=--xla_force_host_platform_device_count=4`, in a subprocess because the flag must be
set before JAX starts. Variants, each timed on the same members:

- `single`: one device, one batch (`_batch.solve_members`);
- `shard_map_<deal>`: the sweep's path, each device its own loop (`_sharded._solver`);
- `global_<deal>`: `jit` + `NamedSharding` around the same loop: XLA all-reduces the loop
  predicate, so every device runs until the globally slowest member stops;
- `async_<deal>`: one `solve_members` program per device, dispatched asynchronously;
- `sweep_devices`: `gd.sweep(devices=all four)` end to end (host gather included);

with `<deal>` `interleaved` (device d gets members d, d+4, ...) or `contiguous` (device d gets
the d-th block of the grid). The wasted fraction is 1 - useful / executed member-iterations,
where a device executes (its members) x (its slowest member's iterations).

Run: `pytest benchmarks/test_scale_bench.py --benchmark-only -s`. In the normal test run
(`--benchmark-disable`) each body runs once at a small size as a correctness check.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

import gdkernel as gd

ROOT = Path(__file__).resolve().parents[1]
W3_FULL = (256, 1024, 10_000)
W3_SMALL = (8, 32, 2_000)


# ----------------------------------------------------------------------- W3, 4 devices


def _w3_measure(n_lr: int, n_g: int, max_iter: int, rounds: int) -> dict:
    """Inside the 4-device subprocess: time every variant on W3, alternating, `rounds` times."""
    from jax.sharding import Mesh, NamedSharding
    from jax.sharding import PartitionSpec as P

    from gdkernel import _batch, _devices, _kernel, _sharded
    from gdkernel._solve import make_options, make_params

    def square(x):
        return x**2

    lrs = np.logspace(-4, 0, n_lr).astype(np.float32)
    xs = np.tile(np.linspace(-3, 3, n_g).astype(np.float32), n_lr)
    member_lrs = np.repeat(lrs, n_g)
    n, n_dev = xs.size, len(jax.devices())
    opts = make_options("l1", "gd", False, None, max_iter)
    params = make_params(np.float32, 1.0, 1e-5, np.inf, 0.9, max_iter)
    shared = params._replace(learning_rate=np.zeros((), np.float32))
    mesh = Mesh(np.array(jax.devices()), ("members",))
    sharding = NamedSharding(mesh, P("members"))
    per_device = _sharded._solver(mesh, square, None, opts)
    value_and_grad = _kernel.make_value_and_grad(square, None)
    synced = jax.jit(
        lambda x, lr, s: _batch.solve_batch(
            value_and_grad, x, s._replace(learning_rate=lr), (), opts
        ),
        in_shardings=(sharding, sharding, None),
    )

    def solve(x, p):
        return _batch.solve_members(x, p, (), cost_fn=square, grad_fn=None, opts=opts)

    one = params._replace(learning_rate=member_lrs)
    variants = {"single": (lambda: solve(xs, one), np.arange(n))}
    for deal in _devices.DEALS:
        order = _devices.deal(n, n_dev, deal)
        x_g = jax.device_put(xs[order], sharding)
        lr_g = jax.device_put(member_lrs[order], sharding)
        blocks = [
            jax.device_put((xs[idx], params._replace(learning_rate=member_lrs[idx])), device)
            for idx, device in zip(order.reshape(n_dev, -1), jax.devices(), strict=True)
        ]
        variants[f"shard_map_{deal}"] = (
            lambda x=x_g, lr=lr_g: per_device(x, shared._replace(learning_rate=lr), ()),
            order,
        )
        variants[f"global_{deal}"] = (lambda x=x_g, lr=lr_g: synced(x, lr, shared), order)
        variants[f"async_{deal}"] = (lambda b=blocks: [solve(x, p) for x, p in b], order)
    grid_x, grid_lr = np.linspace(-3, 3, n_g).astype(np.float32), lrs
    variants["sweep_devices"] = (
        lambda: gd.sweep(square, grid_x, grid_lr, precision=1e-5, max_iter=max_iter),
        np.arange(n),
    )

    reference = jax.device_get(variants["single"][0]()).iterations
    agree = {}
    for name, (run, order) in variants.items():
        out = jax.block_until_ready(run())  # compiles; checks every member's iterations
        its = (
            np.concatenate([np.asarray(o.iterations).ravel() for o in out])
            if isinstance(out, list)
            else np.asarray(out.iterations).ravel()
        )
        restored = np.empty_like(its)
        restored[order] = its
        agree[name] = bool(np.array_equal(restored, reference))
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, (run, _) in variants.items():
            start = time.perf_counter()
            jax.block_until_ready(run())
            times[name].append(time.perf_counter() - start)

    useful = float(reference.sum())
    per_member_max = {"single": float(reference.max()) * n}
    for deal in _devices.DEALS:
        blocks = reference[_devices.deal(n, n_dev, deal)].reshape(n_dev, -1)
        per_member_max[deal] = float(blocks.max(axis=1).sum() * blocks.shape[1])
    executed = {
        "single": per_member_max["single"],
        "global": per_member_max["single"],  # every device runs to the global slowest
        **{d: per_member_max[d] for d in _devices.DEALS},
    }
    return {
        "members": n,
        "devices": n_dev,
        "cpu_cores": os.cpu_count(),
        "useful_member_iterations": useful,
        "wasted_fraction": {k: 1 - useful / v for k, v in executed.items()},
        "agree": agree,
        "min_s": {k: min(v) for k, v in times.items()},
        "median_s": {k: float(np.median(v)) for k, v in times.items()},
    }


def _run_w3(size: tuple[int, int, int], rounds: int) -> dict:
    env = dict(os.environ)
    env["XLA_FLAGS"] = env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4"
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    proc = subprocess.run(
        [sys.executable, __file__, "w3", *map(str, size), str(rounds)],
        capture_output=True,
        text=True,
        env=env,
        timeout=3000,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.benchmark(group="scale-w3")
def test_w3_four_devices(benchmark):
    size, rounds = (W3_SMALL, 1) if benchmark.disabled else (W3_FULL, 5)
    found = benchmark.pedantic(_run_w3, args=(size, rounds), rounds=1, iterations=1)
    benchmark.extra_info.update(found)
    assert all(found["agree"].values()), found["agree"]
    assert found["devices"] == 4
    waste = found["wasted_fraction"]
    assert waste["contiguous"] <= waste["interleaved"] <= waste["global"] + 1e-12
    if not benchmark.disabled:
        print(json.dumps(found, indent=1))


if __name__ == "__main__":
    if sys.argv[1] == "w3":
        n_lr, n_g, max_iter, rounds = map(int, sys.argv[2:6])
        print(json.dumps(_w3_measure(n_lr, n_g, max_iter, rounds)))
