"""Mini-batches: reproducible from the key, full batch at `batch_size = n`, the line fit
against `numpy.linalg.lstsq`, and the documented sample stream against a plain loop."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gdkernel as gd


def line_cost(w, X, y):
    return jnp.mean((w[0] + w[1] * X - y) ** 2)


def noisy_line(n, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.uniform(-1, 1, n)
    return X, 3.0 * X - 0.5 + rng.normal(0, 0.3, n)


def test_fits_a_line_to_100k_noisy_points_like_lstsq(x64):
    X, y = noisy_line(100_000)
    exact = np.linalg.lstsq(np.stack([np.ones_like(X), X], 1), y, rcond=None)[0]
    res = gd.gradient_descent(
        line_cost,
        jnp.zeros(2),
        0.05,
        args=(X, y),
        batch_size=512,
        key=jax.random.key(0),
        precision=0,
        max_iter=4000,
    )
    assert res.status.item() == gd.Status.MAX_ITER  # precision=0: the budget stops it
    np.testing.assert_allclose(res.x, exact, atol=0.02)
    # `cost` is on all the data: within 0.1% of the least-squares residual
    best = float(line_cost(exact, X, y))
    assert best <= float(res.cost) < 1.001 * best
    np.testing.assert_allclose(res.cost, line_cost(res.x, X, y), rtol=1e-12)


def test_same_key_same_run_other_key_other_run(x64):
    X, y = noisy_line(5_000)
    kw = dict(args=(X, y), batch_size=64, precision=0, max_iter=300)
    a = gd.gradient_descent(line_cost, jnp.zeros(2), 0.1, key=jax.random.key(7), **kw)
    b = gd.gradient_descent(line_cost, jnp.zeros(2), 0.1, key=jax.random.key(7), **kw)
    c = gd.gradient_descent(line_cost, jnp.zeros(2), 0.1, key=jax.random.key(8), **kw)
    raw = gd.gradient_descent(line_cost, jnp.zeros(2), 0.1, key=jax.random.PRNGKey(7), **kw)
    np.testing.assert_array_equal(a.x, b.x)
    np.testing.assert_array_equal(a.x, raw.x)  # a raw uint32 key is the same key
    assert not np.array_equal(a.x, c.x)


def test_batch_of_every_point_is_full_batch_descent(x64):
    X, y = noisy_line(1_000)
    full = gd.gradient_descent(line_cost, jnp.zeros(2), 0.3, args=(X, y), max_iter=500)
    whole = gd.gradient_descent(
        line_cost,
        jnp.zeros(2),
        0.3,
        args=(X, y),
        max_iter=500,
        batch_size=1_000,
        key=jax.random.key(0),
    )
    assert int(whole.iterations) == int(full.iterations)
    assert whole.status.item() == full.status.item() == gd.Status.CONVERGED
    np.testing.assert_array_equal(whole.x, full.x)


def test_each_iteration_sees_the_documented_sample(x64):
    """A plain loop: the gradient after iteration k sees the rows
    `randint(fold_in(key, k), (B,), 0, n)` drawn as int32 (whatever x64 says: the same key
    draws the same rows in float32 and float64), with replacement."""
    X, y = noisy_line(2_000)
    key, batch, lr, steps = jax.random.key(3), 32, 0.2, 60
    w = np.zeros(2)
    for k in range(steps):
        with jax.enable_x64(False):  # the rows of float32, in both modes
            rows = np.asarray(jax.random.randint(jax.random.fold_in(key, k), (batch,), 0, 2_000))
        r = w[0] + w[1] * X[rows] - y[rows]
        w = w - lr * np.array([2 * r.mean(), 2 * (r * X[rows]).mean()])
    res = gd.gradient_descent(
        line_cost,
        jnp.zeros(2),
        lr,
        args=(X, y),
        batch_size=batch,
        key=key,
        precision=0,
        max_iter=steps,
    )
    np.testing.assert_allclose(res.x, w, rtol=1e-12)


@pytest.mark.parametrize("method", ["gd", "momentum", "adam"])
def test_sweep_members_share_the_stream_and_equal_lone_runs(x64, method):
    X, y = noisy_line(3_000)
    kw = dict(
        args=(X, y),
        batch_size=100,
        key=jax.random.key(1),
        precision=0,
        max_iter=200,
        method=method,
    )
    guesses = np.array([[0.0, 0.0], [1.0, -1.0]])
    grid = gd.sweep(line_cost, guesses, [0.01, 0.05], **kw)
    for i, lr in enumerate([0.01, 0.05]):
        for j in range(2):
            lone = gd.gradient_descent(line_cost, guesses[j], lr, **kw)
            np.testing.assert_allclose(grid.member(i, j).x, lone.x, rtol=1e-12)
            np.testing.assert_allclose(grid.cost[i, j], lone.cost, rtol=1e-12)


def test_unrolled_derivative_through_mini_batches(x64):
    X, y = noisy_line(2_000)

    def final(lr):
        res = gd.gradient_descent(
            line_cost,
            jnp.zeros(2),
            lr,
            args=(X, y),
            batch_size=50,
            key=jax.random.key(2),
            precision=0,
            max_iter=40,
            adjoint="unrolled",
        )
        return res.cost

    h = 1e-6
    fd = (final(0.1 + h) - final(0.1 - h)) / (2 * h)
    np.testing.assert_allclose(jax.grad(final)(0.1), fd, rtol=1e-5)


def test_bad_mini_batch_inputs_are_named():
    X, y = noisy_line(100)
    base = dict(args=(X, y), key=jax.random.key(0))
    with pytest.raises(ValueError, match=r"`batch_size` needs `key`"):
        gd.gradient_descent(line_cost, jnp.zeros(2), 0.1, args=(X, y), batch_size=10)
    with pytest.raises(ValueError, match=r"`key` is used only to draw mini-batches"):
        gd.gradient_descent(line_cost, jnp.zeros(2), 0.1, **base)
    with pytest.raises(ValueError, match=r"between 1 and the data size 100, got 101"):
        gd.gradient_descent(line_cost, jnp.zeros(2), 0.1, batch_size=101, **base)
    with pytest.raises(TypeError, match=r"`batch_size` must be an int"):
        gd.gradient_descent(line_cost, jnp.zeros(2), 0.1, batch_size=True, **base)
    with pytest.raises(ValueError, match=r"share the length of their leading axis"):
        gd.sweep(
            line_cost,
            jnp.zeros((1, 2)),
            0.1,
            args=(X, y[:50]),
            batch_size=10,
            key=jax.random.key(0),
        )
    with pytest.raises(ValueError, match=r"`args` holds no array"):
        gd.gradient_descent(
            lambda w: jnp.sum(w**2), jnp.zeros(2), 0.1, batch_size=1, key=jax.random.key(0)
        )
    with pytest.raises(TypeError, match=r"`key` must be a jax.random key"):
        gd.gradient_descent(line_cost, jnp.zeros(2), 0.1, args=(X, y), batch_size=5, key=3)


def test_compiled_sweep_with_mini_batches_equals_sweep(x64):
    X, y = noisy_line(500)
    kw = dict(args=(X, y), batch_size=20, key=jax.random.key(4), precision=0, max_iter=80)
    guesses = np.array([[0.0, 0.0], [1.0, 1.0]])
    compiled = gd.compile_sweep(line_cost, guesses, [0.05, 0.1], method="adam", **kw)
    direct = gd.sweep(line_cost, guesses, [0.02, 0.2], method="adam", **kw)
    np.testing.assert_array_equal(
        np.asarray(compiled(guesses, [0.02, 0.2]).x), np.asarray(direct.x)
    )
