"""Trajectories recorded inside the compiled loop, against plain-Python series."""

from fractions import Fraction

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import reference_gd

import gdkernel as gd

A = np.array([-3.0, -2.0, 3.0])  # the NumPy tutorial's f(x) = 3x^2 - 2x - 3
EPS = np.finfo(np.float64).eps


def tutorial_cost(x):
    return A[2] * x * x + A[1] * x + A[0]


def tutorial_grad(x):
    return 2 * A[2] * x + A[1]


def fused(a: float, b: float, c: float) -> float:
    """a * b + c rounded once (a fused multiply-add), exactly."""
    return float(Fraction(a) * Fraction(b) + Fraction(c))


def tutorial_series(x0, lr, precision, max_iter, fma):
    """The NumPy tutorial's loop in Python floats; the update `x - lr * g` is rounded once
    (as XLA compiles it where the hardware has a fused multiply-add) or twice."""
    x, series = float(x0), [float(x0)]
    for _ in range(max_iter):
        g = 2 * A[2] * x + A[1]
        new_x = fused(-lr, g, x) if fma else x - lr * g
        step, x = abs(new_x - x), new_x
        series.append(x)
        if step < precision:
            break
    return np.array(series)


def valid_rows(history_x) -> int:
    leaves = [np.asarray(leaf) for leaf in jax.tree.leaves(history_x)]
    finite = [np.isfinite(leaf.reshape(leaf.shape[0], -1)).all(axis=1) for leaf in leaves]
    return int(np.logical_and.reduce(finite).sum())


def assert_nan_after(history, n):
    """Rows 0..n-1 are finite, every later row is NaN, for every leaf and the cost."""
    for leaf in [*jax.tree.leaves(history.x), history.cost]:
        leaf = np.asarray(leaf).reshape(np.shape(leaf)[0], -1)
        assert np.isfinite(leaf[:n]).all()
        assert np.isnan(leaf[n:]).all()


def test_numpy_tutorial_series(x64):
    res = gd.gradient_descent(
        tutorial_cost,
        8,
        0.001,
        precision=1e-5,
        max_iter=500,
        grad_fn=tutorial_grad,
        history=True,
    )
    hx, hcost = np.asarray(res.history.x), np.asarray(res.history.cost)
    assert hx.shape == hcost.shape == (501,)
    assert int(res.iterations) == 500 and res.status == gd.Status.MAX_ITER
    # Bit for bit: XLA may fuse `x - lr * g` into one rounding, so either loop is the reference.
    unfused = tutorial_series(8, 0.001, 1e-5, 500, fma=False)
    with_fma = tutorial_series(8, 0.001, 1e-5, 500, fma=True)
    assert len(unfused) == len(with_fma) == 501
    assert np.array_equal(hx, unfused) or np.array_equal(hx, with_fma)
    # The two differ by rounding only: both are the tutorial's series.
    np.testing.assert_allclose(hx, unfused, rtol=1e-13)
    # And the independent helper's float64 loop agrees to rounding.
    _, it_ref, status_ref, series = reference_gd(tutorial_grad, 8, 0.001, 1e-5, 500)
    assert (it_ref, status_ref) == (500, "max_iter")
    np.testing.assert_allclose(hx, np.array(series), rtol=1e-13)
    # The cost at every recorded iterate, to rounding of its three terms.
    scale = np.abs(A[2] * hx * hx) + np.abs(A[1] * hx) + abs(A[0])
    np.testing.assert_array_less(np.abs(hcost - tutorial_cost(hx)), 4 * EPS * scale)
    assert hx[-1] == float(res.x) and hcost[-1] == float(res.cost)


def test_exact_dyadic_series_and_nan_padding(x64):
    # x**2 with lr 1/4 halves x each step: every number is exact, so no rounding at all.
    res = gd.gradient_descent(lambda x: x**2, 3.0, 0.25, precision=1e-6, max_iter=100, history=True)
    _, it_ref, status_ref, series = reference_gd(lambda x: 2 * x, 3.0, 0.25, 1e-6, 100)
    k = int(res.iterations)
    assert status_ref == "converged" and k == it_ref < 100
    hx, hcost = np.asarray(res.history.x), np.asarray(res.history.cost)
    assert hx.shape == (101,)
    assert np.array_equal(hx[: k + 1], np.array(series))
    assert np.array_equal(hx[: k + 1], 3.0 * 0.5 ** np.arange(k + 1))
    assert np.array_equal(hcost[: k + 1], 9.0 * 0.25 ** np.arange(k + 1))
    assert_nan_after(res.history, k + 1)
    assert valid_rows(res.history.x) == k + 1


@pytest.mark.parametrize("every", [3, 7, 500, 600])
def test_history_every(x64, every):
    max_iter = 500
    run = dict(precision=1e-3, max_iter=max_iter, history=True)
    res = gd.gradient_descent(lambda x: x**2, 3.0, 0.01, history_every=every, **run)
    full = gd.gradient_descent(lambda x: x**2, 3.0, 0.01, **run)  # every iterate
    _, it_ref, _, series = reference_gd(lambda x: 2 * x, 3.0, 0.01, 1e-3, max_iter)
    k = int(res.iterations)
    assert k == it_ref == int(full.iterations) and k < max_iter
    rows = max_iter // every + 1
    hx = np.asarray(res.history.x)
    assert hx.shape == (rows,) and res.history.cost.shape == (rows,)
    recorded = k // every + 1  # iterates 0, every, 2 * every, ... up to the last one
    # Row r is iterate r * every: the plain-Python series to rounding, the full history exactly.
    np.testing.assert_allclose(hx[:recorded], np.array(series)[::every][:recorded], rtol=1e-13)
    assert np.array_equal(hx[:recorded], np.asarray(full.history.x)[::every][:recorded])
    assert np.array_equal(
        np.asarray(res.history.cost)[:recorded], np.asarray(full.history.cost)[::every][:recorded]
    )
    np.testing.assert_allclose(
        np.asarray(res.history.cost[:recorded]), hx[:recorded] ** 2, rtol=4 * EPS
    )
    assert_nan_after(res.history, recorded)


def test_history_every_with_max_iter(x64):
    # max_iter 10, every 4: rows hold iterates 0, 4, 8; the final iterate 10 is in res.x only.
    res = gd.gradient_descent(
        lambda x: x**2, 1.0, 0.25, precision=0.0, max_iter=10, history=True, history_every=4
    )
    assert res.status == gd.Status.MAX_ITER and int(res.iterations) == 10
    assert np.array_equal(np.asarray(res.history.x), [1.0, 0.5**4, 0.5**8])
    assert float(res.x) == 0.5**10


def test_no_history_by_default_and_bad_every():
    assert gd.gradient_descent(lambda x: x**2, 3.0, 0.1).history is None
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="`history_every`"):
            gd.gradient_descent(lambda x: x**2, 3.0, 0.1, history=True, history_every=bad)
    # traced under the user's jit: it sizes the history, so it must be static
    run = jax.jit(
        lambda k: gd.gradient_descent(lambda x: x**2, 3.0, 0.1, history=True, history_every=k)
    )
    with pytest.raises(TypeError, match=r"^`history_every` must be a concrete Python int"):
        run(5)


def test_pytree_history(x64):
    target = np.array([1.0, -2.0, 0.5])

    def cost(p):
        return (p["a"] - 3.0) ** 2 + jnp.sum((p["b"] - target) ** 2)

    def grad(v):  # v = [a, b0, b1, b2]
        return 2 * (v - np.concatenate([[3.0], target]))

    x0 = {"a": 0.0, "b": np.zeros(3)}
    res = gd.gradient_descent(cost, x0, 0.1, precision=1e-6, max_iter=300, history=True)
    _, it_ref, status_ref, series = reference_gd(grad, np.zeros(4), 0.1, 1e-6, 300)
    k = int(res.iterations)
    assert status_ref == "converged" and k == it_ref
    assert set(res.history.x) == {"a", "b"}
    assert res.history.x["a"].shape == (301,) and res.history.x["b"].shape == (301, 3)
    series = np.array(series)
    np.testing.assert_allclose(np.asarray(res.history.x["a"][: k + 1]), series[:, 0], rtol=1e-13)
    np.testing.assert_allclose(np.asarray(res.history.x["b"][: k + 1]), series[:, 1:], rtol=1e-13)
    ref_cost = (series[:, 0] - 3.0) ** 2 + np.sum((series[:, 1:] - target) ** 2, axis=1)
    np.testing.assert_allclose(
        np.asarray(res.history.cost[: k + 1]), ref_cost, rtol=1e-14, atol=1e-300
    )
    assert_nan_after(res.history, k + 1)
    assert x0["a"] == 0.0 and not x0["b"].any()  # the input is untouched


def divergent_series(x0: float, lr: float, max_iter: int, ceiling: float = np.inf):
    """x**2 from x0: x_{k+1} = (1 - 2 lr) x_k, kept while the cost and gradient stay finite
    and the cost at most `ceiling`."""
    series = [x0]
    with np.errstate(over="ignore"):
        for _ in range(max_iter):
            new = np.float64(series[-1]) * (1 - 2 * lr)
            finite = np.isfinite(new) and np.isfinite(new * new) and np.isfinite(2 * new)
            if not finite or new * new > ceiling:
                return np.array(series), "diverged"
            series.append(float(new))
    return np.array(series), "max_iter"


@pytest.mark.parametrize("divergence", [None, 1e4, 1e100])
def test_diverging_member(x64, divergence):
    res = gd.gradient_descent(
        lambda x: x**2, 3.0, 1.5, max_iter=2000, history=True, divergence=divergence
    )
    # the rule's ceiling: f0 + d * max(|f0|, lr * f'(x0)**2) = 9 + d * 54
    ceiling = np.inf if divergence is None else 9 + divergence * 54
    series, status = divergent_series(3.0, 1.5, 2000, ceiling)  # x doubles, flips sign: exact
    assert status == "diverged" and res.status == gd.Status.DIVERGED
    k = int(res.iterations)
    assert k == len(series) - 1
    hx = np.asarray(res.history.x)
    assert np.array_equal(hx[: k + 1], series)  # the non-finite iterate was not recorded
    assert np.array_equal(np.asarray(res.history.cost[: k + 1]), series**2)
    assert_nan_after(res.history, k + 1)
    assert valid_rows(res.history.x) == k + 1


def test_sweep_history_matches_lone_runs(x64):
    guesses = jnp.array([[3.0, -1.0], [-2.0, 0.5], [0.25, 4.0]])
    rates = jnp.array([0.05, 0.2, 1000.0])  # max_iter, converged, diverged

    def cost(x):
        return jnp.sum(x**2 * jnp.array([1.0, 0.5]))

    opts = dict(precision=1e-6, max_iter=120, history=True, history_every=3)
    grid = gd.sweep(cost, guesses, rates, **opts)
    rows = 120 // 3 + 1
    assert grid.history.x.shape == (3, 3, rows, 2)
    assert grid.history.cost.shape == (3, 3, rows)
    statuses = set()
    for i in range(3):
        for j in range(3):
            lone = gd.gradient_descent(cost, guesses[j], rates[i], **opts)
            member = grid.member(i, j)
            assert int(member.iterations) == int(lone.iterations)
            np.testing.assert_array_equal(member.history.x, lone.history.x)
            # The batched program may round the two-term cost differently (fused or not).
            np.testing.assert_allclose(member.history.cost, lone.history.cost, rtol=4 * EPS)
            assert valid_rows(member.history.x) == int(lone.iterations) // 3 + 1
            statuses.add(gd.Status(int(member.status)))
    assert statuses == {gd.Status.CONVERGED, gd.Status.MAX_ITER, gd.Status.DIVERGED}
    # The diverged members' rows follow x_k = (1 - lr * (2, 1))**k * x0 up to their last
    # finite iterate, NaN after.
    factors = 1 - float(rates[2]) * np.array([2.0, 1.0])
    for j in range(3):
        member = grid.member(2, j)
        assert member.status == gd.Status.DIVERGED
        recorded = int(member.iterations) // 3 + 1
        powers = 3 * np.arange(recorded)[:, None]
        np.testing.assert_allclose(
            np.asarray(member.history.x[:recorded]),
            np.asarray(guesses[j]) * factors**powers,
            rtol=1e-12,
        )
        assert_nan_after(member.history, recorded)


def test_history_under_vmap_and_jit(x64):
    def cost(x):
        return (x - 1.0) ** 2

    def run(x0, lr):
        return gd.gradient_descent(cost, x0, lr, precision=1e-8, max_iter=200, history=True)

    x0s = jnp.array([5.0, -3.0, 1.5])
    lrs = jnp.array([0.1, 0.3, 0.45])
    batched = jax.vmap(run)(x0s, lrs)
    jitted = jax.jit(run)(x0s[1], lrs[1])
    assert batched.history.x.shape == (3, 201)
    assert jitted.history.x.shape == (201,)
    for b in range(3):
        x0, lr = float(x0s[b]), float(lrs[b])
        _, it_ref, _, series = reference_gd(lambda x: 2 * (x - 1.0), x0, lr, 1e-8, 200)
        k = int(batched.iterations[b])
        assert k == it_ref
        np.testing.assert_allclose(np.asarray(batched.history.x[b, : k + 1]), series, rtol=1e-13)
        assert np.isnan(np.asarray(batched.history.x[b, k + 1 :])).all()
        lone = run(x0, lr)
        np.testing.assert_array_equal(batched.history.x[b], lone.history.x)
    np.testing.assert_array_equal(jitted.history.x, run(float(x0s[1]), float(lrs[1])).history.x)


def _equations(jaxpr):
    """Every equation of a jaxpr, nested loops and branches included."""
    for eqn in jaxpr.eqns:
        yield eqn
        for value in eqn.params.values():
            for sub in value if isinstance(value, (tuple, list)) else (value,):
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    yield from _equations(inner)


def test_batched_loop_writes_rows_without_selecting_the_buffer():
    # A whole-buffer select per masked step would make a sweep with history quadratic in
    # max_iter; rows must only be written (scattered) into the buffer.
    from gdkernel import _batch, _kernel, _solve

    members, max_iter = 7, 50
    opts = _solve.make_options("l1", "gd", True, None, max_iter)
    params = _solve.make_params(np.float32, 0.1, 1e-4, np.inf, 0.9, max_iter)
    params = params._replace(learning_rate=jnp.full(members, 0.1, dtype=jnp.float32))
    value_and_grad = _kernel.make_value_and_grad(lambda x: x**2, None)
    jaxpr = jax.make_jaxpr(lambda x0: _batch.solve_batch(value_and_grad, x0, params, (), opts))(
        jnp.linspace(-1.0, 1.0, members)
    )
    buffer_shape = (members, max_iter + 1)
    selects = [
        eqn
        for eqn in _equations(jaxpr.jaxpr)
        if eqn.primitive.name == "select_n"
        and any(tuple(v.aval.shape) == buffer_shape for v in eqn.outvars)
    ]
    scatters = [eqn for eqn in _equations(jaxpr.jaxpr) if eqn.primitive.name.startswith("scatter")]
    assert scatters, "no row is written"
    assert not selects, f"{len(selects)} whole-buffer selects in the loop"
