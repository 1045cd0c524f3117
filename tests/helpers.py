"""Independent references (plain-Python loops of the tutorials' algorithm) and a problem zoo."""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np

NORMS = {
    "l1": lambda d: float(np.sum(np.abs(d))),
    "l2": lambda d: float(np.sqrt(np.sum(np.square(d)))),
    "max": lambda d: float(np.max(np.abs(d))),
}


def reference_gd(
    grad,
    x0,
    lr,
    precision,
    max_iter,
    norm="l1",
    method="gd",
    momentum=0.9,
    cost=None,
    divergence=1e4,
):
    """The tutorials' loop in plain Python/NumPy float64. Returns (x, iterations, status, series).

    status is "converged", "max_iter" or (with `cost`) "diverged": the cost climbed above
    `f0 + divergence * max(|f0|, lr * |g0|^2)`, and `x` is the iterate before. series holds
    every iterate taken, the initial guess first.
    """
    x = np.asarray(x0, dtype=np.float64)
    v = np.zeros_like(x)
    series = [x.copy()]
    if cost is not None:
        f0, g0 = float(cost(x)), np.asarray(grad(x), dtype=np.float64)
        ceiling = f0 + divergence * max(abs(f0), lr * float(np.sum(g0 * g0)))
    for it in range(1, max_iter + 1):
        g = np.asarray(grad(x), dtype=np.float64)
        if method == "gd":
            new_x = x - lr * g
        elif method == "momentum":
            v = momentum * v + g
            new_x = x - lr * v
        else:
            v = momentum * v + g
            new_x = x - lr * (g + momentum * v)
        step = NORMS[norm](new_x - x)
        if cost is not None and float(cost(new_x)) > ceiling:
            return x, it - 1, "diverged", series
        x = new_x
        series.append(x.copy())
        if step < precision:
            return x, it, "converged", series
    return x, max_iter, "max_iter", series


def scalar_gd(grad, x0, lr, precision, max_iter):
    """The first tutorial's scalar loop, with Python floats only."""
    x = float(x0)
    for it in range(1, max_iter + 1):
        new_x = x - lr * grad(x)
        step = abs(new_x - x)
        x = new_x
        if step < precision:
            return x, it, "converged"
    return x, max_iter, "max_iter"


# The problem zoo: (name, cost_fn, initial_guess, argmin, min_cost)
def _rosenbrock(x):
    return (1 - x[0]) ** 2 + 100 * (x[1] - x[0] ** 2) ** 2


ZOO = [
    ("square", lambda x: x**2, 3.0, 0.0, 0.0),
    ("tutorial_quadratic", lambda x: 3 * x**2 - 2 * x - 3, 8.0, 1 / 3, -10 / 3),
    (
        "bowl",
        lambda x: jnp.sum((x - jnp.array([1.0, -2.0])) ** 2),
        np.zeros(2),
        np.array([1.0, -2.0]),
        0.0,
    ),
    ("rosenbrock", _rosenbrock, np.array([-1.2, 1.0]), np.array([1.0, 1.0]), 0.0),
]


def closed_form_square_iterations(x0, lr, precision, max_iter):
    """Iterations of x**2 from x0: the step at iteration k is 2*lr*|x0|*|1-2lr|**(k-1)."""
    r = abs(1 - 2 * lr)
    first = 2 * lr * abs(x0)
    if first < precision:
        return 1
    if r == 0:
        return min(2, max_iter)
    k = math.floor(math.log(precision / first) / math.log(r)) + 2
    return min(k, max_iter)


# A shifted bowl `sum((x - BOWL_CENTRE)**2)` swept over a small grid: the subprocess tests of
# several devices and several processes run it, and check it with `check_bowl_grid`.
BOWL_CENTRE = np.array([1.0, -2.0])
BOWL_GUESSES = [[0.0, 0.0], [3.0, 1.0], [-2.0, 4.0], [1.5, -1.0], [10.0, 0.5]]
BOWL_RATES = [0.02, 0.1, 0.45, 3.0]  # 3.0 diverges


def check_bowl_grid(grid: dict, precision: float = 1e-8, max_iter: int = 2000) -> dict:
    """Every member of a bowl sweep (`status`, `iterations`, `x` as nested lists) against the
    plain-Python loop; members with lr > 1 must have diverged. Returns the loop's series of
    iterates per converging member, keyed `(i, j)`."""
    import gdkernel as gd

    series = {}
    for i, lr in enumerate(BOWL_RATES):
        for j, x0 in enumerate(BOWL_GUESSES):
            if lr > 1:
                assert grid["status"][i][j] == gd.Status.DIVERGED
                continue
            x, its, _, path = reference_gd(
                lambda v: 2 * (v - BOWL_CENTRE), x0, lr, precision, max_iter
            )
            assert grid["iterations"][i][j] == its
            np.testing.assert_allclose(grid["x"][i][j], x, rtol=1e-12, atol=1e-12)
            series[i, j] = path
    return series
