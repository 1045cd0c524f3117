"""A cost that closes over a value of an enclosing JAX transformation.

Research code writes `jax.grad(lambda lam: gd.gradient_descent(lambda w: loss(w, lam), ...))`:
the cost reads `lam`, a value traced by the enclosing `jax.grad` (or `jax.vmap`, `jax.jit`).
The solve is compiled with the cost as a static argument, and a closed-over value of another
trace cannot be compiled into it (JAX fails with "No constant handler"). Here such a cost
and gradient take every value they close over from `args` instead, so the solve batches and
differentiates them as it does `args`.
"""

from __future__ import annotations

import functools
import inspect
import sys
from collections.abc import Callable
from typing import Any

import jax

from ._types import PyTree

# How deep the closures are searched for a traced value: a lambda, a wrapper around it (a
# validated or SymPy cost), and a `functools.partial` or bound object inside.
DEPTH = 4


def hoisted(
    cost_fn: Callable[..., Any],
    grad_fn: Callable[..., Any] | None,
    example: PyTree,
    args: tuple,
    batch_size: int | None = None,
) -> tuple[Callable[..., Any], Callable[..., Any] | None, tuple]:
    """`(cost_fn, grad_fn, args)`, with the values the functions close over appended to
    `args` when one of them is traced by an enclosing transformation.

    The functions are traced once on `example` (one member) and `args`; the results are
    those traces evaluated on the arguments, so they take members shaped like `example`.
    A traced value is looked for in the functions' closures, `functools.partial` arguments
    and objects' attributes (a bound method's object, a callable object); one reached
    otherwise (a module-level global) is not found.
    """
    if top_level():  # no transformation is tracing: there is no traced value to read
        return cost_fn, grad_fn, args
    functions = [fn for fn in (cost_fn, grad_fn) if fn is not None]
    if not any(_reads_a_tracer(fn, DEPTH) for fn in functions):
        return cost_fn, grad_fn, args
    if batch_size:
        raise TypeError(
            "`cost_fn` reads a value traced by an enclosing jax transformation (jit, vmap, "
            "grad); with `batch_size`, pass it through `args` (mini-batches are sliced "
            "from `args`)"
        )
    n = len(args)
    extra: list[Any] = []

    def lift(fn: Callable[..., Any]) -> Callable[..., Any]:
        evaluate, consts = traced(fn, example, *args)
        start, count = n + len(extra), len(consts)
        extra.extend(consts)

        def lifted(x: PyTree, *given: Any) -> Any:
            return evaluate(list(given[start : start + count]), jax.tree.leaves((x, *given[:n])))

        return lifted

    cost = lift(cost_fn)
    grad = lift(grad_fn) if grad_fn is not None else None
    return cost, grad, (*args, *extra)


def traced(
    fn: Callable[..., Any], *examples: Any, run: Callable[..., list] = jax.core.eval_jaxpr
) -> tuple[Callable[[list, list], Any], list]:
    """`fn` traced once on `examples`: `(evaluate, consts)`, where `evaluate(consts, leaves)`
    is `fn` of the arguments whose leaves are `leaves` (shaped like the examples'), and
    `consts` the values `fn` closes over, passed in rather than closed over. `run(jaxpr,
    consts, *leaves)` evaluates the trace (JAX's own evaluation, or one that takes some
    operations another way: `_powers`)."""
    closed, shape = jax.make_jaxpr(fn, return_shape=True)(*examples)
    out_tree = jax.tree.structure(shape)

    def evaluate(consts: list, leaves: list) -> Any:
        return jax.tree.unflatten(out_tree, run(closed.jaxpr, consts, *leaves))

    return evaluate, list(closed.consts)


def top_level() -> bool:
    """Whether no JAX transformation is tracing the caller (JAX's own test where this
    jaxlib has it, else whether a new array comes out traced)."""
    clean = getattr(sys.modules.get("jax._src.core"), "trace_state_clean", None)
    if clean is not None:
        return bool(clean())
    return not isinstance(jax.numpy.zeros(()), jax.core.Tracer)


def _reads_a_tracer(obj: Any, depth: int) -> bool:
    if isinstance(obj, jax.core.Tracer):
        return True
    if depth == 0:
        return False
    if isinstance(obj, functools.partial):
        parts = [obj.func, *obj.args, *obj.keywords.values()]
    elif inspect.ismethod(obj):
        parts = [obj.__func__, obj.__self__]
    elif inspect.isfunction(obj):
        parts = [*_cells(obj), *(obj.__defaults__ or ())]
    elif any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves(obj)):
        return True
    else:  # an object's attributes: a callable object's, a bound method's instance's
        parts = list(getattr(obj, "__dict__", {}).values())
    return any(_reads_a_tracer(part, depth - 1) for part in parts)


def _cells(fn: Callable[..., Any]) -> list[Any]:
    values = []
    for cell in fn.__closure__ or ():
        try:
            values.append(cell.cell_contents)
        except ValueError:  # a cell not filled yet
            continue
    return values
