"""`gradient_descent` under the user's own jax.jit and jax.vmap agrees with lone runs."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gdkernel as gd
from conftest import tol


def cost(x, a):
    return a * x**2 - 2 * x


def lone(x0, lr, a=1.0, **kw):
    return gd.gradient_descent(cost, x0, lr, args=(a,), **kw)


def test_user_jit_matches_eager(dtype):
    run = jax.jit(lambda x0, lr: lone(x0, lr, precision=1e-5, max_iter=300))
    for x0, lr in [(3.0, 0.1), (-2.0, 0.45), (5.0, 1.2), (1.0, 1e-6)]:
        a = run(jnp.asarray(x0, dtype), jnp.asarray(lr, dtype))
        b = lone(x0, lr, precision=1e-5, max_iter=300)
        assert int(a.iterations) == int(b.iterations)
        assert int(a.status) == int(b.status)
        np.testing.assert_array_equal(np.asarray(a.x), np.asarray(b.x))


def test_user_vmap_each_member_stops_on_its_own(dtype):
    x0s = jnp.asarray([3.0, -2.0, 5.0, 3.0, 4.0], dtype)
    lrs = jnp.asarray(
        [0.1, 0.45, 5.0, 1e-6, 0.01], dtype
    )  # converge, converge, diverge, trap, max_iter
    batched = jax.vmap(lambda x0, lr: lone(x0, lr, grad_tol=1e-2, max_iter=200))(x0s, lrs)
    assert batched.x.shape == (5,)
    statuses = []
    for k in range(5):
        single = lone(float(x0s[k]), float(lrs[k]), grad_tol=1e-2, max_iter=200)
        assert int(batched.iterations[k]) == int(single.iterations), k
        assert int(batched.status[k]) == int(single.status), k
        np.testing.assert_allclose(float(batched.x[k]), float(single.x), rtol=tol(dtype))
        statuses.append(gd.Status(int(single.status)))
    assert statuses == [
        gd.Status.CONVERGED,
        gd.Status.CONVERGED,
        gd.Status.DIVERGED,
        gd.Status.STALLED,
        gd.Status.MAX_ITER,
    ]


def test_jit_of_vmap_over_args(x64):
    a = jnp.array([0.5, 1.0, 2.0, 4.0])
    run = jax.jit(
        jax.vmap(
            lambda a: gd.gradient_descent(
                cost, 0.0, 0.1, args=(a,), precision=1e-10, max_iter=10_000
            )
        )
    )
    res = run(a)
    # closed-form minimum of a x^2 - 2x: x* = 1/a
    np.testing.assert_allclose(np.asarray(res.x), 1 / np.asarray(a), rtol=1e-8)
    assert np.all(np.asarray(res.status) == gd.Status.CONVERGED)


def test_result_fields_map_with_tree_map():
    res = jax.vmap(lambda x0: lone(x0, 0.1))(jnp.array([1.0, 2.0]))
    shapes = jax.tree.map(jnp.shape, res)
    assert shapes.x == (2,) and shapes.iterations == (2,) and shapes.status == (2,)
    assert np.asarray(res.converged).tolist() == [True, True]


def _quadratic_reading(s, a, b):
    """`w.A.w / 2 - s b.w`, reading `s` from the enclosing function: `w* = s A^-1 b`."""
    return lambda w: 0.5 * w @ (a @ w) - s * (b @ w)


def test_a_cost_reading_a_traced_value_is_differentiated_and_batched(x64):
    """A cost that closes over the enclosing function's argument (traced by `jax.grad`,
    `jax.vmap` or `jax.jit`) solves and differentiates as if the value were in `args`:
    against the closed forms `w*(s) = s A^-1 b` and, through a sweep, the envelope theorem
    `d/ds sum of f(w*(s), s) = -members * s * b.A^-1.b`."""
    rng = np.random.default_rng(3)
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    a = jnp.asarray((q * np.array([1.0, 2.0, 3.0])) @ q.T)
    b = jnp.asarray(rng.normal(size=3))
    solved = np.linalg.solve(np.asarray(a), np.asarray(b))  # A^-1 b
    kw = {"precision": 1e-12, "max_iter": 10_000, "norm": "l2"}

    def total(s, adjoint="implicit"):
        run = gd.gradient_descent(
            _quadratic_reading(s, a, b), jnp.zeros(3), 0.2, adjoint=adjoint, **kw
        )
        return run.x.sum()

    for adjoint in ("implicit", "unrolled"):
        np.testing.assert_allclose(jax.grad(total)(1.5, adjoint), solved.sum(), rtol=1e-6)

    def with_gradient(s):  # the user's gradient reads `s` too
        grad = lambda w: a @ w - s * b  # noqa: E731
        run = gd.gradient_descent(
            _quadratic_reading(s, a, b), jnp.zeros(3), 0.2, grad_fn=grad, **kw
        )
        return run.x.sum()

    np.testing.assert_allclose(jax.grad(with_gradient)(1.5), solved.sum(), rtol=1e-6)
    s = jnp.asarray([0.5, 1.0, 2.0])
    np.testing.assert_allclose(jax.jit(jax.vmap(total))(s), s * solved.sum(), rtol=1e-8)
    np.testing.assert_allclose(jax.vmap(jax.grad(total))(s), np.full(3, solved.sum()), rtol=1e-6)

    guesses = jnp.asarray(rng.normal(size=(4, 3)))

    def swept(s):
        grid = gd.sweep(_quadratic_reading(s, a, b), guesses, [0.1, 0.2], **kw)
        assert bool(np.all(np.asarray(grid.status) == gd.Status.CONVERGED))
        return grid.cost.sum()

    members = 8
    np.testing.assert_allclose(jax.grad(swept)(1.5), -members * 1.5 * float(b @ solved), rtol=1e-6)


class _Shifted:
    """A cost as an object: `(x - c)^2` with `c` an attribute."""

    def __init__(self, c):
        self.c = c

    def __call__(self, x):
        return (x - self.c) ** 2

    def cost(self, x):
        return (x - self.c) ** 2


def test_an_object_holding_a_traced_value_is_differentiated(x64):
    """A callable object, or a bound method, whose instance holds the traced value: the
    minimum is `c`, so d x*/dc = 1 (implicit) and every member of a vmap sits at its own c."""
    kw = {"precision": 1e-12, "max_iter": 10_000}
    for make in (_Shifted, lambda c: _Shifted(c).cost):
        x_star = lambda c, make=make: gd.gradient_descent(make(c), 0.0, 0.1, **kw).x  # noqa: E731
        assert float(jax.grad(x_star)(2.0)) == pytest.approx(1.0, rel=1e-9)
        cs = jnp.asarray([1.0, 2.0, -3.0])
        np.testing.assert_allclose(jax.vmap(x_star)(cs), cs, rtol=1e-9)


def test_a_cost_reading_a_traced_value_with_mini_batches_is_refused():
    def total(s):
        data = jnp.arange(8.0)
        cost = lambda w, d: jnp.mean((w * d - s) ** 2)  # noqa: E731
        key = jax.random.key(0)
        return gd.gradient_descent(cost, 0.0, 0.01, args=(data,), batch_size=4, key=key).x

    with pytest.raises(TypeError, match="pass it through `args`"):
        jax.grad(total)(1.0)
