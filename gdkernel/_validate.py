"""Turning user input into arrays, or a clear one-line error that names the argument.

Concrete values (Python numbers, NumPy arrays, JAX arrays outside a trace) are checked at call
time. Traced values cannot be checked before the run; the kernel turns them into
`Status.INVALID` instead.
"""

from __future__ import annotations

import functools
import numbers
import os
import sys
import types
import warnings
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

from ._types import Numbers, PyTree


def is_traced(value: Any) -> bool:
    return isinstance(value, jax.core.Tracer)


def describe(tree: PyTree) -> str:
    """A short description of a pytree's leaves, e.g. `float32[3]`."""

    def one(leaf: Any) -> str:
        shape = getattr(leaf, "shape", None)
        dtype = getattr(leaf, "dtype", None)
        if shape is None or dtype is None:
            return type(leaf).__name__
        return f"{np.dtype(dtype).name}[{','.join(map(str, shape))}]"

    leaves, treedef = jax.tree.flatten(tree)
    described = [one(leaf) for leaf in leaves]
    if jax.tree_util.treedef_is_leaf(treedef):
        return described[0] if described else "None"
    return str(jax.tree.unflatten(treedef, described)).replace("'", "")


# ---------------------------------------------------------------------------- functions


def _is_sympy(obj: Any) -> bool:
    """Whether `obj` is a SymPy object, judged by its classes' modules (SymPy not imported).

    The whole MRO is looked at: an applied undefined function such as `Function("f")(x)` is
    an instance of a class made on the fly, whose `__module__` is None.
    """
    return any(
        (getattr(cls, "__module__", None) or "").split(".")[0] == "sympy"
        for cls in type(obj).__mro__
    )


def cost_function(cost_fn: Any, symbols: Any = None) -> Callable:
    """The user's cost as a callable: a callable as is, a SymPy expression lambdified."""
    if callable(cost_fn):
        if symbols is not None:
            raise TypeError("`symbols` is only for a SymPy expression `cost_fn`")
        return cost_fn
    if _is_sympy(cost_fn):
        from ._sympy import lambdify_cost

        return lambdify_cost(cost_fn, symbols)
    raise TypeError(
        f"`cost_fn` must be a callable `cost_fn(x, *args)` or a SymPy expression, "
        f"got {type(cost_fn).__name__}"
    )


def grad_function(grad_fn: Any) -> Callable | None:
    if grad_fn is not None and not callable(grad_fn):
        raise TypeError(
            f"`grad_fn` must be a callable `grad_fn(x, *args)` or None, got {type(grad_fn).__name__}"
        )
    return grad_fn


def _needs_concrete(err: Exception) -> bool:
    """Whether `err` says a function wanted a concrete value where JAX passed a traced one
    (`math.sqrt(x)`, `float(x)`, `if x > 0:`, `os.system(x)`...)."""
    if isinstance(err, jax.errors.ConcretizationTypeError | jax.errors.TracerArrayConversionError):
        return True
    # (an operator between a tracer and a value of the wrong type, `dict - x`, is a plain bug)
    said = str(err)
    return isinstance(err, TypeError) and "Tracer" in said and "unsupported operand" not in said


class GuessMismatch(TypeError):
    """A cost that gdkernel built (from a SymPy expression) was given a starting point of
    the wrong shape: the message names `initial_guess`, and is passed on as it is."""


def _call(fn: Callable, name: str, x: PyTree, args: tuple) -> Any:
    try:
        return fn(x, *args)
    except GuessMismatch:
        raise
    except Exception as err:  # re-raised with the call shown, chained to the original
        label = getattr(fn, "__qualname__", None) or type(fn).__name__
        if getattr(fn, "__module__", None) not in (None, "__main__", "builtins"):
            label = f"{fn.__module__}.{label}"
        if _needs_concrete(err):
            raise TypeError(
                f"`{name}` ({label}) is not a JAX-traceable function of x: it needs a concrete "
                "number where JAX passes a traced array; write it with jax.numpy "
                "(jnp.sqrt, not math.sqrt) and jnp.where instead of `if` on x"
            ) from err
        kind = TypeError if isinstance(err, TypeError) else ValueError
        call = f"{name}(x, *args) with x: {describe(x)}"
        if args:
            call += f" and args: {describe(args)}"
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise kind(
            f"`{name}` failed when called as {call}: {type(err).__name__}: {first}"
            + (ONE_NUMBER if _indexed_a_number(x, err) else "")
        ) from err


# What to give a cost that reads coordinates (`x[0]`, `a, b = x`) and was given one number.
ONE_NUMBER = (
    " (x is one number here: a starting point of several coordinates is an array of them, "
    "e.g. np.array([1.0, 2.0]); in `sweep` a list or tuple of numbers is that many scalar "
    "starting points, and one point of several coordinates is a row, np.array([[1.0, 2.0]]))"
)


def _indexed_a_number(x: PyTree, err: Exception) -> bool:
    """Whether `err` is a scalar `x` being indexed or unpacked as a vector."""
    if not isinstance(err, IndexError | TypeError) or np.ndim(x) != 0 or not hasattr(x, "dtype"):
        return False
    text = str(err)
    return any(s in text for s in ("0-d", "0-dimensional", "Too many indices"))


def call_cost_fn(cost_fn: Callable, x: PyTree, args: tuple) -> Array:
    """`cost_fn(x, *args)`, checked to be a real floating-point scalar."""
    out = _call(cost_fn, "cost_fn", x, args)
    try:
        out = jnp.asarray(out)
    except (TypeError, ValueError):
        raise TypeError(f"`cost_fn` must return a real scalar, got {type(out).__name__}") from None
    if out.shape != ():
        raise TypeError(
            f"`cost_fn` must return a real scalar, got shape {out.shape}; "
            "reduce it first (e.g. jnp.sum or jnp.mean)"
        )
    if jnp.issubdtype(out.dtype, jnp.complexfloating):
        raise TypeError(f"`cost_fn` must return a real scalar, got a complex one ({out.dtype})")
    if not jnp.issubdtype(out.dtype, jnp.floating):
        raise TypeError(
            f"`cost_fn` must return a real floating-point scalar, got {out.dtype} "
            "(does the cost depend on x?)"
        )
    return out


def call_grad_fn(grad_fn: Callable, x: PyTree, args: tuple) -> PyTree:
    """`grad_fn(x, *args)`, checked to have the structure, shapes and dtypes of `x`."""
    out = _call(grad_fn, "grad_fn", x, args)
    x_leaves, x_def = jax.tree.flatten(x)
    try:
        g_leaves = x_def.flatten_up_to(out)  # type: ignore[attr-defined]
    except (TypeError, ValueError, IndexError):
        raise TypeError(
            f"`grad_fn` must return a gradient shaped like x ({describe(x)}), got {describe(out)}"
        ) from None
    fixed = []
    for xl, gl in zip(x_leaves, g_leaves, strict=True):
        try:
            gl = jnp.asarray(gl)
        except (TypeError, ValueError):
            gl = None
        if gl is None or gl.shape != xl.shape:
            raise TypeError(
                f"`grad_fn` must return a gradient shaped like x ({describe(x)}), got {describe(out)}"
            )
        if not jnp.issubdtype(gl.dtype, jnp.floating) and not jnp.issubdtype(gl.dtype, jnp.integer):
            raise TypeError(f"`grad_fn` must return a real gradient, got dtype {gl.dtype}")
        fixed.append(gl.astype(xl.dtype))
    return jax.tree.unflatten(x_def, fixed)


# ------------------------------------------------------------------------------ numbers


def float_dtype(guess: PyTree) -> Any:
    """The dtype of a checked guess (`as_guess`): its leaves' common floating-point type."""
    leaves = jax.tree.leaves(guess)
    dtypes = {leaf.dtype for leaf in leaves}
    if len(dtypes) == 1:
        return dtypes.pop()
    return jnp.result_type(*leaves)


@functools.lru_cache(maxsize=8)
def _eps(dtype: Any) -> float:
    return float(jnp.finfo(dtype).eps)


_PACKAGE = os.path.dirname(os.path.abspath(__file__))  # frames here are not the user's
_LARGEST_EPS = 2.0**-7  # bfloat16's, the coarsest float: no precision at or above it warns


def default_float() -> np.dtype:
    """float64 when `jax_enable_x64` is on, else float32."""
    return np.dtype(jax.dtypes.canonicalize_dtype(np.float64))


# Below float32's largest value (3.4e38): a Python float that converts to it without overflow.
SAFE_FLOAT = 3e38
_NUMPY_FLOATS = (np.float32, np.float64)
_FLOATS = (float, *_NUMPY_FLOATS)


def _float_leaf(leaf: Any, name: str) -> Any:
    """One leaf as a floating-point array; integers are promoted, booleans refused."""
    if type(leaf) is float and abs(leaf) < SAFE_FLOAT:  # the common case: finite, no overflow
        return np.array(leaf, dtype=default_float())
    if type(leaf) in _NUMPY_FLOATS and abs(leaf) < SAFE_FLOAT:
        return np.array(leaf, dtype=jax.dtypes.canonicalize_dtype(leaf.dtype))
    if type(leaf) is int and abs(leaf) >= 2**63:  # NumPy would hold it as an object
        try:
            leaf = float(leaf)
        except OverflowError:
            raise ValueError(f"`{name}` holds an integer beyond any float's range") from None
    if isinstance(leaf, jax.Array) or is_traced(leaf):
        dtype = leaf.dtype
        arr = leaf
    else:
        if not isinstance(leaf, (numbers.Number, np.ndarray, np.generic, list, tuple)):
            raise TypeError(f"`{name}` must hold numbers or arrays, got {type(leaf).__name__}")
        try:
            arr = np.asarray(leaf)
        except (TypeError, ValueError):
            raise TypeError(f"`{name}` must hold numbers or arrays, got {leaf!r}") from None
        dtype = arr.dtype
    if jnp.issubdtype(dtype, jnp.complexfloating):
        raise TypeError(f"`{name}` must be real, got a complex {np.dtype(dtype).name} value")
    if jnp.issubdtype(dtype, jnp.bool_):
        raise TypeError(f"`{name}` must hold real numbers, got booleans")
    if 0 in np.shape(arr):
        raise ValueError(f"`{name}` must not be empty, got shape {np.shape(arr)}")
    host = not (isinstance(arr, jax.Array) or is_traced(arr))
    if jnp.issubdtype(dtype, jnp.floating):
        # Host input stays a NumPy copy (in JAX's dtype): the jit call moves it, at less cost
        # than a separate transfer here.
        if not host:
            return arr
        return cast_in_range(
            arr,
            jax.dtypes.canonicalize_dtype(dtype),
            name,
            ", JAX's default float: rescale the problem, or enable float64 with "
            "jax.config.update('jax_enable_x64', True)",
        )
    if jnp.issubdtype(dtype, jnp.integer):
        return np.array(arr, dtype=default_float()) if host else jnp.asarray(arr, default_float())
    raise TypeError(f"`{name}` must hold real numbers, got dtype {np.dtype(dtype).name}")


def cast_in_range(
    values: np.ndarray, dtype: Any, name: str, advice: str, error: type[ValueError] = ValueError
) -> np.ndarray:
    """`values` as a NumPy array of `dtype`, refusing (with `error`, naming `name`, `advice`
    after the range) finite numbers that a narrower dtype cannot hold: the cast makes them
    inf, which would pass for non-finite input."""
    with np.errstate(over="ignore"):
        out = np.array(values, dtype=dtype)
    narrowed = out.dtype.itemsize < values.dtype.itemsize
    if narrowed and not np.isfinite(out).all() and np.isfinite(values).all():
        largest = float(np.finfo(out.dtype).max)
        raise error(f"`{name}` holds values beyond {out.dtype}'s range (+-{largest:.3g}){advice}")
    return out


def _is_number(item: Any) -> bool:
    return isinstance(item, (numbers.Number, np.generic)) and not isinstance(item, bool)


def _on_host(leaf: Any) -> bool:
    """Whether NumPy can read `leaf` where it lies (a NumPy array, or a JAX array in host
    memory), so that checking it dispatches no JAX operation."""
    if isinstance(leaf, np.ndarray):
        return True
    return isinstance(leaf, jax.Array) and all(d.platform == "cpu" for d in leaf.devices())


def _all_finite(leaf: Any) -> bool:
    if _on_host(leaf):
        return bool(np.isfinite(np.asarray(leaf)).all())
    return bool(jnp.isfinite(leaf).all())


def _check_finite(tree: PyTree, name: str) -> None:
    for leaf in jax.tree.leaves(tree):
        if is_traced(leaf):
            continue
        if not _all_finite(leaf):
            raise ValueError(f"`{name}` contains NaN or inf")


def as_guess(tree: PyTree, name: str) -> PyTree:
    """The initial guess as a pytree of floating-point arrays (never the user's objects)."""
    if type(tree) in _FLOATS and abs(tree) < SAFE_FLOAT:  # one finite number (NaN fails)
        return _float_leaf(tree, name)
    if tree is None:
        raise TypeError(f"`{name}` must be a number, an array or a pytree of arrays, got None")
    if isinstance(tree, (list, tuple)) and tree and all(map(_is_number, jax.tree.leaves(tree))):
        # a (nested) list of numbers is an array: it must be rectangular
        try:
            tree = np.asarray(tree)
        except ValueError:
            raise ValueError(
                f"`{name}` is a ragged nested list (rows of different lengths): give a "
                "rectangular list, an array, or a pytree of arrays"
            ) from None
    leaves, treedef = jax.tree.flatten(tree)
    if not leaves:
        raise ValueError(f"`{name}` must contain at least one number, got {tree!r}")
    out = jax.tree.unflatten(treedef, [_float_leaf(leaf, name) for leaf in leaves])
    if not all(type(leaf) in _FLOATS and abs(leaf) < SAFE_FLOAT for leaf in leaves):
        # (finite Python floats need no second look)
        _check_finite(out, name)
    return out


def _scalar(value: Any, name: str) -> Any:
    if type(value) in _FLOATS or (type(value) is int and abs(value) < 2**53):  # (not bool)
        return float(value)
    if is_traced(value):
        return value
    if isinstance(value, bool) or not isinstance(
        value, (numbers.Real, np.ndarray, np.generic, jax.Array)
    ):
        raise TypeError(f"`{name}` must be a real number, got {type(value).__name__}")
    arr = np.asarray(value)
    if arr.shape != ():
        raise TypeError(f"`{name}` must be a scalar, got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.complexfloating):
        raise TypeError(f"`{name}` must be a real number, got dtype {arr.dtype}")
    return float(arr)


def as_learning_rate(value: Any, name: str = "learning_rate") -> Any:
    value = _scalar(value, name)
    if not is_traced(value) and not (np.isfinite(value) and value > 0):
        raise ValueError(f"`{name}` must be a finite number > 0, got {value}")
    return value


def as_learning_rates(value: Any, name: str = "learning_rates") -> Numbers:
    """A 1-D array of learning rates; a scalar becomes an axis of length 1."""
    if is_traced(value):
        return jnp.atleast_1d(value)
    arr = _float_leaf(value, name)
    if arr.ndim > 1:
        raise ValueError(f"`{name}` must be a scalar or a 1-D array, got shape {arr.shape}")
    # checked on the host: a concrete JAX array passed into a `jax.jit` turns into a tracer
    # under any JAX operation there
    host = np.atleast_1d(np.asarray(arr))
    arr = np.atleast_1d(arr) if isinstance(arr, np.ndarray) else jnp.atleast_1d(arr)
    if host.shape[0] == 0:
        raise ValueError(f"`{name}` must not be empty")
    bad = ~(np.isfinite(host) & (host > 0))
    if bad.any():
        at = int(np.argmax(bad))
        given = np.atleast_1d(np.asarray(value)).ravel()[at]
        shown = f"{given}" if given == host[at] else f"{given} ({host[at]} in {host.dtype})"
        raise ValueError(f"`{name}` must all be finite numbers > 0, got {shown} at index {at}")
    return arr


def as_precision(value: Any, name: str = "precision") -> Any:
    value = _scalar(value, name)
    # `inf` would stop every run after its first step, whatever the step
    if not is_traced(value) and not 0 <= value < np.inf:  # also catches NaN
        raise ValueError(f"`{name}` must be a finite number >= 0, got {value}")
    return value


def as_grad_tol(value: Any) -> Any:
    if value is None:
        return float("inf")
    value = _scalar(value, "grad_tol")
    if not is_traced(value) and not value >= 0:  # also catches NaN; inf: no stall test
        raise ValueError(f"`grad_tol` must be >= 0, got {value}")
    return value


def as_divergence(value: Any) -> Any:
    """The divergence factor: None or `inf` turns the rule off (non-finite values only)."""
    if value is None:
        return float("inf")
    value = _scalar(value, "divergence")
    if not is_traced(value) and not value > 0:  # also catches NaN
        raise ValueError(f"`divergence` must be a number > 0 (or None to turn it off), got {value}")
    return value


MOMENTUM = 0.9  # the momentum methods' default


def as_momentum(value: Any, method: Any) -> Any:
    """The momentum coefficient; None: `MOMENTUM`. Only the momentum methods take one."""
    if value is None:
        return MOMENTUM
    if method not in ("momentum", "nesterov"):
        name = method if isinstance(method, str) else getattr(method, "__name__", "this method")
        hint = (
            "" if isinstance(method, str) else " (an optax method takes its own in `hyperparams`)"
        )
        raise ValueError(
            f"`momentum` is used only by method='momentum' or 'nesterov'; method={name!r} "
            f"would ignore it{hint}"
        )
    value = _scalar(value, "momentum")
    if not is_traced(value) and not 0 <= value < 1:
        raise ValueError(f"`momentum` must be in [0, 1), got {value}")
    return value


# Hyperparameters whose meaning bounds them, by the names optax's optimizers share: decay
# rates of moving averages in [0, 1) (at 1, Adam's bias correction divides by zero), and
# offsets and weights >= 0. optax does not check them, and out of range a run settles
# somewhere else without a sign (Adam with b1 = 1.5: "converged" far from the minimum), so a
# concrete value out of range is refused.
DECAY_RATES = ("b1", "b2", "decay", "momentum")
NONNEGATIVE = ("eps", "eps_root", "weight_decay", "initial_accumulator_value")
BOUNDED = DECAY_RATES + NONNEGATIVE


def within_bounds(name: str, value: Any) -> Any:
    """Whether `value` (a number, or a NumPy or JAX array, elementwise) is within the bounds
    of the hyperparameter `name` (`BOUNDED`; any value for another name)."""
    if name in DECAY_RATES:
        return (value >= 0) & (value < 1)
    if name in NONNEGATIVE:
        return value >= 0
    return True


def check_bounds(name: str, value: Any) -> None:
    """Refuse a concrete value of a bounded hyperparameter (`BOUNDED`) out of its range."""
    if not within_bounds(name, value):
        bounds = "in [0, 1)" if name in DECAY_RATES else ">= 0"
        raise ValueError(f"`hyperparams[{name!r}]` must be {bounds}, got {value:g}")


# What each concrete setting must stay once cast to the run's dtype: `init` ends a run
# INVALID otherwise, so a value a wider float holds but the run's rounds out of its bounds
# (momentum 0.99999999 is 1.0 in float32, a divergence of 1e-50 is 0) is refused here.
_KEPT: dict[str, tuple[str, Callable[[np.ndarray], np.ndarray]]] = {
    "learning_rates": ("finite and > 0", lambda a: np.isfinite(a) & (a > 0)),
    "precision": ("finite and >= 0", lambda a: np.isfinite(a) & (a >= 0)),
    "grad_tol": (">= 0", lambda a: a >= 0),
    "momentum": ("in [0, 1)", lambda a: (a >= 0) & (a < 1)),
    "divergence": ("> 0", lambda a: a > 0),
}


def cast_kept(value: Any, dtype: Any, name: str, hyper: bool = False) -> Any:
    """A setting `name` (a number or a grid axis of them; `hyper`: an optax hyperparameter)
    as `dtype`, refused where the cast takes a concrete value out of its bounds (`_KEPT`). A
    traced one is cast as it is (the run then ends `INVALID`); a concrete JAX array is checked
    on the host (unless other processes hold part of it) and stays where it is."""
    if is_traced(value) or (isinstance(value, jax.Array) and not value.is_fully_addressable):
        return jnp.asarray(value, dtype)
    given = np.asarray(value)
    with np.errstate(over="ignore", under="ignore"):
        out = given.astype(dtype)
    if hyper:
        label, bounds = f"hyperparams[{name!r}]", "finite and within its bounds"
        bad = ~(np.isfinite(out) & within_bounds(name, out))
    else:
        label, (bounds, kept) = name, _KEPT[name]
        bad = ~kept(out)
    if np.any(bad):
        at, kind = int(np.argmax(np.ravel(bad))), np.dtype(dtype).name
        where = f" at index {at}" if given.ndim else ""
        raise ValueError(
            f"`{label}` must stay {bounds} in {kind} (the guesses' dtype), got "
            f"{np.ravel(given)[at]} ({np.ravel(out)[at]} there){where}: use a value {kind} "
            "holds, or float64 guesses (jax_enable_x64)"
        )
    return jnp.asarray(value, dtype) if isinstance(value, jax.Array) else out


def as_hyperparam(value: Any, name: str) -> Any:
    """A numeric hyperparameter of an optax method: a finite real scalar (or traced), within
    its bounds (`check_bounds`)."""
    value = _scalar(value, f"hyperparams[{name!r}]")
    if not is_traced(value):
        if not np.isfinite(value):
            raise ValueError(f"`hyperparams[{name!r}]` must be a finite number, got {value}")
        check_bounds(name, value)
    return value


MAX_ITER = 2**31 - 1  # iterations are counted in int32


def as_max_iter(value: Any) -> int:
    if is_traced(value):
        raise TypeError("`max_iter` must be a concrete Python int (under jax.jit, mark it static)")
    if isinstance(value, bool) or not isinstance(value, (numbers.Integral, np.integer)):
        raise TypeError(f"`max_iter` must be an integer, got {type(value).__name__} {value!r}")
    value = int(value)
    if value < 0:
        raise ValueError(f"`max_iter` must be >= 0, got {value}")
    if value > MAX_ITER:
        raise ValueError(f"`max_iter` must be at most 2**31 - 1 = {MAX_ITER}, got {value}")
    return int(value)


def as_count(value: Any, name: str) -> int | None:
    """An optional count: None, or an int >= 1."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (numbers.Integral, np.integer)):
        raise TypeError(f"`{name}` must be a positive int or None, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"`{name}` must be >= 1, got {value}")
    return int(value)


def as_threads(value: Any) -> int | None:
    """`threads=`: None (one per core on a CPU) or an int >= 1."""
    return as_count(value, "threads")


def as_choice(value: Any, name: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ValueError(f"`{name}` must be one of {', '.join(map(repr, choices))}; got {value!r}")
    return value


def as_history_every(history: bool, every: Any) -> int:
    """Rows kept every `every` iterations; 0 without `history`. None: every iteration."""
    if not isinstance(history, bool | np.bool_):
        raise TypeError(f"`history` must be True or False, got {history!r}")
    if every is None:
        return 1 if history else 0
    if not history:
        raise ValueError("`history_every` needs `history=True` (without it nothing is recorded)")
    if is_traced(every):  # it sizes the history buffer
        raise TypeError(
            "`history_every` must be a concrete Python int (under jax.jit, mark it static)"
        )
    if (
        isinstance(every, bool)
        or not isinstance(every, (numbers.Integral, np.integer))
        or every < 1
    ):
        raise ValueError(f"`history_every` must be an integer >= 1, got {every!r}")
    return int(every) if history else 0


def as_args(args: Any) -> tuple:
    if isinstance(args, list):
        args = tuple(args)
    if not isinstance(args, tuple):
        # an array under the user's jax.grad is a tracer: named as the array it stands for
        got = "an array" if isinstance(args, jax.Array) else type(args).__name__
        if isinstance(args, jax.Array | np.ndarray):
            got += " (one array is args=(a,))"
        raise TypeError(
            "`args` must be a tuple of extra arguments for cost_fn(x, *args), e.g. args=(X, y); "
            f"got {got}"
        )
    for leaf in jax.tree.leaves(args):
        if not (
            isinstance(leaf, (numbers.Number, np.ndarray, np.generic, jax.Array)) or is_traced(leaf)
        ):
            raise TypeError(
                f"`args` must hold numbers and arrays (they are traced), got {type(leaf).__name__}"
            )
        if isinstance(leaf, (np.ndarray, np.generic)) and leaf.dtype.kind in "OSUVMm":
            raise TypeError(
                f"`args` must hold numbers and arrays of numbers (they are traced), got an "
                f"array of dtype {leaf.dtype}"
            )
    return args


def _scale(guess: PyTree) -> float:
    """The largest finite magnitude in a concrete guess; 1 for a zero or traced one."""
    largest = 0.0
    for leaf in jax.tree.leaves(guess):
        if is_traced(leaf):
            return 1.0
        values = np.abs(np.asarray(leaf, dtype=np.float64))
        finite = values[np.isfinite(values)]
        largest = max(largest, float(finite.max())) if finite.size else largest
    return largest or 1.0


def warn_precision(precision: Any, guess: PyTree) -> None:
    """Warn when `precision` is below the dtype's resolution (`eps`) and below what it can
    resolve at the guesses' scale (`eps * max |x0|`, `eps` for a zero or traced guess): a
    guess of 0.002 resolves steps of 1e-9 in float32, one of 1 does not."""
    if is_traced(precision) or precision == 0 or precision >= _LARGEST_EPS:
        return
    dtype = float_dtype(guess)
    eps = _eps(dtype)
    if precision < eps and precision < eps * _scale(guess):
        # the warning points at the user's call: the first frame outside this package
        frame: types.FrameType | None = sys._getframe(0)
        level = 1
        while frame is not None and frame.f_code.co_filename.startswith(_PACKAGE):
            level, frame = level + 1, frame.f_back
        warnings.warn(
            f"`precision`={precision:g} is below the resolution of {np.dtype(dtype).name} "
            f"(eps={eps:.2g}): steps that small are lost to rounding, so the step rule fires "
            "only once an update rounds to zero (or never); use a larger precision"
            + (" or float64 (jax_enable_x64)" if np.dtype(dtype).itemsize < 8 else ""),
            UserWarning,
            stacklevel=level,
        )
