"""`sweep` over learning rates x starting points agrees with lone runs, member by member."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import closed_form_square_iterations, scalar_gd

import gdkernel as gd
from conftest import tol


def tilted(x):
    return x**2 - 2 * x


def test_every_member_matches_its_lone_run(dtype):
    guesses = np.array([-3.0, 0.5, 1.0, 4.0])
    lrs = np.array([1e-6, 0.01, 0.3, 0.9, 5.0])
    kw = dict(precision=1e-5, max_iter=300, grad_tol=1e-3)
    grid = gd.sweep(tilted, guesses, lrs, **kw)
    assert grid.x.shape == grid.status.shape == grid.iterations.shape == (5, 4)
    seen = set()
    for i, lr in enumerate(lrs):
        for j, x0 in enumerate(guesses):
            single = gd.gradient_descent(tilted, x0, lr, **kw)
            assert int(grid.iterations[i, j]) == int(single.iterations), (i, j)
            assert int(grid.status[i, j]) == int(single.status), (i, j)
            np.testing.assert_array_equal(np.asarray(grid.x[i, j]), np.asarray(single.x))
            seen.add(gd.Status(int(single.status)))
    assert seen == {gd.Status.CONVERGED, gd.Status.MAX_ITER, gd.Status.DIVERGED, gd.Status.STALLED}


def test_members_match_a_plain_python_loop(x64):
    guesses = np.linspace(-5, 5, 7)
    lrs = np.geomspace(1e-3, 0.9, 6)
    grid = gd.sweep(tilted, guesses, lrs, precision=1e-7, max_iter=2000)
    for i, lr in enumerate(lrs):
        for j, x0 in enumerate(guesses):
            x_ref, it_ref, status_ref = scalar_gd(lambda x: 2 * x - 2, x0, lr, 1e-7, 2000)
            assert int(grid.iterations[i, j]) == it_ref
            assert abs(float(grid.x[i, j]) - x_ref) <= 1e-12 * max(1, abs(x_ref))
            expected = gd.Status.CONVERGED if status_ref == "converged" else gd.Status.MAX_ITER
            assert int(grid.status[i, j]) == expected


def test_shapes_for_scalar_learning_rate_and_single_guess():
    grid = gd.sweep(tilted, np.linspace(-1, 1, 6), 0.1)
    assert grid.x.shape == (1, 6) and grid.learning_rate.shape == (1,)
    grid = gd.sweep(tilted, 3.0, [0.1, 0.2])
    assert grid.x.shape == (2, 1) and grid.initial_guess.shape == (1,)
    grid = gd.sweep(tilted, 3, 0.1)
    assert grid.x.shape == (1, 1)
    assert int(grid.iterations[0, 0]) == int(gd.gradient_descent(tilted, 3, 0.1).iterations)


def test_vector_and_pytree_guesses(dtype):
    def bowl(x):
        return (x[0] - 1) ** 2 + 2 * (x[1] + 1) ** 2

    guesses = np.array([[0.0, 0.0], [3.0, -2.0], [-1.0, 4.0]])
    grid = gd.sweep(bowl, guesses, [0.05, 0.2])
    assert grid.x.shape == (2, 3, 2) and grid.grad.shape == (2, 3, 2)
    np.testing.assert_allclose(
        np.asarray(grid.x), np.broadcast_to([1.0, -1.0], (2, 3, 2)), atol=1e-3
    )

    def line(p):
        return (p["b0"] - 2) ** 2 + (p["b1"] + 3) ** 2

    tree = {"b0": np.array([0.0, 1.0, 5.0, -5.0]), "b1": np.zeros(4)}
    grid = gd.sweep(line, tree, np.array([0.1, 0.3, 0.6]), precision=1e-6, max_iter=1000)
    assert grid.x["b0"].shape == (3, 4) and grid.iterations.shape == (3, 4)
    for i, lr in enumerate([0.1, 0.3, 0.6]):
        for j in range(4):
            single = gd.gradient_descent(
                line, {"b0": tree["b0"][j], "b1": 0.0}, lr, precision=1e-6, max_iter=1000
            )
            assert int(grid.iterations[i, j]) == int(single.iterations)
            np.testing.assert_allclose(
                float(grid.x["b0"][i, j]), float(single.x["b0"]), rtol=tol(dtype)
            )


def test_best_member_is_the_lowest_converged_cost():
    guesses = np.array([-4.0, -1.0, 2.0, 3.0])
    lrs = np.array([0.001, 0.05, 0.4, 1.5])
    grid = gd.sweep(tilted, guesses, lrs, precision=1e-6, max_iter=200)
    # independent pick: lone runs, keep the converged ones, lowest cost
    # (lowest cost, then fewest iterations)
    best_key, best_rank = None, (np.inf, np.inf)
    for i, lr in enumerate(lrs):
        for j, x0 in enumerate(guesses):
            single = gd.gradient_descent(tilted, x0, lr, precision=1e-6, max_iter=200)
            rank = (float(single.cost), int(single.iterations))
            if single.status == gd.Status.CONVERGED and rank < best_rank:
                best_key, best_rank = (i, j), rank
    best_cost = best_rank[0]
    best = grid.best()
    assert best.index == best_key
    assert float(best.learning_rate) == pytest.approx(lrs[best_key[0]], rel=1e-6)
    assert float(best.initial_guess) == guesses[best_key[1]]
    assert float(best.result.cost) == pytest.approx(best_cost, rel=1e-6)
    assert best.result.status == gd.Status.CONVERGED


def test_best_with_nothing_converged_says_why():
    grid = gd.sweep(tilted, np.array([3.0, 4.0]), [5.0], max_iter=2000)
    with pytest.raises(ValueError, match="DIVERGED: 2"):
        grid.best()
    with pytest.raises(ValueError, match="among"):
        grid.best(among="nope")


def test_counts_and_member():
    grid = gd.sweep(tilted, np.array([3.0, 4.0]), [0.1, 5.0], max_iter=2000)
    counts = grid.counts()
    assert counts[gd.Status.CONVERGED] == 2 and counts[gd.Status.DIVERGED] == 2
    assert sum(counts.values()) == 4
    member = grid.member(1, 0)
    assert isinstance(member, gd.Result) and member.status == gd.Status.DIVERGED
    assert np.asarray(grid.diverged).tolist() == [[False, False], [True, True]]
    assert grid.member(-1, -2).status == gd.Status.DIVERGED  # counted from the end
    for i, j in ((2, 0), (0, 2), (-3, 0)):
        with pytest.raises(IndexError, match="outside the grid"):
            grid.member(i, j)


@pytest.mark.parametrize(
    "wrap",
    [
        pytest.param(lambda g: {"b": g}, id="dict"),
        pytest.param(lambda g: (g,), id="tuple"),
    ],
)
def test_one_scalar_leaf_in_a_container(wrap, x64):
    guesses, rates = np.linspace(-2.0, 2.0, 5), np.array([0.1, 0.3])

    def bare(x):
        return (x - 1.5) ** 2

    def wrapped(p):
        return bare(jax.tree.leaves(p)[0])

    want = gd.sweep(bare, guesses, rates, precision=1e-8, max_iter=500)
    for got in (
        gd.sweep(wrapped, wrap(guesses), rates, precision=1e-8, max_iter=500),
        gd.compile_sweep(wrapped, wrap(guesses), rates, precision=1e-8, max_iter=500)(
            wrap(guesses), rates
        ),
    ):
        np.testing.assert_array_equal(np.asarray(jax.tree.leaves(got.x)[0]), np.asarray(want.x))
        np.testing.assert_array_equal(np.asarray(got.iterations), np.asarray(want.iterations))
        np.testing.assert_array_equal(np.asarray(got.status), np.asarray(want.status))


def test_sweep_inside_jit_equals_sweep_outside(x64):
    guesses, rates = np.linspace(-2.0, 3.0, 7), np.array([0.01, 0.2, 0.9, 1.2])

    def cost(x):
        return 3 * x**2 - 2 * x - 3

    want = gd.sweep(cost, guesses, rates, precision=1e-8, max_iter=400)
    got = jax.jit(lambda g, r: gd.sweep(cost, g, r, precision=1e-8, max_iter=400))(guesses, rates)
    pytree = jax.jit(
        lambda g: gd.sweep(lambda p: cost(p["x"]), {"x": g}, rates, precision=1e-8, max_iter=400)
    )(guesses)
    for field in ("x", "iterations", "status", "step_size"):
        np.testing.assert_array_equal(
            np.asarray(getattr(got, field)), np.asarray(getattr(want, field))
        )
    np.testing.assert_array_equal(np.asarray(pytree.x["x"]), np.asarray(want.x))
    np.testing.assert_array_equal(np.asarray(pytree.iterations), np.asarray(want.iterations))


def test_jax_arrays_made_outside_a_jit_are_taken_inside_it(x64):
    """Learning rates and guesses made as JAX arrays outside the user's `jax.jit` and closed
    over inside it (concrete there, not traced) run as outside, derivatives included."""
    guesses, rates = jnp.linspace(-2.0, 3.0, 5), jnp.array([0.01, 0.2, 0.45])
    one_rate = jnp.float64(0.2)

    def run(c, lrs):
        return gd.sweep(
            lambda x, c: (x - c) ** 2, guesses, lrs, args=(c,), precision=1e-10, max_iter=5000
        )

    want = run(0.5, np.asarray(rates))
    got = jax.jit(lambda c: run(c, rates))(0.5)
    np.testing.assert_array_equal(np.asarray(got.x), np.asarray(want.x))
    np.testing.assert_array_equal(np.asarray(got.iterations), np.asarray(want.iterations))
    assert np.all(np.asarray(got.status) == gd.Status.CONVERGED)
    # every converged member sits at c: d sum(x) / dc is the member count (implicit)
    grad = jax.jit(jax.grad(lambda c: run(c, rates).x.sum()))(0.5)
    assert float(grad) == pytest.approx(15.0, rel=1e-9)
    single = jax.jit(lambda c: run(c, one_rate).x)(0.5)
    np.testing.assert_array_equal(np.asarray(single), np.asarray(want.x)[1:2])


def test_a_sweep_of_concrete_inputs_inside_a_jit_equals_one_outside():
    """Nothing traced, yet inside the user's `jax.jit`: the same members."""
    guesses, rates = np.linspace(-2.0, 3.0, 7), np.array([0.01, 0.2])

    def cost(x):
        return 3 * x**2 - 2 * x - 3

    want = gd.sweep(cost, guesses, rates, precision=1e-6, max_iter=400)
    got = jax.jit(lambda: gd.sweep(cost, guesses, rates, precision=1e-6, max_iter=400))()
    for field in ("x", "iterations", "status"):
        np.testing.assert_array_equal(
            np.asarray(getattr(got, field)), np.asarray(getattr(want, field))
        )


def test_sweep_result_is_a_pytree():
    grid = gd.sweep(tilted, np.array([3.0, 4.0]), [0.1, 0.2])
    leaves = jax.tree.leaves(grid)
    assert all(hasattr(leaf, "shape") for leaf in leaves)
    doubled = jax.tree.map(lambda a: a * 2, grid)
    assert isinstance(doubled, gd.SweepResult)


def test_thousand_by_thousand_square_sweep(x64):
    lrs = np.geomspace(1e-3, 0.99, 1000)
    guesses = np.linspace(-3, 3, 1000) + 1e-3  # avoid x0 = 0 exactly
    grid = gd.sweep(lambda x: x**2, guesses, lrs, max_iter=10_000)
    assert grid.iterations.shape == grid.status.shape == (1000, 1000)
    assert np.all(np.asarray(grid.status) == gd.Status.CONVERGED)
    rng = np.random.default_rng(3)
    for i, j in zip(rng.integers(0, 1000, 300), rng.integers(0, 1000, 300), strict=True):
        expected = closed_form_square_iterations(guesses[j], lrs[i], 1e-4, 10_000)
        # the closed form is exact up to rounding at the boundary step
        assert abs(int(grid.iterations[i, j]) - expected) <= 1, (i, j)
        _, it_ref, _ = scalar_gd(lambda x: 2 * x, guesses[j], lrs[i], 1e-4, 10_000)
        assert int(grid.iterations[i, j]) == it_ref


def test_nested_lists_of_numbers_are_arrays():
    def bowl(x):
        return (x[0] - 1) ** 2 + (x[1] + 2) ** 2

    grid = gd.sweep(bowl, [[0, 0], [3, -4]], [0.1, 0.4])
    assert grid.x.shape == (2, 2, 2)
    np.testing.assert_allclose(
        np.asarray(grid.x), np.broadcast_to([1.0, -2.0], (2, 2, 2)), atol=1e-3
    )
    res = gd.gradient_descent(bowl, [3, -4], 0.1)
    assert res.x.shape == (2,)


@pytest.mark.parametrize("name", ["rosenbrock", "himmelblau", "rastrigin"])
def test_sweep_members_agree_with_lone_runs_on_the_builtins(dtype, name):
    """Iterations and statuses are identical; x agrees to rounding. The batched program lets
    XLA contract multiply-adds differently from a lone run's program, and along Rosenbrock's
    valley a last-bit difference can grow over hundreds of iterations; in float32 a Rosenbrock
    member that stops after 8 large steps (`b - a**2` cancelling) ends 2.9e-3 from the lone
    run, each of the two about 2e-3 from the float64 run of the same steps."""
    from gdkernel.functions import BUILTINS

    b = BUILTINS[name]
    rng = np.random.default_rng(2)
    x0 = np.asarray(b.x0, dtype)
    guesses = (x0[None] + rng.normal(size=(6, *x0.shape))).astype(dtype)
    rates = np.geomspace(b.learning_rate / 10, b.learning_rate * 3, 3)
    rtol = 1e-7 if dtype == np.float64 else 5e-3
    for method in ("gd", "momentum", "nesterov"):
        kw = dict(precision=1e-6, max_iter=800, method=method, norm="l2")
        if method != "gd":
            kw["momentum"] = 0.5
        grid = gd.sweep(b.fn, guesses, rates, **kw)
        for i, lr in enumerate(rates):
            for j in range(len(guesses)):
                lone = gd.gradient_descent(b.fn, guesses[j], lr, **kw)
                member = grid.member(i, j)
                assert int(member.iterations) == int(lone.iterations), (method, i, j)
                assert int(member.status) == int(lone.status), (method, i, j)
                np.testing.assert_allclose(
                    np.asarray(member.x), np.asarray(lone.x), rtol=rtol, atol=rtol
                )


@pytest.mark.parametrize("threads", [2, 3])
def test_threads_share_the_grid_member_by_member(threads, dtype):
    """Members dealt to host threads in turn come back in place, bit for bit, against the plain
    Python loop and against one thread; a vector problem with momentum likewise."""
    guesses = np.linspace(-4, 4, 37).astype(dtype)
    lrs = np.geomspace(1e-3, 0.95, 5)
    kw = dict(precision=1e-5, max_iter=3000)
    one = gd.sweep(tilted, guesses, lrs, threads=1, **kw)
    many = gd.sweep(tilted, guesses, lrs, threads=threads, **kw)
    for field in ("x", "cost", "grad", "step_size", "iterations", "status"):
        np.testing.assert_array_equal(
            np.asarray(getattr(many, field)), np.asarray(getattr(one, field))
        )
    if dtype == np.float64:  # the plain loop runs in Python floats
        for i, lr in enumerate(lrs):
            for j, x0 in enumerate(guesses):
                x_ref, it_ref, _ = scalar_gd(lambda x: 2 * x - 2, x0, lr, 1e-5, 3000)
                assert int(many.iterations[i, j]) == it_ref
                assert abs(float(many.x[i, j]) - x_ref) <= 1e-12

    def bowl(x):
        return (x[0] - 1) ** 2 + 2 * (x[1] + 1) ** 2

    pairs = np.stack([guesses, -guesses], axis=1)
    one = gd.sweep(bowl, pairs, lrs[:3], method="momentum", momentum=0.5, threads=1, **kw)
    many = gd.sweep(bowl, pairs, lrs[:3], method="momentum", momentum=0.5, threads=threads, **kw)
    np.testing.assert_array_equal(np.asarray(many.x), np.asarray(one.x))
    np.testing.assert_array_equal(np.asarray(many.iterations), np.asarray(one.iterations))
    done = np.asarray(many.converged)
    assert done.sum() > done.size // 2
    # the step rule fires within lr * |grad| / (1 - momentum) < precision of the minimum
    np.testing.assert_allclose(
        np.asarray(many.x)[done], np.broadcast_to([1.0, -1.0], (done.sum(), 2)), atol=1e-2
    )


def test_threads_must_be_a_positive_int():
    with pytest.raises(ValueError, match="`threads` must be >= 1"):
        gd.sweep(tilted, 1.0, 0.1, threads=0)
    with pytest.raises(TypeError, match="`threads` must be a positive int"):
        gd.sweep(tilted, 1.0, 0.1, threads=2.0)


def test_compile_sweep_on_threads_equals_sweep(dtype):
    """The compiled program called from two threads: the same members as `sweep` on one."""
    guesses = np.linspace(-4, 4, 33).astype(dtype)
    lrs = np.geomspace(1e-3, 0.95, 4)
    kw = dict(precision=1e-5, max_iter=3000)
    run = gd.compile_sweep(tilted, guesses, lrs, threads=2, **kw)
    for shift in (0.0, 0.5):
        got = run(guesses + shift, lrs)
        want = gd.sweep(tilted, guesses + shift, lrs, threads=1, **kw)
        for field in ("x", "cost", "iterations", "status"):
            np.testing.assert_array_equal(
                np.asarray(getattr(got, field)), np.asarray(getattr(want, field))
            )
    if dtype == np.float64:
        for i, lr in enumerate(lrs):
            x_ref, it_ref, _ = scalar_gd(lambda x: 2 * x - 2, guesses[3] + 0.5, lr, 1e-5, 3000)
            assert int(got.iterations[i, 3]) == it_ref
            assert abs(float(got.x[i, 3]) - x_ref) <= 1e-12


def test_compile_sweep_converts_args_as_sweep_does():
    # Compiled with float32 data and a Python float; called with the same data in float64
    # NumPy and with an int: converted as `sweep` converts them, not refused.
    X = np.linspace(0, 1, 20)
    fit = lambda w, X, y: jnp.mean((w * X - y) ** 2)  # noqa: E731
    run = gd.compile_sweep(fit, np.zeros(3), [0.1, 0.5], args=(jnp.asarray(X), jnp.asarray(2 * X)))
    got, want = (
        run(np.ones(3), [0.1, 0.5], args=(X, 2 * X)),
        gd.sweep(fit, np.ones(3), [0.1, 0.5], args=(X, 2 * X)),
    )
    np.testing.assert_array_equal(np.asarray(got.x), np.asarray(want.x))
    np.testing.assert_allclose(np.asarray(got.x), 2.0, atol=1e-2)  # the slope, to the step rule
    shifted = gd.compile_sweep(lambda w, s: (w - s) ** 2, np.zeros(3), [0.1], args=(2.0,))
    np.testing.assert_allclose(np.asarray(shifted(np.zeros(3), [0.1], args=(3,)).x), 3.0, atol=1e-3)
    with pytest.raises(ValueError, match=r"compiled for: .*\(float,\); got .*\(float\d+\[2\],\)"):
        shifted(np.zeros(3), [0.1], args=(np.ones(2),))
    # Data compiled from float64 NumPy (float32 to JAX by default) and called with another
    # length: the message names the types the program takes and blames the length alone.
    mean = gd.compile_sweep(lambda w, X: jnp.mean((w - X) ** 2), np.zeros(4), [0.1], args=(X,))
    with pytest.raises(ValueError) as info:
        mean(np.zeros(4), [0.1], args=(np.linspace(0, 1, 40),))
    message = str(info.value)
    dtype = "float64" if jax.config.read("jax_enable_x64") else "float32"
    assert message.endswith(
        f"compiled for: {dtype}[4], {dtype}[1], ({dtype}[20],); got "
        f"{dtype}[4], {dtype}[1], ({dtype}[40],)"
    ), message


def test_a_grid_indexed_by_two_numbers_is_its_member():
    grid = gd.sweep(lambda x: x**2, np.linspace(-3, 3, 5), [0.05, 0.1])
    for i, j in [(0, 0), (1, 3), (-1, -1)]:
        got, want = grid[i, j], grid.member(i, j)
        assert got.iterations == want.iterations and got.x == want.x
    assert grid[5] is grid.status  # an int indexes the fields, as for any named tuple
