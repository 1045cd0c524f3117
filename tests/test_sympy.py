"""SymPy expressions as cost functions, against closed forms and plain-Python loops."""

import subprocess
import sys
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
import scipy.special
import sympy
from helpers import closed_form_square_iterations, reference_gd

import gdkernel as gd
from conftest import tol
from gdkernel import _solve
from gdkernel._sympy import lambdify_cost

ROOT = Path(__file__).resolve().parents[1]


def test_first_tutorial_verbatim(dtype):
    from sympy import Symbol

    x = Symbol("x")
    res = gd.gradient_descent(x**2, 3, 0.1)
    print("Minimum occurs at x-value:", res.x)
    print("Slope at the minimum is:", res.grad)
    assert int(res.iterations) == 40
    assert res.status == gd.Status.CONVERGED
    assert res.x.dtype == dtype
    np.testing.assert_allclose(float(res.x), 3 * 0.8**40, rtol=tol(dtype))
    np.testing.assert_allclose(float(res.grad), 2 * 3 * 0.8**40, rtol=tol(dtype))
    np.testing.assert_allclose(float(res.grad), 2 * float(res.x), rtol=tol(dtype))


def test_two_symbols_match_closed_form(x64):
    x, y = sympy.symbols("x y")
    lr, x0 = 0.1, np.array([4.0, 1.0])
    res = gd.gradient_descent(
        (x - 1) ** 2 + 3 * (y + 2) ** 2, x0, lr, precision=1e-10, max_iter=1000
    )
    # x = [x, y] (sorted by name); each coordinate contracts geometrically towards (1, -2).
    _, it_ref, status_ref, _ = reference_gd(
        lambda v: np.array([2 * (v[0] - 1), 6 * (v[1] + 2)]), x0, lr, 1e-10, 1000
    )
    k = int(res.iterations)
    assert status_ref == "converged" and k == it_ref
    assert res.status == gd.Status.CONVERGED
    expected = np.array([1 + (1 - 2 * lr) ** k * 3.0, -2 + (1 - 6 * lr) ** k * 3.0])
    np.testing.assert_allclose(np.asarray(res.x), expected, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(
        np.asarray(res.grad), [2 * (expected[0] - 1), 6 * (expected[1] + 2)], atol=1e-14
    )


def test_sorted_by_name_and_explicit_order(x64):
    a, b = sympy.symbols("b a")  # Python names differ from the symbol names on purpose
    expr = (a - 5) ** 2 + (b + 7) ** 2  # symbol "b" -> 5, symbol "a" -> -7
    default = gd.gradient_descent(expr, [0.0, 0.0], 0.25, precision=1e-12, max_iter=200)
    np.testing.assert_allclose(np.asarray(default.x), [-7.0, 5.0], atol=1e-10)  # (a, b)
    explicit = gd.gradient_descent(
        expr, [0.0, 0.0], 0.25, precision=1e-12, max_iter=200, symbols=[a, b]
    )
    np.testing.assert_allclose(np.asarray(explicit.x), [5.0, -7.0], atol=1e-10)  # (b, a)


def test_names_sort_as_strings(x64):
    x1, x2, x10 = sympy.symbols("x1 x2 x10")
    cost = lambdify_cost(x1 + 10 * x2 + 100 * x10)  # order x1, x10, x2
    assert float(cost(jnp.array([1.0, 2.0, 3.0]))) == 1 + 100 * 2 + 10 * 3


def test_one_symbol_array_is_elementwise_and_summed(x64):
    x = sympy.Symbol("x")
    x0 = np.array([0.0, 5.0, -3.0])
    res = gd.gradient_descent(x**2 - 2 * x, x0, 0.1, precision=1e-9, max_iter=500)
    k = int(res.iterations)
    np.testing.assert_allclose(np.asarray(res.x), 1 + 0.8**k * (x0 - 1), rtol=1e-12)
    np.testing.assert_allclose(float(res.cost), float(np.sum(np.asarray(res.x) ** 2 - 2 * res.x)))


def test_special_functions_translate(x64):
    x = sympy.Symbol("x")
    res = gd.gradient_descent(
        (sympy.erf(x) - sympy.Rational(1, 2)) ** 2, 0.0, 1.0, precision=1e-14, max_iter=1000
    )
    assert res.status == gd.Status.CONVERGED
    np.testing.assert_allclose(float(res.x), scipy.special.erfinv(0.5), rtol=1e-10)


def test_real_valued_expression_written_with_i(x64):
    x = sympy.Symbol("x")
    expr = sympy.Abs(x + sympy.I)  # sqrt(x^2 + 1) for real x
    cost = lambdify_cost(expr)
    for value in (-2.0, 0.0, 3.0):
        np.testing.assert_allclose(float(cost(value)), np.hypot(value, 1.0), rtol=1e-14)
    res = gd.gradient_descent(expr, 2.0, 0.5, precision=1e-12, max_iter=1000)
    assert res.status == gd.Status.CONVERGED
    assert abs(float(res.x)) < 1e-10 and abs(float(res.cost) - 1.0) < 1e-15


def test_conjugate_of_a_real_symbol_is_the_symbol(x64):
    # x * conjugate(x) is x**2 for real x: minimum 0 at 0, reached as x**2 is.
    x = sympy.Symbol("x")
    res = gd.gradient_descent(x * sympy.conjugate(x), 2.0, 0.1, precision=1e-8, max_iter=500)
    ref = gd.gradient_descent(x**2, 2.0, 0.1, precision=1e-8, max_iter=500)
    assert res.status == gd.Status.CONVERGED and int(res.iterations) == int(ref.iterations)
    assert abs(float(res.x)) < 1e-7


@pytest.mark.parametrize("infinite", [sympy.oo, -sympy.oo])
def test_an_expression_infinite_everywhere_is_refused(infinite):
    x = sympy.Symbol("x")
    with pytest.raises(ValueError, match="infinite for every real value"):
        gd.gradient_descent(x**2 + infinite, 2.0, 0.1)
    # a barrier that is infinite only outside its domain runs
    barrier = sympy.Piecewise(((x - 1) ** 2, x > 0), (sympy.oo, True))
    assert gd.gradient_descent(barrier, 2.0, 0.1).status == gd.Status.CONVERGED


def test_same_expression_reuses_the_compiled_program():
    x = sympy.Symbol("x")
    gd.gradient_descent(x**2 + 1, 3.0, 0.1)
    size = _solve._run._cache_size()
    # An equal expression built afresh, with other traced numbers: same function, no compile.
    fresh = sympy.Symbol("x") ** 2 + 1
    res = gd.gradient_descent(fresh, -2.0, 0.2, precision=1e-3)
    assert res.status == gd.Status.CONVERGED
    assert _solve._run._cache_size() == size
    assert lambdify_cost(fresh) is lambdify_cost(x**2 + 1)
    y = sympy.Symbol("y")
    assert lambdify_cost(x + y**2) is lambdify_cost(x + y**2, symbols=[x, y])
    assert lambdify_cost(x + y**2) is not lambdify_cost(x + y**2, symbols=[y, x])


def test_sweep_with_an_expression(x64):
    x = sympy.Symbol("x")
    guesses = jnp.array([3.0, -2.0, 0.5])
    rates = jnp.array([0.05, 0.1, 0.3])
    grid = gd.sweep(x**2, guesses, rates, precision=1e-6, max_iter=1000)
    assert grid.x.shape == (3, 3)
    for i, lr in enumerate(np.asarray(rates)):
        for j, x0 in enumerate(np.asarray(guesses)):
            k = closed_form_square_iterations(float(x0), float(lr), 1e-6, 1000)
            assert int(grid.iterations[i, j]) == k
            np.testing.assert_allclose(
                float(grid.x[i, j]), x0 * (1 - 2 * lr) ** k, rtol=1e-12, atol=1e-300
            )


def test_sweep_with_two_symbols(x64):
    x, y = sympy.symbols("x y")
    guesses = jnp.array([[0.0, 0.0], [3.0, -4.0]])
    grid = gd.sweep((x - 1) ** 2 + 3 * (y + 2) ** 2, guesses, 0.1, precision=1e-10, max_iter=500)
    assert grid.x.shape == (1, 2, 2)
    for j in range(2):
        x_ref, it_ref, _, _ = reference_gd(
            lambda v: np.array([2 * (v[0] - 1), 6 * (v[1] + 2)]), guesses[j], 0.1, 1e-10, 500
        )
        assert int(grid.iterations[0, j]) == it_ref
        np.testing.assert_allclose(np.asarray(grid.x[0, j]), x_ref, rtol=1e-13, atol=1e-15)


# ---------------------------------------------------------------------------- errors

X, Y, Z = sympy.symbols("x y z")


@pytest.mark.parametrize(
    ("expr", "kind", "match"),
    [
        (sympy.Integer(3), ValueError, "`cost_fn` has no free symbols"),
        (X - X, ValueError, "`cost_fn` has no free symbols"),
        (X + sympy.I, ValueError, "`cost_fn` must be real-valued"),
        (sympy.exp(sympy.I * X), ValueError, "`cost_fn` must be real-valued"),
        (sympy.Function("f")(X), ValueError, "`cost_fn` .* has no JAX translation"),
        (sympy.Integral(X * Y, (Y, 0, 1)), ValueError, "`cost_fn` could not be lambdified"),
        (sympy.Matrix([X**2]), TypeError, "`cost_fn` must be a scalar SymPy expression"),
        (sympy.Eq(X, 1), TypeError, "`cost_fn` must be a scalar SymPy expression"),
    ],
)
def test_bad_expressions(expr, kind, match):
    with pytest.raises(kind, match=match):
        gd.gradient_descent(expr, 1.0, 0.1)


@pytest.mark.parametrize(
    ("symbols", "kind", "match"),
    [
        ([X, Z], ValueError, "`symbols` holds z, not a free symbol"),
        ([X], ValueError, "`symbols` is missing y"),
        ([X, Y, Y], ValueError, "`symbols` repeats a symbol"),
        (["x", "y"], TypeError, "`symbols` must be a SymPy Symbol"),
        ("xy", TypeError, "`symbols` must be a SymPy Symbol"),
    ],
)
def test_bad_symbols(symbols, kind, match):
    with pytest.raises(kind, match=match):
        gd.gradient_descent(X**2 + Y**2, [1.0, 1.0], 0.1, symbols=symbols)


def test_symbols_with_a_callable_is_an_error():
    with pytest.raises(TypeError, match="`symbols` is only for a SymPy expression"):
        gd.gradient_descent(lambda v: v**2, 1.0, 0.1, symbols=[X])


def test_guess_of_the_wrong_length():
    # the message says what to give, and does not open as if the cost itself had failed
    said = r"^`cost_fn` has 2 free symbols \(x, y\), so a starting point .* must be a vector of 2"
    with pytest.raises(TypeError, match=said + r".*got shape \(3,\)"):
        gd.gradient_descent(X**2 + Y**2, [1.0, 1.0, 1.0], 0.1)
    with pytest.raises(TypeError, match=said + r".*got shape \(\)"):
        gd.gradient_descent(X**2 + Y**2, 1.0, 0.1)
    with pytest.raises(TypeError, match=said + r".*got shape \(3,\)"):
        gd.sweep(X**2 + Y**2, np.ones((4, 3)), 0.1)


def test_missing_sympy_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "sympy", None)  # `import sympy` now raises ImportError
    with pytest.raises(ImportError, match=r"pip install 'gdkernel\[sympy\]'"):
        lambdify_cost(X**2)


def test_import_does_not_import_sympy():
    code = (
        "import sys, gdkernel, gdkernel.functions as f\n"
        "r = gdkernel.gradient_descent(f.quadratic, 8.0, 0.01)\n"
        "assert 'sympy' not in sys.modules, 'sympy imported'\n"
        "print(r.status == gdkernel.Status.MAX_ITER)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "True"  # 0.94**100 * 0.46 > 1e-4: the run hit max_iter


def test_a_dict_guess_is_told_the_symbols_order():
    x, y = sympy.symbols("x y")
    with pytest.raises(TypeError) as e:
        gd.gradient_descent((x - 1) ** 2 + (y + 2) ** 2, {"x": 0.0, "y": 0.0}, 0.1)
    message = str(e.value)
    assert "(x, y) in that order" in message and "got a dict" in message, message
    assert "traceable" not in message, message
    # the same numbers as a list run, to the closed-form minimum
    res = gd.gradient_descent((x - 1) ** 2 + (y + 2) ** 2, [0.0, 0.0], 0.1, precision=1e-6)
    np.testing.assert_allclose(np.asarray(res.x), [1.0, -2.0], atol=1e-4)
