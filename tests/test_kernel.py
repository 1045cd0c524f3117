"""The kernel's numbers against closed forms and plain-Python loops."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import reference_gd, scalar_gd

import gdkernel as gd
from conftest import tol


def test_tutorial_square_converges_in_40(dtype):
    res = gd.gradient_descent(lambda x: x**2, 3, 0.1)
    assert res.x.dtype == dtype  # the integer 3 is promoted to the default float
    assert int(res.iterations) == 40
    assert res.status == gd.Status.CONVERGED and bool(res.converged)
    np.testing.assert_allclose(float(res.x), 3 * 0.8**40, rtol=tol(dtype))
    np.testing.assert_allclose(float(res.grad), 2 * 3 * 0.8**40, rtol=tol(dtype))
    np.testing.assert_allclose(float(res.cost), (3 * 0.8**40) ** 2, rtol=tol(dtype))
    np.testing.assert_allclose(float(res.step_size), 0.2 * 3 * 0.8**39, rtol=tol(dtype))


def test_numpy_tutorial_quadratic_hits_max_iter(x64):
    a = np.array([-3.0, -2.0, 3.0])
    res = gd.gradient_descent(
        lambda x: a[2] * x * x + a[1] * x + a[0], 8, 0.001, precision=1e-5, max_iter=500
    )
    x_ref, it_ref, status_ref = scalar_gd(lambda x: 2 * a[2] * x + a[1], 8, 0.001, 1e-5, 500)
    assert status_ref == "max_iter" and it_ref == 500
    assert res.status == gd.Status.MAX_ITER
    assert int(res.iterations) == 500
    assert abs(float(res.x) - x_ref) < 1e-9


def test_random_quadratics_match_plain_python_loop(x64):
    rng = np.random.default_rng(0)
    mismatches = []

    def cost(x, a2, a1, a0):
        return a2 * x * x + a1 * x + a0

    for case in range(300):
        a2 = rng.uniform(0.1, 5.0)
        a1, a0 = rng.uniform(-5, 5, size=2)
        x0 = rng.uniform(-10, 10)
        lr = 10 ** rng.uniform(-3, np.log10(0.9 / a2))  # stable: lr * 2 * a2 < 1.8
        precision = 10 ** rng.uniform(-8, -2)
        max_iter = int(rng.integers(1, 400))
        res = gd.gradient_descent(
            cost, x0, lr, precision=precision, max_iter=max_iter, args=(a2, a1, a0)
        )
        x_ref, it_ref, status_ref = scalar_gd(
            lambda x, a2=a2, a1=a1: 2 * a2 * x + a1, x0, lr, precision, max_iter
        )
        expected = gd.Status.CONVERGED if status_ref == "converged" else gd.Status.MAX_ITER
        if (
            int(res.iterations) != it_ref
            or int(res.status) != expected
            or abs(float(res.x) - x_ref) > 1e-12 * max(1.0, abs(x_ref))
        ):
            mismatches.append((case, int(res.iterations), it_ref, float(res.x), x_ref))
    assert not mismatches, mismatches[:5]


def test_diverges_honestly(dtype):
    res = gd.gradient_descent(lambda x: x**2, 3.0, 1.5, max_iter=2000)
    assert res.status == gd.Status.DIVERGED and bool(res.diverged)
    assert not bool(res.converged)
    assert int(res.iterations) < 2000
    # x is the last finite iterate of x_{k+1} = -2 x_k
    assert np.isfinite(float(res.x))
    np.testing.assert_allclose(float(res.x), 3.0 * (-2.0) ** int(res.iterations), rtol=tol(dtype))
    assert np.isfinite(float(res.cost))


def test_tiny_learning_rate_trap_is_reported_as_stalled(dtype):
    plain = gd.gradient_descent(lambda x: x**2, 3.0, 1e-6)
    assert plain.status == gd.Status.CONVERGED and int(plain.iterations) == 1  # the trap
    guarded = gd.gradient_descent(lambda x: x**2, 3.0, 1e-6, grad_tol=1e-3)
    assert guarded.status == gd.Status.STALLED and bool(guarded.stalled)
    assert int(guarded.iterations) == 1
    fine = gd.gradient_descent(lambda x: x**2, 3.0, 0.1, grad_tol=1e-2)
    assert fine.status == gd.Status.CONVERGED


@pytest.mark.parametrize("norm", ["l1", "l2", "max"])
def test_norms_match_reference(norm, x64):
    target = np.array([1.0, -2.0, 0.5])
    scale = np.array([1.0, 3.0, 0.5])

    def cost(x):
        return jnp.sum(scale * (x - target) ** 2)

    x0 = np.array([4.0, 4.0, -4.0])
    res = gd.gradient_descent(cost, x0, 0.05, precision=1e-6, max_iter=1000, norm=norm)
    x_ref, it_ref, status_ref, _ = reference_gd(
        lambda x: 2 * scale * (x - target), x0, 0.05, 1e-6, 1000, norm=norm
    )
    assert status_ref == "converged" and res.status == gd.Status.CONVERGED
    assert int(res.iterations) == it_ref
    np.testing.assert_allclose(np.asarray(res.x), x_ref, rtol=1e-12)


def test_norms_differ_on_the_same_problem(x64):
    def cost(x):
        return jnp.sum((x - 1.0) ** 2)

    x0 = np.zeros(50)
    its = {
        n: int(gd.gradient_descent(cost, x0, 0.1, norm=n).iterations) for n in ("l1", "l2", "max")
    }
    assert its["l1"] > its["l2"] > its["max"]  # l1 >= l2 >= max over 50 equal entries


def test_pytree_line_fit_matches_lstsq(dtype):
    rng = np.random.default_rng(1)
    X = rng.uniform(0, 2, size=200)
    y = 1.5 + 0.7 * X + rng.normal(0, 0.1, size=200)

    def mse(p, X, y):
        return jnp.mean((p["b0"] + p["b1"] * X - y) ** 2)

    precision = 1e-10 if dtype == np.float64 else 1e-6
    res = gd.gradient_descent(
        mse, {"b0": 0.0, "b1": 0.0}, 0.3, args=(X, y), precision=precision, max_iter=20_000
    )
    A = np.stack([np.ones_like(X), X], axis=1)
    (b0, b1), *_ = np.linalg.lstsq(A, y, rcond=None)
    assert set(res.x) == {"b0", "b1"}
    atol = 1e-6 if dtype == np.float64 else 1e-3
    np.testing.assert_allclose([float(res.x["b0"]), float(res.x["b1"])], [b0, b1], atol=atol)
    assert res.status == gd.Status.CONVERGED


def test_user_gradient_replaces_autodiff(x64):
    a = np.array([-3.0, -2.0, 3.0])
    calls = []

    def grad(x):
        calls.append(1)
        return 2 * a[2] * x + a[1]

    res = gd.gradient_descent(
        lambda x: a[2] * x * x + a[1] * x + a[0],
        8.0,
        0.01,
        precision=1e-10,
        max_iter=5000,
        grad_fn=grad,
    )
    assert calls  # the user's gradient was traced in
    assert res.status == gd.Status.CONVERGED
    np.testing.assert_allclose(float(res.x), 1 / 3, atol=1e-8)
    # a wrong gradient is used as given (no silent autodiff fallback): it finds its own zero
    wrong = gd.gradient_descent(lambda x: x**2, 3.0, 0.1, grad_fn=lambda x: 2 * (x - 1.0))
    np.testing.assert_allclose(float(wrong.x), 1.0, atol=1e-3)


def test_momentum_and_nesterov_match_plain_loops(x64):
    scale = np.array([1.0, 10.0])

    def cost(x):
        return jnp.sum(scale * x**2)

    x0 = np.array([3.0, -2.0])
    for method in ("gd", "momentum", "nesterov"):
        heavy = {} if method == "gd" else {"momentum": 0.8}
        res = gd.gradient_descent(
            cost, x0, 0.01, precision=1e-8, max_iter=3000, method=method, **heavy
        )
        x_ref, it_ref, status_ref, _ = reference_gd(
            lambda x: 2 * scale * x, x0, 0.01, 1e-8, 3000, method=method, momentum=0.8
        )
        assert status_ref == "converged" and res.status == gd.Status.CONVERGED, method
        assert int(res.iterations) == it_ref, method
        np.testing.assert_allclose(np.asarray(res.x), x_ref, rtol=1e-9, atol=1e-14)


def test_momentum_beats_plain_gd_on_rosenbrock(x64):
    def rosen(x):
        return (1 - x[0]) ** 2 + 100 * (x[1] - x[0] ** 2) ** 2

    x0 = np.array([-1.2, 1.0])
    kw = dict(precision=1e-9, max_iter=100_000, grad_tol=1e-4)
    plain = gd.gradient_descent(rosen, x0, 1e-3, **kw)
    heavy = gd.gradient_descent(rosen, x0, 1e-3, method="momentum", **kw)
    nest = gd.gradient_descent(rosen, x0, 1e-3, method="nesterov", **kw)
    for res in (plain, heavy, nest):
        assert res.status == gd.Status.CONVERGED
        np.testing.assert_allclose(np.asarray(res.x), [1.0, 1.0], atol=1e-3)
    assert int(heavy.iterations) < int(plain.iterations)
    assert int(nest.iterations) < int(plain.iterations)


def test_max_iter_zero_returns_the_guess(dtype):
    res = gd.gradient_descent(lambda x: x**2, 3.0, 0.1, max_iter=0)
    assert res.status == gd.Status.MAX_ITER and int(res.iterations) == 0
    assert float(res.x) == 3.0 and float(res.grad) == 6.0


def test_cost_that_is_not_finite_at_the_guess_diverges_at_once(dtype):
    res = gd.gradient_descent(lambda x: jnp.log(x), -1.0, 0.1)
    assert res.status == gd.Status.DIVERGED and int(res.iterations) == 0
    assert float(res.x) == -1.0


def test_message_per_status():
    for status in gd.Status:
        assert isinstance(status.message, str) and status.message
    res = gd.gradient_descent(lambda x: x**2, 3.0, 0.1)
    assert res.message == gd.Status.CONVERGED.message
    assert len({s.message for s in gd.Status}) == len(gd.Status)


def test_result_is_a_pytree():
    res = gd.gradient_descent(lambda x: x**2, 3.0, 0.1)
    doubled = jax.tree.map(lambda a: a * 2, res)
    assert isinstance(doubled, gd.Result)
    assert int(doubled.iterations) == 80
    assert res.history is None
