"""A whole batch of members in one `lax.while_loop` with a masked body.

`jax.vmap` of a `while_loop` selects the whole carry and reduces the predicate on every
iteration. Here the loop runs over the batch directly: each trip applies several masked
steps (a member that has stopped is left exactly where it stopped), and the predicate
"any member still running" is reduced once per trip.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax import Array, lax

from ._kernel import (
    Options,
    Params,
    State,
    ValueAndGrad,
    init,
    make_value_and_grad,
    masked_step,
    running,
    to_result,
)
from ._progress import monitor
from ._result import Result

PyTree = Any

# Masked steps per trip of the loop. Extra steps of a finished member are no-ops, so this
# only trades a little wasted work for fewer predicate reductions and loop trips.
STEPS_PER_TRIP = 4

_PARAM_AXES = Params(learning_rate=0, precision=None, grad_tol=None, momentum=None, max_iter=None)


def init_batch(
    value_and_grad: ValueAndGrad, x0: PyTree, params: Params, args: tuple, opts: Options
) -> State:
    """`init` for every member; `x0` and `params.learning_rate` carry the batch axis."""
    return jax.vmap(lambda x, p: init(value_and_grad, x, p, args, opts), in_axes=(0, _PARAM_AXES))(
        x0, params
    )


def run_batch(
    value_and_grad: ValueAndGrad,
    state: State,
    params: Params,
    args: tuple,
    opts: Options,
    steps_per_trip: int = STEPS_PER_TRIP,
) -> State:
    """Step every running member until none is left running."""
    one = jax.vmap(
        lambda s, p: masked_step(value_and_grad, s, p, args, opts), in_axes=(0, _PARAM_AXES)
    )

    def body(carry: tuple[State, Array]) -> tuple[State, Array]:
        s, trips = carry
        for _ in range(steps_per_trip):
            s = one(s, params)
        trips = trips + 1
        if opts.progress_every:
            monitor(s, trips, opts.progress_every)
        return s, trips

    state, _ = lax.while_loop(
        lambda carry: jnp.any(running(carry[0])), body, (state, jnp.array(0, jnp.int32))
    )
    return state


def solve_batch(
    value_and_grad: ValueAndGrad, x0: PyTree, params: Params, args: tuple, opts: Options
) -> Result:
    """Every member of a flat batch, each stopping on its own rule."""
    state = init_batch(value_and_grad, x0, params, args, opts)
    return to_result(run_batch(value_and_grad, state, params, args, opts))


@functools.partial(jax.jit, static_argnames=("cost_fn", "grad_fn", "opts"))
def solve_members(
    x0: PyTree,
    params: Params,
    args: tuple,
    *,
    cost_fn: Callable,
    grad_fn: Callable | None,
    opts: Options,
) -> Result:
    """The single-device entry point: a flat batch of members (batch on every leading axis of
    `x0` and on `params.learning_rate`), solved to completion. Returns a flat `Result`."""
    return solve_batch(make_value_and_grad(cost_fn, grad_fn), x0, params, args, opts)
