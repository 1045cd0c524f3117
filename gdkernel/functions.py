r"""Built-in cost functions: plain JAX functions with known minima.

Each takes the parameter `x` first (then data, for the least-squares costs) and returns a
real scalar, so it can be passed straight to `gradient_descent` or `sweep`.

Example:
    >>> import gdkernel as gd
    >>> from gdkernel import functions
    >>> res = gd.gradient_descent(functions.quadratic, 8, 0.01, precision=1e-6, max_iter=5000)
    >>> round(float(res.x), 3)  # the minimum of 3x^2 - 2x - 3 is at 1/3
    0.333
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax.numpy as jnp
from jax import Array

PyTree = Any

# The NumPy tutorial's coefficients: f(x) = 3x^2 - 2x - 3.
TUTORIAL_COEFFICIENTS = (-3.0, -2.0, 3.0)


def quadratic(x: Array, a: Any = TUTORIAL_COEFFICIENTS) -> Array:
    r"""The NumPy tutorial's quadratic $f(x) = a_2 x^2 + a_1 x + a_0$, summed over elements.

    Minimum (for $a_2 > 0$): $x^* = -a_1 / (2 a_2)$, $f(x^*) = a_0 - a_1^2 / (4 a_2)$ per
    element; with the default $a = (-3, -2, 3)$, $x^* = 1/3$ and $f(x^*) = -10/3$.

    Args:
        x: a scalar or an array (the cost is summed over its elements).
        a: the coefficients $(a_0, a_1, a_2)$.
    """
    a = jnp.asarray(a, dtype=jnp.result_type(x, float))
    return jnp.sum(a[2] * x * x + a[1] * x + a[0])


def rosenbrock(x: Array, a: float = 1.0, b: float = 100.0) -> Array:
    r"""Rosenbrock's valley $\sum_i (a - x_i)^2 + b (x_{i+1} - x_i^2)^2$ over consecutive pairs.

    Minimum: for the default $a = 1$, $x^* = (1, \dots, 1)$ with $f(x^*) = 0$ in any
    dimension; in 2-D, $x^* = (a, a^2)$ with $f(x^*) = 0$ for any $a$ (beyond 2-D and for
    $a \notin \{0, 1\}$ the terms cannot all vanish and the minimum is above 0).
    A narrow curved valley: plain gradient descent needs a small learning rate (about 1e-3
    in 2-D) and many iterations.

    Args:
        x: an array with at least 2 elements.
    """
    x = jnp.asarray(x)
    return jnp.sum((a - x[:-1]) ** 2 + b * (x[1:] - x[:-1] ** 2) ** 2)


def himmelblau(x: Array) -> Array:
    r"""Himmelblau's function $(x_0^2 + x_1 - 11)^2 + (x_0 + x_1^2 - 7)^2$ in 2-D.

    Four minima, each with $f = 0$: $(3, 2)$, $(-2.805118, 3.131312)$,
    $(-3.779310, -3.283186)$ and $(3.584428, -1.848126)$.
    """
    return (x[0] ** 2 + x[1] - 11) ** 2 + (x[0] + x[1] ** 2 - 7) ** 2


HIMMELBLAU_MINIMA = (
    (3.0, 2.0),
    (-2.805118, 3.131312),
    (-3.779310, -3.283186),
    (3.584428, -1.848126),
)


def rastrigin(x: Array, A: float = 10.0) -> Array:
    r"""Rastrigin's function $A n + \sum_i (x_i^2 - A \cos(2\pi x_i))$.

    Global minimum $f(0) = 0$, surrounded by a regular grid of local minima near the
    integers: a test of how a sweep over starting points explores. Computed as
    $\sum_i (x_i^2 + 2A \sin^2(\pi x_i))$, the same function without the cancellation of
    $A n$ against the cosines (in float32 that rounded costs near the minimum to steps of
    about 2e-6, and to exactly 0 at $x = (7.6 \cdot 10^{-5}, -2.5 \cdot 10^{-5})$).
    """
    x = jnp.asarray(x)
    return jnp.sum(x**2 + 2 * A * jnp.sin(jnp.pi * x) ** 2)


def _predict(params: PyTree, X: Array) -> Array:
    """`b0 + b1 * X` for a line, or `b0 + X @ b` for several features."""
    if "b" in params:
        return params["b0"] + jnp.asarray(X) @ params["b"]
    return params["b0"] + params["b1"] * jnp.asarray(X)


def residual_sum_of_squares(params: PyTree, X: Array, y: Array) -> Array:
    r"""The residual sum of squares $\sum_i (y_i - \hat y_i)^2$ of a linear model.

    For a line, `params = {"b0": intercept, "b1": slope}` and $\hat y = b_0 + b_1 X$ (`X` of
    shape `(n,)`); for several features, `params = {"b0": intercept, "b": weights}` and
    $\hat y = b_0 + X b$ (`X` of shape `(n, d)`). Minimum: the least-squares solution
    (`numpy.linalg.lstsq` of `[1, X]` against `y`).
    """
    return jnp.sum((jnp.asarray(y) - _predict(params, X)) ** 2)


def mean_squared_error(params: PyTree, X: Array, y: Array) -> Array:
    r"""The mean squared error $\frac{1}{n}\sum_i (y_i - \hat y_i)^2$ of a linear model.

    Same model and minimum as `residual_sum_of_squares`; dividing by $n$ keeps a good
    learning rate independent of the number of points (about 0.1 to 0.5 for `X` of order 1).
    """
    return jnp.mean((jnp.asarray(y) - _predict(params, X)) ** 2)


class Builtin(NamedTuple):
    """A built-in cost with what a command line or a demo needs to run it."""

    fn: Callable[..., Array]
    dim: int  # 1: a scalar x; else the length of the vector x
    x0: tuple[float, ...]  # a default starting point
    argmin: tuple[float, ...]  # a known minimiser
    min_cost: float
    learning_rate: float  # a learning rate that converges from x0


BUILTINS: dict[str, Builtin] = {
    "quadratic": Builtin(quadratic, 1, (8.0,), (1 / 3,), -10 / 3, 0.001),
    "rosenbrock": Builtin(rosenbrock, 2, (-1.2, 1.0), (1.0, 1.0), 0.0, 1e-3),
    "himmelblau": Builtin(himmelblau, 2, (0.0, 0.0), (3.0, 2.0), 0.0, 0.01),
    "rastrigin": Builtin(rastrigin, 2, (0.4, -0.3), (0.0, 0.0), 0.0, 0.001),
}
