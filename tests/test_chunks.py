"""Chunked sweeps: equal chunks compiled once, memory budgets, streaming to an `.npz` file."""

import os
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import reference_gd

import gdkernel as gd
from gdkernel import _chunks
from gdkernel._batch import solve_batch
from gdkernel._kernel import make_value_and_grad
from gdkernel._solve import make_options, make_params

CENTRE = np.array([1.0, -2.0])


def bowl(x):
    return jnp.sum((x - CENTRE) ** 2)


def bowl_grad(x):
    return 2 * (np.asarray(x) - CENTRE)


GUESSES = np.array([[0.0, 0.0], [3.0, 1.0], [-2.0, 4.0], [1.5, -1.0], [10.0, 0.5]])
RATES = np.array([0.02, 0.1, 0.45, 3.0])  # 3.0 diverges on this bowl (x5 a step)


def leaves_equal(a, b) -> bool:
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    return len(la) == len(lb) and all(
        np.array_equal(np.asarray(p), np.asarray(q), equal_nan=True)
        for p, q in zip(la, lb, strict=True)
    )


def fields(grid) -> tuple:
    return tuple(grid[:7])  # the Result fields; learning_rate and initial_guess apart


@pytest.mark.parametrize("chunk_size", [1, 7, 64])
def test_chunked_matches_reference_and_whole(x64, chunk_size):
    whole = gd.sweep(bowl, GUESSES, RATES, max_iter=300, precision=1e-8, history=True)
    grid = gd.sweep(
        bowl, GUESSES, RATES, max_iter=300, precision=1e-8, history=True, chunk_size=chunk_size
    )
    # Several chunks land in host arrays; one chunk (64 >= 20 members) runs as one batch.
    assert isinstance(grid.cost, np.ndarray) == (chunk_size < len(RATES) * len(GUESSES))
    assert leaves_equal(fields(grid), fields(whole))  # member by member, every field
    for i, lr in enumerate(RATES):
        for j, x0 in enumerate(GUESSES):
            if lr > 1:
                assert grid.status[i, j] == gd.Status.DIVERGED
                continue
            x, its, status, series = reference_gd(bowl_grad, x0, lr, 1e-8, 300)
            assert grid.iterations[i, j] == its
            assert grid.status[i, j] == (gd.Status.CONVERGED if status == "converged" else 1)
            np.testing.assert_allclose(grid.x[i, j], x, rtol=1e-12, atol=1e-12)
            np.testing.assert_allclose(grid.history.x[i, j, : its + 1], series, atol=1e-12)


def test_every_chunk_reuses_one_program(x64):
    calls = []

    def cost(x):
        calls.append(1)  # runs while tracing only
        return jnp.sum(x**2)

    gd.sweep(cost, np.linspace(-3, 3, 10), [0.1, 0.2, 0.3], chunk_size=4)
    traced = len(calls)
    assert traced > 0
    # More chunks, other values, same chunk size: no new trace.
    other = gd.sweep(cost, np.linspace(-1, 5, 17), [0.05, 0.3], chunk_size=4)
    assert len(calls) == traced
    expect = [
        reference_gd(lambda x: 2 * x, x0, 0.05, 1e-4, 100)[1] for x0 in np.linspace(-1, 5, 17)
    ]
    np.testing.assert_array_equal(other.iterations[0], expect)


def test_memory_budget_sets_the_chunk_size(x64):
    x0 = np.zeros((6, 3))
    per = _chunks.member_bytes(x0, np.float64, "gd", 0)
    plan = _chunks.plan(20, 1, per, None, int(3.5 * per), True, 0)
    assert plan == _chunks.Plan(chunk_size=3, n_chunks=7, member_bytes=per)
    plan = _chunks.plan(20, 4, per, None, int(3.5 * per), True, 0)  # 3 per device
    assert (plan.chunk_size, plan.n_chunks) == (12, 2)
    plan = _chunks.plan(20, 4, per, 5, None, False, 0)  # rounded up to the device count
    assert (plan.chunk_size, plan.n_chunks) == (8, 3)
    reports = []
    grid = gd.sweep(
        lambda x: jnp.sum(x**2),
        np.ones((5, 3)),
        [0.1, 0.2, 0.3, 0.4],
        memory_budget=int(3.5 * per),
        progress=reports.append,
    )
    assert reports[-1].chunks_total == 7  # 20 members, 3 at a time
    assert (
        int(grid.iterations[1, 0]) == reference_gd(lambda x: 2 * x, np.ones(3), 0.2, 1e-4, 100)[1]
    )


def test_history_that_cannot_fit_says_so():
    with pytest.raises(ValueError, match=r"history buffer has 10001 rows.*`memory_budget`"):
        gd.sweep(
            lambda x: x**2,
            np.ones(4),
            [0.1],
            history=True,
            max_iter=10_000,
            memory_budget="100kB",
        )


def test_result_too_large_for_host_memory_points_to_out(monkeypatch, tmp_path):
    monkeypatch.setattr(_chunks, "available_host_bytes", lambda: 10_000)
    monkeypatch.setattr(_chunks, "SMALL", 0)
    with pytest.raises(ValueError, match=r"host memory.*`out="):
        gd.sweep(lambda x: x**2, np.ones(50), [0.1, 0.2], history=True)
    grid = gd.sweep(lambda x: x**2, np.ones(50), [0.1, 0.2], history=True, out=tmp_path / "g")
    assert grid.history.cost.shape == (2, 50, 101)


def test_memory_estimate_bounds_what_xla_allocates():
    batch = 256
    for history, method in [(False, "gd"), (True, "gd"), (False, "nesterov"), (True, "momentum")]:
        opts = make_options("l1", method, history, None, 200)
        x0 = np.zeros((batch, 3), np.float32)
        params = make_params(np.float32, 1.0, 1e-4, np.inf, 0.9, 200)._replace(
            learning_rate=np.ones(batch, np.float32)
        )
        vg = make_value_and_grad(lambda x: jnp.sum(x**2), None)
        run = jax.jit(lambda x, p, o=opts, vg=vg: solve_batch(vg, x, p, (), o))
        stats = run.lower(x0, params).compile().memory_analysis()
        if stats is None:
            pytest.skip("this backend gives no memory analysis")
        used = stats.temp_size_in_bytes + stats.argument_size_in_bytes + stats.output_size_in_bytes
        estimate = _chunks.member_bytes(x0, np.float32, method, opts.history_rows)
        assert estimate * batch >= used, (history, method)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("512", 512), ("1.5kB", 1500), ("2 MiB", 2 * 2**20), ("4GiB", 4 * 2**30), (10**9, 10**9)],
)
def test_memory_budget_units(text, expected):
    assert _chunks.as_memory_budget(text) == expected


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"memory_budget": "lots"}, ValueError, "`memory_budget`"),
        ({"memory_budget": -1}, ValueError, "`memory_budget`"),
        ({"memory_budget": [1]}, TypeError, "`memory_budget`"),
        ({"chunk_size": 0}, ValueError, "`chunk_size`"),
        ({"chunk_size": 2.5}, TypeError, "`chunk_size`"),
        ({"chunk_size": 4, "memory_budget": "1GB"}, ValueError, "not both"),
        ({"out": 3}, TypeError, "`out`"),
        ({"out": "/no/such/folder/g.npz"}, ValueError, "`out`"),
    ],
)
def test_bad_options_fail_at_call_time(kwargs, error, message):
    with pytest.raises(error, match=message):
        gd.sweep(lambda x: x**2, np.ones(3), [0.1], **kwargs)


def test_traced_inputs_refuse_host_options():
    @jax.jit
    def run(lrs):
        return gd.sweep(lambda x: x**2, jnp.ones(3), lrs, chunk_size=2).cost

    with pytest.raises(TypeError, match="`chunk_size` needs concrete inputs"):
        run(jnp.array([0.1, 0.2]))


# ---------------------------------------------------------------------------- .npz files


def pytree_cost(p):
    return (p["a"] - 1.0) ** 2 + jnp.sum((p["b"] + 2.0) ** 2)


def test_out_writes_an_npz_that_loads_back(x64, tmp_path):
    guesses = {
        "b": np.stack([np.zeros(2), np.ones(2), -np.ones(2)]),
        "a": np.array([0.0, 2.0, 5.0]),
    }
    before = jax.tree.map(np.copy, guesses)
    rates = np.array([0.05, 0.3])
    memory = gd.sweep(pytree_cost, guesses, rates, history=True, history_every=3, chunk_size=4)
    streamed = gd.sweep(
        pytree_cost, guesses, rates, history=True, history_every=3, chunk_size=4, out=tmp_path / "g"
    )
    path = tmp_path / "g.npz"
    assert sorted(os.listdir(tmp_path)) == ["g.npz"]  # the spool folder is gone
    assert leaves_equal(guesses, before)
    assert leaves_equal(tuple(streamed), tuple(memory))
    assert isinstance(streamed.cost, np.memmap)  # read lazily
    loaded = gd.load_sweep(path)
    assert leaves_equal(tuple(loaded), tuple(memory))
    assert isinstance(loaded.x, dict) and isinstance(loaded.history, gd.History)
    plain = np.load(path)  # readable without gdkernel
    np.testing.assert_array_equal(plain["cost"], memory.cost)
    np.testing.assert_array_equal(plain["learning_rate"], rates)
    # Independent check of one member: the closed form of the separable quadratic.
    x, its, _, _ = reference_gd(
        lambda v: 2 * (v - np.array([1.0, -2.0, -2.0])), [5.0, -1.0, -1.0], 0.3, 1e-4, 100
    )
    assert loaded.iterations[1, 2] == its
    np.testing.assert_allclose(loaded.x["a"][1, 2], x[0], rtol=1e-12)
    assert loaded.best().result.status == gd.Status.CONVERGED


def test_load_sweep_refuses_other_files(tmp_path):
    np.savez(tmp_path / "other.npz", cost=np.zeros(3))
    with pytest.raises(ValueError, match="not written by gdkernel"):
        gd.load_sweep(tmp_path / "other.npz")


def test_out_refuses_custom_pytrees_before_running(tmp_path):
    class Point(NamedTuple):
        a: np.ndarray
        b: np.ndarray

    with pytest.raises(TypeError, match="`initial_guesses` holds a Point"):
        gd.sweep(
            lambda p: p.a**2 + p.b**2,
            Point(np.ones(3), np.ones(3)),
            [0.1],
            out=tmp_path / "g.npz",
        )
    assert os.listdir(tmp_path) == []


def test_chunks_shared_by_threads_equal_one_thread(tmp_path):
    """Every chunk dealt to host threads in turn: the same members, bit for bit, streamed to a
    file or reported as progress, as on one thread and as one chunk."""
    guesses = np.linspace(-3, 3, 41)
    rates = np.geomspace(1e-3, 0.9, 7)
    kw = dict(precision=1e-5, max_iter=2000)
    whole = gd.sweep(lambda x: x**2 - x, guesses, rates, threads=1, **kw)
    reports = []
    for threads in (1, 2, 3):
        got = gd.sweep(
            lambda x: x**2 - x,
            guesses,
            rates,
            chunk_size=50,
            threads=threads,
            progress=reports.append,
            out=tmp_path / f"s{threads}.npz",
            **kw,
        )
        for field in ("x", "cost", "iterations", "status"):
            np.testing.assert_array_equal(
                np.asarray(getattr(got, field)), np.asarray(getattr(whole, field))
            )
        last = reports[-1]
        assert (last.members_done, last.running) == (287, 0)
        assert last.converged == int(np.sum(np.asarray(whole.status) == gd.Status.CONVERGED))
    assert all(0 <= p.running <= p.members_total for p in reports)
