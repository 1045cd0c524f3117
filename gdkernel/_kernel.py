"""One problem: derivative, update, stopping test and the `lax.while_loop`.

Everything here works on a single member. Batching is `jax.vmap` of these functions
(`_batch.py` runs a whole batch in one masked loop).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import Array, lax

from . import _columns, _minibatch, _optimizers
from ._once import once
from ._optimizers import Method
from ._result import RUNNING, History, Result, Status
from ._types import Numbers, PyTree
from ._validate import call_cost_fn, call_grad_fn, within_bounds

ValueAndGrad = Callable[[PyTree, tuple], tuple[Array, PyTree]]

NORMS = ("l1", "l2", "max")
# The default divergence factor (`ceiling`). On a quadratic, a stable run's cost rises above
# its start by at most about 80 times the rule's scale (heavy ball with momentum 0.99 near the
# edge of stability; plain and Nesterov steps far less): 1e4 leaves a wide margin, and a cost
# that grows geometrically crosses it long before float32 overflows.
DIVERGENCE = 1e4


class Options(NamedTuple):
    """The static (compile-time) options of a run. Hashable, so it can key the jit cache."""

    norm: str = "l1"
    method: Method = "gd"  # a built-in rule's name or an optax optimizer factory (`_optimizers`)
    static_hyperparams: tuple[tuple[str, Any], ...] = ()  # an optax method's non-numeric keywords
    history_every: int = 0  # 0: no history
    history_rows: int = 0  # max_iter // history_every + 1 when recording
    progress_every: int = 0  # batched loop: report to the host every k trips; 0: never
    device_axes: tuple[str, ...] = ()  # under `shard_map`: the mesh axes reports name a device by
    adjoint: str = "implicit"  # how a solve is differentiated (`_adjoint.py`)
    replay_steps: int = 0  # adjoint="unrolled": `max_iter`, the length of the replay
    batch_size: int = 0  # rows of the data in `args` per gradient (`_minibatch`); 0: all


class Params(NamedTuple):
    """The traced numbers of a run: changing them never recompiles."""

    learning_rate: Numbers
    precision: Numbers
    grad_tol: Numbers  # +inf when the stall test is off
    momentum: Numbers
    max_iter: Numbers  # int32
    divergence: Numbers  # +inf when only non-finite values count as diverging (see `ceiling`)
    hyperparams: dict[str, Numbers]  # an optax method's numeric keywords (`_optimizers`)
    key: Any = None  # the PRNG key of the mini-batches (`Options.batch_size`)


def member_axes(params: Params) -> Params:
    """`jax.vmap` axes of a batch's `Params`: 0 for a number given per member (the learning
    rate, and any other number a sweep grids over), None for one the members share."""
    return jax.tree.map(lambda leaf: 0 if jnp.ndim(leaf) else None, params)


def per_member(params: Params) -> Params:
    """The numbers of `params` given per member; None where the members share one."""
    return jax.tree.map(lambda leaf: leaf if jnp.ndim(leaf) else None, params)


def with_members(params: Params, mine: Params) -> Params:
    """`params` with the per-member numbers `mine` (a `per_member` tree) put in."""
    return jax.tree.map(
        lambda own, shared: shared if own is None else own,
        mine,
        params,
        is_leaf=lambda leaf: leaf is None,
    )


def take(params: Params, index: Any) -> Params:
    """The per-member numbers of members `index` (shared numbers unchanged)."""
    return jax.tree.map(lambda leaf: leaf[index] if jnp.ndim(leaf) else leaf, params)


class State(NamedTuple):
    """The loop carry of one member."""

    x: PyTree
    cost: Array
    grad: PyTree
    velocity: PyTree  # None for plain gradient descent
    step_size: Array
    iterations: Array
    status: Array
    ceiling: Array  # a cost above this is divergence (`ceiling`)
    history: History | None


def make_value_and_grad(cost_fn: Callable, grad_fn: Callable | None) -> ValueAndGrad:
    """`(x, args) -> (cost, grad)`, from autodiff or from the user's `grad_fn`."""
    if grad_fn is None:

        def cost(x: PyTree, args: tuple) -> Array:
            return call_cost_fn(cost_fn, x, args)

        def value_and_grad(x: PyTree, args: tuple) -> tuple[Array, PyTree]:
            return jax.value_and_grad(lambda y: cost(y, args))(x)

        # the cost alone, for a gradient taken coordinate by coordinate (`_columns`)
        value_and_grad.cost = cost  # type: ignore[attr-defined]

    else:

        def value_and_grad(x: PyTree, args: tuple) -> tuple[Array, PyTree]:
            return call_cost_fn(cost_fn, x, args), call_grad_fn(grad_fn, x, args)

    return value_and_grad


def data(args: tuple, params: Params, opts: Options, iteration: Any) -> tuple:
    """What the gradient evaluated after iteration `iteration` sees: `args`, or with
    `opts.batch_size` a mini-batch of its rows (`_minibatch.sample`)."""
    if not opts.batch_size:
        return args
    return _minibatch.sample(args, params.key, iteration, opts.batch_size)


def on_all_data(
    value_and_grad: ValueAndGrad, result: Result, args: tuple, opts: Options, batched: bool
) -> Result:
    """With mini-batches, the result's `cost` and `grad` at its `x` on all the data."""
    if not opts.batch_size:
        return result
    evaluate = jax.vmap(value_and_grad, in_axes=(0, None)) if batched else value_and_grad
    cost, grad = evaluate(result.x, args)
    return result._replace(cost=cost, grad=grad)


def tree_norm(tree: PyTree, kind: str) -> Array:
    """The `l1`, `l2` or `max` norm over every element of every leaf."""
    leaves = [jnp.abs(leaf) for leaf in jax.tree.leaves(tree)]
    if kind == "l1":
        return jnp.asarray(sum(jnp.sum(leaf) for leaf in leaves))
    if kind == "l2":
        return jnp.sqrt(sum(jnp.sum(leaf * leaf) for leaf in leaves))
    if kind == "max":
        return functools.reduce(jnp.maximum, [jnp.max(leaf) for leaf in leaves])
    raise ValueError(f"`norm` must be one of {NORMS}, got {kind!r}")


def _all_finite(tree: PyTree, *like: PyTree) -> Array:
    """Whether every number of `tree`, and of the trees `like` it (same leaves and shapes), is
    finite: one test per position across the trees, then one reduction per leaf."""
    out = jnp.array(True)
    for leaves in zip(jax.tree.leaves(tree), *(jax.tree.leaves(t) for t in like), strict=True):
        out = out & jnp.all(functools.reduce(jnp.logical_and, map(jnp.isfinite, leaves)))
    return out


def _sum_squares(tree: PyTree) -> Array:
    return jnp.asarray(sum(jnp.sum(leaf * leaf) for leaf in jax.tree.leaves(tree)))


def ceiling(
    cost: Array,
    grad: PyTree,
    params: Params,
    first_update: PyTree = None,
    probe_cost: Array | None = None,
) -> Array:
    r"""The cost above which a run has diverged: $f_0 + d \max(|f_0|, \eta \lVert\nabla f_0\rVert_2^2)$.

    $f_0$ and $\nabla f_0$ are the cost and gradient at the initial guess, $\eta$ the learning
    rate and $d$ `params.divergence`. The scale is the larger of the starting cost's magnitude
    and the decrease the first step promises to first order (both scale with the cost, and
    the second stays positive where the cost starts at 0). A run that converges stays near or
    below its start; one whose cost climbs `d` times that scale above it is diverging.
    $d = +\infty$ turns the rule off. An optax method's first update $u_0$ is not
    $-\eta\nabla f_0$ (Adam's is about $\eta$ per coordinate, whatever the gradient's size):
    its promise is $|\nabla f_0 \cdot u_0|$ (`first_update`), and the scale also takes the
    change a step of $\eta$ per coordinate makes, $|f(x_0 - \eta\,\mathrm{sign}\nabla f_0) -
    f_0|$ (`probe_cost`, where finite): an adaptive method's steps are about $\eta$ (or a few
    times it) whatever the gradient's size, so from near a minimum they raise the cost by far
    more than the first-order promise.
    """
    if first_update is None:
        promise = params.learning_rate * _sum_squares(grad)
    else:
        products = jax.tree.map(lambda g, u: jnp.sum(g * u), grad, first_update)
        promise = jnp.abs(jnp.asarray(sum(jax.tree.leaves(products))))
    if probe_cost is not None:
        change = jnp.abs(probe_cost - cost)
        promise = jnp.maximum(promise, jnp.where(jnp.isfinite(change), change, 0))
    scale = jnp.maximum(jnp.abs(cost), promise)
    rise = jnp.where(jnp.isposinf(params.divergence), jnp.inf, params.divergence * scale)
    return (cost + rise).astype(cost.dtype)


def _select(pred: Array, on_true: PyTree, on_false: PyTree) -> PyTree:
    return jax.tree.map(lambda a, b: jnp.where(pred, a, b), on_true, on_false)


def _scaled(tree: PyTree, scale: Numbers) -> PyTree:
    return jax.tree.map(lambda leaf: scale.astype(leaf.dtype) * leaf, tree)


def _sub(a: PyTree, b: PyTree) -> PyTree:
    return jax.tree.map(jnp.subtract, a, b)


def _hyperparams_valid(hyperparams: dict[str, Numbers]) -> Array:
    """Whether an optax method's numbers are finite and within their bounds (`_validate`'s
    `check_bounds`, which refuses concrete values at call time; traced ones end INVALID)."""
    valid = jnp.array(True)
    for name, value in hyperparams.items():
        value = jnp.asarray(value)
        valid &= jnp.all(jnp.isfinite(value) & within_bounds(name, value))
    return valid


def init(
    value_and_grad: ValueAndGrad, x0: PyTree, params: Params, args: tuple, opts: Options
) -> State:
    """Evaluate the cost and gradient at the initial guess; decide if there is work to do."""
    cost, grad = value_and_grad(x0, data(args, params, opts, 0))
    # the numbers a grid shares first: one test, computed once for every member
    valid = (
        (params.precision >= 0)
        & (params.precision < jnp.inf)  # inf would stop every run after its first step
        & (params.grad_tol >= 0)
        & (params.momentum >= 0)
        & (params.momentum < 1)
        & (params.divergence > 0)
        & (params.learning_rate > 0)
        & jnp.isfinite(params.learning_rate)
        & _all_finite(x0)
        & _hyperparams_valid(params.hyperparams)
    )
    status = jnp.where(
        ~valid,
        Status.INVALID,
        jnp.where(
            ~(jnp.isfinite(cost) & _all_finite(grad)),
            Status.DIVERGED,
            jnp.where(params.max_iter <= 0, Status.MAX_ITER, RUNNING),
        ),
    ).astype(jnp.int32)
    velocity = init_velocity(x0, params, opts)
    history = None
    if opts.history_every:
        rows = opts.history_rows

        def buffer(leaf: Array) -> Array:
            empty = jnp.full((rows, *jnp.shape(leaf)), jnp.nan, dtype=leaf.dtype)
            return empty.at[0].set(leaf)

        history = History(x=jax.tree.map(buffer, x0), cost=buffer(cost))
    step_dtype = jnp.result_type(*jax.tree.leaves(x0))
    return State(
        x=x0,
        cost=cost,
        grad=grad,
        velocity=velocity,
        step_size=jnp.array(jnp.inf, dtype=step_dtype),
        iterations=jnp.array(0, dtype=jnp.int32),
        status=status,
        ceiling=_ceiling_at(value_and_grad, x0, cost, grad, velocity, params, args, opts),
        history=history,
    )


def _ceiling_at(
    value_and_grad: ValueAndGrad,
    x0: PyTree,
    cost: Array,
    grad: PyTree,
    velocity: PyTree,
    params: Params,
    args: tuple,
    opts: Options,
) -> Array:
    """`ceiling` of a run from `x0`, whose cost and gradient there are `cost` and `grad`: with
    mini-batches, from the cost and gradient on all the data (a first sample's cost can be
    near 0 by chance); for an optax method, with the cost a step of the learning rate per
    coordinate away, against the gradient."""
    if opts.batch_size:
        cost, grad = value_and_grad(x0, args)
    first = _first_update(x0, grad, velocity, params, opts)
    if first is None:
        return ceiling(cost, grad, params)
    probe = jax.tree.map(
        lambda x, g: x - params.learning_rate.astype(x.dtype) * jnp.sign(g), x0, grad
    )
    return ceiling(cost, grad, params, first, value_and_grad(probe, args)[0])


def _first_update(
    x0: PyTree, grad: PyTree, velocity: PyTree, params: Params, opts: Options
) -> PyTree:
    """An optax method's first update $u_0 = x_1 - x_0$ (for `ceiling`), else None."""
    if not _optimizers.is_optax(opts.method):
        return None
    x1 = update(x0, grad, velocity, params, opts)[0]
    return _sub(x1, x0)


def init_velocity(x0: PyTree, params: Params, opts: Options) -> PyTree:
    """The velocity before the first step: None for plain gradient descent, zeros for the
    momentum methods, the optimizer's initial state for an optax method."""
    if opts.method == "gd":
        return None
    if _optimizers.is_optax(opts.method):
        return _optimizers.init_state(
            opts.method, x0, params.learning_rate, params.hyperparams, opts.static_hyperparams
        )
    return jax.tree.map(jnp.zeros_like, x0)


def update(
    x: PyTree, grad: PyTree, velocity: PyTree, params: Params, opts: Options
) -> tuple[PyTree, PyTree]:
    """The new iterate and velocity. The velocity is None for plain gradient descent, and the
    optimizer's state for an optax method ($x_{k+1} = x_k + u_k$, `u_k` its update)."""
    method = opts.method
    if _optimizers.is_optax(method):
        return _optimizers.optax_update(
            method,
            x,
            grad,
            velocity,
            params.learning_rate,
            params.hyperparams,
            opts.static_hyperparams,
        )
    if method == "gd":
        return _sub(x, _scaled(grad, params.learning_rate)), None
    velocity = jax.tree.map(lambda v, g: params.momentum.astype(v.dtype) * v + g, velocity, grad)
    if method == "momentum":
        direction = velocity
    else:  # nesterov
        direction = jax.tree.map(
            lambda v, g: g + params.momentum.astype(v.dtype) * v, velocity, grad
        )
    return _sub(x, _scaled(direction, params.learning_rate)), velocity


class Proposal(NamedTuple):
    """One candidate iteration of one member, before it is accepted or kept."""

    x: PyTree
    cost: Array
    grad: PyTree
    velocity: PyTree
    step_size: Array
    accepted: Array  # finite, with the cost at most the ceiling: the member moves to it
    status: Array  # what the member's status becomes (RUNNING if it goes on)


def propose(
    value_and_grad: ValueAndGrad,
    x: PyTree,
    grad: PyTree,
    velocity: PyTree,
    iterations: Array,
    params: Params,
    args: tuple,
    opts: Options,
    step_dtype: Any,
    cost_ceiling: Array,
    stall_test: bool = True,
) -> Proposal:
    """Update, re-evaluate, measure the step and decide the status of iteration `iterations`.

    The iteration diverges when the new cost, gradient or iterate is not finite, or the cost
    exceeds `cost_ceiling` (`ceiling`): the member then keeps its current iterate.

    The arithmetic of one iteration, shared by `step` and the batched fast path (`_batch.py`),
    so both give the same bits. `stall_test=False` skips the gradient norm when the caller
    knows `grad_tol` is +inf (then `norm > grad_tol` is always False: the same statuses).
    """
    new_x, new_velocity = update(x, grad, velocity, params, opts)
    new_cost, new_grad = value_and_grad(new_x, data(args, params, opts, iterations))
    step_size = tree_norm(_sub(new_x, x), opts.norm).astype(step_dtype)
    finite = jnp.isfinite(new_cost) & _all_finite(new_grad, new_x)
    accepted = finite & ~(new_cost > cost_ceiling)
    small = step_size < params.precision
    steep = tree_norm(new_grad, opts.norm) > params.grad_tol if stall_test else False
    # Nested `where` rather than `jnp.select`: the same codes, without the argmax over a
    # stacked condition axis that `select` lowers to (it blocks fusion in the batched loop).
    status = jnp.where(
        ~accepted,
        Status.DIVERGED,
        jnp.where(
            small,
            jnp.where(steep, Status.STALLED, Status.CONVERGED),
            jnp.where(iterations >= params.max_iter, Status.MAX_ITER, RUNNING),
        ),
    ).astype(jnp.int32)
    return Proposal(new_x, new_cost, new_grad, new_velocity, step_size, accepted, status)


def propose_once(
    value_and_grad: ValueAndGrad,
    live: Array,
    operands: tuple,
    opts: Options,
    step_dtype: Any,
    stall_test: bool = True,
) -> Proposal:
    """`propose` on `operands` (`x, grad, velocity, iterations, params, args, cost_ceiling`);
    for a batch of members in columns under `jax.vmap` on a CPU, computed once per batch
    while any member is `live` (`_once`). The plain loop (`step`) and the lanes (`_batch`)
    both propose through it, so their members keep the same bits."""

    def compute(
        x: PyTree, grad: PyTree, velocity: PyTree, n: Array, p: Params, a: tuple, top: Array
    ) -> Proposal:
        return propose(
            value_and_grad, x, grad, velocity, n, p, a, opts, step_dtype, top, stall_test
        )

    return once(compute, live, *operands)


def step(
    value_and_grad: ValueAndGrad,
    state: State,
    params: Params,
    args: tuple,
    opts: Options,
    live: Array | bool = True,
) -> State:
    """One iteration: update, re-evaluate, measure the step, decide the status.

    `live` (for `masked_step`) is False for a member that has stopped: its history row is
    then left alone, so the history buffer never needs a whole-buffer select.
    """
    iterations = state.iterations + 1
    operands = (state.x, state.grad, state.velocity, iterations, params, args, state.ceiling)
    new = propose_once(value_and_grad, running(state) & live, operands, opts, state.step_size.dtype)
    taken, status, new_x, new_cost = new.accepted, new.status, new.x, new.cost

    history = state.history
    if history is not None:
        every = opts.history_every
        # Clamped: a stopped member's step (discarded) may point one row past the end.
        row = jnp.minimum(iterations // every, opts.history_rows - 1)
        write = live & taken & (iterations % every == 0)

        def record(buffer: Array, value: Array) -> Array:
            return buffer.at[row].set(jnp.where(write, value, buffer[row]))

        history = History(
            x=jax.tree.map(record, history.x, new_x), cost=record(history.cost, new_cost)
        )

    accepted = State(
        x=new_x,
        cost=new_cost,
        grad=new.grad,
        velocity=new.velocity,
        step_size=new.step_size,
        iterations=iterations,
        status=status,
        ceiling=state.ceiling,
        history=history,
    )
    # A diverging iterate is never taken: the member keeps its last one before. The history
    # (already masked by `write`) stays out of the select: selecting it would touch every row.
    kept = state._replace(status=status, history=None)
    return _select(taken, accepted._replace(history=None), kept)._replace(history=history)


def running(state: State) -> Array:
    return state.status == RUNNING


def masked_step(
    value_and_grad: ValueAndGrad, state: State, params: Params, args: tuple, opts: Options
) -> State:
    """`step` for a member still running; a finished member stays exactly where it is."""
    live = running(state)
    new = step(value_and_grad, state, params, args, opts, live)
    # The history rows are written only while `live`, so they stay out of the select.
    out = _select(live, new._replace(history=None), state._replace(history=None))
    return out._replace(history=new.history)


def to_result(state: State) -> Result:
    return Result(
        x=state.x,
        cost=state.cost,
        grad=state.grad,
        step_size=state.step_size,
        iterations=state.iterations,
        status=state.status,
        history=state.history,
    )


def solve(
    value_and_grad: ValueAndGrad, x0: PyTree, params: Params, args: tuple, opts: Options
) -> Result:
    """The whole run of one member: `init`, then `step` while it is running (a small vector
    carried as its coordinates, `_columns`)."""
    if _columns.for_member(value_and_grad, x0, opts, args):
        run = _columns.value_and_grad(value_and_grad)
        return _columns.join(_solve(run, _columns.split(x0, batched=False), params, args, opts))
    return _solve(value_and_grad, x0, params, args, opts)


def _solve(
    value_and_grad: ValueAndGrad, x0: PyTree, params: Params, args: tuple, opts: Options
) -> Result:
    state = init(value_and_grad, x0, params, args, opts)
    state = lax.while_loop(running, lambda s: step(value_and_grad, s, params, args, opts), state)
    return on_all_data(value_and_grad, to_result(state), args, opts, batched=False)
