"""The built-in costs against their closed-form minima, scipy and numpy.linalg.lstsq."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize

import gdkernel as gd
from gdkernel import functions
from gdkernel.functions import BUILTINS, HIMMELBLAU_MINIMA

# (name, cost, argmin, min_cost, learning rate): the minimum written out from each docstring's
# formula, and a learning rate below 2 / (largest curvature there); None where plain gradient
# descent is too slow to reach the minimum in a test (condition number ~3e4).
MINIMA = [
    ("quadratic default", functions.quadratic, 1 / 3, -3 - (-2) ** 2 / (4 * 3), 0.05),
    (
        "quadratic a=(1, 4, 2), 3 elements",
        lambda x: functions.quadratic(x, a=(1.0, 4.0, 2.0)),
        np.full(3, -4 / (2 * 2)),
        3 * (1 - 4**2 / (4 * 2)),
        0.05,
    ),
    ("rosenbrock 2-D", functions.rosenbrock, np.ones(2), 0.0, 1e-3),
    ("rosenbrock 5-D", functions.rosenbrock, np.ones(5), 0.0, 1e-3),
    (
        "rosenbrock 2-D a=2",
        lambda x: functions.rosenbrock(x, a=2.0),
        np.array([2.0, 4.0]),
        0.0,
        None,
    ),
    ("himmelblau (3, 2)", functions.himmelblau, np.array([3.0, 2.0]), 0.0, 0.01),
    ("rastrigin 2-D", functions.rastrigin, np.zeros(2), 0.0, 1e-3),
    ("rastrigin 4-D, A=3", lambda x: functions.rastrigin(x, A=3.0), np.zeros(4), 0.0, 1e-3),
]
IDS = [m[0] for m in MINIMA]
REACHABLE = [m for m in MINIMA if m[4] is not None]


@pytest.mark.parametrize(("name", "cost", "argmin", "min_cost", "lr"), MINIMA, ids=IDS)
def test_value_and_gradient_at_the_documented_minimum(x64, name, cost, argmin, min_cost, lr):
    value, grad = jax.jit(jax.value_and_grad(cost))(jnp.asarray(argmin, dtype=jnp.float64))
    np.testing.assert_allclose(float(value), min_cost, atol=1e-14)
    assert np.max(np.abs(np.asarray(grad))) < 1e-12


@pytest.mark.parametrize(
    ("name", "cost", "argmin", "min_cost", "lr"), REACHABLE, ids=[m[0] for m in REACHABLE]
)
def test_gradient_descent_reaches_the_documented_minimum(x64, name, cost, argmin, min_cost, lr):
    offset = 0.05 * (-1.0) ** np.arange(np.size(argmin))
    start = np.asarray(argmin) + offset.reshape(np.shape(argmin))
    res = gd.gradient_descent(cost, start, lr, precision=1e-13, max_iter=100_000)
    assert res.status == gd.Status.CONVERGED, res.message
    np.testing.assert_allclose(np.asarray(res.x), argmin, atol=1e-6)
    assert abs(float(res.cost) - min_cost) < 1e-10


def test_rosenbrock_minimum_is_not_a_powers_chain_beyond_2d(x64):
    # For a != 1 the 2-D minimiser (a, a^2) does not extend to (a, a^2, a^4) in 3-D.
    cost = lambda x: functions.rosenbrock(x, a=2.0)  # noqa: E731
    assert float(cost(jnp.array([2.0, 4.0, 16.0]))) > 0
    best = scipy.optimize.minimize(lambda v: float(cost(jnp.asarray(v))), [1.5, 2.0, 4.0])
    assert best.fun < float(cost(jnp.array([2.0, 4.0, 16.0])))
    assert best.fun > 1e-3  # and the minimum is above 0, as documented


def _himmelblau_grad(v):
    x, y = v
    return [
        4 * x * (x**2 + y - 11) + 2 * (x + y**2 - 7),
        2 * (x**2 + y - 11) + 4 * y * (x + y**2 - 7),
    ]


@pytest.mark.parametrize("minimum", HIMMELBLAU_MINIMA)
def test_himmelblau_minima(x64, minimum):
    # The documented values are the roots of the gradient (scipy) to 6 decimals ...
    root = scipy.optimize.fsolve(_himmelblau_grad, minimum, xtol=1e-14)
    np.testing.assert_allclose(root, minimum, atol=5e-7)
    assert float(functions.himmelblau(jnp.asarray(root))) < 1e-20
    # ... where the cost is ~0 and the gradient ~0 ...
    value, grad = jax.jit(jax.value_and_grad(functions.himmelblau))(jnp.asarray(minimum))
    assert float(value) < 1e-10
    assert np.max(np.abs(np.asarray(grad))) < 1e-4
    # ... and gradient descent started nearby finds the same point.
    res = gd.gradient_descent(
        functions.himmelblau, np.asarray(minimum) + 0.1, 0.01, precision=1e-14, max_iter=10_000
    )
    assert res.status == gd.Status.CONVERGED
    np.testing.assert_allclose(np.asarray(res.x), root, atol=1e-9)


@pytest.mark.parametrize("name", sorted(BUILTINS))
def test_builtins_converge_from_their_start(x64, name):
    b = BUILTINS[name]
    assert len(b.x0) == len(b.argmin) == b.dim
    x0 = b.x0[0] if b.dim == 1 else np.array(b.x0)
    argmin = jnp.asarray(b.argmin[0] if b.dim == 1 else b.argmin)
    # The table's own minimum is right: its cost and (zero) gradient.
    value, grad = jax.jit(jax.value_and_grad(b.fn))(argmin)
    np.testing.assert_allclose(float(value), b.min_cost, atol=1e-14)
    assert np.max(np.abs(np.asarray(grad))) < 1e-12
    res = gd.gradient_descent(b.fn, x0, b.learning_rate, precision=1e-12, max_iter=200_000)
    assert res.status == gd.Status.CONVERGED, res.message
    np.testing.assert_allclose(np.asarray(res.x), np.asarray(argmin), atol=1e-6)
    assert abs(float(res.cost) - b.min_cost) < 1e-10


# ------------------------------------------------------------------------ least squares


def _line_data(n=50, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.uniform(0.0, 2.0, n)
    y = 1.5 + 0.7 * X + rng.normal(0.0, 0.3, n)
    return X, y


def test_residuals_are_the_textbook_sums(x64):
    X, y = _line_data()
    params = {"b0": 0.3, "b1": -1.2}
    rss = np.sum((y - (0.3 - 1.2 * X)) ** 2)
    np.testing.assert_allclose(
        float(functions.residual_sum_of_squares(params, X, y)), rss, rtol=1e-14
    )
    np.testing.assert_allclose(
        float(functions.mean_squared_error(params, X, y)), rss / len(y), rtol=1e-14
    )


@pytest.mark.parametrize(
    ("cost", "learning_rate"),
    [(functions.mean_squared_error, 0.2), (functions.residual_sum_of_squares, 0.2 / 50)],
    ids=["mse", "rss"],
)
def test_line_fit_matches_lstsq(x64, cost, learning_rate):
    X, y = _line_data()
    (b0, b1), *_ = np.linalg.lstsq(np.column_stack([np.ones_like(X), X]), y, rcond=None)
    guess = {"b0": 0.0, "b1": 0.0}
    res = gd.gradient_descent(
        cost, guess, learning_rate, args=(X, y), precision=1e-13, max_iter=50_000
    )
    assert res.status == gd.Status.CONVERGED, res.message
    np.testing.assert_allclose(float(res.x["b0"]), b0, atol=1e-8)
    np.testing.assert_allclose(float(res.x["b1"]), b1, atol=1e-8)
    assert guess == {"b0": 0.0, "b1": 0.0}


@pytest.mark.parametrize(
    ("cost", "learning_rate"),
    [(functions.mean_squared_error, 0.1), (functions.residual_sum_of_squares, 0.1 / 60)],
    ids=["mse", "rss"],
)
def test_multi_feature_fit_matches_lstsq(x64, cost, learning_rate):
    rng = np.random.default_rng(1)
    X = rng.normal(size=(60, 3))
    y = 0.5 + X @ np.array([1.0, -2.0, 0.25]) + rng.normal(0.0, 0.1, 60)
    coef, *_ = np.linalg.lstsq(np.column_stack([np.ones(60), X]), y, rcond=None)
    guess = {"b0": 0.0, "b": np.zeros(3)}
    res = gd.gradient_descent(
        cost, guess, learning_rate, args=(X, y), precision=1e-13, max_iter=50_000
    )
    assert res.status == gd.Status.CONVERGED, res.message
    np.testing.assert_allclose(float(res.x["b0"]), coef[0], atol=1e-8)
    np.testing.assert_allclose(np.asarray(res.x["b"]), coef[1:], atol=1e-8)
    assert not guess["b"].any()
