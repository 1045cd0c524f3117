"""The lanes' trip for a scalar problem: one array per lane set, one fused loop.

XLA on a CPU fuses each output of a loop body into a loop of its own, and each of those loops
recomputes what the outputs share. With the iterate, gradient, step size and status code
carried as four arrays, every step runs four loops over the lanes, each recomputing the whole
step, plus copies of the carry that the loops overwrite while others still read it. On a GPU
a trip's cost is the bytes it reads and writes: 8 bytes a float32 member here, against 16
for the four arrays (measured on an H200 at 1e8 members: 2.7x faster).

Here a member of a scalar problem (one scalar leaf, plain gradient descent) carries two
numbers, packed into one complex array: an iterate and its status code (`_lanes`: `-(k + 1)`
while running with `k` iterations taken, else `8 * iterations + status`). A running member
holds its current iterate `x_k`: a trip takes the gradient there, proposes `x_{k+1}` and
decides, in one loop over the lanes that updates the array in place.
A member that stops keeps the iterate it had: the one before its final iterate, or, when its
proposal diverged, its final iterate `x_k` itself. Its final gradient, cost and step size are
then recomputed once at the end (`finish`), exactly as the plain loop (`_kernel.solve`)
computed them, from the iterate before the final one (the same arithmetic on the same
numbers: the same bits). A member that diverged after `k >= 1` steps has lost `x_{k-1}`,
which its step size `|x_k - x_{k-1}|` needs: `finish` replays such members from their start
(`_replay`), only when there are any. (Carrying `x_{k-1}` instead, and recomputing `x_k`
from it on every trip, cost W1 and W3 1.3x.)

The code shares the complex number's second slot: bit-cast into a float32, or converted to
a float64 (exact for any int32).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax import Array, lax

from . import _lanes
from ._kernel import (
    Options,
    Params,
    ValueAndGrad,
    member_axes,
    propose,
    update,
    with_members,
)
from ._result import RUNNING, Result, Status

PyTree = Any
# `(ids) -> (initial guesses, own numbers)` of members `ids`
Members = Callable[[Array], tuple[Array, Params]]

DTYPES = (jnp.float32, jnp.float64)
# Members a replay (`_replay`) recomputes side by side (a multiple of `_lanes.VECTOR`).
REPLAY = 1024


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
    """Lanes of `pack`ed members: one trip takes the gradient at a running member's iterate,
    proposes the next one and decides, in one loop over the lanes."""

    def trip(packed: Array, numbers: tuple[Params, Array], live: Array | None) -> Array:
        x, code = unpack(packed)
        mine, tops = numbers
        lane_params = with_members(params, mine)
        step, evaluate = _steps(value_and_grad, lane_params, args, opts, x.dtype, stall_test)
        go = code < 0
        n = jnp.where(go, -code, 1)  # the iteration proposed (`code` is `-(n - 1 + 1)`)
        new = step(x, evaluate(x)[1], n, lane_params, tops)
        # a member that stops keeps the iterate it had: the one before its final iterate, or
        # its final one when the proposal diverged (`finish`)
        x = jnp.where(go & (new.status == RUNNING), new.x, x)
        return pack(x, _lanes.next_code(code, n, new.status, new.accepted))

    return _lanes.Representation(
        trip=trip,
        code=lambda packed: unpack(packed)[1],
        idle=lambda packed: pack(jnp.real(packed), jnp.zeros(packed.shape, jnp.int32)),
    )


def finish(
    value_and_grad: ValueAndGrad,
    packed: Array,
    members_of: Members,
    args: tuple,
    opts: Options,
    stall_test: bool,
) -> Result:
    """The result of every member (`members_of(ids)`: the initial guesses and own numbers of
    members `ids`): its last iteration taken again, exactly."""
    params = members_of(jnp.arange(packed.shape[0], dtype=jnp.int32))[1]
    step, evaluate = _steps(value_and_grad, params, args, opts, packed.real.dtype, stall_test)

    # a member whose proposal diverged after k >= 1 steps holds x_k: replay its x_{k-1}
    before, code = unpack(_replay(value_and_grad, args, opts, members_of, packed))
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


def _diverged(code: Array) -> Array:
    """Members whose last proposal diverged after one step or more (they hold their last
    accepted iterate, not the one before it)."""
    return (_lanes.code_status(code) == Status.DIVERGED) & (_lanes.code_iterations(code) >= 1)


def _replay(
    value_and_grad: ValueAndGrad,
    args: tuple,
    opts: Options,
    members_of: Members,
    packed: Array,
) -> Array:
    """`packed` with each member that diverged after `k >= 1` steps (`_diverged`) holding
    `x_{k-1}`, recomputed from its start by the trip's own arithmetic (`update` at the
    gradient), a block of `REPLAY` neighbouring members at a time, each block for its own
    longest replay, from the first block holding such a member to the last (one with none
    takes no step: a grid's diverging members, its largest learning rates, are neighbours).
    With none, the usual case, nothing runs and `packed` is returned as it is."""
    members = packed.shape[0]
    width = min(REPLAY, -(-members // _lanes.VECTOR) * _lanes.VECTOR)

    def advance(y: Array, p: Params) -> Array:
        return update(y, value_and_grad(y, args)[1], None, p, opts)[0]

    def block(b: Array, packed: Array) -> Array:
        ids = b * width + jnp.arange(width, dtype=jnp.int32)
        safe = jnp.minimum(ids, members - 1)
        code = unpack(packed[safe])[1]
        steps = _lanes.code_iterations(code) - 1
        want = jnp.where((ids < members) & _diverged(code), steps, -1)  # -1: not replayed
        y, mine = members_of(safe)  # (built here: no member's numbers are kept for this)
        step = jax.vmap(advance, in_axes=(0, member_axes(mine)))

        def again(carry: tuple[Array, Array]) -> tuple[Array, Array]:
            done, y = carry
            return done + 1, jnp.where(done < want, step(y, mine), y)

        longest = jnp.max(want)
        y = lax.while_loop(lambda c: c[0] < longest, again, (jnp.array(0, jnp.int32), y))[1]
        return packed.at[jnp.where(want >= 0, ids, members)].set(pack(y, code), mode="drop")

    # the blocks from the first such member's to the last's (none: first > last)
    ids = jnp.where(_diverged(unpack(packed)[1]), jnp.arange(members, dtype=jnp.int32), -1)
    first, last = _lanes.fold(
        (jnp.where(ids < 0, members, ids), ids), (lax.min, lax.max), (members, -1)
    )
    return lax.fori_loop(first // width, last // width + 1, block, packed)
