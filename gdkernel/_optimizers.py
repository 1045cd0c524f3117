"""The update rules: gdkernel's own (`gd`, `momentum`, `nesterov`) and any optax optimizer.

An optax rule runs under the kernel's semantics: its update is applied as the step
$x_{k+1} = x_k + u_k$, measured and stopped on exactly as gdkernel's own rules. Its state is
the kernel's `velocity`. The optimizer is built inside the traced step from the learning rate
and the numeric hyperparameters of `Params`, so new values never recompile; the other
hyperparameters (booleans, strings, dtypes, functions) are static, in `Options`.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import numbers
from collections.abc import Callable, Mapping
from typing import Any

import jax
import numpy as np

from ._powers import vectorised_powers
from ._types import PyTree
from ._validate import BOUNDED, check_bounds

BUILTIN = ("gd", "momentum", "nesterov")
ALIASES = {"sgd": "gd"}  # the Keras name of the tutorials' rule
# optax optimizers by name: each takes `learning_rate` and numeric keywords.
OPTAX = (
    "adabelief",
    "adadelta",
    "adagrad",
    "adam",
    "adamax",
    "adamaxw",
    "adamw",
    "adan",
    "amsgrad",
    "fromage",
    "lamb",
    "lion",
    "nadam",
    "nadamw",
    "novograd",
    "radam",
    "rmsprop",
    "sign_sgd",
    "yogi",
)
NAMES = (*BUILTIN, *ALIASES, *OPTAX)
# optax optimizers whose update does not treat every element on its own: a norm over each
# leaf (`fromage`, `lamb`, `novograd`), or not checked (`adan`). The others' arithmetic is the
# same whether a vector is one leaf or one leaf per element (`_columns`).
NOT_ELEMENTWISE = ("adan", "fromage", "lamb", "novograd")
ELEMENTWISE = tuple(name for name in OPTAX if name not in NOT_ELEMENTWISE)

Method = str | Callable[..., Any]  # a built-in rule's name, or an optax optimizer factory


def _optax() -> Any:
    try:
        return importlib.import_module("optax")
    except ImportError:
        raise ImportError("optax optimizers need optax: pip install 'gdkernel[optax]'") from None


def as_method(method: Any) -> Method:
    """The rule `method` names: a built-in name, or an optax factory (`optax.adam` for
    `"adam"`, or the callable given)."""
    if isinstance(method, str):
        name = ALIASES.get(method, method)
        if name in BUILTIN:
            return name
        if name in OPTAX:
            return getattr(_optax(), name)
        raise ValueError(f"`method` must be one of {', '.join(map(repr, NAMES))}, got {method!r}")
    if callable(method):
        takes = _parameters(method)
        if takes and "learning_rate" not in takes:
            raise TypeError(
                f"`method` {method_name(method)} must take `learning_rate=` (an optax optimizer "
                "factory such as `optax.adam`)"
            )
        return method
    raise TypeError(
        "`method` must be a name such as 'gd' or 'adam', or an optax optimizer factory, "
        f"got {type(method).__name__}"
    )


def _parameters(method: Callable[..., Any]) -> Mapping[str, inspect.Parameter]:
    """The keywords a factory takes (empty when its signature cannot be read)."""
    try:
        return inspect.signature(method).parameters
    except (TypeError, ValueError):
        return {}


def velocity_copies(method: Method) -> int:
    """Iterate-sized arrays a rule carries besides the iterate and gradient (an optax
    method: two, as the Adam family's moments)."""
    return 0 if method == "gd" else 2 if is_optax(method) else 1


def keywords(method: Method) -> list[str] | None:
    """The keywords an optax method takes besides `learning_rate`; None when it takes any
    (its signature has `**kwargs` or cannot be read); empty for a built-in rule."""
    if isinstance(method, str):
        return []
    takes = _parameters(method)
    if not takes or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in takes.values()):
        return None
    return [k for k in takes if k != "learning_rate"]


def method_name(method: Method) -> str:
    return method if isinstance(method, str) else getattr(method, "__name__", repr(method))


def is_optax(method: Method) -> bool:
    return not isinstance(method, str)


def is_elementwise(method: Method, static_hyperparams: tuple = ()) -> bool:
    """Whether `method`'s update acts on each element of the iterate on its own: a built-in
    rule, or one of optax's `ELEMENTWISE` optimizers given no static keyword (a mask, say,
    which follows the iterate's own structure)."""
    if not is_optax(method):
        return True
    optax = _optax()
    return not static_hyperparams and any(method is getattr(optax, n) for n in ELEMENTWISE)


def is_number(value: Any) -> bool:
    """A hyperparameter that is traced (a grid axis or a shared number), not static. An
    integer scalar is static: optimizers take seeds, counts and sizes as Python ints."""
    if isinstance(value, type | bool | np.bool_ | numbers.Integral | np.integer):
        return False  # (a type, such as `mu_dtype=jnp.float16`, has a `dtype` attribute)
    if isinstance(value, numbers.Real | np.number):
        return True
    return hasattr(value, "dtype") and np.issubdtype(np.dtype(value.dtype), np.number)


def split_hyperparams(
    method: Method, hyperparams: Mapping[str, Any] | None, said: Any = None
) -> tuple[dict[str, Any], tuple[tuple[str, Any], ...]]:
    """(numeric hyperparameters, traced; the others as static `(name, value)` pairs).
    `said`: the method as the user named it (`"sgd"` for `"gd"`), for the messages."""
    if hyperparams is None:
        return {}, ()
    if not isinstance(hyperparams, Mapping):
        raise TypeError(
            f"`hyperparams` must be a dict of keyword arguments, got {type(hyperparams).__name__}"
        )
    name = said if isinstance(said, str) else method_name(method)
    if isinstance(method, str):
        if hyperparams:
            own = "`momentum`, " if name in ("momentum", "nesterov") else ""
            raise ValueError(
                f"`hyperparams` are for optax methods; method={name!r} takes none (its options "
                f"are {own}`precision`, ...)"
            )
        return {}, ()
    known = keywords(method)
    takes = _parameters(method)
    numeric: dict[str, Any] = {}
    static: list[tuple[str, Any]] = []
    for key, value in hyperparams.items():
        if not isinstance(key, str):
            raise TypeError(f"`hyperparams` keys must be names, got {key!r}")
        if key == "learning_rate":
            raise ValueError(
                "`learning_rate` is gdkernel's own argument (an axis of a sweep): "
                "leave it out of `hyperparams`"
            )
        if known is not None and key not in known:
            raise ValueError(
                f"unknown hyperparameter {key!r} for method={name!r}; it takes: {', '.join(known)}"
            )
        default = getattr(takes.get(key), "default", None)
        if isinstance(default, bool) and not isinstance(value, bool | np.bool_):
            raise TypeError(
                f"`hyperparams[{key!r}]` must be True or False (a switch of {name}), got {value!r}"
            )
        if key in BOUNDED and isinstance(value, bool | np.bool_):
            raise TypeError(f"`hyperparams[{key!r}]` must be a number, got {value!r}")
        if key in BOUNDED and isinstance(value, numbers.Integral | np.integer):
            check_bounds(key, value)  # a static integer; numbers are checked with the others
        if is_number(value) or (not isinstance(value, str | type) and np.ndim(value) > 0):
            numeric[key] = value
        else:
            try:
                hash(value)
            except TypeError:
                raise TypeError(
                    f"hyperparameter {key!r} must be a number, a 1-D array of numbers, or a "
                    f"hashable value, got {type(value).__name__}"
                ) from None
            static.append((key, value))
    return numeric, tuple(static)


def optimizer(
    method: Callable[..., Any], learning_rate: Any, numeric: PyTree, static: tuple
) -> Any:
    """The optax `GradientTransformation` of one member."""
    return method(learning_rate=learning_rate, **numeric, **dict(static))


def init_state(
    method: Method, x0: PyTree, learning_rate: Any, numeric: PyTree, static: tuple
) -> Any:
    """The optimizer state before the first step."""
    return optimizer(method, learning_rate, numeric, static).init(x0)  # type: ignore[arg-type]


def optax_update(
    method: Method,
    x: PyTree,
    grad: PyTree,
    state: Any,
    learning_rate: Any,
    numeric: PyTree,
    static: tuple,
) -> tuple[PyTree, Any]:
    """The new iterate and optimizer state: $x_{k+1} = x_k + u_k$."""
    optax = _optax()
    opt = optimizer(method, learning_rate, numeric, static)  # type: ignore[arg-type]
    updates, new_state = vectorised_powers(opt.update)(grad, state, x)
    # each leaf of the state keeps its dtype: a number of `numeric` (in the guess's promoted
    # dtype) would otherwise promote, say, the bfloat16 moments of a mixed-precision guess
    state = jax.tree.map(lambda new, old: new.astype(jax.numpy.result_type(old)), new_state, state)
    return optax.apply_updates(x, updates), state


@functools.lru_cache(maxsize=64)
def _trial(method: Callable[..., Any], static: tuple, names: tuple[str, ...], spec: Any) -> None:
    treedef, shapes = spec
    x = jax.tree.unflatten(treedef, [jax.ShapeDtypeStruct(s, d) for s, d in shapes])
    dtype = shapes[0][1]
    scalar = jax.ShapeDtypeStruct((), dtype)

    def step(x: PyTree, rate: Any, numeric: dict[str, Any]) -> Any:
        state = init_state(method, x, rate, numeric, static)
        return optax_update(method, x, x, state, rate, numeric, static)

    jax.eval_shape(step, x, scalar, dict.fromkeys(names, scalar))


def check(method: Method, x0: PyTree, numeric: dict[str, Any], static: tuple, given: Any) -> None:
    """Build and step an optax method once, abstractly, on a guess like `x0`: a hyperparameter
    it cannot take fails here, at call time, in one line (cached per method and shape)."""
    if not is_optax(method):
        return
    leaves, treedef = jax.tree.flatten(x0)
    shapes = tuple((np.shape(leaf), jax.numpy.result_type(leaf)) for leaf in leaves)
    try:
        _trial(method, static, tuple(sorted(numeric)), (treedef, shapes))
    except Exception as err:  # the optimizer's own error, whatever its type
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        hint = ""
        if numeric and (isinstance(err, jax.errors.ConcretizationTypeError) or "Tracer" in first):
            hint = (
                " (numbers in `hyperparams` are traced, one value per grid member: a number "
                "the optimizer needs concrete, such as a schedule's, goes into the factory "
                "itself, e.g. `lambda learning_rate: optax.adam(optax.exponential_decay("
                "learning_rate, 200, 0.9))`)"
            )
        raise ValueError(
            f"method={method_name(method)!r} with `hyperparams` {dict(given or {})!r} fails "
            f"when built and stepped once: {first}{hint}"
        ) from None
