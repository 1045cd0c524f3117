r"""SymPy expressions as JAX cost functions (the optional `gdkernel[sympy]` extra).

An expression is turned into a JAX function with `sympy.lambdify(..., modules="jax")` once
per `(expression, symbol order)`: the same expression gives back the same function object,
so the `jax.jit` cache (keyed on the function's identity) never recompiles for it.

The parameter `x` of the cost:

- one free symbol $s$: $f(x) = \sum_i e(s = x_i)$, i.e. `x` is that symbol's value (a scalar,
  or an array evaluated elementwise and summed, like `functions.quadratic`);
- several free symbols $s_0, \dots, s_{n-1}$: `x` is a vector of length $n$ and
  $f(x) = e(s_0 = x_0, \dots, s_{n-1} = x_{n-1})$, the symbols sorted by name (as strings, so
  `x1, x10, x2`), or in the order of an explicit `symbols=` list.

SymPy is imported only here, and only when an expression is passed.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import jax.scipy.special as jsp
from jax import Array

from ._validate import GuessMismatch

INSTALL_HINT = "pip install 'gdkernel[sympy]'"

# SymPy functions that `modules="jax"` leaves to `math` (which cannot trace) or does not
# know, and their JAX counterparts.
_SPECIAL = {
    "erf": jsp.erf,
    "erfc": jsp.erfc,
    "gamma": jsp.gamma,
    "loggamma": jsp.gammaln,
    "polygamma": jsp.polygamma,
    "conjugate": jnp.conj,  # (the symbols are real: the identity)
}


def _import_sympy() -> Any:
    try:
        import sympy
    except ImportError:
        raise ImportError(f"a SymPy `cost_fn` needs SymPy: {INSTALL_HINT}") from None
    return sympy


def _names(symbols: Sequence[Any]) -> str:
    return ", ".join(str(s) for s in symbols)


def _check_expression(sympy: Any, expr: Any) -> None:
    """A scalar expression with at least one free symbol, or a clear error."""
    if not isinstance(expr, sympy.Expr):
        raise TypeError(
            f"`cost_fn` must be a scalar SymPy expression (sympy.Expr), got {type(expr).__name__}"
        )
    if not expr.free_symbols:
        raise ValueError(f"`cost_fn` has no free symbols: {expr} does not depend on a parameter")


def _check_real(sympy: Any, expr: Any) -> None:
    """Reject an expression that is complex, or infinite, for real values of its symbols."""
    real = expr.subs({s: sympy.Dummy(s.name, real=True) for s in expr.free_symbols})
    if real.is_infinite:
        raise ValueError(f"`cost_fn` is infinite for every real value of its symbols: {expr}")
    complex_atoms = real.has(sympy.I, sympy.zoo)
    if real.is_extended_real is False or (complex_atoms and real.is_extended_real is not True):
        raise ValueError(f"`cost_fn` must be real-valued for real symbols, got {expr}")


def symbol_order(expr: Any, symbols: Any = None) -> tuple:
    """The free symbols of `expr` in the order they take in `x`.

    Args:
        expr: a SymPy expression.
        symbols: None (the free symbols sorted by name), a `Symbol`, or a sequence of them
            holding every free symbol of `expr` exactly once.

    Returns:
        A tuple of SymPy symbols.

    Raises:
        TypeError: `symbols` is not a Symbol or a sequence of Symbols.
        ValueError: `symbols` repeats a symbol, misses a free symbol of `expr` or holds one that
            `expr` does not contain; or, with `symbols=None`, two free symbols share a name.
    """
    sympy = _import_sympy()
    free = expr.free_symbols
    if symbols is None:
        order = tuple(sorted(free, key=lambda s: s.name))
        names = [s.name for s in order]
        if len(set(names)) != len(names):
            raise ValueError(
                f"`cost_fn` has distinct free symbols with the same name ({_names(order)}); "
                "give their order with `symbols=`"
            )
        return order
    if isinstance(symbols, sympy.Symbol):
        symbols = (symbols,)
    if not isinstance(symbols, (list, tuple)) or not all(
        isinstance(s, sympy.Symbol) for s in symbols
    ):
        raise TypeError(
            f"`symbols` must be a SymPy Symbol or a list of them, got {type(symbols).__name__} "
            f"{symbols!r}"
        )
    order = tuple(symbols)
    if len(set(order)) != len(order):
        raise ValueError(f"`symbols` repeats a symbol: ({_names(order)})")
    extra = [s for s in order if s not in free]
    if extra:
        raise ValueError(
            f"`symbols` holds {_names(extra)}, not a free symbol of `cost_fn` ({expr}); "
            f"its free symbols are {_names(sorted(free, key=lambda s: s.name))}"
        )
    missing = sorted(free - set(order), key=lambda s: s.name)
    if missing:
        raise ValueError(f"`symbols` is missing {_names(missing)}, a free symbol of `cost_fn`")
    return order


def lambdify_cost(expr: Any, symbols: Any = None) -> Callable[[Array], Array]:
    r"""A SymPy expression as a JAX cost function `cost(x)`, cached per expression.

    With one free symbol, `x` is its value (an array is evaluated elementwise and summed).
    With several, `x` is a vector holding them in `symbols` order (default: sorted by name).
    The same expression and order always return the same function object, so passing the
    expression again reuses the compiled program.

    Args:
        expr: a real-valued SymPy expression with at least one free symbol.
        symbols: the order of the free symbols in `x` (a Symbol or a list of them); None sorts
            them by name.

    Returns:
        `cost(x) -> scalar`, built with `sympy.lambdify(..., modules="jax")`.

    Raises:
        ImportError: SymPy is not installed (`pip install 'gdkernel[sympy]'`).
        TypeError: `expr` is not a scalar SymPy expression; `symbols` is not Symbols.
        ValueError: `expr` has no free symbols, is not real-valued, or has no JAX translation
            (e.g. an undefined function); `symbols` does not match the free symbols.

    Example:
        >>> from sympy import symbols
        >>> x, y = symbols("x y")
        >>> cost = lambdify_cost((x - 1) ** 2 + 3 * (y + 2) ** 2)  # x = [x, y]
        >>> float(cost(jnp.array([1.0, -1.0])))
        3.0
    """
    sympy = _import_sympy()
    _check_expression(sympy, expr)
    return _lambdify(expr, symbol_order(expr, symbols))


@functools.lru_cache(maxsize=256)
def _lambdify(expr: Any, order: tuple) -> Callable[[Array], Array]:
    sympy = _import_sympy()
    _check_real(sympy, expr)
    try:
        fn = sympy.lambdify(order, expr, modules=[_SPECIAL, "jax"])
    except Exception as err:
        raise ValueError(
            f"`cost_fn` could not be lambdified for JAX: {type(err).__name__}: "
            f"{str(err).strip().splitlines()[0] if str(err).strip() else ''}"
        ) from None
    n = len(order)

    def vector(x: Any) -> Array:
        if isinstance(x, Mapping):  # (jnp.asarray's own error would blame tracing)
            raise TypeError(
                f"`cost_fn` (a SymPy expression) takes the values of its free symbols "
                f"({_names(order)}) in that order, as a number, list, tuple or array; got a "
                f"{type(x).__name__} `initial_guess`"
            )
        return jnp.asarray(x)

    if n == 1:

        def cost(x: Array) -> Array:
            return jnp.sum(fn(vector(x)))

    else:

        def cost(x: Array) -> Array:
            x = vector(x)
            if x.shape != (n,):
                raise GuessMismatch(
                    f"`cost_fn` has {n} free symbols ({_names(order)}), so a starting point "
                    f"(`initial_guess`, or a row of `sweep`'s `initial_guesses`) must be a "
                    f"vector of {n} values in that order; got shape {x.shape}"
                )
            return jnp.sum(fn(*(x[i] for i in range(n))))

    cost.__name__ = cost.__qualname__ = "sympy_cost"
    cost.__doc__ = f"{expr} with x = ({_names(order)})"
    _trial(cost, expr, n)
    return cost


def _trial(cost: Callable, expr: Any, n: int) -> None:
    """Trace `cost` once (shapes only, nothing compiled) to catch untranslatable functions."""
    spec = jax.ShapeDtypeStruct(() if n == 1 else (n,), jnp.float32)
    try:
        out = jax.eval_shape(cost, spec)
    except Exception as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise ValueError(
            f"`cost_fn` ({expr}) has no JAX translation: {type(err).__name__}: {first} "
            "(an undefined function, or a SymPy function JAX lacks)"
        ) from None
    if jnp.issubdtype(out.dtype, jnp.complexfloating):
        raise ValueError(f"`cost_fn` must be real-valued for real symbols, got {expr}")
