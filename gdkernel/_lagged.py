"""The lanes' trip for a scalar problem: one array per lane set, one fused loop.

XLA on a CPU fuses each output of a loop body into a loop of its own, and each of those loops
recomputes what the outputs share. With the iterate, gradient, step size and status code
carried as four arrays, every step runs four loops over the lanes, each recomputing the whole
step, plus copies of the carry that the loops overwrite while others still read it. On a GPU
a trip's cost is the bytes it reads and writes: 8 bytes a float32 member here, against 16
for the four arrays (measured on an H200 at 1e8 members: 2.7x faster).

Here a member of a scalar problem (one scalar leaf, plain gradient descent) carries two
numbers, packed into one complex array: the iterate *before* its last accepted one,
`x_{k-1}`, and its status code (`_lanes`: `-(k + 1)` while running, else
`8 * iterations + status`). A trip recomputes `x_k` from `x_{k-1}` (the same arithmetic on the
same numbers: the same bits), proposes `x_{k+1}` and decides, in one loop over the lanes that
updates the array in place.
A member that stops keeps the iterate before its final one (a diverged member: before its
last accepted one), so its final iterate, gradient, cost and step size are recomputed once at
the end, exactly as the plain loop (`_kernel.solve`) computed them.

The code shares the complex number's second slot: bit-cast into a float32, or converted to
a float64 (exact for any int32).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jax import Array, lax

from . import _lanes
from ._kernel import Options, Params, ValueAndGrad, member_axes, propose, with_members
from ._result import Result

PyTree = Any

DTYPES = (jnp.float32, jnp.float64)


def applies(x0: PyTree, opts: Options) -> bool:
    """Whether a batch of guesses `x0` (batch on the leading axis) takes this loop: a bare
    array of one float32 or float64 number per member, plain gradient descent on all the
    data."""
    return (
        opts.method == "gd"  # (an optax method's name is its factory, never "gd")
        and not opts.batch_size  # its trip re-evaluates a gradient without the iteration
        and jax.tree_util.treedef_is_leaf(jax.tree.structure(x0))  # an array, not a container
        and jnp.ndim(x0) == 1
        and jnp.result_type(x0) in DTYPES
    )


def pack(x: Array, code: Array) -> Array:
    """One complex number per member: its iterate and its int32 status code."""
    if x.dtype == jnp.float32:
        return lax.complex(x, lax.bitcast_convert_type(code, jnp.float32))
    return lax.complex(x, code.astype(x.dtype))


def unpack(packed: Array) -> tuple[Array, Array]:
    """(iterate, code) from `pack`."""
    x, other = jnp.real(packed), jnp.imag(packed)
    if x.dtype == jnp.float32:
        return x, lax.bitcast_convert_type(other, jnp.int32)
    return x, other.astype(jnp.int32)


def _steps(
    value_and_grad: ValueAndGrad,
    params: Params,
    args: tuple,
    opts: Options,
    dtype: Any,
    stall_test: bool,
) -> tuple[Any, Any]:
    """(one iteration of every member from (x, grad), the cost and gradient of every member)."""

    def one(x: Array, g: Array, n: Array, p: Params, top: Array) -> Any:
        return propose(value_and_grad, x, g, None, n, p, args, opts, dtype, top, stall_test)

    step = jax.vmap(one, in_axes=(0, 0, 0, member_axes(params), 0))
    evaluate = jax.vmap(lambda x: value_and_grad(x, args))
    return step, evaluate


def representation(
    value_and_grad: ValueAndGrad, params: Params, args: tuple, opts: Options, stall_test: bool
) -> _lanes.Representation:
    """Lanes of `pack`ed members: one trip recomputes `x_n` from `x_{n-1}`, proposes
    `x_{n+1}` and decides, in one loop over the lanes."""

    def trip(packed: Array, numbers: tuple[Params, Array]) -> Array:
        before, code = unpack(packed)
        mine, tops = numbers
        lane_params = with_members(params, mine)
        step, evaluate = _steps(value_and_grad, lane_params, args, opts, before.dtype, stall_test)
        go = code < 0
        taken = jnp.where(go, -code - 1, 0)  # iterations taken: `before` is x_{taken - 1}
        grad_before = evaluate(before)[1]
        last = step(before, grad_before, taken, lane_params, tops)  # x_taken again
        x = jnp.where(taken >= 1, last.x, before)
        grad = jnp.where(taken >= 1, last.grad, grad_before)
        n = taken + 1
        new = step(x, grad, n, lane_params, tops)
        before = jnp.where(go & new.accepted, x, before)
        return pack(before, _lanes.next_code(code, n, new.status, new.accepted))

    return _lanes.Representation(
        trip=trip,
        code=lambda packed: unpack(packed)[1],
        idle=lambda packed: pack(jnp.real(packed), jnp.zeros(packed.shape, jnp.int32)),
    )


def finish(
    value_and_grad: ValueAndGrad,
    packed: Array,
    params: Params,
    args: tuple,
    opts: Options,
    stall_test: bool,
) -> Result:
    """The result of every member (`params`: the members' own numbers): its last iteration
    taken again, exactly."""
    before, code = unpack(packed)
    step, evaluate = _steps(value_and_grad, params, args, opts, before.dtype, stall_test)
    iterations = _lanes.code_iterations(code)
    cost_before, grad_before = evaluate(before)
    # the status is the code's: the ceiling, which only decides a status, plays no part
    no_ceiling = jnp.full(iterations.shape, jnp.inf, cost_before.dtype)
    last = step(before, grad_before, iterations, params, no_ceiling)
    stepped = iterations >= 1  # else `before` is the initial guess
    return Result(
        x=jnp.where(stepped, last.x, before),
        cost=jnp.where(stepped, last.cost, cost_before),
        grad=jnp.where(stepped, last.grad, grad_before),
        step_size=jnp.where(stepped, last.step_size, jnp.inf).astype(before.dtype),
        iterations=iterations,
        status=code & 7,
        history=None,
    )
