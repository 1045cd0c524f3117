"""optax optimizers by name or factory, under gdkernel's stopping rules, against loops written
by hand around optax (the tutorials' loop: step, measure, stop)."""

import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from helpers import NORMS

import gdkernel as gd


def rosenbrock(x):
    return (1 - x[0]) ** 2 + 100 * (x[1] - x[0] ** 2) ** 2


def bowl(x):
    return jnp.sum((x - jnp.array([1.0, -2.0])) ** 2)


def valley(x):
    """An ill-conditioned convex quadratic (condition number 50) with a cross term."""
    return 0.5 * (x[0] - 1.0) ** 2 + 25.0 * (x[1] + 0.5 * x[0]) ** 2


def optax_loop(cost, x0, opt, precision, max_iter, norm="l1"):
    """The tutorials' loop around an optax optimizer: (x, iterations, status name)."""
    grad = jax.jit(jax.grad(cost))
    x = jax.tree.map(jnp.asarray, x0)
    state = opt.init(x)
    for it in range(1, max_iter + 1):
        updates, state = opt.update(grad(x), state, x)
        new_x = optax.apply_updates(x, updates)
        diff = jax.tree.leaves(jax.tree.map(lambda a, b: np.ravel(a - b), new_x, x))
        step = NORMS[norm](np.concatenate(diff))
        x = new_x
        if step < precision:
            return x, it, "CONVERGED"
    return x, max_iter, "MAX_ITER"


# RMSprop and Lion take steps of about the learning rate whatever the gradient's size, so near the
# minimum they settle into a cycle of +-lr whose phase a last-bit difference in one step decides
# (a fused loop and an op-by-op loop round differently on some CPUs). They are compared on their
# way down, 200 iterations in, still far from the minimum; the others run to their stopping rule.
CASES = [
    ("adam", {"b1": 0.8}, optax.adam, 3000),
    ("adamw", {"weight_decay": 1e-3}, optax.adamw, 3000),
    ("rmsprop", {"decay": 0.95}, optax.rmsprop, 200),
    ("adagrad", {}, optax.adagrad, 3000),
    ("adabelief", {"b2": 0.99}, optax.adabelief, 3000),
    ("lion", {"b1": 0.85}, optax.lion, 200),
]


@pytest.mark.parametrize(("name", "hyper", "factory", "max_iter"), CASES, ids=[c[0] for c in CASES])
def test_named_optimizer_matches_a_hand_written_optax_loop(x64, name, hyper, factory, max_iter):
    x0, lr, precision = jnp.array([-1.2, 1.0]), 0.01, 1e-6
    res = gd.gradient_descent(
        valley,
        x0,
        lr,
        method=name,
        hyperparams=hyper,
        precision=precision,
        max_iter=max_iter,
        divergence=None,
    )
    x, its, status = optax_loop(valley, x0, factory(lr, **hyper), precision, max_iter)
    assert int(res.iterations) == its
    assert res.status.item() == gd.Status[status]
    np.testing.assert_allclose(res.x, x, rtol=1e-9, atol=1e-12)
    # Every case has moved well off its start, so agreement is not agreement on standing still.
    assert float(jnp.max(jnp.abs(res.x - x0))) > 0.3


def test_factory_and_static_hyperparameters(x64):
    """An optax factory itself, with a boolean hyperparameter (static) and a number (traced)."""
    x0, lr = jnp.array([3.0, 1.0]), 0.05
    res = gd.gradient_descent(
        bowl, x0, lr, method=optax.adam, hyperparams={"b1": 0.7, "nesterov": True}, max_iter=2000
    )
    x, its, status = optax_loop(bowl, x0, optax.adam(lr, b1=0.7, nesterov=True), 1e-4, 2000)
    assert (int(res.iterations), res.status.item()) == (its, gd.Status[status])
    assert status == "CONVERGED"
    np.testing.assert_allclose(res.x, x, rtol=1e-10, atol=1e-12)


def test_pytree_guess_with_adam_and_the_l2_norm(x64):
    X = np.linspace(0, 1, 30)
    y = 2 * X + 1

    def cost(w):
        return jnp.mean((w["b0"] + w["b1"] * X - y) ** 2)

    guess = {"b0": 0.0, "b1": 0.0}
    res = gd.gradient_descent(cost, guess, 0.05, method="adam", norm="l2", max_iter=5000)
    x, its, status = optax_loop(cost, guess, optax.adam(0.05), 1e-4, 5000, norm="l2")
    assert (int(res.iterations), res.status.item()) == (its, gd.Status[status])
    np.testing.assert_allclose(res.x["b1"], x["b1"], rtol=1e-10)


def test_sgd_is_the_tutorials_rule(x64):
    a = gd.gradient_descent(bowl, jnp.array([3.0, 1.0]), 0.1, method="sgd")
    b = gd.gradient_descent(bowl, jnp.array([3.0, 1.0]), 0.1)
    assert int(a.iterations) == int(b.iterations)
    np.testing.assert_array_equal(a.x, b.x)


@pytest.mark.parametrize("dtype_name", ["float32", "float64"])
def test_adam_sweep_equals_lone_runs(dtype_name):
    with jax.enable_x64(dtype_name == "float64"):
        guesses = jnp.array([[-1.2, 1.0], [0.0, 0.0], [2.0, 2.0]], dtype=dtype_name)
        rates = jnp.array([0.003, 0.03], dtype=dtype_name)
        grid = gd.sweep(rosenbrock, guesses, rates, method="adam", max_iter=4000, precision=1e-5)
        for i, lr in enumerate(rates):
            for j, x0 in enumerate(guesses):
                lone = gd.gradient_descent(
                    rosenbrock, x0, lr, method="adam", max_iter=4000, precision=1e-5
                )
                member = grid.member(i, j)
                assert int(member.iterations) == int(lone.iterations)
                assert int(member.status) == int(lone.status)
                np.testing.assert_allclose(
                    member.x, lone.x, rtol=1e-4 if dtype_name == "float32" else 1e-10
                )


def test_adam_divergence_and_history(x64):
    """The divergence rule and history apply to an optax rule as to gdkernel's own."""
    # adam's first step is about the learning rate: to x = -1, where the cost is NaN
    res = gd.gradient_descent(jnp.sqrt, 1.0, 2.0, method="adam")
    assert res.status.item() == gd.Status.DIVERGED
    assert (int(res.iterations), float(res.x)) == (0, 1.0)  # the iterate before
    hist = gd.gradient_descent(bowl, jnp.array([3.0, 1.0]), 0.1, method="adam", history=True)
    x, its, _ = optax_loop(bowl, jnp.array([3.0, 1.0]), optax.adam(0.1), 1e-4, 100)
    assert int(hist.iterations) == its
    np.testing.assert_allclose(hist.history.x[its], x, rtol=1e-10)


def test_unrolled_derivative_through_adam_matches_finite_differences(x64):
    def final(lr):
        res = gd.gradient_descent(
            bowl, jnp.array([3.0, 1.0]), lr, method="adam", adjoint="unrolled", max_iter=50
        )
        return res.cost

    lr, h = 0.05, 1e-6
    fd = (final(lr + h) - final(lr - h)) / (2 * h)
    np.testing.assert_allclose(jax.grad(final)(lr), fd, rtol=1e-5)


def test_bad_methods_and_hyperparameters_are_named():
    with pytest.raises(ValueError, match=r"`method` must be one of .*'adam'.*got 'adamm'"):
        gd.gradient_descent(bowl, jnp.zeros(2), 0.1, method="adamm")
    with pytest.raises(
        ValueError, match=r"unknown hyperparameter 'b3' for method='adam'; it takes: b1"
    ):
        gd.gradient_descent(bowl, jnp.zeros(2), 0.1, method="adam", hyperparams={"b3": 0.5})
    with pytest.raises(ValueError, match=r"`learning_rate` is gdkernel's own argument"):
        gd.gradient_descent(
            bowl, jnp.zeros(2), 0.1, method="adam", hyperparams={"learning_rate": 0.5}
        )
    with pytest.raises(ValueError, match=r"`hyperparams` are for optax methods; method='gd'"):
        gd.gradient_descent(bowl, jnp.zeros(2), 0.1, hyperparams={"b1": 0.5})
    with pytest.raises(ValueError, match=r"`momentum` is used only by .*method='adam'"):
        gd.gradient_descent(bowl, jnp.zeros(2), 0.1, method="adam", momentum=0.5)
    with pytest.raises(TypeError, match=r"`hyperparams\['b1'\]` must be a real number"):
        gd.gradient_descent(bowl, jnp.zeros(2), 0.1, method="adam", hyperparams={"b1": [1, "x"]})
    with pytest.raises(ValueError, match=r"^method='adam' with `hyperparams` \{'b1': 'x'\} fails"):
        gd.gradient_descent(bowl, jnp.zeros(2), 0.1, method="adam", hyperparams={"b1": "x"})
    with pytest.raises(TypeError, match=r"`method` must be a name"):
        gd.gradient_descent(bowl, jnp.zeros(2), 0.1, method=3)


def test_missing_optax_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "optax", None)
    with pytest.raises(ImportError, match=r"pip install 'gdkernel\[optax\]'"):
        gd.gradient_descent(bowl, jnp.zeros(2), 0.1, method="adam")
    # the built-in rules need no optax
    assert gd.gradient_descent(bowl, jnp.zeros(2), 0.1, method="nesterov").converged


def test_mixed_precision_guess_keeps_each_state_dtype():
    """A bfloat16 leaf beside a float32 one: a hyperparameter (in the promoted dtype) must not
    promote the bfloat16 moments, and the run equals the optax loop's iteration count."""

    def cost(p):
        return jnp.sum((p["a"] - 1) ** 2 + (p["b"] - 2) ** 2).astype(jnp.float32)

    guess = {"a": jnp.zeros(2, jnp.bfloat16), "b": jnp.zeros(2, jnp.float32)}
    res = gd.gradient_descent(cost, guess, 0.1, method="adam", hyperparams={"b1": 0.8})
    assert res.x["a"].dtype == jnp.bfloat16 and res.x["b"].dtype == jnp.float32
    _, its, status = optax_loop(cost, guess, optax.adam(0.1, b1=0.8), 1e-4, 100)
    assert (int(res.iterations), res.status.item()) == (its, gd.Status[status])


def test_integer_hyperparameters_are_static_and_bad_numbers_refused():
    # adafactor takes sizes and offsets as Python ints (shapes depend on them): ints stay static
    res = gd.gradient_descent(
        bowl,
        jnp.zeros(2),
        0.1,
        method=optax.adafactor,
        hyperparams={"min_dim_size_to_factor": 64, "decay_offset": 0},
        max_iter=30,
    )
    assert res.status.item() in (gd.Status.MAX_ITER, gd.Status.CONVERGED)
    assert int(res.iterations) >= 1
    with pytest.raises(ValueError, match=r"`hyperparams\['b1'\]` must be a finite number"):
        gd.gradient_descent(bowl, jnp.zeros(2), 0.1, method="adam", hyperparams={"b1": np.nan})
    with pytest.raises(ValueError, match=r"^method='<lambda>' with `hyperparams` \{\} fails"):
        gd.gradient_descent(bowl, jnp.zeros(2), 0.1, method=lambda learning_rate: 3)
    # a number the factory needs concrete, given as a (traced) hyperparameter: told where it goes
    decaying = lambda learning_rate, decay: optax.adam(  # noqa: E731
        optax.exponential_decay(learning_rate, 200, decay)
    )
    with pytest.raises(ValueError, match=r"fails when built .* goes into the factory itself"):
        gd.gradient_descent(bowl, jnp.zeros(2), 0.1, method=decaying, hyperparams={"decay": 0.9})


@pytest.mark.parametrize(
    "hyper, words",
    [
        ({"b1": 1.5}, "in [0, 1), got 1.5"),
        ({"b1": 1}, "in [0, 1), got 1"),
        ({"b2": -0.1}, "in [0, 1), got -0.1"),
        ({"eps": -1.0}, ">= 0, got -1"),
        ({"b1": np.array([0.9, 1.5])}, "in [0, 1), got 1.5"),
        ({"b1": True}, "a number, got True"),
    ],
)
def test_hyperparameters_out_of_their_range_are_refused(hyper, words):
    """optax takes b1 = 1.5 without a word, and Adam then settles far from the minimum,
    reported converged; a bounded hyperparameter out of range is refused at call time."""
    key = next(iter(hyper))
    want = f"`hyperparams[{key!r}]` must be {words}"
    if np.ndim(hyper[key]) == 0:  # (an array is a grid axis: for `sweep` only)
        with pytest.raises((ValueError, TypeError)) as e:
            gd.gradient_descent(bowl, jnp.zeros(2), 0.1, method="adam", hyperparams=hyper)
        assert str(e.value) == want
    with pytest.raises((ValueError, TypeError)) as e:
        gd.sweep(bowl, jnp.zeros((2, 2)), [0.1], method="adam", hyperparams=hyper)
    assert str(e.value) == want
    # the edges are fine
    edge = {"b1": 0.0, "b2": 0.999, "eps": 0.0}
    assert gd.gradient_descent(bowl, jnp.zeros(2), 0.1, method="adam", hyperparams=edge).status == (
        gd.Status.CONVERGED
    )


def test_traced_hyperparameters_out_of_range_are_invalid():
    """Under the user's `jax.jit` the bounds cannot be checked at call time: such a run ends
    INVALID before any iteration, in a lone run and per member of a sweep."""

    def lone(name, value):
        return gd.gradient_descent(
            bowl, jnp.zeros(2), 0.1, method="adam", hyperparams={name: value}
        )

    for name, value in (("b1", jnp.nan), ("b1", 1.5), ("b2", -0.1), ("eps", -1.0)):
        out = jax.jit(lambda v, name=name: lone(name, v))(value)
        assert (out.status.item(), int(out.iterations)) == (gd.Status.INVALID, 0)
    good = jax.jit(lambda v: lone("b1", v))(0.9)
    assert good.status.item() != gd.Status.INVALID and int(good.iterations) > 0
    grid = jax.jit(
        lambda b: gd.sweep(bowl, jnp.zeros((2, 2)), [0.1], method="adam", hyperparams={"b1": b})
    )(jnp.array([0.9, 1.5]))
    status = np.asarray(grid.status)[0]  # (b1, guesses)
    assert (status[0] != gd.Status.INVALID).all() and (status[1] == gd.Status.INVALID).all()


def test_a_dtype_hyperparameter_in_any_spelling():
    for dtype in (jnp.float16, np.float16, jnp.dtype("float16"), "float16"):
        res = gd.gradient_descent(
            bowl, jnp.zeros(2), 0.1, method="adam", hyperparams={"mu_dtype": dtype}, max_iter=50
        )
        assert int(res.iterations) == 50


@pytest.mark.parametrize("scale", [1.0, 1e-3, 1e-6, 1e-9])
def test_adams_divergence_rule_follows_its_own_first_step(x64, scale):
    """Adam's first step is about the learning rate whatever the gradient's size, so the rule's
    scale is the decrease that step promises, not lr |g|^2: a cost in small units converges
    exactly as with the rule off, and as optax's own loop."""

    def cost(x):
        return scale * (x**2 - 2 * x)

    res = gd.gradient_descent(cost, 0.0, 3.0, method="adam", precision=1e-4, max_iter=3000)
    off = gd.gradient_descent(
        cost, 0.0, 3.0, method="adam", precision=1e-4, max_iter=3000, divergence=None
    )
    assert res.status == gd.Status.CONVERGED
    assert (int(res.iterations), float(res.x)) == (int(off.iterations), float(off.x))
    x, its, status = optax_loop(cost, 0.0, optax.adam(3.0), 1e-4, 3000)
    assert (int(res.iterations), status) == (its, "CONVERGED")
    np.testing.assert_allclose(float(res.x), float(x), rtol=1e-12)


@pytest.mark.parametrize("dtype_name", ["float32", "float64"])
def test_integer_powers_are_taken_to_a_few_units_in_the_last_place(dtype_name):
    """`_powers` computes `x ** n` (n a traced integer) from exp and log: within
    `2 + |n log|x||` units of numpy's own power, over signs, zeros, infinities, NaN and the exponents optax's bias corrections reach."""
    from gdkernel._powers import vectorised_powers

    with jax.enable_x64(dtype_name == "float64"):
        dtype = np.dtype(dtype_name)
        bases = np.array(
            [0.9, 0.999, 0.9999, 0.5, 1.0, -0.9, -2.0, 2.0, 0.0, -0.0, np.inf, -np.inf, np.nan]
        )
        counts = np.array([0, 1, 2, 3, 7, 100, 1001, 10000, 20000, -1, -3], np.int32)
        x, n = (a.ravel() for a in np.meshgrid(bases.astype(dtype), counts, indexing="ij"))
        got = np.asarray(jax.jit(vectorised_powers(lambda a, b: a**b))(x, n))
        with np.errstate(all="ignore"):
            want = np.power(x.astype(np.float64), n.astype(np.float64)).astype(dtype)
        assert got.dtype == dtype
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
        signed = ~np.isnan(want)
        np.testing.assert_array_equal(np.signbit(got[signed]), np.signbit(want[signed]))
        finite = np.isfinite(want) & (want != 0)
        exact = ~finite & signed  # zeros and infinities
        np.testing.assert_array_equal(got[exact], want[exact])
        ulps = np.abs(got[finite] - want[finite]) / np.spacing(np.abs(want[finite]))
        with np.errstate(all="ignore"):
            reach = np.nan_to_num(np.abs(n * np.log(np.abs(x.astype(np.float64)))))[finite]
        assert np.all(ulps <= 2 + reach)  # the error of exp's argument, in units
        assert np.any(ulps > 0)  # not numpy's power itself


def test_an_adam_sweep_calls_no_power_function():
    """XLA on a CPU has no vectorised `pow`: the bias corrections' powers are exp and log in a
    compiled sweep step, and a power to a non-integer exponent is left as it is."""
    from gdkernel._powers import vectorised_powers

    opt = optax.adam(0.01, b1=0.8)
    x = jnp.ones((64, 2))
    state = jax.vmap(opt.init)(x)
    step = jax.jit(jax.vmap(vectorised_powers(opt.update)))
    text = step.lower(x, state, x).as_text()
    assert "power" not in text and "exponential" in text
    plain = jax.jit(jax.vmap(opt.update)).lower(x, state, x).as_text()
    assert "power" in plain  # the test sees optax's own power
    float_power = jax.jit(vectorised_powers(lambda a, b: a**b)).lower(x, 0.5 * x).as_text()
    assert "power" in float_power
