"""The benchmark workloads W1-W4: cost, hand-written gradient, grid and stopping rule.

Every implementation runs the same members, laid out as `gd.sweep` lays them out
(learning-rate-major: member `i * n_guesses + j` is learning rate `i` from guess `j`), and
stops a member at the first iteration whose step satisfies `||x_new - x||_2 < precision`
(that iteration counts), or after `max_iter` iterations.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import jax.numpy as jnp
import numpy as np


@dataclass(frozen=True)
class Problem:
    """One workload at one size.

    Attributes:
        name: workload id, e.g. `"W1"`.
        cost: the JAX cost `cost(x, *args) -> scalar` for one member.
        grad_np: the gradient for a batch of members in NumPy: `grad_np(x, *args)`, with the
            members on the leading axis of `x`.
        guesses: the starting points, shape `(n_guesses, *x_shape)`.
        rates: the learning rates, shape `(n_lr,)`.
        precision, max_iter: the stopping rule.
        args: extra arrays passed to the cost.
        dtype: `"float32"` or `"float64"`.
    """

    name: str
    cost: Callable[..., Any]
    grad_np: Callable[..., np.ndarray]
    guesses: np.ndarray
    rates: np.ndarray
    precision: float
    max_iter: int
    args: tuple = field(default=())
    dtype: str = "float32"

    @property
    def size(self) -> int:
        return self.rates.size * self.guesses.shape[0]

    def members(self) -> tuple[np.ndarray, np.ndarray]:
        """(x0, learning rate) of every member, learning-rate-major."""
        x0 = np.tile(self.guesses, (self.rates.size,) + (1,) * (self.guesses.ndim - 1))
        return x0, np.repeat(self.rates, self.guesses.shape[0]).astype(self.dtype)


def quadratic(x: Any) -> Any:
    """The tutorials' `f(x) = 3x^2 - 2x - 3`."""
    return 3 * x**2 - 2 * x - 3


def rosenbrock(x: Any) -> Any:
    return (1 - x[0]) ** 2 + 100 * (x[1] - x[0] ** 2) ** 2


def square(x: Any) -> Any:
    return x**2


def line_mse(b: Any, X: Any, y: Any) -> Any:
    """Mean squared error of the line `b[0] + b[1] X`."""
    return jnp.mean((y - b[0] - b[1] * X) ** 2)


def _rosenbrock_grad(x: np.ndarray) -> np.ndarray:
    a, b = x[:, 0], x[:, 1]
    return np.stack([-2 * (1 - a) - 400 * a * (b - a * a), 200 * (b - a * a)], axis=1)


def _line_grad(b: np.ndarray, X: np.ndarray, y: np.ndarray) -> np.ndarray:
    r = y[None, :] - b[:, :1] - b[:, 1:] * X[None, :]
    return np.stack([-2 * r.mean(axis=1), -2 * (r * X[None, :]).mean(axis=1)], axis=1)


def w1(batch: int, learning_rate: float) -> Problem:
    """W1: the quadratic from `batch` float32 guesses in [-10, 10], 500 iterations at most."""
    guesses = np.random.default_rng(0).uniform(-10, 10, batch).astype(np.float32)
    return Problem(
        "W1",
        quadratic,
        lambda x: 6 * x - 2,
        guesses,
        np.array([learning_rate], np.float32),
        precision=1e-5,
        max_iter=500,
    )


def w2(batch: int, dtype: str = "float64") -> Problem:
    """W2: Rosenbrock in 2-D, lr 1e-3, 10,000 iterations; float64 with precision 1e-7, or
    float32 with 1e-6 (a float32 step of 1e-7 near 1 is below its rounding)."""
    rng = np.random.default_rng(1)
    guesses = np.stack([rng.uniform(-1.2, 1.2, batch), rng.uniform(-0.2, 1.4, batch)], axis=1)
    return Problem(
        "W2",
        rosenbrock,
        _rosenbrock_grad,
        guesses.astype(dtype),
        np.array([1e-3], dtype),
        precision=1e-7 if dtype == "float64" else 1e-6,
        max_iter=10_000,
        dtype=dtype,
    )


def w3(n_lr: int = 256, n_guesses: int = 1024) -> Problem:
    """W3: `x**2` over log-spaced learning rates in [1e-4, 1] x guesses in [-10, 10].

    Iterations per member range from 1 to `max_iter` (lr 1 oscillates forever).
    """
    return Problem(
        "W3",
        square,
        lambda x: 2 * x,
        np.linspace(-10, 10, n_guesses).astype(np.float32),
        np.logspace(-4, 0, n_lr).astype(np.float32),
        precision=1e-6,
        max_iter=10_000,
    )


def w4(n_points: int = 10_000, n_lr: int = 64) -> Problem:
    """W4: a least-squares line fit on `n_points` points (float64), over `n_lr` rates."""
    rng = np.random.default_rng(2)
    X = rng.uniform(0, 2, n_points)
    y = 1.5 + 0.7 * X + rng.normal(0, 0.1, n_points)
    return Problem(
        "W4",
        line_mse,
        _line_grad,
        np.zeros((1, 2)),
        np.geomspace(1e-3, 1.0, n_lr),
        precision=1e-7,
        max_iter=5_000,
        args=(X, y),
        dtype="float64",
    )
