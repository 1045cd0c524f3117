"""`gradient_descent`: one problem, checked at call time, solved inside `jax.jit`."""

from __future__ import annotations

import functools
import math
import operator
from collections.abc import Callable
from typing import Any, Unpack

import jax
import jax.numpy as jnp
import numpy as np

from . import _chunks
from . import _validate as v
from ._adjoint import ADJOINTS, differentiable
from ._closure import hoisted
from ._kernel import DIVERGENCE, NORMS, Options, Params, make_value_and_grad, solve
from ._minibatch import as_batch_size, as_key
from ._optimizers import as_method, split_hyperparams
from ._optimizers import check as check_optimizer
from ._options import RunOptions, resolve
from ._result import Result

PyTree = Any


@functools.partial(jax.jit, static_argnames=("cost_fn", "grad_fn", "opts"))
def _run(
    x0: PyTree,
    params: Params,
    args: tuple,
    *,
    cost_fn: Callable,
    grad_fn: Callable | None,
    opts: Options,
) -> Result:
    value_and_grad = make_value_and_grad(cost_fn, grad_fn)

    def run(x0: PyTree, params: Params, args: tuple) -> Result:
        return solve(value_and_grad, x0, params, args, opts)

    return differentiable(run, value_and_grad, opts, batched=False)(x0, params, args)


def as_number(dtype: Any, value: Any) -> Any:
    """A traced number as an array of `dtype` (a NumPy one for a concrete value)."""
    if type(value) is float and abs(value) < v.SAFE_FLOAT:  # no overflow possible
        return np.asarray(value, dtype=dtype)
    if v.is_traced(value) or isinstance(value, jax.Array):
        return jnp.asarray(value, dtype=dtype)
    with np.errstate(over="ignore"):  # a value past the dtype's range becomes inf
        return np.asarray(value, dtype=dtype)


def as_rate(dtype: Any, learning_rate: Any) -> Any:
    """The learning rate in `dtype`, refused if it rounds to 0 or inf there."""
    rate = as_number(dtype, learning_rate)
    if isinstance(rate, np.ndarray) and not 0 < float(rate) < math.inf:  # (NaN fails too)
        raise ValueError(
            f"`learning_rate` must stay a finite number > 0 in {np.dtype(dtype).name}, "
            f"got {learning_rate} (which is {rate} there)"
        )
    return rate


def make_params(
    dtype: Any,
    learning_rate: Any,
    precision: Any,
    grad_tol: Any,
    momentum: Any,
    max_iter: int,
    divergence: Any = DIVERGENCE,
    hyperparams: dict[str, Any] | None = None,
    key: Any = None,
) -> Params:
    """The traced numbers as arrays of one fixed dtype, so their Python type never retraces;
    a concrete one that the cast takes out of its bounds is refused (`cast_kept`)."""
    return Params(
        as_rate(dtype, learning_rate),
        v.cast_kept(precision, dtype, "precision"),
        v.cast_kept(grad_tol, dtype, "grad_tol"),
        v.cast_kept(momentum, dtype, "momentum"),
        np.asarray(max_iter, np.int32),
        v.cast_kept(divergence, dtype, "divergence"),
        {
            name: v.cast_kept(value, dtype, name, hyper=True)
            for name, value in (hyperparams or {}).items()
        },
        key,
    )


def make_options(
    norm: str,
    method: Any,
    history: bool,
    history_every: Any,
    max_iter: int,
    adjoint: str = "implicit",
    static_hyperparams: tuple[tuple[str, Any], ...] = (),
    batch_size: int = 0,
) -> Options:
    """The static options; `max_iter` is static only when a history buffer must be sized or
    the unrolled adjoint replays the steps."""
    every = v.as_history_every(history, history_every)
    adjoint = v.as_choice(adjoint, "adjoint", ADJOINTS)
    if adjoint == "unrolled" and every:
        raise ValueError(
            "`adjoint='unrolled'` replays x, cost and grad; `history` has no derivative: "
            "differentiate a run without history=True"
        )
    rows = max_iter // every + 1 if every else 0
    if rows > v.MAX_ITER:
        raise ValueError(
            f"`history=True` keeps max_iter // history_every + 1 = {rows:,} rows, past the "
            "2**31 - 1 an int32 index reaches: raise `history_every` or lower `max_iter`"
        )
    return Options(
        norm=v.as_choice(norm, "norm", NORMS),
        method=as_method(method),
        static_hyperparams=static_hyperparams,
        history_every=every,
        history_rows=rows,
        adjoint=adjoint,
        replay_steps=max_iter if adjoint == "unrolled" else 0,
        batch_size=batch_size,
    )


def checked(
    dtype: Any,
    learning_rate: Any,
    options: RunOptions,
    guess: PyTree = None,
    on_device: bool = False,
) -> tuple[Params, Options]:
    """The options every run shares (`resolve`d, `args` already `as_args`), checked: the
    traced numbers and the static options. `guess`: one starting point, on which an optax
    method is tried abstractly.

    Options given as plain Python values (as most calls give them) are checked once per
    distinct set: the checked numbers are kept, and a call in a loop pays for its learning
    rate only. With `on_device`, the kept numbers are device arrays, which a compiled call
    takes without copying them over from host memory each time (7 us of a lone call's 27 on
    a CPU).
    """
    key = _plain(dtype, options)
    if key is None:
        shared, opts = _check(dtype, options, guess)
    elif on_device:  # (the 64-bit mode decides the dtype a device array of `max_iter` takes)
        shared, opts = _checked_on_device(key, bool(jax.config.read("jax_enable_x64")))
    else:
        shared, opts = _checked_plain(key)
    return shared._replace(learning_rate=as_rate(dtype, learning_rate)), opts


_PLAIN = frozenset((float, int, str, bool, type(None)))


def _plain(dtype: Any, options: RunOptions) -> tuple | None:
    """A hashable key of `options` when they are plain Python values with a built-in method
    and no mini-batches (nothing to check against the guess or the data), else None."""
    if options["hyperparams"] or options["batch_size"] is not None or options["key"] is not None:
        return None
    values = _plain_values(options)
    types = tuple(map(type, values))
    if not _PLAIN.issuperset(types):
        return None
    # with each value's type: 50 and 50.0, 1 and True are the same key otherwise
    return np.dtype(dtype), types, values


_PLAIN_NAMES = (
    "precision",
    "max_iter",
    "norm",
    "grad_tol",
    "method",
    "momentum",
    "divergence",
    "history",
    "history_every",
    "adjoint",
)
_plain_values = operator.itemgetter(*_PLAIN_NAMES)


@functools.lru_cache(maxsize=256)
def _checked_plain(key: tuple) -> tuple[Params, Options]:
    dtype, _, values = key
    options = dict(zip(_PLAIN_NAMES, values, strict=True))
    options.update(hyperparams=None, batch_size=None, key=None, args=())
    return _check(dtype, options, None)  # type: ignore[arg-type]


@functools.lru_cache(maxsize=256)
def _checked_on_device(key: tuple, x64: bool) -> tuple[Params, Options]:
    shared, opts = _checked_plain(key)
    return jax.device_put(shared), opts


def _check(dtype: Any, options: RunOptions, guess: PyTree) -> tuple[Params, Options]:
    """`checked`'s work, with a placeholder learning rate."""
    max_iter = v.as_max_iter(options["max_iter"])
    batch = as_batch_size(options["batch_size"], options["args"])
    key = as_key(options["key"], batch)
    method = as_method(options["method"])
    hyperparams = options["hyperparams"]
    numeric, static = split_hyperparams(method, hyperparams, said=options["method"])
    if guess is not None:
        check_optimizer(method, guess, numeric, static, hyperparams)
    opts = make_options(
        options["norm"],
        method,
        options["history"],
        options["history_every"],
        max_iter,
        options["adjoint"],
        static,
        batch,
    )
    params = make_params(
        dtype,
        1.0,
        v.as_precision(options["precision"]),
        v.as_grad_tol(options["grad_tol"]),
        v.as_momentum(options["momentum"], options["method"]),  # (named as the user did)
        max_iter,
        v.as_divergence(options["divergence"]),
        {name: v.as_hyperparam(value, name) for name, value in numeric.items()},
        key,
    )
    return params, opts


float_dtype = v.float_dtype


def gradient_descent(
    cost_fn: Callable[..., Any],
    initial_guess: PyTree,
    learning_rate: float | Any,
    **options: Unpack[RunOptions],
) -> Result:
    r"""Minimise `cost_fn` by gradient descent from `initial_guess`.

    Each iteration is the tutorials' three steps (predict, measure the error, learn):

    $$x_{k+1} = x_k - \eta \nabla f(x_k), \qquad s_k = \lVert x_{k+1} - x_k \rVert$$

    and the run stops at the first $k$ with $s_k < \text{precision}$ (that iteration counts:
    `CONVERGED`), or when `max_iter` iterations have run (`MAX_ITER`). The run stops with
    `DIVERGED`, keeping its iterate before, at the first iteration whose cost, gradient or
    iterate is NaN or inf, or whose cost climbs above

    $$f(x_0) + d \cdot \max\bigl(|f(x_0)|,\ \eta \lVert\nabla f(x_0)\rVert_2^2\bigr)$$

    ($d$ = `divergence`; an optax method's scale also weighs its first update and a step of
    $\eta$ per coordinate, and mini-batches take $f(x_0)$ on all the data: see
    docs/statuses.md): the same in float32 and float64. With `grad_tol` set, a step-rule
    stop while
    $\lVert\nabla f(x_{k+1})\rVert > \text{grad\_tol}$ is reported as `STALLED`.

    The loop is a `jax.lax.while_loop` compiled with `jax.jit`. `initial_guess`,
    `learning_rate`, `precision`, `grad_tol`, `momentum`, `divergence` and `args` are traced:
    new values of the same shape and dtype reuse the compiled program (`max_iter` is a
    concrete int whose new values reuse it too; under `jax.jit` it must be static).
    `cost_fn` and `grad_fn` are static and cached by identity: define them once rather than
    passing a fresh lambda in a hot loop.
    The function can itself be wrapped in `jax.jit` and `jax.vmap`; under `vmap` every
    member stops on its own rule.

    Args:
        cost_fn: `cost_fn(x, *args) -> scalar`, a JAX-traceable function (or a SymPy
            expression, with the `sympy` extra).
        initial_guess: the starting point: a number, an array, or a pytree of arrays (e.g.
            `{"b0": 0.0, "b1": 0.0}`). Integers are promoted to the default float dtype.
        learning_rate: the step size $\eta > 0$.

    Keyword Args:
        precision: stop once the step is smaller than this (default `1e-4`).
        max_iter: the iteration cap (default 100); a static Python int.
        args: extra arguments passed as `cost_fn(x, *args)`, e.g. data `(X, y)`.
        grad_fn: `grad_fn(x, *args)`, a gradient to use instead of `jax.grad`.
        norm: how the step (and gradient) is measured over all leaves: `"l1"` (sum of absolute
            values, the tutorials' choice), `"l2"` or `"max"`.
        grad_tol: if given, a step-rule stop with a gradient norm above it is `STALLED`.
        method: the update rule. `"gd"` (plain; `"sgd"` is the same rule under its Keras
            name), `"momentum"` (heavy ball: $v_{k+1} = \mu v_k + \nabla f(x_k)$,
            $x_{k+1} = x_k - \eta v_{k+1}$) or `"nesterov"`
            ($x_{k+1} = x_k - \eta(\nabla f(x_k) + \mu v_{k+1})$); or an optax optimizer
            (extra `gdkernel[optax]`) by name: `"adam"`, `"adamw"`, `"rmsprop"`,
            `"adagrad"`, `"adabelief"`, `"lion"` and the others of `optax` listed in the
            docs, or a factory such as `optax.adam` (called with `learning_rate=` and
            `hyperparams`). An optax rule steps $x_{k+1} = x_k + u_k$ with its update $u_k$
            and stops, diverges and stalls by the rules above.
        momentum: $\mu \in [0, 1)$ for the momentum methods (default 0.9).
        hyperparams: an optax method's other keyword arguments, e.g. `{"b1": 0.8}`.
            Floating-point numbers are traced (new values never recompile); other values
            (booleans, integers, dtypes, functions) are static. `learning_rate` is not one: it is this function's own argument.
        batch_size: draw each iteration's gradient from `batch_size` random rows of the data
            in `args` (every array there must share its leading axis, the data size `n`):
            mini-batch gradient descent. Rows are drawn with replacement from
            `jax.random.fold_in(key, k)` for the gradient after iteration `k`; `batch_size =
            n` uses every row (full batch). Noisy steps rarely meet the step rule: give
            `precision=0` and let `max_iter` be the budget. The result's `cost` and `grad`
            are on all the data; a history's costs are the mini-batches'.
        key: the `jax.random` key of the mini-batches (needed with `batch_size`); the same
            key gives the same run.
        divergence: the factor $d > 0$ of the divergence rule above (default `1e4`: a
            converging run, momentum included, stays far below it); None (or `inf`) turns the
            rule off, leaving only NaN and inf.
        history: record every iterate and cost inside the loop (`Result.history`).
        history_every: with `history`, keep every k-th iterate only; the buffer holds
            `max_iter // history_every + 1` rows.
        symbols: for a SymPy `cost_fn` with several free symbols, their order in `x`.
        adjoint: how `jax.grad`, `jax.jvp` and friends differentiate the run (its `x`,
            `cost` and `grad`). `"implicit"` (default): at the returned point, by the implicit
            function theorem, $\partial x^*/\partial\theta = -H^{-1}\,\partial^2 f /
            \partial x\,\partial\theta$ for the arrays $\theta$ in `args` ($H$ the Hessian
            in `x`); memory does not grow with the iterations; the derivatives with respect
            to `initial_guess`, `learning_rate`, `precision` and `momentum` are zero, and a
            run that did not converge has zero derivatives (its `status` says why). It needs
            a nonsingular Hessian at the minimum: where the cost is flat in some direction
            (an unused parameter, a rank-deficient fit) the derivative of `x` is NaN in
            forward mode and zero in reverse mode (so that it leaves the other members of a
            batch alone); add a small ridge term or use `"unrolled"`. A run on mini-batches
            (`batch_size`) ends on noisy steps, not at a minimum: differentiating it is an
            error naming `adjoint`.
            `"unrolled"`: the exact derivative of the iterations run (their count held
            fixed) with respect to everything, replayed with about
            $3\sqrt{\text{max\_iter}}$ iterates stored. See docs/derivatives.md.

    Returns:
        A `Result` pytree: `x`, `cost`, `grad`, `step_size`, `iterations`, `status` (and
        `history`), with `converged`, `diverged`, `stalled` and `message` derived from `status`.

    Raises:
        TypeError: `cost_fn` is not callable, does not return a real scalar, is not
            traceable by JAX, or raises a `TypeError` on `initial_guess` and `args`; an
            argument has the wrong type.
        ValueError: `cost_fn` raises any other error there (the original chained to it); a
            concrete `learning_rate` <= 0 or non-finite, `precision` < 0, `max_iter` < 0,
            `momentum` outside [0, 1), a number that the guess's dtype rounds out of its
            bounds, a NaN or inf in `initial_guess`, an unknown `norm` or `method`.

    Example:
        >>> import gdkernel as gd
        >>> res = gd.gradient_descent(lambda x: x**2, 3, 0.1)
        >>> int(res.iterations), res.status == gd.Status.CONVERGED
        (40, Array(True, dtype=bool))
    """
    run = resolve(options, "gradient_descent")
    cost_fn = v.cost_function(cost_fn, run["symbols"])
    grad_fn = v.grad_function(run["grad_fn"])
    x0 = v.as_guess(initial_guess, "initial_guess")
    args = v.as_args(run["args"])
    cost_fn, grad_fn, args = hoisted(cost_fn, grad_fn, x0, args, run["batch_size"])
    run["args"] = args
    rate = v.as_learning_rate(learning_rate)
    params, opts = checked(float_dtype(x0), rate, run, guess=x0, on_device=True)
    if opts.history_rows:
        _chunks.check_history(x0, float_dtype(x0), opts.history_rows)
    v.warn_precision(run["precision"], x0)
    return _run(x0, params, args, cost_fn=cost_fn, grad_fn=grad_fn, opts=opts)
