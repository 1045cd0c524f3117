"""Bad input gets a clear, short error at call time that names the argument."""

import math
import os
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gdkernel as gd


def square(x):
    return x**2


def assert_short(excinfo, *words):
    message = str(excinfo.value)
    assert len(message.splitlines()) <= 2, message
    assert "Traceback" not in message
    for word in words:
        assert word in message, message


def test_cost_fn_not_callable():
    with pytest.raises(TypeError) as e:
        gd.gradient_descent(42, 3.0, 0.1)
    assert_short(e, "`cost_fn`", "callable")


def test_grad_fn_not_callable():
    with pytest.raises(TypeError) as e:
        gd.gradient_descent(square, 3.0, 0.1, grad_fn="2*x")
    assert_short(e, "`grad_fn`")


@pytest.mark.parametrize(
    "cost, word",
    [
        (lambda x: x * jnp.ones(3), "shape"),
        (lambda x: x + 1j, "complex"),
        (lambda x: jnp.stack([x, x]), "shape"),
        (lambda x: None, "NoneType"),
    ],
)
def test_cost_must_be_a_real_scalar(cost, word):
    with pytest.raises(TypeError) as e:
        gd.gradient_descent(cost, 3.0, 0.1)
    assert_short(e, "`cost_fn`", "scalar", word)


def test_vector_guess_with_elementwise_cost_is_not_a_scalar():
    with pytest.raises(TypeError) as e:
        gd.gradient_descent(lambda x: x**2, np.array([1.0, 2.0]), 0.1)
    assert_short(e, "scalar", "(2,)")


def test_learning_rate_that_rounds_to_zero_or_inf_in_float32():
    for lr in (1e-50, 1e39):
        with pytest.raises(ValueError) as e:
            gd.gradient_descent(square, 1.0, lr)
        assert_short(e, "`learning_rate`")
        assert "float32" in str(e.value)
        with pytest.raises(ValueError, match=r"got 1e-50 \(0.0 in float32\) at index 0"):
            gd.sweep(square, np.array([1.0, 2.0]), [1e-50, 0.1])


@pytest.mark.parametrize("lr", [0.0, -0.1, float("nan"), float("inf"), np.float32(-1)])
def test_bad_learning_rate(lr):
    with pytest.raises(ValueError) as e:
        gd.gradient_descent(square, 3.0, lr)
    assert_short(e, "`learning_rate`")


@pytest.mark.parametrize("lr", ["0.1", None, [0.1, 0.2], True])
def test_learning_rate_of_the_wrong_type(lr):
    with pytest.raises(TypeError) as e:
        gd.gradient_descent(square, 3.0, lr)
    assert_short(e, "`learning_rate`")


@pytest.mark.parametrize("precision", [-1e-4, float("nan")])
def test_bad_precision(precision):
    with pytest.raises(ValueError) as e:
        gd.gradient_descent(square, 3.0, 0.1, precision=precision)
    assert_short(e, "`precision`")


def test_bad_grad_tol():
    with pytest.raises(ValueError) as e:
        gd.gradient_descent(square, 3.0, 0.1, grad_tol=-1.0)
    assert_short(e, "`grad_tol`")


@pytest.mark.parametrize(
    "max_iter, kind",
    [
        (-1, ValueError),
        (2**31, ValueError),
        (10.5, TypeError),
        ("100", TypeError),
        (True, TypeError),
    ],
)
def test_bad_max_iter(max_iter, kind):
    with pytest.raises(kind) as e:
        gd.gradient_descent(square, 3.0, 0.1, max_iter=max_iter)
    assert_short(e, "`max_iter`")


def test_numpy_integer_max_iter_is_fine():
    res = gd.gradient_descent(square, 3.0, 0.1, max_iter=np.int64(5))
    assert int(res.iterations) == 5


@pytest.mark.parametrize("option, value", [("norm", "l3"), ("method", "adamm")])
def test_unknown_choice(option, value):
    with pytest.raises(ValueError) as e:
        gd.gradient_descent(square, 3.0, 0.1, **{option: value})
    assert_short(e, f"`{option}`", repr(value))


@pytest.mark.parametrize("momentum", [-0.1, 1.0, 1.5])
def test_bad_momentum(momentum):
    with pytest.raises(ValueError) as e:
        gd.gradient_descent(square, 3.0, 0.1, method="momentum", momentum=momentum)
    assert_short(e, "`momentum`")


@pytest.mark.parametrize(
    "guess",
    [float("nan"), np.array([1.0, np.inf]), {"a": 1.0, "b": float("-inf")}, jnp.array(jnp.nan)],
)
def test_non_finite_guess(guess):
    with pytest.raises(ValueError) as e:
        gd.gradient_descent(lambda x: sum(jnp.sum(v**2) for v in jax.tree.leaves(x)), guess, 0.1)
    assert_short(e, "`initial_guess`", "NaN or inf")


@pytest.mark.parametrize("guess", ["3", None, 1 + 2j, np.array([1 + 1j])])
def test_guess_of_the_wrong_type(guess):
    with pytest.raises(TypeError) as e:
        gd.gradient_descent(square, guess, 0.1)
    assert_short(e, "`initial_guess`")


def test_args_that_make_the_cost_fail_show_the_call():
    def mse(b, X, y):
        return jnp.mean((X @ b - y) ** 2)

    X = np.ones((10, 3))
    y = np.ones(10)
    with pytest.raises(TypeError) as e:
        gd.gradient_descent(mse, np.zeros(2), 0.1, args=(X, y))
    assert_short(e, "`cost_fn`", "cost_fn(x, *args)", "float32[2]", "float32[10,3]")


def test_a_cost_of_coordinates_given_one_number_says_what_to_give():
    """A cost that unpacks or indexes its x, given scalars: the message says x was one number
    and how a point of several coordinates is written; a tuple of Python numbers in `sweep`
    is that many scalar starting points, as in the tutorials."""

    def pair(p):
        a, b = p
        return (a - 1) ** 2 + 10 * (b + 2) ** 2

    with pytest.raises(TypeError) as e:
        gd.sweep(pair, (1.0, 2.0), [0.01])
    assert_short(e, "`cost_fn`", "x is one number here", "np.array([[1.0, 2.0]])")
    with pytest.raises(ValueError) as e:
        gd.gradient_descent(lambda x: x[1] ** 2, 1.0, 0.1)
    assert_short(e, "`cost_fn`", "x is one number here", "np.array([1.0, 2.0])")
    # given as the message says, one member at the closed-form minimum (1, -2)
    grid = gd.sweep(pair, np.array([[1.0, 2.0]]), [0.01], precision=1e-6, max_iter=5000)
    np.testing.assert_allclose(np.asarray(grid.x[0, 0]), [1.0, -2.0], atol=1e-3)
    # a scalar cost that fails some other way gets no such hint
    with pytest.raises(TypeError) as e:
        gd.gradient_descent(lambda x: jnp.ones(3)[5.0], 1.0, 0.1)
    assert "x is one number here" not in str(e.value)


def test_cost_raising_its_own_error_is_shown():
    def cost(x):
        raise RuntimeError("broken model")

    with pytest.raises(ValueError) as e:
        gd.gradient_descent(cost, 1.0, 0.1)
    assert_short(e, "`cost_fn`", "RuntimeError", "broken model")


def test_args_must_be_a_tuple():
    with pytest.raises(TypeError) as e:
        gd.gradient_descent(lambda x, X: jnp.sum((x - X) ** 2), 0.0, 0.1, args=np.ones(3))
    assert_short(e, "`args`", "tuple", "got ndarray (one array is args=(a,))")
    # a traced array (under the user's jax.grad) is named as one, not by JAX's tracer type
    with pytest.raises(TypeError) as e:
        jax.grad(lambda a: gd.gradient_descent(lambda x, a: (x - a) ** 2, 0.0, 0.1, args=a).x)(2.0)
    assert_short(e, "`args`", "got an array (one array is args=(a,))")
    assert "Tracer" not in str(e.value)


def test_args_must_hold_arrays():
    with pytest.raises(TypeError) as e:
        gd.gradient_descent(lambda x, s: x**2, 0.0, 0.1, args=("text",))
    assert_short(e, "`args`")


def test_grad_fn_of_the_wrong_shape():
    with pytest.raises(TypeError) as e:
        gd.gradient_descent(lambda x: jnp.sum(x**2), np.ones(3), 0.1, grad_fn=lambda x: jnp.ones(2))
    assert_short(e, "`grad_fn`", "shaped like x")


def test_args_must_hold_arrays_of_numbers():
    with pytest.raises(TypeError) as e:
        gd.gradient_descent(lambda x, s: x**2, 0.0, 0.1, args=(np.array(["a"]),))
    assert_short(e, "`args`", "dtype <U1")


@pytest.mark.parametrize(
    "grad_fn, words",
    [
        (lambda x: None, ("shaped like x", "got None")),
        (lambda x: 2 * x + 0j, ("real gradient", "complex")),
    ],
)
def test_grad_fn_of_the_wrong_kind(grad_fn, words):
    with pytest.raises(TypeError) as e:
        gd.gradient_descent(lambda x: x**2, 1.0, 0.1, grad_fn=grad_fn)
    assert_short(e, "`grad_fn`", *words)


@pytest.mark.parametrize("guess", [1e39, -(10**40)])
def test_a_guess_beyond_float32_names_the_range(guess):
    with pytest.raises(ValueError) as e:
        gd.gradient_descent(lambda x: x**2, guess, 0.1)
    assert_short(e, "`initial_guess`", "float32's range", "jax_enable_x64")


def test_a_guess_beyond_any_float():
    with pytest.raises(ValueError) as e:
        gd.gradient_descent(lambda x: x**2, 10**400, 0.1)
    assert_short(e, "`initial_guess`", "beyond any float")


def test_history_must_be_a_boolean_and_fit_an_int32_index():
    with pytest.raises(TypeError) as e:
        gd.gradient_descent(lambda x: x**2, 1.0, 0.1, history="yes")
    assert_short(e, "`history`", "True or False")
    with pytest.raises(ValueError) as e:
        gd.gradient_descent(lambda x: x**2, 1.0, 0.1, history=True, max_iter=2**31 - 1)
    assert_short(e, "`history=True`", "2,147,483,648 rows", "`history_every`")


def test_a_history_past_the_memory_is_refused_before_the_run(monkeypatch):
    from gdkernel import _chunks

    monkeypatch.setattr(_chunks, "available_host_bytes", lambda: 10_000)
    with pytest.raises(ValueError) as e:
        gd.gradient_descent(lambda x: x**2, 1.0, 0.1, history=True, max_iter=2_000)
    assert_short(e, "`history=True`", "2,001 rows", "`history_every`")
    # 1,001 rows of a float32 iterate and cost: 8,008 bytes, within the 10,000
    out = gd.gradient_descent(lambda x: x**2, 1.0, 0.1, history=True, max_iter=1_000)
    assert out.history.cost.shape == (1_001,)


def test_the_precision_warning_points_at_the_callers_line():
    with pytest.warns(UserWarning, match="below the resolution") as caught:
        gd.sweep(lambda x: x**2, np.array([1.0, 2.0]), [0.1], precision=1e-9, max_iter=5)
    with pytest.warns(UserWarning, match="below the resolution") as lone:
        gd.gradient_descent(lambda x: x**2, 1.0, 0.1, precision=1e-9, max_iter=5)
    assert [w.filename for w in caught] == [__file__]
    assert [w.filename for w in lone] == [__file__]


def test_traced_infinite_precision_is_invalid():
    out = jax.jit(lambda p: gd.gradient_descent(lambda x: x**2, 3.0, 0.1, precision=p))(jnp.inf)
    assert out.status == gd.Status.INVALID and out.iterations == 0


def test_member_takes_integer_indices():
    grid = gd.sweep(lambda x: x**2, np.array([1.0, 2.0]), [0.1, 0.2], max_iter=5)
    for bad in (True, 0.5, slice(0, 1)):
        with pytest.raises(TypeError) as e:
            grid.member(bad, 0)
        assert_short(e, "`member`", "integer indices")
    assert float(grid.member(np.int64(1), -1).x) == float(grid.x[1, 1])


def test_sweep_mismatched_leading_axes():
    guesses = {"b0": np.zeros(4), "b1": np.zeros(5)}
    with pytest.raises(ValueError) as e:
        gd.sweep(lambda p: p["b0"] ** 2 + p["b1"] ** 2, guesses, [0.1])
    assert_short(e, "`initial_guesses`", "(4,)", "(5,)")


def test_sweep_bad_learning_rates():
    with pytest.raises(ValueError) as e:
        gd.sweep(square, np.ones(3), [0.1, -0.2, 0.3])
    assert_short(e, "`learning_rates`", "-0.2", "index 1")
    with pytest.raises(ValueError) as e:
        gd.sweep(square, np.ones(3), np.ones((2, 2)))
    assert_short(e, "`learning_rates`", "1-D")
    with pytest.raises(ValueError) as e:
        gd.sweep(square, np.ones(3), [])
    assert_short(e, "`learning_rates`", "empty")


def test_precision_below_float32_resolution_warns():
    with pytest.warns(UserWarning, match=re.escape("`precision`=1e-12")):
        gd.gradient_descent(square, 3.0, 0.1, precision=1e-12, max_iter=5)


def test_precision_fine_in_float64_does_not_warn(x64):
    res = gd.gradient_descent(square, 3.0, 0.1, precision=1e-12, max_iter=500)
    assert res.status == gd.Status.CONVERGED


def test_inputs_are_never_mutated():
    x0 = np.array([1.0, 2.0, 3.0])
    guess = {"w": x0, "b": np.array(0.5)}
    X = np.arange(6.0).reshape(3, 2)
    lrs = np.array([0.1, 0.2])
    copies = [x0.copy(), X.copy(), lrs.copy()]

    def cost(p, X):
        return jnp.sum((p["w"] - 1.0) ** 2) + p["b"] ** 2 + 0.0 * jnp.sum(X)

    gd.gradient_descent(cost, guess, 0.1, args=(X,))
    gd.sweep(cost, {"w": np.stack([x0, x0]), "b": np.array([0.5, 1.0])}, lrs, args=(X,))
    for original, copy in zip([x0, X, lrs], copies, strict=True):
        np.testing.assert_array_equal(original, copy)
    assert set(guess) == {"w", "b"} and guess["w"] is x0


def test_traced_bad_values_never_come_back_converged():
    @jax.jit
    def run(x0, lr, precision):
        return gd.gradient_descent(square, x0, lr, precision=precision)

    for x0, lr, precision in [
        (3.0, 0.0, 1e-4),  # lr = 0 would "converge" at once on a zero step
        (3.0, -0.1, 1e-4),
        (3.0, jnp.nan, 1e-4),
        (jnp.nan, 0.1, 1e-4),
        (3.0, 0.1, -1.0),
        (3.0, 0.1, jnp.nan),
    ]:
        res = run(jnp.float32(x0), jnp.float32(lr), jnp.float32(precision))
        assert res.status == gd.Status.INVALID, (x0, lr, precision)
        assert int(res.iterations) == 0
        assert not bool(res.converged)


# ------------------------------------------------------- inputs that used to slip through


def test_infinite_precision_is_refused():
    # it would stop every run after one step, whatever the step
    with pytest.raises(ValueError) as e:
        gd.gradient_descent(square, 3.0, 0.1, precision=np.inf)
    assert_short(e, "`precision`")


@pytest.mark.parametrize("guess", [np.array([]), np.zeros((2, 0)), {"a": np.array([])}])
def test_empty_guess_is_refused(guess):
    with pytest.raises(ValueError) as e:
        gd.gradient_descent(lambda x: jnp.sum(jnp.asarray(jax.tree.leaves(x)[0])), guess, 0.1)
    assert_short(e, "`initial_guess`")


def test_ragged_list_is_blamed_on_the_guess():
    with pytest.raises(ValueError) as e:
        gd.gradient_descent(lambda x: jnp.sum(x**2), [[1, 2], [3]], 0.1)
    assert_short(e, "`initial_guess`")
    assert "cost_fn" not in str(e.value)


@pytest.mark.parametrize("guess", [True, np.array([True, False])])
def test_boolean_guess_is_refused_like_a_boolean_learning_rate(guess):
    with pytest.raises(TypeError) as e:
        gd.gradient_descent(square, guess, 0.1)
    assert_short(e, "`initial_guess`")
    with pytest.raises(TypeError) as e:
        gd.gradient_descent(square, 3.0, True)
    assert_short(e, "`learning_rate`")


def test_momentum_with_plain_gradient_descent_is_refused():
    with pytest.raises(ValueError) as e:
        gd.gradient_descent(square, 3.0, 0.1, momentum=0.5)
    assert_short(e, "`momentum`")
    with pytest.raises(ValueError) as e:
        gd.sweep(square, np.ones(2), [0.1], method="gd", momentum=0.5)
    assert_short(e, "`momentum`")
    # the momentum methods take it, and default to 0.9 without it
    a = gd.gradient_descent(square, 3.0, 0.01, method="momentum")
    b = gd.gradient_descent(square, 3.0, 0.01, method="momentum", momentum=0.9)
    assert int(a.iterations) == int(b.iterations) and float(a.x) == float(b.x)


def test_history_every_without_history_is_refused():
    with pytest.raises(ValueError) as e:
        gd.gradient_descent(square, 3.0, 0.1, history_every=5)
    assert_short(e, "`history_every`")
    assert gd.gradient_descent(square, 3.0, 0.1, history=True).history.cost.shape == (101,)


def test_gradient_of_the_wrong_structure_names_grad_fn():
    with pytest.raises(TypeError) as e:
        gd.gradient_descent(lambda x: jnp.sum(x**2), jnp.ones(2), 0.1, grad_fn=lambda x: {"a": x})
    assert_short(e, "`grad_fn`")


@pytest.mark.parametrize("fn", [math.sqrt, os.system, lambda x: float(x) ** 2])
def test_untraceable_cost_gets_one_line_in_plain_words(fn):
    with pytest.raises(TypeError) as e:
        gd.gradient_descent(fn, 3.0, 0.1)
    assert_short(e, "`cost_fn`")
    assert "jax.numpy" in str(e.value) and "Tracer" not in str(e.value)


def test_a_type_bug_under_grad_is_reported_as_itself_not_as_tracing():
    """`dict - traced number`: the same plain error under `jax.grad` as outside it."""

    def x_star(b):
        return gd.gradient_descent(lambda p, b: (p - b) ** 2, {"u": 0.0}, 0.1, args=(b,)).x["u"]

    for call in (lambda: x_star(1.0), lambda: jax.grad(x_star)(1.0)):
        with pytest.raises(TypeError) as e:
            call()
        assert "unsupported operand type(s) for -: 'dict'" in str(e.value)
        assert "traceable" not in str(e.value)


@pytest.mark.parametrize("guess", [[], {}, ()])
def test_an_empty_container_is_the_same_error_as_an_empty_array(guess):
    with pytest.raises(ValueError) as e:
        gd.gradient_descent(square, guess, 0.1)
    assert_short(e, "`initial_guess`")


def test_checked_options_do_not_depend_on_earlier_calls():
    """Options checked once are remembered by value *and* type: 50.0 stays refused after 50."""
    f = lambda x: jnp.sum(x**2)  # noqa: E731
    gd.gradient_descent(f, np.zeros(2), 0.1, max_iter=50)
    with pytest.raises(TypeError, match=r"`max_iter` must be an integer, got float"):
        gd.gradient_descent(f, np.zeros(2), 0.1, max_iter=50.0)
    gd.gradient_descent(f, np.zeros(2), 0.1, precision=1.0)
    with pytest.raises(TypeError, match=r"`precision` must be a real number, got bool"):
        gd.gradient_descent(f, np.zeros(2), 0.1, precision=True)
    with pytest.raises(TypeError, match=r"did you mean 'chunk_size'"):
        gd.sweep(f, np.zeros((1, 2)), 0.1, chunksize=10)


@pytest.mark.parametrize(
    "options, name, shown",
    [
        ({"method": "momentum", "momentum": 0.99999999}, "`momentum`", "(1.0 there)"),
        ({"divergence": 1e-50}, "`divergence`", "(0.0 there)"),
        ({"precision": 1e39}, "`precision`", "(inf there)"),
        ({"method": "adam", "hyperparams": {"b1": 0.99999999}}, "`hyperparams['b1']`", "1.0"),
    ],
)
def test_a_setting_that_float32_rounds_out_of_its_bounds_is_refused(options, name, shown):
    # each holds in float64, where the run goes on
    with jax.enable_x64(True):
        ran = gd.gradient_descent(square, 3.0, 0.1, max_iter=5, **options)
    assert ran.status != gd.Status.INVALID and ran.iterations >= 1
    with pytest.raises(ValueError) as e:
        gd.gradient_descent(square, 3.0, 0.1, **options)
    assert_short(e, name, "float32", shown)

    def axis(value):  # each number a sweep grids as an axis of two
        if isinstance(value, dict):
            return {k: [v, v] for k, v in value.items()}
        return [value, value] if isinstance(value, float) and "divergence" not in options else value

    grid = {k: axis(v) for k, v in options.items()}
    with pytest.raises(ValueError) as e:
        gd.sweep(square, np.ones(2), [0.1], **grid)
    assert_short(e, name, "float32")


def test_a_grid_axis_or_learning_rate_that_the_guesses_dtype_rounds_is_refused():
    with pytest.raises(ValueError) as e:
        gd.sweep(square, np.ones(2), [0.1], method="momentum", momentum=[0.5, 0.99999999])
    assert_short(e, "`momentum`", "index 1", "(1.0 there)")
    with jax.enable_x64(True):  # float64 learning rates, float32 guesses
        for rates in ([0.1, 1e-50], jnp.array([0.1, 1e-50])):  # (a JAX array checked too)
            with pytest.raises(ValueError) as e:
                gd.sweep(square, np.ones(2, np.float32), rates)
            assert_short(e, "`learning_rates`", "index 1", "float32")


def test_a_failing_cost_keeps_the_users_line_chained():
    def lookup(x):
        return x["missing"]

    def cost(x):
        return jnp.sum(x**2) + lookup({"present": x})

    with pytest.raises(ValueError) as e:
        gd.gradient_descent(cost, jnp.ones(3), 0.1)
    assert_short(e, "`cost_fn`", "KeyError")
    cause = e.value.__cause__
    assert isinstance(cause, KeyError)
    import traceback

    frames = [frame.name for frame in traceback.extract_tb(cause.__traceback__)]
    assert "lookup" in frames


def test_compile_sweep_names_the_sweep_options_it_does_not_take():
    for name, value in (("chunk_size", 2), ("out", "x.npz"), ("progress", True)):
        with pytest.raises(TypeError) as e:
            gd.compile_sweep(square, np.ones(4), [0.1], **{name: value})
        assert_short(e, f"does not take `{name}`", "gd.sweep")


def test_a_small_memory_budget_reads_in_bytes():
    with pytest.raises(ValueError) as e:
        gd.sweep(square, np.linspace(-3, 3, 50), [0.1, 0.2], memory_budget=100)
    assert_short(e, "`memory_budget`", "(100 bytes per device)")


def test_the_precision_warning_weighs_the_guesses_scale(recwarn):
    # near 0.002 float32 resolves steps of 1e-8 (its spacing there is 2.3e-10)
    out = gd.gradient_descent(lambda x: (x - 0.001) ** 2, 0.002, 0.1, precision=1e-8)
    assert out.status == gd.Status.CONVERGED
    assert not [w for w in recwarn if "resolution" in str(w.message)]
    with pytest.warns(UserWarning, match="below the resolution"):
        gd.gradient_descent(lambda x: (x - 1) ** 2, 2.0, 0.1, precision=1e-8, max_iter=5)


def test_the_memory_left_is_the_least_of_the_machine_and_the_limits(monkeypatch, tmp_path):
    from gdkernel import _chunks

    (tmp_path / "memory.max").write_text("1000000\n")
    (tmp_path / "memory.current").write_text("400000\n")
    monkeypatch.setattr(_chunks, "CGROUP", str(tmp_path))
    assert _chunks.available_host_bytes() == 600_000  # a container's limit, less its use
    (tmp_path / "memory.max").write_text("max\n")
    machine = _chunks.available_host_bytes()
    assert machine is None or machine > 600_000


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads Linux's /proc")
def test_a_history_past_the_address_space_limit_is_refused(tmp_path):
    import subprocess
    import sys

    script = tmp_path / "limited.py"
    script.write_text(
        "import re, resource\n"
        "import gdkernel as gd\n"
        "gd.gradient_descent(lambda x: x**2, 3.0, 0.1, max_iter=2)\n"
        "size = int(re.search(r'VmSize:\\s+(\\d+)', open('/proc/self/status').read())[1])\n"
        "resource.setrlimit(resource.RLIMIT_AS, (size * 1024 + 2**30, resource.RLIM_INFINITY))\n"
        "try:\n"
        "    gd.gradient_descent(lambda x: x**2, 3.0, 0.1, history=True, max_iter=500_000_000)\n"
        "except ValueError as err:\n"
        "    print('refused:', err)\n"
    )
    proc = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120
    )
    assert "refused: `history=True` keeps 500,000,001 rows" in proc.stdout, proc.stderr[-2000:]


def test_a_vmapped_sweeps_helpers_say_to_take_one_sweep_out():
    def cost(x, c):
        return (x - c) ** 2

    many = jax.vmap(
        lambda c: gd.sweep(cost, jnp.linspace(-3, 3, 4), jnp.array([0.1, 0.3]), args=(c,))
    )
    grids = many(jnp.array([1.0, 2.0]))
    for call in (grids.best, lambda: grids.member(0, 0), lambda: grids.member(0, 0, 0)):
        with pytest.raises(ValueError) as e:
            call()
        assert_short(e, "jax.vmap", "jax.tree.map(lambda a: a[0], res)")
    # taken out, each is the sweep of its own `c`, to the closed-form minimum
    for k, c in enumerate((1.0, 2.0)):
        one = jax.tree.map(lambda a, k=k: a[k], grids)
        assert float(one.best().result.x) == pytest.approx(c, abs=1e-3)


def test_out_naming_a_folder_is_refused(tmp_path):
    (tmp_path / "results").mkdir()
    with pytest.raises(ValueError) as e:
        gd.sweep(square, np.ones(2), [0.1], out=tmp_path / "results")
    assert_short(e, "`out` is a folder")
    assert not (tmp_path / "results.npz").exists()


def test_hyperparams_for_plain_gd_name_only_its_own_options():
    with pytest.raises(ValueError) as e:
        gd.sweep(square, np.ones(2), [0.1], hyperparams={"b1": 0.9})
    assert_short(e, "`hyperparams` are for optax methods", "`precision`")
    assert "momentum" not in str(e.value)
    with pytest.raises(ValueError) as e:
        gd.sweep(square, np.ones(2), [0.1], method="nesterov", hyperparams={"b1": 0.9})
    assert_short(e, "`momentum`")


@pytest.mark.parametrize(
    "options", [{"hyperparams": {"b1": 0.9}}, {"momentum": 0.9}], ids=["hyperparams", "momentum"]
)
def test_an_alias_is_named_as_the_user_wrote_it(options):
    for run in (gd.gradient_descent, gd.sweep):
        with pytest.raises(ValueError) as e:
            run(square, np.ones(2) if run is gd.sweep else 3.0, 0.1, method="sgd", **options)
        assert "method='sgd'" in str(e.value) and "'gd'" not in str(e.value)


def test_the_precision_warning_in_float64_does_not_advise_float64():
    float64 = pytest.warns(UserWarning, match="below the resolution of float64")
    with jax.enable_x64(True), float64 as caught:
        gd.gradient_descent(square, 3.0, 0.1, precision=1e-300, max_iter=5)
    assert "jax_enable_x64" not in str(caught[0].message)


def test_a_first_step_that_diverges_is_told_apart_from_a_bad_guess():
    out = gd.gradient_descent(jnp.sqrt, 1.0, 10.0)  # the guess is fine; x_1 = -4 is not
    assert out.status == gd.Status.DIVERGED and int(out.iterations) == 0
    assert "its first step diverged" in str(out.message)


def test_the_command_lines_history_advice_names_its_flag():
    from gdkernel.cli import in_cli_terms

    said = in_cli_terms("(it has 9 rows; raise `history_every` or lower `max_iter`)")
    assert said == "(it has 9 rows; lower `--max-iter`)"


def test_one_mixed_shape_guess_to_sweep_is_told_how_to_batch_it():
    guess = {"w": jnp.zeros(2), "b": 0.0}
    with pytest.raises(ValueError, match=r"leading axis of 1, `jax.tree.map"):
        gd.sweep(lambda p: jnp.sum((p["w"] - 1) ** 2) + p["b"] ** 2, guess, 0.1)
    batched = jax.tree.map(lambda a: jnp.asarray(a)[None], guess)  # the advice, followed
    grid = gd.sweep(lambda p: jnp.sum((p["w"] - 1) ** 2) + p["b"] ** 2, batched, 0.1)
    np.testing.assert_allclose(np.asarray(grid.x["w"]), 1.0, atol=1e-2)
