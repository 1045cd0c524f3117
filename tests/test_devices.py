"""Sweeps over several devices: dealing, equal results, per-device loops.

The multi-device checks run in one subprocess that starts JAX with four CPU devices
(`XLA_FLAGS=--xla_force_host_platform_device_count=4`); this process keeps its one device.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import BOWL_GUESSES, BOWL_RATES, check_bowl_grid, reference_gd
from jax.sharding import Mesh

import gdkernel as gd
from gdkernel import _devices

ROOT = Path(__file__).resolve().parents[1]
GUESSES, RATES = BOWL_GUESSES, BOWL_RATES


def run_with_devices(code: str, n_devices: int, *argv: str, timeout: float = 300) -> dict:
    """Run `code` in a fresh Python with `n_devices` CPU devices; its last stdout line as JSON."""
    env = dict(os.environ)
    env["XLA_FLAGS"] = (
        env.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={n_devices}"
    )
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    proc = subprocess.run(
        [sys.executable, "-c", code, *argv],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


FOUR_DEVICES = r"""
import json, sys
import jax
jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
import gdkernel as gd
from gdkernel import _batch, _kernel, _progress, _sharded
from gdkernel._solve import make_options, make_params

def bowl(x):
    return jnp.sum((x - jnp.array([1.0, -2.0])) ** 2)

guesses, rates = np.array(json.loads(sys.argv[1])), np.array(json.loads(sys.argv[2]))
kw = dict(max_iter=2000, precision=1e-8, history=True, history_every=10)

def same(a, b):
    la, lb = jax.tree.leaves(tuple(a)), jax.tree.leaves(tuple(b))
    return len(la) == len(lb) and all(
        np.array_equal(np.asarray(p), np.asarray(q), equal_nan=True) for p, q in zip(la, lb))

one = gd.sweep(bowl, guesses, rates, devices=jax.devices()[:1], **kw)

devices_seen = set()
in_loop = _progress.Tracker.in_loop
def spy(self, device, *counts):
    devices_seen.add(device)
    return in_loop(self, device, *counts)
_progress.Tracker.in_loop = spy
_progress.REPORT_FLOOR = {"cpu": (1, 1), "accelerator": (1, 1)}
_progress.REPORT_SHARE = 0
reports = []
four = gd.sweep(bowl, guesses, rates, progress=reports.append, **kw)  # default: all 4 devices

# one chunk, no progress: the grid is built and solved on the devices; JAX arrays come back
on_devices = gd.sweep(bowl, guesses, rates, **kw)
fast_kw = dict(max_iter=2000, precision=1e-8)
fast_one = gd.sweep(bowl, guesses, rates, devices=jax.devices()[:1], **fast_kw)
fast_four = gd.sweep(bowl, guesses, rates, **fast_kw)

# 671 members on 16 lanes per device, refilled from each device's queue of 168
saved_width, _batch._lane_width = _batch._lane_width, lambda size, *sizes: 16
wide = np.stack([np.linspace(-3, 3, 61), np.linspace(2, -2, 61)], axis=1)
wide_rates = np.logspace(-3, 0.2, 11)
dealt_one = gd.sweep(bowl, wide, wide_rates, devices=jax.devices()[:1], **fast_kw)
dealt_four = gd.sweep(bowl, wide, wide_rates, **fast_kw)
_batch._lane_width = saved_width

grid = Mesh(np.array(jax.devices()).reshape(2, 2), ("a", "b"))
mesh = gd.sweep(bowl, guesses, rates, devices=grid, chunk_size=6, **kw)  # 3 chunks of 8
three = gd.sweep(bowl, guesses, rates, devices=jax.devices()[1:], **kw)  # 21 = 20 + 1 pad

# more grid axes: each member's b1 and precision travel with it to its device
axes_kw = dict(max_iter=500, precision=[1e-6, 1e-8], method="adam", hyperparams={"b1": [0.5, 0.9]})
axes_one = gd.sweep(bowl, guesses, rates, devices=jax.devices()[:1], **axes_kw)
axes_four = gd.sweep(bowl, guesses, rates, **axes_kw)
axes_mesh = gd.sweep(bowl, guesses, rates, devices=grid, chunk_size=6, **axes_kw)

# the whole grid's result split over the devices along the guesses (8: 2 each), or held
# whole by each (7 guesses cannot be split evenly)
even = gd.sweep(bowl, np.linspace(-3, 3, 16).reshape(8, 2), rates, **fast_kw)
rows = gd.sweep(bowl, np.linspace(-3, 3, 14).reshape(7, 2), rates, **fast_kw)
uneven = gd.sweep(bowl, np.linspace(-3, 3, 14).reshape(7, 2), rates[:3], **fast_kw)
layout = [[list(s.data.shape) for s in r.x.addressable_shards] for r in (even, rows, uneven)]
# inputs that other devices hold: a result fed back in, data committed to one device
warm, warm_host = (gd.sweep(bowl, g, rates, **fast_kw) for g in (even.x[-1], np.asarray(even.x[-1])))
shift = lambda x, c: bowl(x - c)
c0 = jax.device_put(jnp.array([0.5, 0.5]), jax.devices()[0])
held, held_host = (gd.sweep(shift, guesses, rates, args=(c,), **fast_kw) for c in (c0, np.asarray(c0)))
run = gd.compile_sweep(bowl, np.asarray(even.x[-1]), rates, **fast_kw)
moved = [same(warm, warm_host), same(held, held_host), same(run(even.x[-1], rates), warm_host)]

# The per-device program has no collective; jit + NamedSharding all-reduces the predicate.
mesh4 = Mesh(np.array(jax.devices()), ("members",))
opts = make_options("l1", "gd", False, None, 50)
params = make_params(np.float64, 1.0, 1e-8, np.inf, 0.9, 50)
x = np.zeros((8, 2)); lr = np.full(8, 0.1)
shared = params._replace(learning_rate=np.zeros(()))
per_device = _sharded._solver(mesh4, bowl, None, opts).lower(
    x, params._replace(learning_rate=lr), ()
).compile()
sharding = NamedSharding(mesh4, P("members"))
value_and_grad = _kernel.make_value_and_grad(bowl, None)
synced = jax.jit(
    lambda x, lr: _batch.solve_batch(value_and_grad, x, params._replace(learning_rate=lr), (), opts),
    in_shardings=(sharding, sharding),
).lower(x, lr).compile()

print(json.dumps({
    "n_devices": len(jax.devices()),
    "four_is_numpy": isinstance(four.cost, np.ndarray),
    "same": [same(one, four), same(one, mesh), same(one, three), same(one, on_devices),
             same(fast_one, fast_four), same(dealt_one, dealt_four),
             same(axes_one, axes_four), same(axes_one, axes_mesh),
             axes_four.axes == ("learning_rate", "precision", "b1", "initial_guess")],
    "dealt_statuses": sorted(set(np.asarray(dealt_four.status).ravel().tolist())),
    "on_devices": [isinstance(leaf, jax.Array) and len(leaf.sharding.device_set)
                   for leaf in (on_devices.cost, fast_four.x, fast_four.status)],
    "iterations": np.asarray(four.iterations).tolist(),
    "status": np.asarray(four.status).tolist(),
    "x": np.asarray(four.x).tolist(),
    "history_x": np.asarray(four.history.x[:, :, :3]).tolist(),
    "devices_seen": sorted(devices_seen),
    "reports": [list(p) for p in reports],
    "layout": layout,
    "moved": moved,
    "per_device_all_reduce": "all-reduce" in per_device.as_text(),
    "synced_all_reduce": "all-reduce" in synced.as_text(),
}))
"""


@pytest.fixture(scope="module")
def four():
    return run_with_devices(FOUR_DEVICES, 4, json.dumps(GUESSES), json.dumps(RATES))


def test_a_whole_grid_is_split_over_the_devices_by_guess_where_it_divides(four):
    # 8 guesses x 4 rates: each device holds its 2 guesses of every rate; 7 guesses x 4
    # rates: its rate; 7 x 3: the whole grid (XLA splits no axis unevenly).
    assert len(RATES) == 4
    assert four["layout"] == [[[4, 2, 2]] * 4, [[1, 7, 2]] * 4, [[3, 7, 2]] * 4]


def test_inputs_other_devices_hold_are_moved_where_the_sweep_runs(four):
    # A result of a sweep over four devices fed back in as guesses, data committed to one
    # device, and `compile_sweep` given such guesses: each equals the run from host copies.
    assert four["moved"] == [True, True, True]


def test_four_devices_equal_one_device_member_by_member(four):
    assert four["n_devices"] == 4
    assert four["four_is_numpy"]
    # default devices with progress, a 2x2 mesh in 3 padded chunks, 3 devices with one
    # padding member, default devices in one chunk (history on, then off; then 671 members
    # in tiles of 16, eleven per device; then an Adam grid with b1 and precision axes on
    # the default devices and on the mesh in chunks): every field of every member, history
    # included, equal to the one-device run.
    assert four["same"] == [True] * 9
    assert four["dealt_statuses"] == [0, 1, 2]  # converged, ran out, diverged
    assert four["on_devices"] == [4, 4, 4]  # JAX arrays laid out over the four devices


def test_four_devices_match_the_plain_loop_in_the_callers_order(four):
    series = check_bowl_grid(four)
    assert len(series) == 15  # every member with lr <= 1
    for (i, j), path in series.items():
        its = four["iterations"][i][j]
        rows = min(3, its // 10 + 1)  # rows 0, 1, 2 hold iterates 0, 10, 20
        history = np.asarray(four["history_x"][i][j])
        np.testing.assert_allclose(history[:rows], path[:21:10][:rows], rtol=1e-12)
        assert np.isnan(history[rows:]).all()


def test_each_device_runs_its_own_loop(four):
    assert not four["per_device_all_reduce"]
    assert four["synced_all_reduce"]  # what shard_map avoids


def test_progress_from_every_device(four):
    assert four["devices_seen"] == [0, 1, 2, 3]
    reports = [gd.Progress(*p) for p in four["reports"]]
    done = [p.members_done for p in reports]
    assert done == sorted(done)
    assert any(p.chunks_done == 0 and 0 < p.running < 20 for p in reports)
    last = reports[-1]
    assert (last.chunks_done, last.members_done, last.converged, last.diverged) == (1, 20, 15, 5)


# ------------------------------------------------------------------------- in this process


def test_deal_interleaves_or_keeps_blocks():
    size, n = 12, 4
    order = _devices.deal(size, n, "interleaved")
    blocks = order.reshape(n, -1)
    for d in range(n):
        assert blocks[d].tolist() == [k for k in range(size) if k % n == d]
    assert _devices.deal(size, n, "contiguous").tolist() == list(range(size))
    with pytest.raises(ValueError, match="multiple"):
        _devices.deal(10, 4)


def test_one_listed_device_runs_there(x64):
    device = jax.devices()[0]
    grid = gd.sweep(lambda x: x**2, np.array([1.0, -2.0]), [0.1], devices=[device])
    assert grid.cost.devices() == {device}
    assert int(grid.iterations[0, 1]) == reference_gd(lambda x: 2 * x, -2.0, 0.1, 1e-4, 100)[1]
    same = gd.sweep(lambda x: x**2, np.array([1.0, -2.0]), [0.1], devices=Mesh([device], ("m",)))
    np.testing.assert_array_equal(same.x, grid.x)


@pytest.mark.parametrize(
    ("devices", "error", "message"),
    [
        ("cpu", TypeError, "`devices` must be None"),
        ([], ValueError, "at least one"),
        ([0, 1], TypeError, "jax.Device"),
        ([jax.devices()[0]] * 2, ValueError, "more than once"),
    ],
)
def test_bad_devices(devices, error, message):
    with pytest.raises(error, match=message):
        gd.sweep(lambda x: jnp.sum(x**2), np.ones(3), [0.1], devices=devices)
