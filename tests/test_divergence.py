"""The divergence rule: a status that describes the run, the same in float32 and float64."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import reference_gd

import gdkernel as gd

STATUS = {"converged": gd.Status.CONVERGED, "max_iter": gd.Status.MAX_ITER}
STATUS["diverged"] = gd.Status.DIVERGED


def test_square_at_rate_1_5_diverges_alike_in_both_dtypes(dtype):
    # x**2 from 3 at rate 1.5: x_k = 3 (-2)^k, cost 9 * 4^k. The rule's ceiling is
    # 9 + 1e4 * max(9, 1.5 * 6**2) = 540,009; 9 * 4^8 = 589,824 is the first cost above it,
    # so iteration 8 diverges and the member keeps x_7 = -384.
    res = gd.gradient_descent(lambda x: x**2, 3.0, 1.5)
    assert res.status == gd.Status.DIVERGED
    assert int(res.iterations) == 7
    assert float(res.x) == -384.0 and float(res.cost) == 384.0**2
    assert res.x.dtype == dtype


def test_rule_off_leaves_only_non_finite_values():
    with jax.enable_x64(True):
        res = gd.gradient_descent(lambda x: x**2, 3.0, 1.5, divergence=None)
    assert res.status == gd.Status.MAX_ITER and int(res.iterations) == 100
    res = gd.gradient_descent(lambda x: x**2, 3.0, 1.5, divergence=None)  # float32 overflows
    assert res.status == gd.Status.DIVERGED and np.isfinite(float(res.cost))


@pytest.mark.parametrize("divergence", [10.0, 1e4, 1e8])
def test_sweep_matches_the_plain_loop_in_both_dtypes(dtype, divergence):
    guesses = np.linspace(-5, 5, 11)
    rates = np.geomspace(1e-3, 1.5, 12)
    grid = gd.sweep(lambda x: x**2 - 2 * x, guesses, rates, max_iter=200, divergence=divergence)
    for i, lr in enumerate(rates):
        for j, x0 in enumerate(guesses):
            x, its, status, _ = reference_gd(
                lambda v: 2 * v - 2,
                x0,
                lr,
                1e-4,
                200,
                cost=lambda v: float(v * v - 2 * v),
                divergence=divergence,
            )
            assert grid.status[i, j] == STATUS[status], (lr, x0)
            if status == "diverged":
                assert int(grid.iterations[i, j]) == its
                np.testing.assert_allclose(grid.x[i, j], x, rtol=1e-4)


def test_readme_quadratic_sweep_statuses_do_not_depend_on_the_dtype():
    def statuses(x64: bool) -> np.ndarray:
        with jax.enable_x64(x64):
            grid = gd.sweep(
                lambda x: x**2 - 2 * x, np.linspace(-5, 5, 1000), np.geomspace(1e-4, 1.5, 100)
            )
            return np.asarray(grid.status)

    single, double = statuses(False), statuses(True)
    assert (single == gd.Status.DIVERGED).sum() > 0
    np.testing.assert_array_equal(single, double)


@pytest.mark.parametrize("method", ["momentum", "nesterov"])
@pytest.mark.parametrize(
    "offset, x0",
    [(0.0, 1.0), (-0.5, 1.0), (-3.0, 1.0)],  # the cost starts above, at and below 0
)
def test_momentum_runs_whose_cost_rises_still_converge(dtype, method, offset, x0):
    # A stiff quadratic near the edge of stability: the cost rises well above its start
    # before it settles (checked below, so the case is a real test of the rule).
    lr = {"momentum": 3.9, "nesterov": 1.3}[method]
    momentum = 0.99 if method == "momentum" else 0.9
    res = gd.gradient_descent(
        lambda x: 0.5 * x**2 + offset,
        x0,
        lr,
        method=method,
        momentum=momentum,
        precision=1e-5,
        max_iter=20_000,
        history=True,
    )
    costs = np.asarray(res.history.cost)
    costs = costs[np.isfinite(costs)]
    assert costs.max() > costs[0] + 1e-3, "the cost never rose: the case tests nothing"
    assert res.status == gd.Status.CONVERGED
    assert abs(float(res.x)) < 1e-3


def test_batched_momentum_and_pytrees_diverge_like_lone_runs(x64):
    def cost(p):
        return jnp.sum((p["w"] - 1.0) ** 2) + p["b"] ** 2

    guesses = {
        "w": jnp.array([[0.0, 0.0], [2.0, -1.0], [5.0, 5.0]]),
        "b": jnp.array([1.0, -3.0, 0.5]),
    }
    rates = jnp.array([0.01, 0.3, 1.5, 3.0])
    grid = gd.sweep(cost, guesses, rates, method="momentum", momentum=0.5, max_iter=300)
    assert (np.asarray(grid.status) == gd.Status.DIVERGED).any()
    for i in range(4):
        for j in range(3):
            guess = jax.tree.map(lambda leaf, j=j: leaf[j], guesses)
            lone = gd.gradient_descent(
                cost, guess, rates[i], method="momentum", momentum=0.5, max_iter=300
            )
            member = grid.member(i, j)
            assert member.status == lone.status and member.iterations == lone.iterations
            assert float(member.cost) <= float(lone.cost) * (1 + 1e-12) + 1e-300


def test_diverged_member_keeps_the_iterate_before_the_rule_fired(dtype):
    res = gd.gradient_descent(lambda x: (x - 1.0) ** 2, 0.0, 1.2, divergence=100.0, history=True)
    # x_k - 1 = -(-1.4)^k; cost 1.96^k; ceiling 1 + 100 * max(1, 1.2 * 4) = 481.
    k = next(k for k in range(1, 100) if 1.96**k > 481)
    assert res.status == gd.Status.DIVERGED and int(res.iterations) == k - 1
    np.testing.assert_allclose(float(res.x), 1 - (-1.4) ** (k - 1), rtol=1e-5)
    assert float(res.cost) <= 481


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan")])
def test_bad_divergence_is_refused(bad):
    with pytest.raises(ValueError, match="`divergence`"):
        gd.gradient_descent(lambda x: x**2, 3.0, 0.1, divergence=bad)
    with pytest.raises(ValueError, match="`divergence`"):
        gd.sweep(lambda x: x**2, np.ones(2), [0.1], divergence=bad)


def test_traced_bad_divergence_is_invalid():
    run = jax.jit(lambda d: gd.gradient_descent(lambda x: x**2, 3.0, 0.1, divergence=d).status)
    assert run(-1.0) == gd.Status.INVALID and run(1e4) == gd.Status.CONVERGED


@pytest.mark.parametrize(
    ("method", "status"),
    [("adam", "converged"), ("rmsprop", "converged"), ("lion", "max_iter")],
)
def test_adaptive_methods_started_near_the_minimum_do_not_diverge(dtype, method, status):
    # x**2 from 1e-6: an adaptive method's steps are about the learning rate whatever the
    # gradient's size (Adam's first: 0.1), so the cost rises from 1e-12 to about 0.01, far
    # above a ceiling scaled by the first-order promise |g0 . u0| = 2e-7 alone. The run
    # then settles at the minimum 0 (Lion oscillates around it with steps of 0.1 * 0.1).
    res = gd.gradient_descent(
        lambda x: x**2, np.asarray(1e-6, dtype), 0.1, method=method, precision=1e-6, max_iter=2000
    )
    assert res.status == STATUS[status]
    assert abs(float(res.x)) < 1e-2
    with pytest.raises(AssertionError):  # the rise the rule must allow: well above f0
        np.testing.assert_array_less(
            gd.gradient_descent(
                lambda x: x**2, np.asarray(1e-6, dtype), 0.1, method=method, max_iter=1
            ).cost,
            1e-6,
        )


def test_mini_batches_scale_the_rule_by_the_cost_on_all_the_data(dtype):
    # A noise-free line y = 2x, one point a batch: key 75's first point is x = 0.0074, whose
    # cost at w = 0 (5.5e-5) would scale the ceiling to about 1; the run's cost on later
    # points rises above that while it converges to lstsq's slope.
    X = np.random.default_rng(0).uniform(-1, 1, 1000).astype(dtype)
    y = 2 * X
    draw = jax.random.fold_in(jax.random.key(75), 0)  # the first sample (int32 rows)
    first = np.asarray(jax.random.randint(draw, (1,), 0, 1000, dtype=jnp.int32))
    assert abs(X[first[0]]) < 0.01  # the unlucky first sample this test is about
    res = gd.gradient_descent(
        lambda w, X, y: jnp.mean((w[0] * X - y) ** 2),
        np.zeros(1, dtype),
        0.1,
        args=(X, y),
        batch_size=1,
        key=jax.random.key(75),
        precision=0,
        max_iter=500,
    )
    slope = np.linalg.lstsq(X[:, None].astype(np.float64), y.astype(np.float64), rcond=None)[0]
    assert res.status == gd.Status.MAX_ITER
    np.testing.assert_allclose(np.asarray(res.x), slope, rtol=1e-5)
