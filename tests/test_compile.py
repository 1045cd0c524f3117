"""New values of traced arguments reuse the compiled program (no retracing)."""

import jax.numpy as jnp
import numpy as np

import gdkernel as gd


class CountingCost:
    """A cost whose Python body runs only when JAX traces it: a trace counter."""

    def __init__(self):
        self.traces = 0

    def __call__(self, x, X, y):
        self.traces += 1
        return jnp.mean((x["b0"] + x["b1"] * X - y) ** 2)


def test_traced_values_do_not_retrace():
    cost = CountingCost()
    X = np.linspace(0, 1, 20)
    y = 2 * X + 1
    guess = {"b0": 0.0, "b1": 0.0}
    gd.gradient_descent(cost, guess, 0.1, args=(X, y))
    after_first = cost.traces
    assert after_first > 0
    for lr, precision, max_iter, data_scale in [(0.2, 1e-3, 50, 2.0), (0.05, 1e-6, 500, 3.0)]:
        res = gd.gradient_descent(
            cost,
            {"b0": 1.0, "b1": -1.0},
            lr,
            precision=precision,
            max_iter=max_iter,
            grad_tol=1e-2,
            args=(X * data_scale, y),
        )
        assert int(res.iterations) <= max_iter
    # NumPy scalars, JAX scalars and Python floats all hit the same program
    gd.gradient_descent(cost, guess, np.float32(0.3), args=(X, y))
    gd.gradient_descent(cost, guess, jnp.float32(0.3), precision=np.float64(1e-3), args=(X, y))
    gd.gradient_descent(cost, {"b0": 2, "b1": 3}, 0.3, args=(X, y))  # integers promoted first
    assert cost.traces == after_first


def test_sweep_values_do_not_retrace():
    cost = CountingCost()
    X = np.linspace(0, 1, 20)
    y = 2 * X + 1
    guesses = {"b0": np.zeros(8), "b1": np.linspace(-1, 1, 8)}
    gd.sweep(cost, guesses, np.array([0.1, 0.2, 0.3]), args=(X, y))
    after_first = cost.traces
    gd.sweep(
        cost,
        {"b0": np.ones(8), "b1": np.zeros(8)},
        np.array([0.01, 0.02, 0.5]),
        args=(X, -y),
        precision=1e-6,
        max_iter=300,
    )
    assert cost.traces == after_first


def test_structural_changes_do_retrace():
    cost = CountingCost()
    X = np.linspace(0, 1, 20)
    y = 2 * X + 1
    gd.gradient_descent(cost, {"b0": 0.0, "b1": 0.0}, 0.1, args=(X, y))
    first = cost.traces
    gd.gradient_descent(cost, {"b0": 0.0, "b1": 0.0}, 0.1, args=(X[:10], y[:10]))  # new shape
    assert cost.traces > first
    second = cost.traces
    gd.gradient_descent(cost, {"b0": 0.0, "b1": 0.0}, 0.1, args=(X, y), norm="max")  # static
    assert cost.traces > second
