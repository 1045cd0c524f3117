"""Fit a line to 100,000 noisy points by mini-batch gradient descent, the Keras `sgd` habit.

Each iteration's gradient sees 512 random points (`batch_size=512`, `key=`); with noisy steps
the step rule means little, so `precision=0` and `max_iter` is the budget. A sweep over four
learning rates shares one stream of mini-batches, so they are compared on the same noise; the
best is checked against the exact least-squares fit from `numpy.linalg.lstsq`.

Run:
    python examples/minibatch_line.py
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

import gdkernel as gd

TRUE_INTERCEPT, TRUE_SLOPE, NOISE = -0.5, 3.0, 0.3


def make_data(seed: int = 0, n: int = 100_000) -> tuple[np.ndarray, np.ndarray]:
    """`n` noisy points around `y = -0.5 + 3 x`, for `x` uniform in [-1, 1]."""
    rng = np.random.default_rng(seed)
    X = rng.uniform(-1, 1, n)
    return X, TRUE_INTERCEPT + TRUE_SLOPE * X + rng.normal(0, NOISE, n)


def mse(w: jax.Array, X: jax.Array, y: jax.Array) -> jax.Array:
    return jnp.mean((w[0] + w[1] * X - y) ** 2)


def main() -> None:
    X, y = make_data()
    grid = gd.sweep(
        mse,
        np.zeros((1, 2)),
        [0.003, 0.01, 0.03, 0.1],
        args=(X, y),
        batch_size=512,
        key=jax.random.key(0),
        precision=0,
        max_iter=4000,
    )
    print(grid)
    for lr, cost in zip(grid.learning_rate, grid.cost[:, 0], strict=True):
        print(f"learning rate {float(lr):g}: mean squared error on all the data {float(cost):.6f}")
    best = grid.best(among="finite")
    intercept, slope = (float(v) for v in best.result.x)
    exact = np.linalg.lstsq(np.stack([np.ones_like(X), X], 1), y, rcond=None)[0]
    print(f"mini-batch gradient descent: intercept = {intercept:.4f}, slope = {slope:.4f}")
    print(f"least squares:               intercept = {exact[0]:.4f}, slope = {exact[1]:.4f}")


if __name__ == "__main__":
    main()
