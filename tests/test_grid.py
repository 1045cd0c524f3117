"""Grids over any hyperparameter: `momentum`, `precision`, `grad_tol` and `hyperparams` as
axes, each member equal to a lone run with those scalars (or to the plain-Python loop)."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import reference_gd

import gdkernel as gd


def rosenbrock(x):
    return (1 - x[0]) ** 2 + 100 * (x[1] - x[0] ** 2) ** 2


GUESSES = np.array([[-1.2, 1.0], [0.0, 0.0], [1.5, 2.0]])
RATES = np.array([0.005, 0.02])
B1 = np.array([0.5, 0.8, 0.9, 0.95])


def test_learning_rate_by_b1_by_guess_equals_lone_runs(x64):
    grid = gd.sweep(
        rosenbrock,
        GUESSES,
        RATES,
        method="adam",
        hyperparams={"b1": B1, "b2": 0.99},
        max_iter=3000,
        precision=1e-6,
    )
    assert grid.axes == ("learning_rate", "b1", "initial_guess")
    assert grid.status.shape == (2, 4, 3)
    assert grid.x.shape == (2, 4, 3, 2)
    np.testing.assert_array_equal(grid.coords["b1"], B1)
    for i, k, j in itertools.product(range(2), range(4), range(3)):
        lone = gd.gradient_descent(
            rosenbrock,
            GUESSES[j],
            RATES[i],
            method="adam",
            hyperparams={"b1": B1[k], "b2": 0.99},
            max_iter=3000,
            precision=1e-6,
        )
        member = grid.member(i, k, j)
        assert int(member.iterations) == int(lone.iterations), (i, k, j)
        assert int(member.status) == int(lone.status)
        np.testing.assert_allclose(member.x, lone.x, rtol=1e-9, atol=1e-12)


def test_learning_rate_by_momentum_by_precision_equals_the_plain_loop(x64):
    guesses = np.linspace(-3.0, 4.0, 5)
    rates, moms, precisions = [0.01, 0.1], [0.0, 0.5, 0.9], [1e-3, 1e-6]
    grid = gd.sweep(
        lambda x: 3 * x**2 - 2 * x - 3,
        guesses,
        rates,
        method="momentum",
        momentum=moms,
        precision=precisions,
        max_iter=5000,
    )
    assert grid.axes == ("learning_rate", "momentum", "precision", "initial_guess")
    assert grid.status.shape == (2, 3, 2, 5)
    for (i, lr), (a, mu), (b, pr), (j, x0) in itertools.product(
        enumerate(rates), enumerate(moms), enumerate(precisions), enumerate(guesses)
    ):
        x, its, status, _ = reference_gd(
            lambda v: 6 * v - 2, [x0], lr, pr, 5000, method="momentum", momentum=mu
        )
        assert int(grid.iterations[i, a, b, j]) == its
        assert gd.Status(int(grid.status[i, a, b, j])).name == status.upper()
        np.testing.assert_allclose(grid.x[i, a, b, j], x[0], rtol=1e-12)


def test_grad_tol_axis_tells_stalled_from_converged(x64):
    """Near 0 the steps shrink below `precision` while the gradient is still about 1e-2."""
    grid = gd.sweep(
        lambda x: jnp.log(1 + x**2) + 0.001 * x,
        np.array([5.0, 2.0]),
        [1e-3],
        precision=1e-5,
        grad_tol=np.array([1e-4, 1.0]),
        max_iter=100000,
    )
    assert grid.axes == ("learning_rate", "grad_tol", "initial_guess")
    for k, tol in enumerate([1e-4, 1.0]):
        for j, x0 in enumerate([5.0, 2.0]):
            lone = gd.gradient_descent(
                lambda x: jnp.log(1 + x**2) + 0.001 * x,
                x0,
                1e-3,
                precision=1e-5,
                grad_tol=tol,
                max_iter=100000,
            )
            assert int(grid.status[0, k, j]) == int(lone.status)
            assert int(grid.iterations[0, k, j]) == int(lone.iterations)
    assert set(np.asarray(grid.status[0, 0]).tolist()) == {gd.Status.STALLED}
    assert set(np.asarray(grid.status[0, 1]).tolist()) == {gd.Status.CONVERGED}


def test_without_array_options_the_shape_is_unchanged():
    grid = gd.sweep(
        lambda x: x**2, np.linspace(-1, 1, 3), [0.1, 0.2], momentum=0.5, method="momentum"
    )
    assert grid.status.shape == (2, 3)
    assert grid.axes == ("learning_rate", "initial_guess")
    assert list(grid.coords) == ["learning_rate", "initial_guess"]


def test_best_gives_the_index_and_coordinates_on_every_axis(x64):
    grid = gd.sweep(
        lambda x: (x - 1.0) ** 2,
        np.array([-2.0, 0.5, 3.0]),
        [0.01, 0.3],
        method="nesterov",
        momentum=[0.2, 0.6],
        max_iter=2000,
    )
    best = grid.best()
    cost = np.where(grid.converged, np.asarray(grid.cost), np.inf)
    lowest = np.argwhere(cost == cost.min())
    assert best.index in {tuple(int(k) for k in row) for row in lowest}
    i, k, j = best.index
    assert best.coords == {
        "learning_rate": pytest.approx(grid.learning_rate[i]),
        "momentum": pytest.approx(grid.coords["momentum"][k]),
        "initial_guess": pytest.approx(grid.initial_guess[j]),
    }
    assert float(best.result.cost) == float(grid.cost[i, k, j])
    with pytest.raises(IndexError, match="one index per axis"):
        grid.member(0, 0)
    with pytest.raises(IndexError, match="axis 'momentum'"):
        grid.member(0, 2, 0)


class CountingCost:
    """A cost whose Python body runs only when JAX traces it."""

    def __init__(self):
        self.traces = 0

    def __call__(self, x):
        self.traces += 1
        return jnp.sum((x - 1.0) ** 2)


def test_new_hyperparameter_values_do_not_recompile():
    cost = CountingCost()
    guesses = np.zeros((4, 2))
    gd.sweep(cost, guesses, [0.01, 0.1], method="adam", hyperparams={"b1": [0.5, 0.9], "b2": 0.99})
    first = cost.traces
    assert first > 0
    gd.sweep(
        cost, guesses + 1, [0.02, 0.2], method="adam", hyperparams={"b1": [0.6, 0.99], "b2": 0.95}
    )
    assert cost.traces == first
    moms = dict(method="momentum", max_iter=50)
    gd.sweep(cost, guesses, [0.01, 0.1], momentum=[0.1, 0.5], precision=[1e-3, 1e-2], **moms)
    second = cost.traces
    gd.sweep(cost, guesses, [0.03, 0.2], momentum=[0.3, 0.7], precision=[1e-5, 1e-4], **moms)
    gd.sweep(cost, guesses - 1, [0.5, 0.6], momentum=[0.0, 0.9], precision=[0.0, 1.0], **moms)
    assert cost.traces == second


def test_tables_round_trip_a_three_axis_sweep(x64):
    grid = gd.sweep(
        rosenbrock,
        GUESSES,
        RATES,
        method="adam",
        hyperparams={"b1": B1},
        max_iter=800,
        precision=1e-6,
    )
    table = grid.to_dataframe()
    assert len(table) == 2 * 4 * 3
    assert list(table.columns[:4]) == [
        "learning_rate",
        "b1",
        "initial_guess[0]",
        "initial_guess[1]",
    ]
    for row in table.itertuples(index=False):
        i = int(np.flatnonzero(row[0] == RATES)[0])
        k = int(np.flatnonzero(row[1] == B1)[0])
        j = int(np.flatnonzero(([row[2], row[3]] == GUESSES).all(axis=1))[0])
        member = grid.member(i, k, j)
        assert (row[4], row[5]) == tuple(np.asarray(member.x).tolist())
        assert row.cost == float(member.cost) and row.iterations == int(member.iterations)
        assert row.status == gd.Status(int(member.status)).name
    ds = grid.to_xarray()
    assert tuple(ds.cost.dims) == grid.axes
    np.testing.assert_array_equal(ds.coords["b1"], B1)
    np.testing.assert_array_equal(ds.coords["initial_guess[0]"], GUESSES[:, 0])
    np.testing.assert_array_equal(ds["x[1]"].values, np.asarray(grid.x)[..., 1])
    picked = ds.sel(learning_rate=RATES[1], b1=B1[2]).isel(initial_guess=0)
    assert int(picked.iterations) == int(grid.iterations[1, 2, 0])
    names = ds.status.attrs["flag_meanings"].split()
    assert names[int(picked.status)] == gd.Status(int(grid.status[1, 2, 0])).name


def test_chunks_files_and_compiled_sweeps_carry_the_axes(tmp_path, x64):
    kwargs = dict(method="adam", hyperparams={"b1": B1}, max_iter=1500, precision=1e-6)
    whole = gd.sweep(rosenbrock, GUESSES, RATES, **kwargs)
    chunked = gd.sweep(rosenbrock, GUESSES, RATES, chunk_size=5, **kwargs)
    stored = gd.sweep(rosenbrock, GUESSES, RATES, out=tmp_path / "g.npz", **kwargs)
    loaded = gd.load_sweep(tmp_path / "g.npz")
    for other in (chunked, stored, loaded):
        assert other.axes == whole.axes
        np.testing.assert_array_equal(other.iterations, whole.iterations)
        np.testing.assert_array_equal(np.asarray(other.x), np.asarray(whole.x))
        np.testing.assert_array_equal(other.coords["b1"], B1)
    compiled = gd.compile_sweep(rosenbrock, GUESSES, RATES, **kwargs)
    again = compiled(GUESSES[::-1], RATES * 2)
    direct = gd.sweep(rosenbrock, GUESSES[::-1], RATES * 2, **kwargs)
    assert again.axes == direct.axes
    np.testing.assert_array_equal(again.iterations, direct.iterations)


def test_bad_axes_are_named():
    with pytest.raises(TypeError, match=r"`momentum` must be a scalar or a 1-D array"):
        gd.sweep(lambda x: x**2, [1.0], [0.1], method="momentum", momentum=np.ones((2, 2)))
    with pytest.raises(ValueError, match=r"`precision` is an empty grid axis"):
        gd.sweep(lambda x: x**2, [1.0], [0.1], precision=[])
    with pytest.raises(ValueError, match=r"`momentum` must be in \[0, 1\), got 1.5"):
        gd.sweep(lambda x: x**2, [1.0], [0.1], method="momentum", momentum=[0.5, 1.5])
    with pytest.raises(TypeError, match=r"`hyperparams\['b1'\]` must be a real number"):
        gd.sweep(lambda x: x**2, [1.0], [0.1], method="adam", hyperparams={"b1": [0.5, "a"]})


def test_float32_axes_keep_the_dtype():
    grid = gd.sweep(
        lambda x: x**2, np.float32([1.0, 2.0]), [0.1], method="adam", hyperparams={"b1": [0.5, 0.9]}
    )
    assert grid.coords["b1"].dtype == np.float32
    assert grid.x.dtype == np.float32
    assert jax.tree.leaves(grid.grid_axes)[0].shape == (2,)


def test_a_transformed_grid_still_prints():
    """`jax.tree.map` slicing, or a `vmap`, leaves fewer or more axes than names: the result
    prints field by field rather than raising."""
    grid = gd.sweep(
        lambda x: jnp.sum((x - 1.0) ** 2),
        np.zeros((3, 2)),
        [0.1],
        method="adam",
        hyperparams={"b1": [0.5, 0.9]},
    )
    sliced = jax.tree.map(lambda leaf: leaf[0], grid)
    assert repr(sliced).startswith("SweepResult(x=")
    assert "1 learning rate x 2 b1 x 3 guesses" in repr(grid)
