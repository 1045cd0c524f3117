"""Derivatives through a solve, against closed forms and finite differences."""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gdkernel as gd
from gdkernel import _adjoint

N, D = 40, 3
RNG = np.random.default_rng(0)
X = RNG.normal(size=(N, D))
Y = RNG.normal(size=N)
C = RNG.normal(size=D)  # the outer loss is c . w*


def ridge(w, lam, x, y):
    return jnp.mean((x @ w - y) ** 2) + lam * jnp.sum(w**2)


def closed_form(lam, y=Y):
    """w*(lam), dw*/dlam and dw*/dy for ridge regression."""
    a = X.T @ X / N + lam * np.eye(D)
    w = np.linalg.solve(a, X.T @ y / N)
    return w, -np.linalg.solve(a, w), np.linalg.solve(a, X.T) / N


def solve(lam, y=Y, **kw):
    opts = dict(precision=1e-13, max_iter=20_000, **kw)
    return gd.gradient_descent(ridge, jnp.zeros(D), 0.2, args=(lam, X, y), **opts)


@pytest.mark.parametrize("method", ["gd", "momentum", "nesterov"])
def test_implicit_ridge_against_the_closed_form(x64, method):
    lam = 0.3
    w, dw_dlam, dw_dy = closed_form(lam)
    kw = {"method": method} if method == "gd" else {"method": method, "momentum": 0.5}
    res = solve(lam, **kw)
    assert res.status == gd.Status.CONVERGED
    np.testing.assert_allclose(res.x, w, rtol=1e-9)

    def loss(lam, y):
        return C @ solve(lam, y, **kw).x

    g_lam, g_y = jax.jit(jax.grad(loss, argnums=(0, 1)))(lam, jnp.asarray(Y))
    np.testing.assert_allclose(g_lam, C @ dw_dlam, rtol=1e-6)
    np.testing.assert_allclose(g_y, C @ dw_dy, rtol=1e-6, atol=1e-12)
    _, tangent = jax.jvp(lambda lam: solve(lam, **kw).x, (lam,), (1.0,))
    np.testing.assert_allclose(tangent, dw_dlam, rtol=1e-6)
    lams = jnp.array([0.05, 0.3, 2.0])
    got = jax.vmap(jax.grad(lambda lam: loss(lam, jnp.asarray(Y))))(lams)
    want = [C @ closed_form(float(lam))[1] for lam in lams]
    np.testing.assert_allclose(got, want, rtol=1e-6)


def test_implicit_ridge_in_float32():
    lam = 0.3
    _, dw_dlam, _ = closed_form(lam)
    x32, y32 = X.astype(np.float32), Y.astype(np.float32)

    def w(lam):
        return gd.gradient_descent(
            ridge, jnp.zeros(D), 0.2, args=(lam, x32, y32), precision=1e-6, max_iter=5000
        ).x

    np.testing.assert_allclose(jax.jacrev(w)(np.float32(lam)), dw_dlam, rtol=2e-3, atol=1e-4)


def test_implicit_with_a_user_gradient(x64):
    def grad_fn(w, lam, x, y):
        return 2 * x.T @ (x @ w - y) / N + 2 * lam * w

    lam = 0.7
    _, dw_dlam, _ = closed_form(lam)
    got = jax.jacfwd(lambda lam: solve(lam, grad_fn=grad_fn).x)(lam)
    np.testing.assert_allclose(got, dw_dlam, rtol=1e-6)


def test_implicit_past_the_direct_solve(x64, monkeypatch):
    """Conjugate gradients on Hessian-vector products give the same derivative."""
    from gdkernel import _adjoint

    monkeypatch.setattr(_adjoint, "DIRECT_MAX", 1)
    lam = 0.3
    _, dw_dlam, _ = closed_form(lam)
    got = jax.grad(lambda lam: C @ solve(lam).x)(lam)
    np.testing.assert_allclose(got, C @ dw_dlam, rtol=1e-6)


def test_envelope_theorem_through_sweep(x64):
    """d cost(w*(lam), lam) / d lam = |w*|^2 for every converged member."""
    lam = 0.4
    w, _, _ = closed_form(lam)
    guesses = jnp.asarray(RNG.normal(size=(3, D)))
    rates = jnp.array([0.05, 0.2])

    def costs(lam):
        grid = gd.sweep(ridge, guesses, rates, args=(lam, X, Y), precision=1e-13, max_iter=20_000)
        return grid.cost

    grid_status = gd.sweep(
        ridge, guesses, rates, args=(lam, X, Y), precision=1e-13, max_iter=20_000
    ).status
    assert (np.asarray(grid_status) == gd.Status.CONVERGED).all()
    per_member = jax.jacrev(costs)(lam)
    np.testing.assert_allclose(per_member, np.full((2, 3), w @ w), rtol=1e-6)
    summed = jax.grad(lambda lam: costs(lam).sum())(lam)
    np.testing.assert_allclose(summed, 6 * (w @ w), rtol=1e-6)


@pytest.mark.parametrize("adjoint", ["implicit", "unrolled"])
def test_the_derivative_of_the_best_members_cost(x64, adjoint):
    """`best()` under `jax.grad`, `jax.jvp` and `jax.jit`: d cost(w*(lam), lam) / d lam =
    |w*|^2 at the best member (the envelope theorem; unrolled to the steps' rounding)."""
    lam = 0.4
    w, _, _ = closed_form(lam)
    guesses = jnp.asarray(RNG.normal(size=(3, D)))

    def grid(lam):
        return gd.sweep(
            ridge,
            guesses,
            [0.05, 0.2],
            args=(lam, X, Y),
            precision=1e-13,
            max_iter=20_000,
            adjoint=adjoint,
        )

    def best_cost(lam):
        return grid(lam).best().result.cost

    eager = grid(lam).best()
    np.testing.assert_allclose(jax.grad(best_cost)(lam), w @ w, rtol=1e-6)
    np.testing.assert_allclose(jax.jit(jax.grad(best_cost))(lam), w @ w, rtol=1e-6)
    np.testing.assert_allclose(jax.jvp(best_cost, (lam,), (1.0,))[1], w @ w, rtol=1e-6)
    picked = jax.jit(lambda lam: grid(lam).best())(lam)
    assert tuple(int(k) for k in picked.index) == eager.index
    assert float(picked.result.cost) == float(eager.result.cost)
    np.testing.assert_array_equal(np.asarray(picked.initial_guess), np.asarray(eager.initial_guess))


def test_best_under_a_transformation_with_no_qualifying_member_has_a_nan_cost():
    def best_cost(c):
        grid = gd.sweep(
            lambda x, c: (x - c) ** 2, np.array([1.0, 2.0]), [0.1], args=(c,), max_iter=2
        )
        return grid.best().result.cost

    with pytest.raises(ValueError, match="no member qualifies"):
        best_cost(0.5)
    assert np.isnan(float(jax.jit(best_cost)(0.5)))


def test_implicit_derivatives_of_the_start_and_rate_are_zero(x64):
    def x_star(x0, lr):
        return gd.gradient_descent(lambda x: (x - 2.0) ** 2, x0, lr, precision=1e-10).x

    assert jax.grad(x_star, argnums=(0, 1))(3.0, 0.1) == (0.0, 0.0)


@pytest.mark.parametrize("max_iter", [5, 30])
def test_implicit_derivative_of_a_member_that_did_not_converge_is_zero(x64, max_iter):
    def run(lam):
        return gd.gradient_descent(
            ridge, jnp.zeros(D), 0.01, args=(lam, X, Y), precision=1e-13, max_iter=max_iter
        )

    assert run(0.3).status == gd.Status.MAX_ITER
    np.testing.assert_array_equal(jax.jacfwd(lambda lam: run(lam).x)(0.3), np.zeros(D))
    assert jax.grad(lambda lam: run(lam).cost)(0.3) == 0.0


def test_an_inner_fit_that_fails_can_fail_the_outer_run(x64):
    """The guard docs/derivatives.md gives: an inner fit that hits `max_iter` has a zero
    implicit derivative, so an outer descent stops at once on its step rule, reported
    converged; with the status read, the outer run says it failed."""

    def outer(max_iter, guard):
        def loss(lam):
            inner = gd.gradient_descent(
                ridge, jnp.zeros(D), 0.01, args=(lam, X, Y), precision=1e-13, max_iter=max_iter
            )
            value = jnp.sum(inner.x**2)
            return (
                jnp.where(inner.status == gd.Status.CONVERGED, value, jnp.nan) if guard else value
            )

        return gd.gradient_descent(loss, 0.3, 0.1, precision=1e-6, max_iter=50)

    unguarded = outer(5, guard=False)
    assert unguarded.status == gd.Status.CONVERGED and unguarded.iterations == 1
    assert float(unguarded.x) == 0.3  # it never moved: the zero derivative
    assert outer(5, guard=True).status != gd.Status.CONVERGED


# ------------------------------------------------------------------------------ unrolled


def square_run(lr, x0, max_iter=100):
    return gd.gradient_descent(lambda x: x**2, x0, lr, max_iter=max_iter, adjoint="unrolled")


@pytest.mark.parametrize("max_iter", [100, 20])  # CONVERGED after 40; MAX_ITER after 20
def test_unrolled_square_exactly(x64, max_iter):
    res = square_run(0.1, 3.0, max_iter)
    n = int(res.iterations)
    assert n == min(40, max_iter)
    d_lr, d_x0 = jax.grad(lambda lr, x0: square_run(lr, x0, max_iter).x, argnums=(0, 1))(0.1, 3.0)
    # x_n = 3 (1 - 2 lr)^n
    np.testing.assert_allclose(d_lr, 3 * n * 0.8 ** (n - 1) * (-2), rtol=1e-12)
    np.testing.assert_allclose(d_x0, 0.8**n, rtol=1e-12)
    _, t = jax.jvp(lambda lr: square_run(lr, 3.0, max_iter).x, (0.1,), (1.0,))
    np.testing.assert_allclose(t, 3 * n * 0.8 ** (n - 1) * (-2), rtol=1e-12)


@pytest.mark.parametrize("unroll", [1, 8])  # 8: an accelerator's replay, 8 steps a trip
def test_unrolled_through_a_sweep_each_member_its_own_count(x64, monkeypatch, unroll):
    monkeypatch.setattr(_adjoint, "replay_unroll", lambda: unroll)
    rates = jnp.array([0.05, 0.1, 0.3])
    guesses = jnp.array([3.0, -1.0])

    def xs(rates):
        return gd.sweep(lambda x: x**2, guesses, rates, adjoint="unrolled").x

    grid = gd.sweep(lambda x: x**2, guesses, rates)
    jac = jax.jacrev(xs)(rates)  # (3, 2, 3): d x_ij / d lr_k
    for i, lr in enumerate(np.asarray(rates)):
        for j, x0 in enumerate(np.asarray(guesses)):
            n = int(grid.iterations[i, j])
            want = x0 * n * (1 - 2 * lr) ** (n - 1) * (-2)
            np.testing.assert_allclose(jac[i, j, i], want, rtol=1e-12)
            assert np.count_nonzero(jac[i, j]) == 1


@pytest.mark.parametrize("method", ["momentum", "nesterov"])
def test_unrolled_momentum_against_finite_differences(x64, method):
    def cost(x, a):
        return jnp.sum(a * x**2) + jnp.sum(jnp.sin(x))

    a = jnp.array([1.0, 3.0])

    def final(lr, mu, x0, a):
        return gd.gradient_descent(
            cost,
            x0,
            lr,
            args=(a,),
            method=method,
            momentum=mu,
            precision=1e-6,
            max_iter=300,
            adjoint="unrolled",
        ).x.sum()

    point = (0.05, 0.6, jnp.array([1.0, -2.0]), a)
    n = int(
        gd.gradient_descent(
            cost,
            point[2],
            0.05,
            args=(a,),
            method=method,
            momentum=0.6,
            precision=1e-6,
            max_iter=300,
        ).iterations
    )
    grads = jax.grad(final, argnums=(0, 1, 2, 3))(*point)

    def fixed_n(lr, mu, x0, a):  # the same number of steps, by a plain loop
        x, v = x0, jnp.zeros_like(x0)
        for _ in range(n):
            g = jax.grad(cost)(x, a)
            v = mu * v + g
            x = x - lr * (v if method == "momentum" else g + mu * v)
        return x.sum()

    eps = 1e-6
    for k, g in enumerate(grads):
        base = list(point)
        flat = np.atleast_1d(np.asarray(point[k], dtype=float))
        fd = []
        for i in range(flat.size):
            hi, lo = flat.copy(), flat.copy()
            hi[i] += eps
            lo[i] -= eps
            up = base.copy()
            down = base.copy()
            up[k] = hi.reshape(np.shape(point[k]))
            down[k] = lo.reshape(np.shape(point[k]))
            fd.append((fixed_n(*up) - fixed_n(*down)) / (2 * eps))
        np.testing.assert_allclose(np.ravel(g), fd, rtol=1e-5, atol=1e-8)


def test_unrolled_memory_stays_within_its_budget(x64):
    """100,000 iterations of a 1,000-parameter problem: reverse mode keeps about
    3 sqrt(max_iter) iterates, not max_iter of them."""
    n, max_iter = 1000, 100_000
    scale = jnp.linspace(0.5, 1.5, n)

    def loss(a):
        return gd.gradient_descent(
            lambda x, a: jnp.sum(a * scale * x**2),
            jnp.ones(n),
            1e-3,
            args=(a,),
            precision=0.0,
            max_iter=max_iter,
            adjoint="unrolled",
        ).cost

    compiled = jax.jit(jax.grad(loss)).lower(1.0).compile()
    used = compiled.memory_analysis().temp_size_in_bytes
    iterate = n * 8
    budget = 6 * int(np.sqrt(max_iter)) * iterate  # twice the stated 3 sqrt(max_iter) iterates
    assert used < budget, (used, budget)
    assert used < max_iter * iterate / 50  # far from storing every iterate


def test_unknown_adjoint_is_refused():
    with pytest.raises(ValueError, match="`adjoint`"):
        gd.gradient_descent(lambda x: x**2, 3.0, 0.1, adjoint="checkpoint")
    with pytest.raises(ValueError, match="`adjoint`"):
        gd.sweep(lambda x: x**2, np.ones(2), [0.1], adjoint="backprop")


def test_adjoint_leaves_the_values_unchanged(x64):
    for adjoint in ("implicit", "unrolled"):
        a = gd.gradient_descent(lambda x: x**2 - x, 3.0, 0.1, adjoint=adjoint)
        b = gd.gradient_descent(lambda x: x**2 - x, 3.0, 0.1)
        for field in ("x", "cost", "grad", "iterations", "status"):
            assert getattr(a, field) == getattr(b, field)


def test_a_run_with_history_is_never_differentiated_silently(x64):
    def loss(lam, adjoint):
        return gd.gradient_descent(
            ridge, jnp.zeros(D), 0.2, args=(lam, X, Y), history=True, adjoint=adjoint
        ).history.cost[0]

    with pytest.raises(ValueError, match=r"^`history`: a run with `history=True` has no deriv"):
        jax.grad(loss)(0.3, "implicit")
    with pytest.raises(ValueError, match="`adjoint"):
        jax.grad(loss)(0.3, "unrolled")
    # without differentiation, history runs as before
    assert np.isfinite(loss(0.3, "implicit"))


def test_a_mini_batch_run_has_no_implicit_derivative_and_an_unrolled_one(x64):
    """Mini-batches end on noisy steps, not at a minimum: the implicit adjoint refuses (before
    running), the unrolled one differentiates the steps run (against central differences)."""
    key = jax.random.key(0)

    def run(lam, adjoint):
        return gd.gradient_descent(
            ridge,
            jnp.zeros(D),
            0.05,
            args=(lam, X, Y),
            batch_size=8,
            key=key,
            precision=0.0,
            max_iter=60,
            adjoint=adjoint,
        )

    with pytest.raises(ValueError, match="`adjoint`: a run on mini-batches"):
        jax.grad(lambda lam: run(lam, "implicit").x.sum())(0.3)
    with pytest.raises(ValueError, match="`adjoint`: a run on mini-batches"):
        jax.jvp(lambda lam: run(lam, "implicit").x, (0.3,), (1.0,))
    # without differentiation, a mini-batch run under the default adjoint runs as before
    assert run(0.3, "implicit").status == gd.Status.MAX_ITER
    h = 1e-6
    want = (run(0.3 + h, "unrolled").x.sum() - run(0.3 - h, "unrolled").x.sum()) / (2 * h)
    got = jax.grad(lambda lam: run(lam, "unrolled").x.sum())(0.3)
    np.testing.assert_allclose(got, want, rtol=1e-6)
    assert abs(float(got)) > 1e-3  # a derivative, not a zero


def test_implicit_on_a_flat_direction_is_nan_and_unrolled_is_exact(x64):
    """Documented: the implicit adjoint needs a nonsingular Hessian at the minimum."""

    def x_sum(s, adjoint):
        return gd.gradient_descent(
            lambda x, s: (x[0] - s) ** 2,  # flat in x[1]
            jnp.zeros(2),
            0.1,
            args=(s,),
            precision=1e-10,
            max_iter=3000,
            adjoint=adjoint,
        ).x.sum()

    # forward mode: NaN; reverse mode: zero, as for a member that did not converge (a NaN
    # there would reach every member that shares `args`, below)
    assert np.isnan(jax.jacfwd(x_sum)(1.0, "implicit"))
    assert jax.grad(x_sum)(1.0, "implicit") == 0.0
    # x[0] = s (1 - 0.8^n) after n steps, x[1] stays 0
    n = int(
        gd.gradient_descent(
            lambda x: (x[0] - 1.0) ** 2, jnp.zeros(2), 0.1, precision=1e-10, max_iter=3000
        ).iterations
    )
    np.testing.assert_allclose(jax.grad(x_sum)(1.0, "unrolled"), 1 - 0.8**n, rtol=1e-12)


def test_a_member_on_a_plateau_leaves_the_others_reverse_derivatives_alone(x64):
    """Member 1 starts where the sigmoid is flat (its Hessian is 0 in float64) and converges
    at once; member 0 fits sigmoid(w) = y, so w* = logit(y) and dw*/dy = 1 / (y (1 - y))."""
    fit = lambda w, y: (jax.nn.sigmoid(w) - y) ** 2  # noqa: E731

    def grid(y):
        return gd.sweep(
            fit, jnp.array([0.0, 120.0]), [1.0], args=(y,), precision=1e-6, max_iter=5000
        )

    assert (np.asarray(grid(0.7).status) == gd.Status.CONVERGED).all()
    for derivative in (jax.grad, jax.jacfwd):
        np.testing.assert_allclose(
            derivative(lambda y: grid(y).x[0, 0])(0.7), 1 / (0.7 * 0.3), rtol=1e-4
        )
        np.testing.assert_allclose(
            derivative(lambda y: grid(y).best().result.x)(0.7), 1 / (0.7 * 0.3), rtol=1e-4
        )


def test_a_member_that_did_not_converge_on_a_flat_piece_has_zero_derivatives(x64):
    """Stuck on a linear piece (Hessian 0) until `max_iter`: zero in both modes."""

    def x_end(y):
        cost = lambda x, y: jnp.where(x < 1, 0.1 * x, (x - y) ** 2)  # noqa: E731
        return gd.gradient_descent(cost, -5.0, 0.1, args=(y,), max_iter=300)

    assert x_end(2.0).status == gd.Status.MAX_ITER
    assert jax.jacfwd(lambda y: x_end(y).x)(2.0) == 0.0
    assert jax.grad(lambda y: x_end(y).x)(2.0) == 0.0


def test_reverse_mode_through_the_conjugate_gradient_path(x64, monkeypatch):
    """Past the direct solve, `jax.grad` of a sweep's summed cost with respect to a vector in
    `args`: d/db of sum_k min_x (x.A.x / 2 - b.x) is -members * A^-1 b (the envelope)."""
    from gdkernel import _adjoint

    monkeypatch.setattr(_adjoint, "DIRECT_MAX", 1)
    monkeypatch.setattr(_adjoint, "SHARED_MAX", 1)
    a = jnp.asarray(np.diag([1.0, 2.0, 4.0]) + 0.3)
    b = jnp.array([1.0, -2.0, 0.5])

    guesses = jnp.asarray(RNG.normal(size=(4, 3)))

    def total(b):
        grid = _quadratic_sweep(a, b, guesses)
        assert bool(grid.converged.all())
        return grid.cost.sum()

    want = -4 * np.linalg.solve(np.asarray(a), np.asarray(b))
    np.testing.assert_allclose(jax.grad(total)(b), want, rtol=1e-8)
    np.testing.assert_allclose(jax.jvp(total, (b,), (jnp.ones(3),))[1], want.sum(), rtol=1e-8)


def test_inverse_against_numpy(x64):
    """The XLA-only inverse of the shared-Hessian path: pivoting, and NaN when singular."""
    a = RNG.normal(size=(6, 6)) + 3 * np.eye(6)
    needs_pivots = np.array([[0.0, 2.0, 1.0], [1.0, 0.0, 3.0], [4.0, 1.0, 0.0]])
    for m in (a, needs_pivots):
        np.testing.assert_allclose(_adjoint._inverse(jnp.asarray(m)), np.linalg.inv(m), rtol=1e-12)
    assert np.isnan(_adjoint._inverse(jnp.array([[2.0, 0.0], [0.0, 0.0]]))).any()


def _quadratic_sweep(a, b, guesses):
    """`x.A.x / 2 - b.x` from `guesses` at learning rate 0.2, run to a step of 1e-12."""
    return gd.sweep(
        lambda x, a, b: 0.5 * x @ a @ x - b @ x,
        guesses,
        0.2,
        args=(a, b),
        precision=1e-12,
        max_iter=20_000,
    )


def test_a_shared_hessian_is_inverted_once_without_lapack(x64):
    """A quadratic's members share one Hessian: inverted once in XLA's own operations (a
    LAPACK solve of every member's right-hand side at once leaves BLAS threads spinning on a
    CPU), with the envelope theorem's derivative."""
    a = jnp.asarray(np.diag([1.0, 2.0, 4.0]) + 0.3)
    b = jnp.array([1.0, -2.0, 0.5])
    guesses = jnp.asarray(RNG.normal(size=(5, 3)))
    want = -5 * np.linalg.solve(np.asarray(a), np.asarray(b))
    gradient = jax.jit(jax.grad(lambda b: _quadratic_sweep(a, b, guesses).cost.sum()))
    np.testing.assert_allclose(gradient(b), want, rtol=1e-8)
    assert not _solver_calls(gradient.lower(b).compile().as_text())


def _solver_calls(program: str) -> list[str]:
    calls = re.findall(r'custom_call_target="([^"]*)"', program)
    return [c for c in calls if any(lib in c for lib in ("lapack", "cusolver", "hipsolver"))]


def test_a_vmapped_lone_run_makes_no_lapack_call(x64):
    """`jax.vmap` of a lone run over its starting points: one Hessian, many right-hand sides.
    Each member's small Hessian is inverted in XLA operations, no LAPACK solve."""
    lam = 0.3
    _, dw_dlam, _ = closed_form(lam)

    def w_star(lam, x0):
        return gd.gradient_descent(
            ridge, x0, 0.2, args=(lam, X, Y), precision=1e-13, max_iter=20_000
        ).x

    starts = jnp.asarray(RNG.normal(size=(300, D)))
    tangents = jax.jit(jax.vmap(jax.jacfwd(w_star), in_axes=(None, 0)))
    np.testing.assert_allclose(tangents(lam, starts), np.tile(dw_dlam, (300, 1)), rtol=1e-6)
    assert not _solver_calls(tangents.lower(lam, starts).compile().as_text())


@pytest.mark.parametrize("dim", [3, 12])  # a direct solve each, and conjugate gradients
def test_members_with_their_own_hessians(x64, dim):
    """`cosh(x) - b.x`: x* = asinh(b) and dx*/db = 1/sqrt(1 + b^2) for every member. The
    Hessian, cosh(x), depends on the point, so each member's system is solved on its own."""
    assert (dim <= _adjoint.DIRECT_MAX) == (dim == 3)
    b = jnp.asarray(np.linspace(-2.0, 2.0, dim) + 0.1)

    def x_star_sum(b):
        grid = gd.sweep(
            lambda x, b: jnp.sum(jnp.cosh(x)) - b @ x,
            jnp.asarray(RNG.normal(size=(4, dim))),
            jnp.array([0.1, 0.3]),
            args=(b,),
            precision=1e-12,
            max_iter=20_000,
        )
        assert bool(grid.converged.all())
        return grid.x.sum()

    want = 8 / np.sqrt(1 + np.asarray(b) ** 2)  # d asinh(b)/db, for each of 8 members
    np.testing.assert_allclose(jax.grad(x_star_sum)(b), want, rtol=1e-8)
    np.testing.assert_allclose(jax.jacfwd(x_star_sum)(b), want, rtol=1e-8)
    assert (
        _adjoint._shared_inverse(
            _adjoint._hessian(
                lambda x, args: jax.value_and_grad(lambda x: jnp.sum(jnp.cosh(x)))(x)
            ),
            jnp.zeros((4, dim)),
            (),
        )
        is None
    )
