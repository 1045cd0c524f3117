"""Learn a line: fit intercept and slope to noisy data with a learning-rate sweep.

The "How do machines learn" part of the gradient-descent tutorial: minimise the mean squared
error of `y = b0 + b1 * X` over `(b0, b1)`, from three starting points at sixteen learning
rates in one compiled sweep, keep the best converged member, and check it against the exact
least-squares solution from `numpy.linalg.lstsq`.

Run:
    python examples/fit_line.py [OUT_DIR]      # PNGs go to OUT_DIR (default ./out)
"""

from __future__ import annotations

import argparse
import pathlib

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

import gdkernel as gd
from gdkernel import functions, plot

TRUE_INTERCEPT, TRUE_SLOPE, NOISE = 1.5, 2.0, 0.3


def make_data(seed: int = 0, n: int = 50) -> tuple[np.ndarray, np.ndarray]:
    """`n` noisy points around the line `y = 1.5 + 2 x`, for `x` uniform in [0, 2]."""
    rng = np.random.default_rng(seed)
    X = rng.uniform(0.0, 2.0, n)
    y = TRUE_INTERCEPT + TRUE_SLOPE * X + rng.normal(0.0, NOISE, n)
    return X, y


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", default="out", help="folder for the PNGs (./out)")
    out = pathlib.Path(parser.parse_args(argv).out)
    out.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_enable_x64", True)  # float64, to match lstsq to many digits

    X, y = make_data()
    # Three starting points, batched on the leading axis of each parameter.
    guesses = {"b0": jnp.array([0.0, 4.0, -2.0]), "b1": jnp.array([0.0, -1.0, 5.0])}
    learning_rates = jnp.geomspace(0.01, 1.0, 16)
    grid = gd.sweep(
        functions.mean_squared_error,
        guesses,
        learning_rates,
        args=(X, y),
        precision=1e-10,
        max_iter=5000,
        history=True,
    )
    counts = ", ".join(f"{s.name.lower()}: {n}" for s, n in grid.counts().items() if n)
    print(f"sweep of {grid.status.size} members: {counts}")

    best = grid.best()
    fit = best.result
    b0, b1 = float(fit.x["b0"]), float(fit.x["b1"])
    print(
        f"best: learning rate {float(best.learning_rate):.4g} from start #{best.index[1]}, "
        f"{int(fit.iterations)} iterations, mean squared error {float(fit.cost):.6f}"
    )

    A = np.column_stack([np.ones_like(X), X])
    (l0, l1), *_ = np.linalg.lstsq(A, y, rcond=None)
    print(f"gradient descent: intercept = {b0:.10f}, slope = {b1:.10f}")
    print(f"numpy lstsq:      intercept = {l0:.10f}, slope = {l1:.10f}")
    assert np.allclose([b0, b1], [l0, l1], rtol=0, atol=1e-6), "the fit does not match lstsq"

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2), layout="constrained")
    left.scatter(X, y, s=14, color="0.4", label="data")
    line = np.linspace(X.min(), X.max(), 2)
    left.plot(line, b0 + b1 * line, color="C3", lw=2.2, label=f"fit: y = {b0:.3f} + {b1:.3f} x")
    left.plot(line, l0 + l1 * line, "k--", lw=1, label="lstsq")
    left.set(xlabel="X", ylabel="y", title="learning a line")
    left.legend()
    plot.trajectory(fit, functions.mean_squared_error, args=(X, y), ax=right)
    right.set_title("the best member's path over the mean squared error")
    fig.savefig(out / "fit_line.png", dpi=100)

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.2), layout="constrained")
    lstsq_cost = float(np.mean((y - l0 - l1 * X) ** 2))
    plot.convergence(grid, ax=left, minimum=lstsq_cost)
    left.set_title("excess mean squared error of every member")
    plot.sweep_map(grid, ax=right)
    fig.savefig(out / "fit_sweep.png", dpi=100)
    plt.close("all")
    print(f"wrote {out / 'fit_line.png'} and {out / 'fit_sweep.png'}")


if __name__ == "__main__":
    main()
