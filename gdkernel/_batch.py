"""A flat batch of members, each stopping on its own rule, in one compiled program.

`jax.vmap` of a `while_loop` carries and selects every member's whole state on every
iteration, and runs until the slowest member of the batch stops. Here instead the members
run on a set of lanes that are refilled as members stop (`_lanes.py`): a trip steps only as
many members as there are lanes, at most a cache-sized number on a CPU, and its cost follows
the members still running.

A lane carries only what the next iteration needs: the iterate, gradient, velocity, last step
size, and one int32 code (`-(n + 1)` while running after `n` iterations, else
`8 * iterations + status`). The cost is evaluated once more at the end. A scalar problem
carries less still, one complex number per member (`_scalars.py`): XLA then runs one fused
loop per step instead of one per carried array on a CPU, and moves half the bytes on a GPU.
A vector of up to 8 numbers under an elementwise rule (`gd`, `momentum`, optax's Adam and the
like) is carried as an array per coordinate (`_columns.py`), so that a trip is elementwise
from end to end, and its step is computed once per trip, as the plain loop computes it
(`_once.py`). On an accelerator the lanes take the whole batch and each look's trips are
written out in full, so that a look is one fused pass over the members.

Every step of a member is the kernel's own arithmetic (`_kernel.propose`), masked by that
member's stopping rule, so each member ends bit for bit where the plain per-member loop
(`jax.vmap` of `_kernel.solve`) ends; against a lone, unbatched run the iterations and status
are the same and `x` agrees up to multiply-add contraction. With `history` on, the batch runs
the plain masked loop (`run_batch`) over the whole kernel state.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array, lax

from . import _columns, _lanes, _scalars
from ._adjoint import differentiable
from ._closure import top_level
from ._kernel import (
    Options,
    Params,
    State,
    ValueAndGrad,
    init,
    make_value_and_grad,
    masked_step,
    member_axes,
    on_all_data,
    per_member,
    propose_once,
    running,
    take,
    to_result,
    with_members,
)
from ._optimizers import velocity_copies
from ._progress import Report, Tracker, batch_counts, monitor, reporting, trips_between_reports
from ._result import RUNNING, Result
from ._work import work as _work

PyTree = Any

# Bytes of lane carry on a CPU: small enough to stay in a core's L2 cache while the lanes
# iterate (32,768 members of a scalar float32 problem).
LANE_BYTES = 2**19
# The same for members carried in columns (`_columns`): a step then runs a short loop over the
# lanes per carried array, and XLA splits a loop over the cores once it is long enough, at a
# cost of a few microseconds. W2 (2-D, float64) on one host thread: 0.34, 0.35, 0.33 and
# 0.61 s with 64, 128, 256 and 512 KiB; on two threads (5,000 members a part) 0.21, 0.18,
# 0.14 and 0.15 s.
COLUMN_LANE_BYTES = 2**18
# Bytes of the values a trip's cost and gradient compute (a member's intermediates times
# lanes), on a CPU: a cost that reads its data elementwise (W4's 10,000 points: 720 KB a
# member) keeps a trip's intermediates within the last-level cache on a few lanes.
LANE_WORK_BYTES = 2**23
# When every member has its own lane, the lanes are looked at after every trip instead of
# every `_lanes.CHECK_EVERY`-th (on a CPU) once a member's evaluation computes at least
# `LOOK_MEMBER_BYTES` and a trip's evaluations (lanes times a member's) `LOOK_WORK_BYTES`: a
# look (a reduction over the lanes' codes, and the loop's turn) then costs a few percent of a
# trip, and the loop ends on the trip its last member stops rather than up to 7 trips later.
# The adjoint benchmark's forward sweep (1,000 members of a 100-dimensional quadratic, 7 KB
# a member, 7 MB a trip) ran 84 trips instead of 88. A cheap scalar cost fuses into one pass
# whose trip costs about a look (W1 at 30,000 members on one thread: 7.6 ms a call with a look
# every trip, 5.4 ms without).
LOOK_MEMBER_BYTES = 2**10
LOOK_WORK_BYTES = 2**20
# Arithmetic per byte of carry from which a member is compute-bound: a trip's time is then
# its evaluations', not its passes over the carry, and its lanes follow `LANE_WORK_BYTES`
# alone. A cost that multiplies each member by shared data (the adjoint benchmark's
# 100 x 100 matrix: about 37 flops a byte of its 1.6 KB carry) then takes the whole batch
# into one matrix product a trip: 1,000 members ran in 37-60 ms, against 65 ms on 16 lanes
# and 86-137 ms on the 320 lanes that keep its carry in L2. Scalar and 2-D problems do a
# few flops a byte (W1: 2; Rosenbrock: 3).
COMPUTE_BOUND = 16
# In a batch of at least ROUNDS * ROUND_LANES members, each lane runs at least ROUNDS members
# in turn (on a CPU, members that are not compute-bound): a lane's total is then a sum over
# many members, so the lanes finish closer together. W3 (131,072 members a part): 16,384
# lanes instead of 32,768, 180-193 ms against 203-233 ms; a smaller batch keeps its lanes
# (W1 at 16,384 members on 1,024 lanes ran 2x slower than on one set).
ROUNDS = 8
ROUND_LANES = 4096
# Compiler options for the fast path's programs on a CPU. XLA vectorises for 256-bit registers
# by default; the masked loop bodies are elementwise over the lanes and run faster with 512-bit
# vectors where the CPU has them (LLVM caps the width at what the target supports). And XLA
# splits some loops of a program over every core (its parallel task assignment), while a sweep
# already runs one program per core from its own host thread (`default_threads`): the split
# loops then wait on each other's cores, by a varying amount from one call to the next (W2 in
# float32: 0.105-0.164 s a call with the split, 0.098-0.102 s without). A sweep on one host
# thread (`threads=1`) then runs on one core, as documented (with the split, one thread ran
# 768 to 1,000 scalar members in 2.7-3.5 ms a call against 0.3 ms). Neither option changes
# the arithmetic of an element: the results stay bit for bit.
CPU_COMPILER_OPTIONS = {
    "xla_cpu_prefer_vector_width": 512,
    "xla_disable_hlo_passes": "cpu-parallel-task-assigner",
}
# The lanes pack `8 * iterations + status` into an int32.
_MAX_PACKED_ITER = 2**28 - 1


class Carry(NamedTuple):
    """The carry of a set of lanes (or of every member): the batch on the leading axis."""

    x: PyTree
    cost: Array  # the cost the loop evaluated at `x` (evaluated again later, a matrix
    # product in float32 could round differently from the loop's)
    grad: PyTree
    velocity: PyTree  # None for plain gradient descent
    step_size: Array
    code: Array  # int32: -1 while running, else 8 * iterations + status


def init_batch(
    value_and_grad: ValueAndGrad, x0: PyTree, params: Params, args: tuple, opts: Options
) -> State:
    """`init` for every member; `x0` and the per-member numbers of `params` (`member_axes`)
    carry the batch axis."""
    return jax.vmap(
        lambda x, p: init(value_and_grad, x, p, args, opts), in_axes=(0, member_axes(params))
    )(x0, params)


def run_batch(
    value_and_grad: ValueAndGrad,
    state: State,
    params: Params,
    args: tuple,
    opts: Options,
    steps_per_trip: int = 1,
) -> State:
    """Step every running member of the whole batch until none is left running.

    The plain masked loop over the kernel's full state (history included).
    """
    one = jax.vmap(
        lambda s, p: masked_step(value_and_grad, s, p, args, opts),
        in_axes=(0, member_axes(params)),
    )

    def body(carry: tuple[State, Array]) -> tuple[State, Array]:
        s, trips = carry
        for _ in range(steps_per_trip):
            s = one(s, params)
        trips = trips + 1
        if opts.progress_every:
            monitor(
                batch_counts(s.status, s.cost), trips, opts.progress_every, axes=opts.device_axes
            )
        return s, trips

    state, _ = lax.while_loop(
        lambda carry: jnp.any(running(carry[0])), body, (state, jnp.array(0, jnp.int32))
    )
    return state


# ------------------------------------------------------------------------------ fast path


def _pack(status: Array) -> Array:
    """The code of a state just out of `init`: no iteration has run yet."""
    zero = jnp.int32(0)
    return jnp.where(status == RUNNING, _lanes.running_code(zero), _lanes.pack_code(zero, status))


def _reports(
    members: int, opts: Options, part: Array | int
) -> tuple[Callable[[Array, Array], None] | None, int]:
    """`_lanes.run`'s `(monitor, every)`: a progress report every `opts.progress_every`
    trips (in whole looks) when it is set. A report sends the lanes' tally of members written
    home; it reads no member's state and evaluates no cost (that would be a step of every
    member), so its best cost is that of finished chunks."""
    if not opts.progress_every:
        return None, 0
    every = -(-opts.progress_every // _lanes.CHECK_EVERY)  # looks at the lanes

    def report(tally: Array, looks: Array) -> None:
        finished, converged, diverged = tally[0], tally[1], tally[2]
        counts = (members - finished, converged, diverged, jnp.inf)
        monitor(counts, looks, every, part, opts.device_axes)

    return report, every


def unrolled() -> bool:
    """Whether a look's trips are written out in full (`_lanes.run`'s `unroll`): on an
    accelerator, where the fused look moves the lanes' carry once instead of once a trip.
    On a CPU the trips run as they are: there a fused look ran 2-5x slower (W1 at 1e6
    members: 0.61 s against 0.12 s), and XLA fuses each carried array of a look into a loop
    of its own, which can round a member differently from the plain loop (the step size of
    a float64 Rastrigin member did, with its 2-D iterate carried as a vector)."""
    return jax.default_backend() != "cpu"


def report_trips(
    members: int,
    x0: PyTree,
    opts: Options,
    args: tuple,
    platform: str,
    cost_fn: Callable,
    grad_fn: Callable | None,
) -> int:
    """`Options.progress_every` for a batch of `members` like `x0` (batch on the leading
    axis) of `cost_fn`: trips between two reports, so that reports cost about 1% of the run."""
    if opts.history_every:
        per_trip = members
    else:
        member_bytes, work = _problem_sizes(cost_fn, grad_fn, x0, opts, args)
        columns = _columns.applies(x0, opts, work[0])
        per_trip = _lane_width(members, member_bytes, work, columns)
    return trips_between_reports(members, per_trip, platform)


def _problem_sizes(
    cost_fn: Callable, grad_fn: Callable | None, x0: PyTree, opts: Options, args: tuple
) -> tuple[int, tuple[int, int]]:
    """`_sizes` of `cost_fn`'s members like `x0` (batch on the leading axis), from the host:
    tracing the cost (about 5 ms) is done once per problem, as compiling its sweep is."""
    x_leaves, x_tree = jax.tree.flatten(_abstract(x0))
    a_leaves, a_tree = jax.tree.flatten(_abstract(args))
    key = (cost_fn, grad_fn, opts, x_tree, tuple(x_leaves), a_tree, tuple(a_leaves))
    try:
        return _sizes_of(*key)
    except TypeError:  # a cost or gradient that cannot be hashed: traced on every call
        return _sizes(make_value_and_grad(cost_fn, grad_fn), x0, opts, args)


def _abstract(tree: PyTree) -> PyTree:
    return jax.tree.map(lambda a: jax.ShapeDtypeStruct(jnp.shape(a), jnp.result_type(a)), tree)


@functools.lru_cache(maxsize=64)
def _sizes_of(
    cost_fn: Callable,
    grad_fn: Callable | None,
    opts: Options,
    x_tree: Any,
    x_leaves: tuple,
    a_tree: Any,
    a_leaves: tuple,
) -> tuple[int, tuple[int, int]]:
    vg = make_value_and_grad(cost_fn, grad_fn)
    return _sizes(vg, x_tree.unflatten(x_leaves), opts, a_tree.unflatten(a_leaves))


def _carry_representation(
    value_and_grad: ValueAndGrad,
    params: Params,
    args: tuple,
    opts: Options,
    step_dtype: Any,
    stall_test: bool,
) -> _lanes.Representation:
    """Lanes of `Carry`: any pytree problem, any method."""

    def one_member(
        x: PyTree, g: PyTree, v: PyTree, n: Array, mine: Params, top: Array, live: Array | None
    ) -> Any:
        operands = (x, g, v, n, with_members(params, mine), args, top)
        # The proposal is computed while any lane is `live` (`_once`): the loop's count at
        # its last look, one number, rather than a reduction over the lanes every trip (a
        # sixth of W2's passes over the lanes, 5-7% of its time on one thread)
        live = n > 0 if live is None else live
        return propose_once(value_and_grad, live, operands, opts, step_dtype, stall_test)

    one = jax.vmap(one_member, in_axes=(0, 0, 0, 0, 0, 0, None))  # `live`: one for all lanes

    def trip(c: Carry, numbers: tuple[Params, Array], live: Array | None) -> Carry:
        go = c.code < 0
        n = jnp.where(go, -c.code, 0)  # the iteration each running lane takes now
        new = one(c.x, c.grad, c.velocity, n, *numbers, live)
        whole = not _columns.carried(c.x)  # any iterate not carried in columns
        if whole:  # as before (no gain from `_once` measured on vectors)
            new = lax.optimization_barrier(new)
        take = go & new.accepted
        if whole and opts.method != "nesterov":
            # Always true for an accepted step (a running member's iterate is finite, an
            # accepted one too, and a step between two finite iterates may overflow to inf
            # but is never NaN), but it makes the step an input of the select: XLA then
            # measures the step before the select overwrites the lanes' iterates, and writes
            # the accepted ones in place instead of copying the iterates first on every
            # trip. (Vectors in columns ran 6% slower with it; Nesterov's fused step rounded
            # differently from the plain loop's.)
            take = take & (new.step_size == new.step_size)
        x, cost, grad, velocity, step_size = _lanes.select(
            take,
            (new.x, new.cost, new.grad, new.velocity, new.step_size),
            (c.x, c.cost, c.grad, c.velocity, c.step_size),
        )
        code = _lanes.next_code(c.code, n, new.status, new.accepted)
        return Carry(x, cost, grad, velocity, step_size, code)

    return _lanes.Representation(
        trip=trip,
        code=lambda c: c.code,
        idle=lambda c: c._replace(code=jnp.zeros_like(c.code)),
    )


def _in_columns(load: _lanes.Load) -> _lanes.Load:
    """`load` with the lanes' `Carry` in columns (`_columns`)."""

    def split(ids: Array) -> tuple[Any, Any]:
        carry, numbers = load(ids)
        return _columns.split(carry), numbers

    return split


def _lane_width(
    size: int, member_bytes: int = 16, work: tuple[int, int] = (0, 0), columns: bool = False
) -> int:
    """How many lanes run a batch of `size` members on this backend (whole vectors).

    `member_bytes`: the carry of one member; `work`: what one evaluation of its cost and
    gradient computes (`_work`: bytes, flops). On a CPU a trip's intermediates stay within
    `LANE_WORK_BYTES` and, unless the member is compute-bound (`COMPUTE_BOUND`), the lanes'
    carry stays within `LANE_BYTES` (a core's L2 cache). An accelerator takes the whole batch
    at once.
    """
    whole = -(-size // _lanes.VECTOR) * _lanes.VECTOR
    if jax.default_backend() != "cpu":
        return whole
    work_bytes, flops = work
    most = LANE_WORK_BYTES // max(work_bytes, 1)
    if flops < COMPUTE_BOUND * member_bytes:
        budget = COLUMN_LANE_BYTES if columns else LANE_BYTES
        most = min(most, budget // max(member_bytes, 1))
        if size >= ROUNDS * ROUND_LANES:  # each lane runs at least `ROUNDS` members in turn
            most = min(most, size // ROUNDS)
    return min(whole, max(_lanes.VECTOR, most // _lanes.VECTOR * _lanes.VECTOR))


def _costly_trip(lanes: int, work_bytes: int) -> bool:
    """Whether a trip of `lanes` lanes, each member's evaluation computing `work_bytes`,
    costs far more than a look at the lanes (`LOOK_MEMBER_BYTES`, `LOOK_WORK_BYTES`), on a
    CPU."""
    return (
        jax.default_backend() == "cpu"
        and work_bytes >= LOOK_MEMBER_BYTES
        and lanes * work_bytes >= LOOK_WORK_BYTES
    )


def _sizes(
    value_and_grad: ValueAndGrad, x0: PyTree, opts: Options, args: tuple
) -> tuple[int, tuple[int, int]]:
    """(carry bytes per member, `_work` of one evaluation of a member)."""
    leaves = jax.tree.leaves(x0)
    itemsize = jnp.result_type(*leaves).itemsize
    per = sum(math.prod(jnp.shape(leaf)[1:]) for leaf in leaves) * itemsize
    copies = 2 + velocity_copies(opts.method)  # x, grad, velocity
    # then the cost and step size, counted as one number (the lane budgets were measured
    # with this count; the scalar loop, `_scalars`, carries neither), and the int32 code
    return copies * per + itemsize + 4, _work(value_and_grad, x0, args)


def _carry_result(done: Carry) -> Result:
    """The result from the lanes' `Carry` of every member."""
    return Result(
        x=done.x,
        cost=done.cost,
        grad=done.grad,
        step_size=done.step_size,
        iterations=_lanes.code_iterations(done.code),
        status=done.code & 7,
        history=None,
    )


# `(x0, params, ids) -> (starting points, params)` of the members `ids` of a batch whose
# inputs are `x0` and `params` (`flat_members`, `grid_build`)
Build = Callable[[PyTree, Params, Array], tuple[PyTree, Params]]


def flat_members(x0: PyTree, params: Params, ids: Array) -> tuple[PyTree, Params]:
    """`Build` of a flat batch: member `i` starts from `x0[i]` with the numbers `i` of
    `params`."""
    return jax.tree.map(lambda leaf: jnp.take(leaf, ids, axis=0, mode="clip"), x0), take(
        params, jnp.minimum(ids, params.learning_rate.shape[0] - 1)
    )


def solve_batch(
    value_and_grad: ValueAndGrad,
    x0: PyTree,
    params: Params,
    args: tuple,
    opts: Options,
    packed: bool | None = None,
    stall_test: bool | None = None,
    part: Array | int = 0,
    *,
    build: Build = flat_members,
    size: int | None = None,
) -> Result:
    """Every member of a batch, each stopping on its own rule. Pure and traceable.

    By default a flat batch: `x0` and `params.learning_rate` carry the batch on their leading
    axis; the other numbers of `params` are shared. Else member `i` of the `size` is
    `build(x0, params, i)` (`grid_build`: a part of a grid). Each member's result equals a lone
    `gradient_descent` run's.

    The members run on refilled lanes (`_lanes.run`), each built where a lane loads it, or,
    with `history` or a `max_iter` past the packed code (`packed` false), the plain masked
    loop (`run_batch`) over the batch built first.
    `packed`: whether `max_iter` fits the lanes' packed code (< 2**28); `stall_test`:
    whether `grad_tol` may be finite. None: decided from `params` where its values are
    concrete, else `packed` at run time with `lax.cond` (compiling both loops) and the stall
    test kept. `part` tags progress reports (the part of a chunk this program runs).
    """
    if packed is None or stall_test is None:
        packed_now, stall_now = static_choices(params)
        packed = packed_now if packed is None else packed
        stall_test = stall_now if stall_test is None else stall_test
    if packed is None and not opts.history_every:  # `max_iter` traced: chosen at run time
        branch = functools.partial(
            solve_batch,
            value_and_grad,
            params=params,
            args=args,
            opts=opts,
            stall_test=stall_test,
            part=part,
            build=build,
            size=size,
        )
        fits = params.max_iter <= _MAX_PACKED_ITER
        on_lanes, plain = (functools.partial(branch, packed=p) for p in (True, False))
        return lax.cond(fits, on_lanes, plain, x0)

    members = params.learning_rate.shape[0] if size is None else size
    every_member = jnp.arange(members, dtype=jnp.int32)
    # one member's starting point, as a batch of one: its shapes and dtypes
    example = jax.eval_shape(lambda: build(x0, params, every_member[:1])[0])
    member_bytes, work = _sizes(value_and_grad, example, opts, args)
    # small vectors of a cheap cost: an array per coordinate, as the plain loop carries them
    columns = _columns.applies(example, opts, work[0])
    vg = _columns.value_and_grad(value_and_grad) if columns else value_and_grad
    if opts.history_every or not packed:
        xs, mine = build(x0, params, every_member)
        xs = _columns.split(xs) if columns else xs
        state = init_batch(vg, xs, mine, args, opts)
        result = to_result(run_batch(vg, state, mine, args, opts))
        result = _columns.join(result) if columns else result
    else:
        scalar = _scalars.applies(example, opts)  # one scalar per member: the one-array loop
        lanes = _lane_width(members, member_bytes, work, columns)
        report, every = _reports(members, opts, part)

        def load(ids: Array) -> tuple[Any, tuple[Params, Array]]:
            xs, mine = build(x0, params, ids)
            state = init_batch(value_and_grad, xs, mine, args, opts)
            code = _pack(state.status)
            if scalar:
                carry: Any = _scalars.pack(state.x, code)
            else:
                carry = Carry(
                    state.x, state.cost, state.grad, state.velocity, state.step_size, code
                )
            return carry, (per_member(mine), state.ceiling)  # each member's own numbers

        if scalar:
            rep = _scalars.representation(value_and_grad, params, args, opts, stall_test)
        else:
            dtype = jnp.result_type(*jax.tree.leaves(example))
            rep = _carry_representation(vg, params, args, opts, dtype, stall_test)
        loader = _in_columns(load) if columns else load
        look_each_trip = lanes >= members and _costly_trip(lanes, work[0])
        done = _lanes.run(rep, loader, members, lanes, report, every, unrolled(), look_each_trip)
        if scalar:

            def members_of(ids: Array) -> tuple[Any, Params]:
                return build(x0, params, ids)

            result = _scalars.finish(value_and_grad, done, members_of, args, opts, stall_test)
        else:
            result = _carry_result(_columns.join(done) if columns else done)
    return on_all_data(value_and_grad, result, args, opts, batched=True)


def fits_packed(max_iter: Any) -> bool:
    """Whether a concrete `max_iter` fits the fast path's packed int32 code."""
    return int(max_iter) <= _MAX_PACKED_ITER


def static_choices(params: Params) -> tuple[bool | None, bool]:
    """(packed, stall_test) from the concrete numbers of `params`: packed is None when
    `max_iter` is traced; the stall test is dropped only for a concrete `grad_tol` of +inf."""
    max_iter, grad_tol = params.max_iter, params.grad_tol
    packed = None if isinstance(max_iter, jax.core.Tracer) else fits_packed(max_iter)
    concrete = not isinstance(grad_tol, jax.core.Tracer)
    stall_test = not (concrete and bool(np.isposinf(np.asarray(grad_tol)).all()))
    return packed, stall_test


def compiler_options() -> dict[str, Any] | None:
    """The XLA options to compile the fast path with on the default backend (None: XLA's own)."""
    return dict(CPU_COMPILER_OPTIONS) if jax.default_backend() == "cpu" else None


def grid_members(guesses: PyTree, rows: Params, ids: Array) -> tuple[PyTree, Params]:
    """The starting points and numbers of grid members `ids`.

    `rows` holds the grid's settings: its per-member numbers (`learning_rate`, and any other
    the sweep grids over) have one entry per row of hyperparameters. The grid is row-major:
    member `r * n_g + j` is row `r` from guess `j`. An id past the grid gets learning rate 0:
    such a member is `INVALID` at `init` and never iterates (it pads a batch).
    """
    n_rows, n_g = rows.learning_rate.shape[0], jax.tree.leaves(guesses)[0].shape[0]
    real = jnp.minimum(ids, n_rows * n_g - 1)
    x0 = jax.tree.map(lambda leaf: leaf[real % n_g], guesses)
    params = take(rows, real // n_g)
    rate = jnp.where(ids < n_rows * n_g, params.learning_rate, 0).astype(rows.learning_rate.dtype)
    return x0, params._replace(learning_rate=rate)


def grid_build(stride: int) -> Build:
    """`Build` of a part of a grid: `x0` is `(guesses, first)` and `params` the grid's rows
    (`grid_members`); member `i` of the part is grid member `first + stride * i`."""

    def build(source: tuple[PyTree, Array], rows: Params, ids: Array) -> tuple[PyTree, Params]:
        guesses, first = source
        return grid_members(guesses, rows, first + stride * ids)

    return build


def part_size(members: int, parts: int) -> int:
    """Members in each of `parts` parts of a grid of `members`, dealt in turn: part `p` has
    grid members `p, p + parts, ...` (padded past `members`), so that each part gets a like
    share of the slow members."""
    return -(-members // parts)


def to_grid(flat: PyTree, n_lr: int, n_g: int) -> PyTree:
    """The first `n_lr * n_g` members of a flat result, with the grid axes `(n_lr, n_g)`."""
    n = n_lr * n_g
    return jax.tree.map(lambda leaf: leaf[:n].reshape(n_lr, n_g, *leaf.shape[1:]), flat)


def _members(
    x0: PyTree,
    params: Params,
    args: tuple,
    part: Array,
    *,
    cost_fn: Callable,
    grad_fn: Callable | None,
    opts: Options,
    packed: bool | None,
    stall_test: bool,
) -> Result:
    vg = make_value_and_grad(cost_fn, grad_fn)
    return solve_batch(vg, x0, params, args, opts, packed, stall_test, part)


def _grid(
    guesses: PyTree,
    rows: Params,
    args: tuple,
    part: Array,
    *,
    parts: int,
    cost_fn: Callable,
    grad_fn: Callable | None,
    opts: Options,
    packed: bool | None,
    stall_test: bool,
) -> Result:
    """Part `part` of `parts` of the grid's members (`part_size`), built and solved in one
    program: each member is built where a lane loads it. With one part, the result has the grid axes
    `(n_lr, n_g)`; with several, it is flat, in the part's order (see `interleave`)."""
    n_rows, n_g = rows.learning_rate.shape[0], jax.tree.leaves(guesses)[0].shape[0]
    size, build = part_size(n_rows * n_g, parts), grid_build(parts)
    vg = make_value_and_grad(cost_fn, grad_fn)
    run = functools.partial(
        solve_batch,
        vg,
        opts=opts,
        packed=packed,
        stall_test=stall_test,
        part=part,  # (tags progress reports only, which a solve with derivatives never makes)
        build=build,
        size=size,
    )

    def members(source: tuple[PyTree, Array], rows: Params) -> tuple[PyTree, Params]:
        return build(source, rows, jnp.arange(size, dtype=jnp.int32))

    # `part` goes in with the guesses: a solve with derivatives may not close over a traced
    # number
    solve = differentiable(run, vg, opts, batched=True, members=members)
    flat = solve((guesses, part), rows, args)
    return to_grid(flat, n_rows, n_g) if parts == 1 else flat


@functools.partial(jax.jit, static_argnames=("n_lr", "n_g"))
def interleave(results: tuple[Result, ...], n_lr: int, n_g: int) -> Result:
    """The flat results of the parts of a grid, dealt back into the grid axes `(n_lr, n_g)`."""

    def one(*leaves: Array) -> Array:
        return jnp.stack(leaves, axis=1).reshape(-1, *leaves[0].shape[1:])

    return to_grid(jax.tree.map(one, *results), n_lr, n_g)


_STATIC = ("cost_fn", "grad_fn", "opts", "packed", "stall_test")
_STATIC_GRID = (*_STATIC, "parts")
_BACKENDS: tuple[tuple[str, dict[str, Any] | None], ...] = (
    ("cpu", CPU_COMPILER_OPTIONS),
    ("other", None),
)
_PROGRAMS = {
    (kind, backend): jax.jit(fn, static_argnames=static, compiler_options=options)
    for kind, fn, static in (("members", _members, _STATIC), ("grid", _grid, _STATIC_GRID))
    for backend, options in _BACKENDS
}


def _program(kind: str, inputs: PyTree = ()) -> Any:
    """The jitted program `kind` for the default backend (its cache is per backend). Inside
    the user's own `jax.jit` or another transformation (traced `inputs`, or a sweep of
    concrete inputs called inside one) it is the one without compiler options, which only a
    top-level `jax.jit` may take."""
    traced = any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves(inputs))
    top = jax.default_backend() == "cpu" and not traced and top_level()
    return _PROGRAMS[kind, "cpu" if top else "other"]


def grid_program(inputs: PyTree = ()) -> Any:
    """The jitted `solve_grid` program (see `_program`)."""
    return _program("grid", inputs)


def _call(kind: str, params: Params, *inputs: Any, **static: Any) -> Result:
    """Run the program `kind` on `inputs`, with the static choices `params` allow."""
    packed, stall_test = static_choices(params)
    return _program(kind, inputs)(*inputs, **static, packed=packed, stall_test=stall_test)


def solve_members(
    x0: PyTree,
    params: Params,
    args: tuple,
    *,
    cost_fn: Callable,
    grad_fn: Callable | None,
    opts: Options,
    threads: int = 1,
    device: jax.Device | None = None,
) -> Result:
    """A flat batch of members on one device (JAX's default, or `device`; batch on every
    leading axis of `x0` and on `params.learning_rate`), solved to completion. Returns a flat
    `Result` of host arrays.

    With `threads` > 1 the members are dealt in turn to that many parts (`part_size`), each
    solved by the same compiled program from its own host thread (as in `solve_grid`); the
    batch size must then be a multiple of `threads`.
    """
    static = dict(cost_fn=cost_fn, grad_fn=grad_fn)
    size = np.shape(params.learning_rate)[0]

    def part(p: int) -> Result:
        pick = functools.partial(lambda leaf, p: np.asarray(leaf)[p::threads], p=p)
        xs, mine = jax.tree.map(pick, x0), jax.tree.map(pick, per_member(params))
        if device is not None:
            xs, mine = jax.device_put((xs, mine), device)
        inputs = (xs, with_members(params, mine), args, np.int32(p))
        return _call("members", params, *inputs, **static, opts=reporter_options(opts, p))

    if threads == 1:
        return jax.device_get(part(0))

    parts = [jax.device_get(r) for r in run_parts(part, threads)]

    def deal(*leaves: np.ndarray) -> np.ndarray:
        out = np.empty((size, *leaves[0].shape[1:]), leaves[0].dtype)
        for p, leaf in enumerate(leaves):
            out[p::threads] = leaf
        return out

    return jax.tree.map(deal, *parts)


def solve_grid(
    guesses: PyTree,
    params: Params,
    args: tuple,
    *,
    cost_fn: Callable,
    grad_fn: Callable | None,
    opts: Options,
    threads: int | None = None,
    device: jax.Device | None = None,
    report: Report | None = None,
) -> Result:
    """Every row of settings of `params` (`params.learning_rate` and any gridded number) from
    every starting point of `guesses` (batch on every leading axis) on one device (JAX's
    default, or `device`). Returns a `Result` of JAX arrays whose fields have the grid axes
    `(n_rows, n_g)` in front.

    The members are dealt to `threads` parts (`part_size`; None: `default_threads`), each
    solved by the same compiled program called from its own host thread: one device then
    runs the parts side by side (a CPU device runs one program per calling thread). Traced
    inputs run as one part. With `report`, the loop reports its progress (one chunk, one
    part per thread).
    """
    if device is not None:
        guesses, params, args = jax.device_put((guesses, params, args), device)
    inputs = (guesses, params, args)
    n_rows, n_g = params.learning_rate.shape[0], jax.tree.leaves(guesses)[0].shape[0]
    members = n_rows * n_g
    if any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves(inputs)):
        threads = 1
    elif threads is None:
        threads = default_threads(members, device)
    tracker = None
    if report is not None:
        share = -(-members // threads)
        platform = device.platform if device is not None else jax.default_backend()
        every = report_trips(share, guesses, opts, args, platform, cost_fn, grad_fn)
        opts = opts._replace(progress_every=every)
        tracker = Tracker(report, 1, members, share * threads, threads, sampled=threads > 1)
    packed, stall_test = static_choices(params)
    program = functools.partial(
        grid_program(inputs),
        *inputs,
        cost_fn=cost_fn,
        grad_fn=grad_fn,
        opts=opts,
        packed=packed,
        stall_test=stall_test,
    )
    with reporting(tracker):
        if tracker is not None:
            tracker.begin()
            tracker.start_chunk(members)
        if threads == 1:
            result = program(np.int32(0), parts=1)
        else:
            parts = run_parts(
                lambda p: program(np.int32(p), parts=threads, opts=reporter_options(opts, p)),
                threads,
            )
            result = interleave(tuple(parts), n_rows, n_g)
        if tracker is not None:
            tracker.finish_chunk(np.asarray(result.status), np.asarray(result.cost))
    return result


def reporter_options(opts: Options, part: int) -> Options:
    """The options of part `part` of a chunk shared by host threads: only the first part
    reports from inside its loop (`Tracker`'s `sampled`), the others run the program without
    reports. On two host threads the part that reports ran 4-24% slower than the part beside
    it without reports, and the sweep waits for its slowest part (docs/progress.md)."""
    return opts if part == 0 else opts._replace(progress_every=0)


_POOL: dict[int, ThreadPoolExecutor] = {}  # by size: the one pool of worker threads
# JAX settings that context managers set per thread (`with jax.enable_x64(True):`): a worker
# thread runs under the caller's values, so it traces and places arrays as the caller would.
_THREAD_SETTINGS = (
    "enable_x64",
    "default_device",
    "default_matmul_precision",
    "numpy_rank_promotion",
    "numpy_dtype_promotion",
    "debug_nans",
    "debug_infs",
)


def run_parts(call: Callable[[int], Any], parts: int) -> list[Any]:
    """`call(part)` for every part, each on its own host thread under the caller's JAX
    settings, waiting until all are done."""
    if not _POOL or max(_POOL) < parts:
        _POOL.clear()
        _POOL[parts] = ThreadPoolExecutor(max_workers=parts, thread_name_prefix="gdkernel")
    pool = _POOL[max(_POOL)]
    one = in_callers_settings(lambda part: jax.block_until_ready(call(part)))
    return list(pool.map(one, range(parts)))


def in_callers_settings(call: Callable[..., Any]) -> Callable[..., Any]:
    """`call`, to run on another thread under this thread's JAX settings (`_THREAD_SETTINGS`,
    which context managers set per thread)."""
    settings = [
        (getattr(jax, name), getattr(jax.config, f"jax_{name}")) for name in _THREAD_SETTINGS
    ]

    def run(*args: Any) -> Any:
        with contextlib.ExitStack() as stack:
            for manager, value in settings:
                stack.enter_context(manager(value))
            return call(*args)

    return run


def cores() -> int:
    """CPU cores this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def default_threads(members: int, device: jax.Device | None = None) -> int:
    """Host threads for a grid of `members` on one device: one per core (at most one per
    `_lanes.VECTOR` members) on a CPU device, one on an accelerator (its one wide loop fills it)."""
    platform = device.platform if device is not None else jax.default_backend()
    if platform != "cpu":
        return 1
    return max(1, min(cores(), members // _lanes.VECTOR))
